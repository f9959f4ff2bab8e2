//! TLS on every link to the head, and what a caller needs to trust it.
//!
//! There is no certificate authority. `start --head` makes a fresh
//! self-signed certificate ([`HeadIdentity`]; with `--storage`, the first
//! head on that storage makes it and later ones reuse it:
//! `crate::storage::head_credentials`), and callers pin it: the
//! SHA-256 of its DER bytes ([`Fingerprint`]) travels with the cluster token
//! ([`Credentials`], the token file and `FERRORAY_TOKEN`). A caller accepts
//! exactly that certificate, and still checks the handshake's signatures
//! against its key, so only the holder of the head's private key passes.
//! The head asks no certificate of its callers: the token, sent inside TLS,
//! authenticates them.
//!
//! TLS is always on, loopback included: one code path, and a token file
//! always carries the fingerprint. TLS 1.3 only, with the `ring` provider.

use crate::error::{ClusterError, Result};
use ferroray_common::ClusterToken;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, OtherError, ServerConfig, SignatureScheme};
use std::fmt;
use std::sync::Arc;

/// The name in the head's certificate, and the one callers ask for. Trust
/// comes from the pinned fingerprint, not from the name.
pub const HEAD_NAME: &str = "ferroray-head";

/// The prefix of a fingerprint in a token file.
pub const FINGERPRINT_PREFIX: &str = "sha256:";

/// The SHA-256 of a certificate's DER bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(cert_der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// 64 hex digits, with or without the `sha256:` prefix.
    pub fn from_hex(s: &str) -> Option<Fingerprint> {
        let s = s.strip_prefix(FINGERPRINT_PREFIX).unwrap_or(s);
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Fingerprint(out))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", self.to_hex())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", self.to_hex())
    }
}

/// What a caller needs to join a cluster: its token, and the fingerprint of
/// the head's certificate.
#[derive(Clone)]
pub struct Credentials {
    pub token: ClusterToken,
    pub fingerprint: Fingerprint,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token.
        f.debug_struct("Credentials").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl Credentials {
    /// A token file's text: the token in hex, then `sha256:` and the
    /// fingerprint in hex, one line each.
    pub fn to_file_text(&self) -> String {
        format!("{}\n{}\n", self.token.to_hex(), self.fingerprint)
    }

    /// Parses a token file's text (see [`Credentials::to_file_text`];
    /// surrounding whitespace allowed); the error says what is missing.
    pub fn from_file_text(text: &str) -> std::result::Result<Credentials, &'static str> {
        let mut lines = text.split_whitespace();
        let token = lines.next().and_then(ClusterToken::from_hex).ok_or("no cluster token on its first line")?;
        let fingerprint = match lines.next() {
            None => return Err("no head certificate fingerprint (a second line sha256:HEX)"),
            Some(l) => Fingerprint::from_hex(l).ok_or("no head certificate fingerprint on its second line")?,
        };
        if lines.next().is_some() {
            return Err("more than a token and a fingerprint");
        }
        Ok(Credentials { token, fingerprint })
    }

    /// The form of `FERRORAY_TOKEN`: `TOKEN:FINGERPRINT`, both hex.
    pub fn to_env(&self) -> String {
        format!("{}:{}", self.token.to_hex(), self.fingerprint.to_hex())
    }

    pub fn from_env(text: &str) -> Option<Credentials> {
        let (token, fingerprint) = text.trim().split_once(':')?;
        Some(Credentials { token: ClusterToken::from_hex(token)?, fingerprint: Fingerprint::from_hex(fingerprint)? })
    }
}

/// The head's certificate and private key (DER), made fresh at each start
/// (or read back from the storage: `crate::storage::head_credentials`).
pub struct HeadIdentity {
    pub cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for HeadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("HeadIdentity").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl Clone for HeadIdentity {
    fn clone(&self) -> Self {
        HeadIdentity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

fn tls_error(what: &str) -> impl FnOnce(String) -> ClusterError + '_ {
    move |e| ClusterError::Tls(format!("{what}: {e}"))
}

impl HeadIdentity {
    /// A self-signed certificate for [`HEAD_NAME`] with a new ECDSA P-256 key.
    pub fn generate() -> Result<HeadIdentity> {
        let certified = rcgen::generate_simple_self_signed(vec![HEAD_NAME.to_string()])
            .map_err(|e| tls_error("cannot make the head's certificate")(e.to_string()))?;
        Ok(HeadIdentity {
            cert: certified.cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into()),
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        })
    }

    /// Reads a certificate and a key in PEM (as [`HeadIdentity::to_pem`]
    /// writes them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<HeadIdentity> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| tls_error("the head's certificate")(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| tls_error("the head's key")(e.to_string()))?;
        Ok(HeadIdentity { cert, key, cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string() })
    }

    /// The certificate and the key in PEM.
    pub fn to_pem(&self) -> (&str, &str) {
        (&self.cert_pem, &self.key_pem)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    /// The head's side: this certificate, no client certificates.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_error("the head's TLS settings")(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| tls_error("the head's certificate and key")(e.to_string()))?;
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A caller's side: trusts exactly the certificate whose SHA-256 is
/// `pinned`.
pub fn client_config(pinned: Fingerprint) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let verifier = Arc::new(PinnedCert { pinned, algorithms: provider.signature_verification_algorithms });
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error("TLS settings")(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name callers ask for (see [`HEAD_NAME`]).
pub fn head_name() -> ServerName<'static> {
    ServerName::try_from(HEAD_NAME).expect("a valid DNS name")
}

/// The certificate another head (or a man in the middle) showed.
#[derive(Debug)]
struct NotPinned(Fingerprint);

impl fmt::Display for NotPinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the head's certificate ({}) is not the one in the token file", self.0)
    }
}

impl std::error::Error for NotPinned {}

/// Accepts one certificate, by its SHA-256; the handshake's signatures are
/// still checked against its public key.
#[derive(Debug)]
struct PinnedCert {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // The certificate is public: no need to compare in constant time.
        let seen = Fingerprint::of(end_entity);
        if seen == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NotPinned(seen))))))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// An error from a TLS stream: a TLS failure (wrong certificate, not TLS at
/// all) is [`ClusterError::Tls`], which stays wrong on a retry; any other
/// is I/O.
pub fn stream_error(e: std::io::Error) -> ClusterError {
    if !e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        return ClusterError::Io(e);
    }
    let inner = e.into_inner().expect("checked just above");
    let text = match inner.downcast_ref::<rustls::Error>() {
        // Our own verdict reads better than its debug form.
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(why)))) => why.to_string(),
        _ => inner.to_string(),
    };
    ClusterError::Tls(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_fingerprints_differ() {
        let a = HeadIdentity::generate().unwrap();
        let (cert, key) = a.to_pem();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----\n"), "{cert}");
        let back = HeadIdentity::from_pem(cert, key).unwrap();
        assert_eq!(back.fingerprint(), a.fingerprint());
        back.server_config().unwrap();
        assert_ne!(HeadIdentity::generate().unwrap().fingerprint(), a.fingerprint());
    }

    #[test]
    fn credentials_read_back() {
        let creds = Credentials {
            token: ClusterToken::random().unwrap(),
            fingerprint: HeadIdentity::generate().unwrap().fingerprint(),
        };
        let text = creds.to_file_text();
        assert_eq!(text.lines().nth(1).unwrap(), format!("sha256:{}", creds.fingerprint.to_hex()));
        let back = Credentials::from_file_text(&format!("  {text}\n")).unwrap();
        assert!(back.token.matches(&creds.token) && back.fingerprint == creds.fingerprint);
        let back = Credentials::from_env(&creds.to_env()).unwrap();
        assert!(back.token.matches(&creds.token) && back.fingerprint == creds.fingerprint);
        // A token alone, a bad fingerprint, extra lines.
        let token_only = creds.token.to_hex();
        assert!(Credentials::from_file_text(&token_only).unwrap_err().contains("fingerprint"));
        assert!(Credentials::from_file_text(&format!("{token_only}\nsha256:abc")).is_err());
        assert!(Credentials::from_file_text(&format!("{text}x\n")).is_err());
        assert!(Credentials::from_env(&token_only).is_none());
        assert!(!format!("{creds:?}").contains(&token_only), "the token never shows in Debug");
    }
}
