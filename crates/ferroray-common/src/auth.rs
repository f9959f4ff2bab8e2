//! The cluster token: the secret that proves a connection belongs to this
//! cluster.
//!
//! A node makes a fresh token when it starts and hands it to the processes it
//! starts (through their environment, which only the same user and root can
//! read). Every connection presents it in its first message; the node
//! compares it in constant time. The same token is meant to guard TCP links
//! between machines later (see `docs/security.md`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Bytes of a token.
pub const TOKEN_LEN: usize = 32;

/// A per-cluster secret. Its `Debug` form never shows the bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterToken([u8; TOKEN_LEN]);

impl ClusterToken {
    /// A fresh token from the kernel's random source (`getrandom`).
    pub fn random() -> std::io::Result<Self> {
        let mut bytes = [0u8; TOKEN_LEN];
        let mut filled = 0;
        while filled < TOKEN_LEN {
            // SAFETY: the pointer and length describe the unfilled tail of
            // `bytes`, which lives for the whole call.
            let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), TOKEN_LEN - filled, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            filled += n as usize;
        }
        Ok(ClusterToken(bytes))
    }

    /// The all-zero token: never made by [`ClusterToken::random`] in
    /// practice, useful to test a refusal.
    pub fn zero() -> Self {
        ClusterToken([0; TOKEN_LEN])
    }

    /// The token's bytes, for the wire.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// A token from [`ClusterToken::as_bytes`]'s form; `None` unless
    /// `bytes` is [`TOKEN_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(ClusterToken)
    }

    /// Compares in time independent of where the tokens differ.
    pub fn matches(&self, other: &ClusterToken) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }

    /// Lowercase hex, for an environment variable.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`ClusterToken::to_hex`]'s form.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 2 * TOKEN_LEN || !s.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; TOKEN_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterToken(bytes))
    }
}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_compare() {
        let a = ClusterToken::random().unwrap();
        let b = ClusterToken::random().unwrap();
        assert_ne!(a, b);
        assert!(a.matches(&ClusterToken::from_hex(&a.to_hex()).unwrap()));
        assert!(!a.matches(&b));
        assert!(ClusterToken::from_hex("zz").is_none());
        assert!(ClusterToken::from_hex(&"g".repeat(64)).is_none());
        assert_eq!(format!("{a:?}"), "ClusterToken(..)");
    }
}
