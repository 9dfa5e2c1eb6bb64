//! Terminating TLS from clients: certificates chosen by SNI, ALPN, optional
//! client certificates, session resumption, and certificates that reload
//! without a restart.
//!
//! A listener's rustls `ServerConfig` is built whole from its files and
//! swapped as one value: a handshake uses the config it started with, so a
//! rotation never mixes an old certificate with a new CA, and connections
//! already established keep their session untouched. The session cache and
//! the ticket keys are carried over from one config to the next, so clients
//! resume across rotations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, StoresServerSessions, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::{CertificateInfo, TlsError, TlsVersion, fingerprint, load_certificate, provider, read_roots};

/// A listener's TLS settings (`tls:` of a listener in the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate chains with their keys; each serves the names it is valid
    /// for (or its `names`). The first also answers clients that send no
    /// name or one no certificate has, unless `unknown_sni` is `refuse`.
    pub certificates: Vec<CertificateConfig>,
    /// `default` (answer with the first certificate) or `refuse` (fail the
    /// handshake) for clients with no SNI or an unknown name.
    #[serde(default)]
    pub unknown_sni: UnknownSni,
    /// Ask clients for a certificate and verify it against a CA bundle (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuthConfig>,
    /// Protocols offered by ALPN, in order of preference.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<AlpnProtocol>,
    /// The oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`.
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Let clients resume sessions (tickets and a session cache: a returning
    /// client skips the certificate and key exchange). `false`: every
    /// connection pays a full handshake (what some policies ask, for
    /// forward secrecy of tickets; and what the handshake benchmark measures).
    #[serde(default = "default_true")]
    pub session_resumption: bool,
}

fn default_alpn() -> Vec<AlpnProtocol> {
    vec![AlpnProtocol::H2, AlpnProtocol::Http11]
}

/// One certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// The chain: the certificate first, then its intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The SNI names it serves (`*.example.com` for a wildcard); unset: the
    /// names the certificate is valid for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// What to do with a client whose SNI no certificate has (or that sends none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownSni {
    /// Answer with the first certificate.
    #[default]
    Default,
    /// Fail the handshake (`unrecognized_name`).
    Refuse,
}

/// Client certificate verification (mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub ca: PathBuf,
    /// Refuse clients without a certificate; `false`: verify one if sent.
    #[serde(default = "default_true")]
    pub required: bool,
}

fn default_true() -> bool {
    true
}

/// A protocol offered by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlpnProtocol {
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http11,
}

impl AlpnProtocol {
    fn id(self) -> &'static [u8] {
        match self {
            AlpnProtocol::H2 => b"h2",
            AlpnProtocol::Http11 => b"http/1.1",
        }
    }
}

impl ListenerTlsConfig {
    /// The same settings with every path made absolute against `base`.
    pub fn resolved(mut self, base: &Path) -> ListenerTlsConfig {
        for certificate in &mut self.certificates {
            certificate.cert = super::resolve_path(base, &certificate.cert);
            certificate.key = super::resolve_path(base, &certificate.key);
        }
        if let Some(auth) = &mut self.client_auth {
            auth.ca = super::resolve_path(base, &auth.ca);
        }
        self
    }

    /// Every file these settings read.
    fn files(&self) -> impl Iterator<Item = &Path> {
        self.certificates
            .iter()
            .flat_map(|c| [c.cert.as_path(), c.key.as_path()])
            .chain(self.client_auth.iter().map(|auth| auth.ca.as_path()))
    }

    /// Loads and checks every file (see [`super::load_certificate`]); what
    /// `veer check` and a reload run before anything changes.
    pub fn load(&self) -> Result<Vec<CertificateInfo>, TlsError> {
        Ok(Certificates::load(self)?.infos)
    }
}

/// The certificates of one listener, by the names they serve.
#[derive(Debug)]
struct Certificates {
    keys: Vec<Arc<CertifiedKey>>,
    infos: Vec<CertificateInfo>,
    /// Exact names, lower case, to an index into `keys`.
    exact: HashMap<String, usize>,
    /// `*.example.com` as `example.com`.
    wildcard: HashMap<String, usize>,
    refuse_unknown: bool,
}

impl Certificates {
    fn load(config: &ListenerTlsConfig) -> Result<Certificates, TlsError> {
        if config.certificates.is_empty() {
            return Err(TlsError("tls.certificates: needs at least one certificate".to_string()));
        }
        let mut certificates = Certificates {
            keys: Vec::new(),
            infos: Vec::new(),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            refuse_unknown: config.unknown_sni == UnknownSni::Refuse,
        };
        for (index, configured) in config.certificates.iter().enumerate() {
            let loaded = load_certificate(&configured.cert, &configured.key)?;
            let names = if configured.names.is_empty() {
                loaded.info.names.clone()
            } else {
                configured.names.iter().map(|n| n.to_ascii_lowercase()).collect()
            };
            for name in names {
                let name = name.trim_end_matches('.').to_string();
                // The first certificate to claim a name keeps it.
                match name.strip_prefix("*.") {
                    Some(parent) => certificates.wildcard.entry(parent.to_string()).or_insert(index),
                    None => certificates.exact.entry(name).or_insert(index),
                };
            }
            certificates.keys.push(loaded.key);
            certificates.infos.push(loaded.info);
        }
        Ok(certificates)
    }

    /// The certificate for `sni`: its exact name, else a wildcard one label
    /// up, else the default (the first) unless unknown names are refused.
    fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let found = sni.and_then(|sni| {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            self.exact
                .get(&sni)
                .or_else(|| sni.split_once('.').and_then(|(_, parent)| self.wildcard.get(parent)))
                .copied()
        });
        match found {
            Some(index) => self.keys.get(index),
            None if self.refuse_unknown => None,
            None => self.keys.first(),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name()).cloned()
    }
}

/// What a listener serves now: its rustls config and the certificates in it.
#[derive(Debug)]
struct Active {
    config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
    settings: ListenerTlsConfig,
    fingerprint: u64,
}

/// Settings loaded by [`ListenerTls::prepare`], not yet served.
#[derive(Debug)]
pub struct PreparedTls(Active);

/// One listener's TLS: accepts handshakes with the config of the moment.
pub struct ListenerTls {
    active: ArcSwap<Active>,
    /// Carried across rotations so sessions resume.
    sessions: Arc<dyn StoresServerSessions>,
    tickets: Arc<dyn ProducesTickets>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls").field("certificates", &self.certificates()).finish_non_exhaustive()
    }
}

/// How a client's TLS handshake ended (`veer_tls_handshakes_total`'s `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    /// A full handshake.
    Full,
    /// A resumed session.
    Resumed,
    /// Failed, for this reason.
    Failed(HandshakeFailure),
}

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No certificate for the client's SNI, and unknown names are refused.
    UnknownSni,
    /// mTLS: the client sent no certificate.
    NoClientCertificate,
    /// mTLS: the client's certificate did not verify.
    BadClientCertificate,
    /// No protocol version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// The client sent an alert (it did not trust veer's certificate, say).
    ClientAlert,
    /// Not TLS, or broken TLS (plain HTTP to an HTTPS port).
    Protocol,
    /// The client took too long.
    Timeout,
    /// The client closed the connection.
    Closed,
}

impl HandshakeResult {
    /// All results, for registering the metric's series.
    pub const ALL: [HandshakeResult; 10] = [
        HandshakeResult::Full,
        HandshakeResult::Resumed,
        HandshakeResult::Failed(HandshakeFailure::UnknownSni),
        HandshakeResult::Failed(HandshakeFailure::NoClientCertificate),
        HandshakeResult::Failed(HandshakeFailure::BadClientCertificate),
        HandshakeResult::Failed(HandshakeFailure::Incompatible),
        HandshakeResult::Failed(HandshakeFailure::ClientAlert),
        HandshakeResult::Failed(HandshakeFailure::Protocol),
        HandshakeResult::Failed(HandshakeFailure::Timeout),
        HandshakeResult::Failed(HandshakeFailure::Closed),
    ];

    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeResult::Full => "full",
            HandshakeResult::Resumed => "resumed",
            HandshakeResult::Failed(failure) => match failure {
                HandshakeFailure::UnknownSni => "unknown_sni",
                HandshakeFailure::NoClientCertificate => "no_client_certificate",
                HandshakeFailure::BadClientCertificate => "bad_client_certificate",
                HandshakeFailure::Incompatible => "incompatible",
                HandshakeFailure::ClientAlert => "client_alert",
                HandshakeFailure::Protocol => "protocol",
                HandshakeFailure::Timeout => "timeout",
                HandshakeFailure::Closed => "closed",
            },
        }
    }
}

/// What a client's established TLS session says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSession {
    /// The SNI it asked for.
    pub server_name: Option<String>,
    /// Whether the session was resumed.
    pub resumed: bool,
}

impl ListenerTls {
    /// Loads `config`'s files (see [`ListenerTlsConfig::load`]).
    pub fn new(config: &ListenerTlsConfig) -> Result<ListenerTls, TlsError> {
        let sessions: Arc<dyn StoresServerSessions> = rustls::server::ServerSessionMemoryCache::new(16_384);
        let tickets = rustls::crypto::aws_lc_rs::Ticketer::new()
            .map_err(|e| TlsError(format!("cannot make session ticket keys: {e}")))?;
        let active = build(config, &sessions, &tickets)?;
        Ok(ListenerTls { active: ArcSwap::from_pointee(active), sessions, tickets })
    }

    /// Serves `config` from the next handshake on, if its files load;
    /// otherwise the running certificates stay and the error says why.
    /// `Ok(false)` when nothing changed (same settings, same file contents).
    pub fn reload(&self, config: &ListenerTlsConfig) -> Result<bool, TlsError> {
        let prepared = self.prepare(config)?;
        let changed = prepared.is_some();
        if let Some(prepared) = prepared {
            self.install(prepared);
        }
        Ok(changed)
    }

    /// The first half of [`ListenerTls::reload`]: loads `config` without
    /// serving it yet (a config reload loads everything before it changes
    /// anything); `None` when nothing changed.
    pub fn prepare(&self, config: &ListenerTlsConfig) -> Result<Option<PreparedTls>, TlsError> {
        let current = self.active.load();
        if current.settings == *config && current.fingerprint == fingerprint(config.files()) {
            return Ok(None);
        }
        Ok(Some(PreparedTls(build(config, &self.sessions, &self.tickets)?)))
    }

    /// Serves what [`ListenerTls::prepare`] loaded from the next handshake on.
    pub fn install(&self, prepared: PreparedTls) {
        self.active.store(Arc::new(prepared.0));
    }

    /// Reloads the running settings if any of their files changed since
    /// they were loaded (the file watcher's step).
    pub fn reload_if_files_changed(&self) -> Result<bool, TlsError> {
        let settings = self.active.load().settings.clone();
        self.reload(&settings)
    }

    /// The certificates served now.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.active.load().certificates.infos.clone()
    }

    /// The settings in effect.
    pub fn settings(&self) -> ListenerTlsConfig {
        self.active.load().settings.clone()
    }

    /// Runs a client's handshake on `io` with the config of the moment.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, TlsSession), HandshakeFailure>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await.map_err(classify)?;
        let active = self.active.load_full();
        let server_name = start.client_hello().server_name().map(str::to_string);
        let unknown = active.certificates.lookup(server_name.as_deref()).is_none();
        let stream = start
            .into_stream(active.config.clone())
            .await
            .map_err(|error| if unknown { HandshakeFailure::UnknownSni } else { classify(error) })?;
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        Ok((stream, TlsSession { server_name, resumed }))
    }
}

/// A listener's rustls config from `settings`, sharing the session stores.
fn build(
    settings: &ListenerTlsConfig,
    sessions: &Arc<dyn StoresServerSessions>,
    tickets: &Arc<dyn ProducesTickets>,
) -> Result<Active, TlsError> {
    // Read before loading: a file that changes while being loaded is seen again next time.
    let fingerprint = fingerprint(settings.files());
    let certificates = Arc::new(Certificates::load(settings)?);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(settings.min_version.versions())
        .map_err(|e| TlsError(format!("tls.min_version: {e}")))?;
    let builder = match &settings.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let roots = Arc::new(read_roots(&auth.ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if auth.required { verifier } else { verifier.allow_unauthenticated() };
            let verifier = verifier.build().map_err(|e| TlsError::at(&auth.ca, format!("unusable CA bundle: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(certificates.clone());
    config.alpn_protocols = settings.alpn.iter().map(|p| p.id().to_vec()).collect();
    if settings.session_resumption {
        config.session_storage = sessions.clone();
        config.ticketer = tickets.clone();
    } else {
        // rustls's default ticketer makes no tickets; with no cache either, nothing resumes.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Active { config: Arc::new(config), certificates, settings: settings.clone(), fingerprint })
}

/// Why a handshake failed, from the error it failed with.
fn classify(error: std::io::Error) -> HandshakeFailure {
    use std::io::ErrorKind;
    if let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        return match tls {
            rustls::Error::NoCertificatesPresented => HandshakeFailure::NoClientCertificate,
            rustls::Error::InvalidCertificate(_) => HandshakeFailure::BadClientCertificate,
            rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => HandshakeFailure::Incompatible,
            rustls::Error::AlertReceived(_) => HandshakeFailure::ClientAlert,
            _ => HandshakeFailure::Protocol,
        };
    }
    match error.kind() {
        ErrorKind::TimedOut => HandshakeFailure::Timeout,
        ErrorKind::UnexpectedEof
        | ErrorKind::ConnectionReset
        | ErrorKind::BrokenPipe
        | ErrorKind::ConnectionAborted => HandshakeFailure::Closed,
        _ => HandshakeFailure::Protocol,
    }
}

/// A listener's TLS, replaced by reloads; empty: plain HTTP.
pub type ListenerTlsSlot = Arc<arc_swap::ArcSwapOption<ListenerTls>>;

/// Watches the files of the TLS in `slot` every `interval` and reloads them
/// when they change; a broken new pair is logged and refused, the old one
/// serves on. Ends when the slot is dropped (its listener is gone).
pub async fn watch(listener: String, slot: std::sync::Weak<arc_swap::ArcSwapOption<ListenerTls>>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(slot) = slot.upgrade() else { return };
        let Some(tls) = slot.load_full() else { continue };
        drop(slot);
        // Reading and parsing files blocks: off the async workers.
        let reloaded = tokio::task::spawn_blocking(move || tls.reload_if_files_changed()).await;
        match reloaded {
            Ok(Ok(true)) => tracing::info!(%listener, "TLS certificates reloaded from changed files"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::error!(%listener, %error, "TLS files changed but cannot be used; the running certificates stay")
            }
            Err(error) => tracing::error!(%listener, %error, "TLS reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::tls::testing::TestPki;

    fn certificate(pair: (PathBuf, PathBuf)) -> CertificateConfig {
        CertificateConfig { cert: pair.0, key: pair.1, names: Vec::new() }
    }

    fn config(certificates: Vec<CertificateConfig>) -> ListenerTlsConfig {
        ListenerTlsConfig {
            certificates,
            unknown_sni: UnknownSni::Default,
            client_auth: None,
            alpn: default_alpn(),
            min_version: TlsVersion::Tls12,
            session_resumption: true,
        }
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_default() {
        let pki = TestPki::new("sni-unit");
        let mut settings = config(vec![
            certificate(pki.server("a", &["a.example.com"], 30)),
            certificate(pki.server("b", &["b.example.com", "B2.example.com"], 30)),
            certificate(pki.server("wild", &["*.example.org"], 30)),
        ]);
        let certificates = Certificates::load(&settings).unwrap();
        let which = |sni: Option<&str>| {
            certificates.lookup(sni).map(|key| certificates.keys.iter().position(|k| Arc::ptr_eq(k, key)).unwrap())
        };
        assert_eq!(which(Some("a.example.com")), Some(0));
        assert_eq!(which(Some("b2.EXAMPLE.com.")), Some(1), "case and a trailing dot do not matter");
        assert_eq!(which(Some("x.example.org")), Some(2));
        assert_eq!(which(Some("y.x.example.org")), Some(0), "a wildcard covers one label only");
        assert_eq!(which(Some("unknown.test")), Some(0));
        assert_eq!(which(None), Some(0));
        settings.unknown_sni = UnknownSni::Refuse;
        let certificates = Certificates::load(&settings).unwrap();
        assert!(certificates.lookup(Some("unknown.test")).is_none());
        assert!(certificates.lookup(None).is_none());
        assert!(certificates.lookup(Some("x.example.org")).is_some());
    }

    #[test]
    fn broken_pairs_are_refused_with_the_file_named() {
        let pki = TestPki::new("broken-unit");
        let (cert, _) = pki.server("one", &["one.test"], 30);
        let (_, other_key) = pki.server("two", &["two.test"], 30);
        let mismatched = config(vec![CertificateConfig { cert: cert.clone(), key: other_key, names: vec![] }]);
        let error = ListenerTls::new(&mismatched).unwrap_err().to_string();
        assert!(error.contains("is not this certificate's key") && error.contains("one.pem"), "{error}");

        let expired = config(vec![certificate(pki.server("old", &["old.test"], -2))]);
        let error = ListenerTls::new(&expired).unwrap_err().to_string();
        assert!(error.contains("old.pem") && error.contains("expired"), "{error}");

        let missing = config(vec![CertificateConfig { cert: pki.dir().join("nope.pem"), key: cert, names: vec![] }]);
        let error = ListenerTls::new(&missing).unwrap_err().to_string();
        assert!(error.contains("nope.pem") && error.contains("cannot read"), "{error}");

        let (_, key) = pki.server("three", &["three.test"], 30);
        let not_a_cert = config(vec![CertificateConfig { cert: key.clone(), key, names: vec![] }]);
        let error = ListenerTls::new(&not_a_cert).unwrap_err().to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }

    #[test]
    fn a_reload_with_a_broken_pair_keeps_the_running_certificates() {
        let pki = TestPki::new("reload-unit");
        let settings = config(vec![certificate(pki.server("site", &["site.test"], 30))]);
        let tls = ListenerTls::new(&settings).unwrap();
        let before = tls.certificates();
        assert!(!tls.reload_if_files_changed().unwrap(), "nothing changed");
        // The key is replaced by another certificate's: a mismatch.
        let (_, other_key) = pki.server("other", &["other.test"], 30);
        std::fs::copy(&other_key, &settings.certificates[0].key).unwrap();
        assert!(tls.reload_if_files_changed().is_err());
        assert_eq!(tls.certificates(), before, "the old pair serves on");
        // A whole new pair for the same files is taken.
        pki.server("site", &["site.test", "www.site.test"], 60);
        assert!(tls.reload_if_files_changed().unwrap());
        assert_eq!(tls.certificates()[0].names, ["site.test", "www.site.test"]);
    }
}
