//! TLS with rustls (no OpenSSL): terminating HTTPS from clients
//! ([`server`]) and speaking TLS to backends ([`client`]).
//!
//! Both sides read PEM files the operator names and refuse what would fail
//! later (no certificate, no key, a key that is not the certificate's, an
//! expired certificate) with a message that names the file: a reload that
//! brings a broken pair is refused and the running one keeps serving.

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use client::{BackendTls, BackendTlsConfig};
pub use server::{ListenerTls, ListenerTlsConfig};

/// The one crypto provider veer uses (aws-lc-rs: rustls's default, and the
/// fastest for handshakes); passed explicitly rather than installed
/// process-wide, so nothing depends on who initialised what first.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// What is wrong with a TLS setting, naming the file it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

impl TlsError {
    fn at(path: &Path, what: impl std::fmt::Display) -> TlsError {
        TlsError(format!("{}: {what}", path.display()))
    }
}

/// Every certificate in a PEM file, in order (the leaf first, then its chain).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::at(path, format!("cannot read: {e}")))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::at(path, format!("not a PEM certificate file: {e}")))?;
    if certificates.is_empty() {
        return Err(TlsError::at(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::at(path, format!("cannot read: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::at(path, "holds no PEM private key"),
        other => TlsError::at(path, format!("not a PEM private key: {other}")),
    })
}

/// A trust store from a PEM bundle of CA certificates.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|e| TlsError::at(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// A certificate chain with its key, checked: the key is the leaf's, and the
/// leaf is valid now.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    /// The chain and signing key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// What the leaf says about itself.
    pub info: CertificateInfo,
}

/// What an operator needs to know about a certificate veer serves or presents.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// The certificate file.
    pub path: PathBuf,
    /// The DNS names it is valid for (subject alternative names, else the
    /// common name), lower case; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// The end of its validity.
    #[serde(serialize_with = "unix_seconds")]
    pub not_after: SystemTime,
}

fn unix_seconds<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

impl CertificateInfo {
    /// Seconds until it expires, negative once it has.
    pub fn seconds_to_expiry(&self, now: SystemTime) -> f64 {
        match self.not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        }
    }

    /// Whether it expires within `window` from `now`.
    pub fn expires_within(&self, window: Duration, now: SystemTime) -> bool {
        self.seconds_to_expiry(now) < window.as_secs_f64()
    }

    /// Its first name, or its file's, for labels and messages.
    pub fn label(&self) -> String {
        self.names.first().cloned().unwrap_or_else(|| self.path.display().to_string())
    }
}

/// Loads and checks the pair `cert` + `key` (see [`LoadedCertificate`]).
pub fn load_certificate(cert: &Path, key: &Path) -> Result<LoadedCertificate, TlsError> {
    let chain = read_certificates(cert)?;
    let private_key = read_private_key(key)?;
    let info = describe(cert, &chain[0])?;
    let now = SystemTime::now();
    if info.not_after < now {
        let ago = humantime::format_duration(Duration::from_secs(
            now.duration_since(info.not_after).map_or(0, |d| d.as_secs()),
        ));
        return Err(TlsError::at(cert, format!("the certificate expired {ago} ago")));
    }
    let certified = CertifiedKey::from_der(chain, private_key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError(format!("{}: the private key in {} is not this certificate's key", cert.display(), key.display()))
        }
        other => TlsError::at(key, format!("unusable private key: {other}")),
    })?;
    Ok(LoadedCertificate { key: Arc::new(certified), info })
}

/// Reads a leaf certificate's names and expiry.
fn describe(path: &Path, leaf: &CertificateDer<'_>) -> Result<CertificateInfo, TlsError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) =
        X509Certificate::from_der(leaf).map_err(|e| TlsError::at(path, format!("not an X.509 certificate: {e}")))?;
    let mut names: Vec<String> = match parsed.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        // Old certificates name their host only in the subject's common name.
        names.extend(
            parsed.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(|cn| cn.to_ascii_lowercase()),
        );
    }
    let not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0));
    Ok(CertificateInfo { path: path.to_path_buf(), names, not_after })
}

/// A fingerprint of files' contents (missing files included), to notice
/// when any of them changes.
fn fingerprint<'a>(paths: impl IntoIterator<Item = &'a Path>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        path.hash(&mut hasher);
        std::fs::read(path).ok().hash(&mut hasher);
    }
    hasher.finish()
}

/// `path` made absolute against `base` (the config file's directory).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// The TLS versions a side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

impl TlsVersion {
    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] = [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &BOTH,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

#[cfg(any(test, feature = "test-pki"))]
pub mod testing;
