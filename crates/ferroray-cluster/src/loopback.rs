//! Peer links between loopback addresses: plain TCP, with both ends
//! proving they hold the cluster token without sending it.
//!
//! On a small machine TLS carries about half of what loopback TCP does
//! (`docs/benchmarks.md`), and a peer link is where objects move. A
//! connection whose two ends are loopback addresses never leaves the
//! machine, and on it only root can read or inject bytes, and root can read
//! the token file anyway. What TLS adds there is knowing who is at the
//! other end: a local process that took the port of a dead daemon must
//! neither learn the token nor pass for a node. This handshake gives that
//! (`ring`'s HMAC-SHA256, keyed by the token):
//!
//! 1. The caller sends [`MAGIC`] and a fresh random nonce `c`. The magic
//!    tells the listener, which looks at the first byte before reading
//!    (`is_plain`), that no TLS handshake follows.
//! 2. The listener checks that both ends of the connection are loopback
//!    addresses (else it closes: a plain link elsewhere is never taken),
//!    then sends a fresh nonce `s` and `HMAC(token, "listener" | c | s)`:
//!    proof it holds the token, bound to this caller's nonce, so it cannot
//!    be replayed from another connection.
//! 3. The caller checks that proof. A process without the token fails
//!    here, before the caller sent anything secret. Then it sends
//!    `HMAC(token, "caller" | c | s)`. The roles' labels differ, so a
//!    listener's proof is no caller's proof.
//! 4. The listener checks it, and the link's hello follows as on TLS, with
//!    no token in it (both sides already know the other holds it).
//!
//! The caller bounds the whole exchange with its open timeout, the listener
//! with [`HANDSHAKE_TIMEOUT`]. `start --tls-on-loopback` keeps TLS on
//! loopback too (a node started so neither makes nor takes plain links).

use crate::error::{ClusterError, Result};
use ferroray_common::ClusterToken;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The first bytes of a plain link (a TLS handshake starts with 0x16).
pub const MAGIC: [u8; 8] = *b"FRRYPLN1";

const NONCE: usize = 32;
const TAG: usize = 32;

/// How long a listener waits for a caller's part of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a connection between `local` and `remote` may be a plain link:
/// both are loopback addresses, and this node was not told to keep TLS
/// there.
pub fn allowed(local: SocketAddr, remote: SocketAddr, tls_on_loopback: bool) -> bool {
    !tls_on_loopback && local.ip().is_loopback() && remote.ip().is_loopback()
}

/// Whether `tcp` is allowed a plain link ([`allowed`] on its two ends).
pub fn allowed_on(tcp: &TcpStream, tls_on_loopback: bool) -> bool {
    match (tcp.local_addr(), tcp.peer_addr()) {
        (Ok(l), Ok(r)) => allowed(l, r, tls_on_loopback),
        _ => false,
    }
}

/// Whether the caller on `tcp` starts a plain link (its first byte is the
/// magic's, not a TLS record's); waits for that byte.
pub async fn is_plain(tcp: &TcpStream) -> Result<bool> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first))
        .await
        .map_err(|_| ClusterError::Timeout("a peer's first byte"))??;
    if n == 0 {
        return Err(ClusterError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(first[0] == MAGIC[0])
}

fn proof(token: &ClusterToken, role: &[u8], c: &[u8; NONCE], s: &[u8; NONCE]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(role);
    ctx.update(c);
    ctx.update(s);
    ctx.sign()
}

fn verify(token: &ClusterToken, role: &[u8], c: &[u8; NONCE], s: &[u8; NONCE], tag: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let mut msg = Vec::with_capacity(role.len() + 2 * NONCE);
    msg.extend_from_slice(role);
    msg.extend_from_slice(c);
    msg.extend_from_slice(s);
    hmac::verify(&key, &msg, tag).is_ok()
}

fn nonce() -> Result<[u8; NONCE]> {
    let mut n = [0u8; NONCE];
    SystemRandom::new().fill(&mut n).map_err(|_| ClusterError::Config("no random source for a nonce".into()))?;
    Ok(n)
}

const LISTENER: &[u8] = b"ferroray peer link listener";
const CALLER: &[u8] = b"ferroray peer link caller";

/// Steps 1 and 3, the caller's side, on a fresh connection. A listener
/// that cannot prove it holds `token` is [`ClusterError::WrongToken`].
pub async fn call(tcp: &mut TcpStream, token: &ClusterToken) -> Result<()> {
    let c = nonce()?;
    let mut hello = Vec::with_capacity(MAGIC.len() + NONCE);
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&c);
    tcp.write_all(&hello).await?;
    let mut answer = [0u8; NONCE + TAG];
    tcp.read_exact(&mut answer).await?;
    let s: [u8; NONCE] = answer[..NONCE].try_into().expect("sized");
    if !verify(token, LISTENER, &c, &s, &answer[NONCE..]) {
        return Err(ClusterError::WrongToken);
    }
    tcp.write_all(proof(token, CALLER, &c, &s).as_ref()).await?;
    Ok(())
}

/// Steps 2 and 4, the listener's side, after [`is_plain`]: `Ok` once the
/// caller proved it holds `token`; the caller's address and why otherwise
/// (the connection is then dropped).
pub async fn listen(tcp: &mut TcpStream, token: &ClusterToken, tls_on_loopback: bool) -> Result<()> {
    if !allowed_on(tcp, tls_on_loopback) {
        let why = if tls_on_loopback { "this node keeps TLS on loopback" } else { "not between loopback addresses" };
        return Err(ClusterError::Refused(format!("a plain peer link {why}")));
    }
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut hello = [0u8; MAGIC.len() + NONCE];
        tcp.read_exact(&mut hello).await?;
        if hello[..MAGIC.len()] != MAGIC {
            return Err(ClusterError::Protocol("a peer link that is neither TLS nor plain".into()));
        }
        let c: [u8; NONCE] = hello[MAGIC.len()..].try_into().expect("sized");
        let s = nonce()?;
        let mut answer = Vec::with_capacity(NONCE + TAG);
        answer.extend_from_slice(&s);
        answer.extend_from_slice(proof(token, LISTENER, &c, &s).as_ref());
        tcp.write_all(&answer).await?;
        let mut tag = [0u8; TAG];
        tcp.read_exact(&mut tag).await?;
        if !verify(token, CALLER, &c, &s, &tag) {
            return Err(ClusterError::WrongToken);
        }
        Ok(())
    })
    .await
    .map_err(|_| ClusterError::Timeout("a plain peer link's handshake"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn token() -> ClusterToken {
        ClusterToken::random().unwrap()
    }

    /// A listener on `addr` running `listen` once with `theirs`, and a
    /// caller running `call` with `ours`: both results.
    async fn exchange(
        addr: &str,
        ours: ClusterToken,
        theirs: ClusterToken,
        tls_on_loopback: bool,
    ) -> (Result<()>, Result<()>) {
        let listener = TcpListener::bind(addr).await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            assert!(is_plain(&tcp).await.unwrap());
            listen(&mut tcp, &theirs, tls_on_loopback).await
        });
        let mut tcp = TcpStream::connect(at).await.unwrap();
        let called = tokio::time::timeout(Duration::from_secs(10), call(&mut tcp, &ours)).await.unwrap();
        drop(tcp);
        let listened = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
        (called, listened)
    }

    #[tokio::test]
    async fn both_sides_with_the_token_agree() {
        let t = token();
        let (called, listened) = exchange("127.0.0.1:0", t.clone(), t, false).await;
        called.unwrap();
        listened.unwrap();
    }

    #[tokio::test]
    async fn a_listener_without_the_token_gets_no_proof_from_the_caller() {
        let (called, listened) = exchange("127.0.0.1:0", token(), token(), false).await;
        assert!(matches!(called, Err(ClusterError::WrongToken)), "{called:?}");
        // The caller stopped before its proof: the listener read nothing more.
        assert!(matches!(listened, Err(ClusterError::Io(_))), "{listened:?}");
    }

    #[tokio::test]
    async fn a_caller_with_a_forged_proof_is_refused() {
        let t = token();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server = {
            let t = t.clone();
            tokio::spawn(async move {
                let (mut tcp, _) = listener.accept().await.unwrap();
                listen(&mut tcp, &t, false).await
            })
        };
        let mut tcp = TcpStream::connect(at).await.unwrap();
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&[7u8; NONCE]);
        tcp.write_all(&hello).await.unwrap();
        let mut answer = [0u8; NONCE + TAG];
        tcp.read_exact(&mut answer).await.unwrap();
        // The listener's own proof sent back as the caller's: refused.
        tcp.write_all(&answer[NONCE..]).await.unwrap();
        let listened = tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
        assert!(matches!(listened, Err(ClusterError::WrongToken)), "{listened:?}");
    }

    #[tokio::test]
    async fn a_node_that_keeps_tls_on_loopback_takes_no_plain_link() {
        let t = token();
        let (called, listened) = exchange("127.0.0.1:0", t.clone(), t, true).await;
        assert!(matches!(listened, Err(ClusterError::Refused(_))), "{listened:?}");
        assert!(called.is_err());
    }

    #[test]
    fn only_loopback_ends_allow_a_plain_link() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let lo6: SocketAddr = "[::1]:1".parse().unwrap();
        let other: SocketAddr = "10.1.2.3:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        assert!(allowed(lo, lo, false));
        assert!(allowed(lo6, lo6, false));
        assert!(!allowed(lo, lo, true));
        assert!(!allowed(lo, other, false));
        assert!(!allowed(other, lo, false));
        assert!(!allowed(other, other, false));
        assert!(!allowed(any, lo, false));
    }

    #[tokio::test]
    async fn a_tls_caller_is_not_taken_for_a_plain_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let mut tcp = TcpStream::connect(at).await.unwrap();
        // The first bytes of a TLS record (a handshake).
        tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(!is_plain(&accepted).await.unwrap());
    }
}
