//! An actor's state as its methods reach it, on each kind of executor.
//!
//! - Serial: the state lives on the one thread that runs the calls and
//!   needs neither `Send` nor `Sync`; every call gets it as
//!   [`StateRef::Exclusive`].
//! - Threaded: the state is shared by a pool of threads, so it must be
//!   `Send + Sync` ([`ActorState::Shared`]); a `&self` method gets
//!   [`StateRef::Shared`] beside other `&self` calls, a `&mut self` method
//!   [`StateRef::Exclusive`] alone.
//! - Async: the state lives on the actor's one event-loop thread (no
//!   `Send` needed) behind an async read-write lock; each call's future
//!   owns a [`StateGuard`], so a `&mut self` method stays exclusive across
//!   its awaits.
//!
//! Whether a type is `Send + Sync` is found where the type is known (the
//! `#[actor]` expansion) by [`StateProbe`]: a threaded actor of a type that
//! is not is refused when it is created, before anything starts.

use ferroray_common::{Error, Result};
use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// An actor's state as its constructor made it.
pub enum ActorState {
    /// Not `Send + Sync`: serial and async actors only.
    Local(Box<dyn Any>),
    /// `Send + Sync`: any kind of actor.
    Shared(Box<dyn Any + Send + Sync>),
}

impl ActorState {
    /// The state for one thread (serial and async actors).
    pub(crate) fn into_local(self) -> Box<dyn Any> {
        match self {
            ActorState::Local(b) => b,
            ActorState::Shared(b) => b,
        }
    }
}

fn wrong_type<T>() -> Error {
    Error::Protocol(format!("this actor's state is not a {}", std::any::type_name::<T>()))
}

/// The state as one synchronous call sees it.
pub enum StateRef<'a> {
    Shared(&'a dyn Any),
    Exclusive(&'a mut dyn Any),
}

impl<'a> StateRef<'a> {
    /// The state as it is, for a front that keeps its own objects in it.
    pub fn any(&self) -> &dyn Any {
        match self {
            StateRef::Shared(s) => *s,
            StateRef::Exclusive(s) => &**s,
        }
    }

    /// For a `&self` method.
    pub fn get<T: 'static>(self) -> Result<&'a T> {
        match self {
            StateRef::Shared(s) => s.downcast_ref(),
            StateRef::Exclusive(s) => s.downcast_ref(),
        }
        .ok_or_else(wrong_type::<T>)
    }

    /// For a `&mut self` method (the executor gives it `Exclusive`).
    pub fn get_mut<T: 'static>(self) -> Result<&'a mut T> {
        match self {
            StateRef::Exclusive(s) => s.downcast_mut().ok_or_else(wrong_type::<T>),
            StateRef::Shared(_) => Err(Error::Protocol("a `&mut self` method was given shared access".into())),
        }
    }
}

/// An async actor's state: one lock, on the actor's event-loop thread.
/// `Arc` only because tokio's owned guards ask for one; it never leaves
/// that thread, so its content need not be `Send`.
pub(crate) type AsyncStateCell = Arc<RwLock<Box<dyn Any>>>;

/// An async actor's state as one call's future holds it: read access for a
/// `&self` method, write access for a `&mut self` one, from before the call
/// starts until its future ends (across every await).
pub enum StateGuard {
    Read(OwnedRwLockReadGuard<Box<dyn Any>>),
    Write(OwnedRwLockWriteGuard<Box<dyn Any>>),
}

impl StateGuard {
    pub fn get<T: 'static>(&self) -> Result<&T> {
        match self {
            StateGuard::Read(g) => g.downcast_ref(),
            StateGuard::Write(g) => g.downcast_ref(),
        }
        .ok_or_else(wrong_type::<T>)
    }

    pub fn get_mut<T: 'static>(&mut self) -> Result<&mut T> {
        match self {
            StateGuard::Write(g) => g.downcast_mut().ok_or_else(wrong_type::<T>),
            StateGuard::Read(_) => Err(Error::Protocol("a `&mut self` method was given shared access".into())),
        }
    }
}

/// Finds whether `T` is `Send + Sync` where `T` is a concrete type:
/// `(&&StateProbe::<T>::new()).__ferroray_wrap()` resolves to [`ViaShared`]
/// when it is, else to [`ViaLocal`] (method resolution tries `&&Probe`
/// before `&Probe`).
pub struct StateProbe<T>(PhantomData<fn() -> T>);

impl<T> StateProbe<T> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        StateProbe(PhantomData)
    }
}

pub trait ViaShared<T> {
    fn __ferroray_wrap(&self) -> fn(T) -> ActorState;
    fn __ferroray_shareable(&self) -> bool;
}

impl<T: Any + Send + Sync> ViaShared<T> for &StateProbe<T> {
    fn __ferroray_wrap(&self) -> fn(T) -> ActorState {
        |v| ActorState::Shared(Box::new(v))
    }
    fn __ferroray_shareable(&self) -> bool {
        true
    }
}

pub trait ViaLocal<T> {
    fn __ferroray_wrap(&self) -> fn(T) -> ActorState;
    fn __ferroray_shareable(&self) -> bool;
}

impl<T: Any> ViaLocal<T> for StateProbe<T> {
    fn __ferroray_wrap(&self) -> fn(T) -> ActorState {
        |v| ActorState::Local(Box::new(v))
    }
    fn __ferroray_shareable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // The borrows are what picks the impl (clippy sees only the fallback).
    #[allow(clippy::needless_borrow)]
    fn the_probe_tells_shareable_types_apart() {
        #[allow(unused_imports)]
        use super::{ViaLocal as _, ViaShared as _};
        assert!((&&StateProbe::<u64>::new()).__ferroray_shareable());
        assert!(!(&&StateProbe::<std::rc::Rc<u64>>::new()).__ferroray_shareable());
        assert!(!(&&StateProbe::<std::cell::Cell<u64>>::new()).__ferroray_shareable());
        let wrap = (&&StateProbe::<std::rc::Rc<u64>>::new()).__ferroray_wrap();
        assert!(matches!(wrap(std::rc::Rc::new(1)), ActorState::Local(_)));
        let wrap = (&&StateProbe::<u64>::new()).__ferroray_wrap();
        assert!(matches!(wrap(1), ActorState::Shared(_)));
    }

    #[test]
    fn a_shared_ref_never_gives_mutable_access() {
        let mut v: Box<dyn Any> = Box::new(5u32);
        assert_eq!(*StateRef::Shared(v.as_ref()).get::<u32>().unwrap(), 5);
        assert!(StateRef::Shared(v.as_ref()).get_mut::<u32>().is_err());
        assert!(StateRef::Exclusive(v.as_mut()).get::<u64>().is_err());
        *StateRef::Exclusive(v.as_mut()).get_mut::<u32>().unwrap() = 6;
        assert_eq!(*StateRef::Shared(v.as_ref()).get::<u32>().unwrap(), 6);
    }
}
