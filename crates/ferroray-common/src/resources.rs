//! Resource sets.
//!
//! Quantities are kept in fixed point (1/10,000 of a unit) so that a task
//! asking for 0.1 CPU ten times adds up to exactly one CPU. They are signed:
//! what is available can go below zero while a task that lent its CPU (it
//! waited in `get`) takes it back before the borrower is done, and must come
//! back up exactly when they finish.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

const SCALE: f64 = 10_000.0;

/// Named quantities: `"CPU"`, `"GPU"` and custom resources.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceSet(BTreeMap<String, i64>);

pub const CPU: &str = "CPU";
pub const GPU: &str = "GPU";

/// Checks an amount a user gave for a resource (`what` names it in the
/// error): finite and not negative. The one place user input is checked;
/// [`ResourceSet::check_bounds`] checks what a peer sent.
pub fn check_amount(what: &str, v: f64) -> Result<(), crate::Error> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(crate::Error::InvalidOption(format!("{what} must be a non-negative number, got {v}")))
    }
}

impl ResourceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` to `amount`; a zero amount removes it. The amount must be
    /// finite and not negative (checked by the callers that take user input).
    pub fn set(&mut self, name: &str, amount: f64) {
        let fixed = (amount * SCALE).round() as i64;
        if fixed == 0 {
            self.0.remove(name);
        } else {
            self.0.insert(name.to_string(), fixed);
        }
    }

    pub fn with(mut self, name: &str, amount: f64) -> Self {
        self.set(name, amount);
        self
    }

    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0) as f64 / SCALE
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every quantity in `self` is available in `available`.
    pub fn fits_in(&self, available: &ResourceSet) -> bool {
        self.0.iter().all(|(k, v)| available.0.get(k).copied().unwrap_or(0) >= *v)
    }

    /// The first resource that `total` can never satisfy, if any.
    pub fn first_missing(&self, total: &ResourceSet) -> Option<(String, f64, f64)> {
        self.0.iter().find_map(|(k, v)| {
            let have = total.0.get(k).copied().unwrap_or(0);
            (have < *v).then(|| (k.clone(), *v as f64 / SCALE, have as f64 / SCALE))
        })
    }

    /// Takes `req` out of `self` (possibly below zero: oversubscribed).
    pub fn subtract(&mut self, req: &ResourceSet) {
        for (k, v) in &req.0 {
            *self.0.entry(k.clone()).or_insert(0) -= *v;
        }
        self.0.retain(|_, v| *v != 0);
    }

    pub fn add(&mut self, req: &ResourceSet) {
        for (k, v) in &req.0 {
            *self.0.entry(k.clone()).or_insert(0) += *v;
        }
        self.0.retain(|_, v| *v != 0);
    }

    /// Checks a set that came from a peer: at most `max_entries` names of at
    /// most `max_name` bytes, each amount positive and at most `max_amount`
    /// whole units (a negative request would add to what a node offers).
    pub fn check_bounds(&self, max_entries: usize, max_name: usize, max_amount: f64) -> Result<(), String> {
        if self.0.len() > max_entries {
            return Err(format!("{} resources, over the limit of {max_entries}", self.0.len()));
        }
        for (name, fixed) in &self.0 {
            if name.len() > max_name {
                return Err(format!("a resource name of {} bytes, over the limit of {max_name}", name.len()));
            }
            if *fixed <= 0 || *fixed as f64 > max_amount * SCALE {
                return Err(format!("resource {name} amount {} is not in (0, {max_amount}]", *fixed as f64 / SCALE));
            }
        }
        Ok(())
    }

    /// The amounts in fixed point (1/10,000 of a unit), for the wire.
    pub fn into_fixed(self) -> BTreeMap<String, i64> {
        self.0
    }

    /// The amounts in fixed point, borrowed (the wire's direct encoder).
    pub fn fixed(&self) -> &BTreeMap<String, i64> {
        &self.0
    }

    /// A set from [`ResourceSet::into_fixed`]'s form; zero amounts are
    /// dropped (a set never holds one).
    pub fn from_fixed(mut fixed: BTreeMap<String, i64>) -> Self {
        fixed.retain(|_, v| *v != 0);
        ResourceSet(fixed)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v as f64 / SCALE))
    }
}

impl fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_add_up_exactly() {
        let mut total = ResourceSet::new().with(CPU, 1.0);
        let tenth = ResourceSet::new().with(CPU, 0.1);
        for _ in 0..10 {
            assert!(tenth.fits_in(&total));
            total.subtract(&tenth);
        }
        assert!(!tenth.fits_in(&total));
        assert_eq!(total.get(CPU), 0.0);
    }

    #[test]
    fn missing_resource_is_named() {
        let total = ResourceSet::new().with(CPU, 2.0);
        let req = ResourceSet::new().with(CPU, 1.0).with("disk", 1.0);
        assert_eq!(req.first_missing(&total), Some(("disk".into(), 1.0, 0.0)));
    }
}
