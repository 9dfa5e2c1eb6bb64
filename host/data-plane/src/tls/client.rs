//! Speaking TLS to backends: an upstream's `tls` settings become one rustls
//! client config per backend protocol (ALPN `http/1.1` or `h2`), used by the
//! data path's pooled connections and the health checks alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

use super::{TlsError, TlsVersion, provider, read_certificates, read_private_key, read_roots};
use crate::pool::BackendProtocol;

/// An upstream's TLS towards its backends (`tls:` of an upstream).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendTlsConfig {
    /// The name sent as SNI and verified in the backends' certificates;
    /// unset: each backend's address (an IP address, verified against the
    /// certificate's IP names, and no SNI sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM bundle of the CAs the backends' certificates must chain to;
    /// unset: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// A client certificate chain to present (mTLS to backends).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Its private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// The oldest TLS version accepted: `"1.2"` (the default) or `"1.3"`.
    pub min_version: TlsVersion,
    /// Accept any certificate from the backends: no protection against an
    /// impostor. For testing only; logged loudly at every load.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl BackendTlsConfig {
    /// The same settings with every path made absolute against `base`.
    pub fn resolved(mut self, base: &Path) -> BackendTlsConfig {
        for path in [&mut self.ca, &mut self.client_cert, &mut self.client_key].into_iter().flatten() {
            *path = super::resolve_path(base, path);
        }
        self
    }
}

/// An upstream's TLS, loaded: what its connections to backends use.
pub struct BackendTls {
    /// Unique per load: pooled connections are kept per loaded settings, so
    /// a reload that changes them never reuses a connection made under the
    /// old ones.
    id: u64,
    settings: BackendTlsConfig,
    server_name: Option<ServerName<'static>>,
    /// Without ALPN: the connector offers the protocol it is made for.
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls").field("id", &self.id).field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings
    }
}

impl BackendTls {
    /// Loads `settings`' files; `upstream` names the group in the warning
    /// an insecure setting logs.
    pub fn new(upstream: &str, settings: &BackendTlsConfig) -> Result<BackendTls, TlsError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let server_name = settings
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|_| TlsError(format!("tls.server_name: {name:?} is not a DNS name or IP address")))
            })
            .transpose()?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(settings.min_version.versions())
            .map_err(|e| TlsError(format!("tls.min_version: {e}")))?;
        let builder = if settings.insecure_skip_verify {
            tracing::warn!(
                %upstream,
                "tls.insecure_skip_verify is set: backends' certificates are NOT verified; anyone on the path can impersonate them"
            );
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification))
        } else {
            let roots = match &settings.ca {
                Some(ca) => read_roots(ca)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let config = match (&settings.client_cert, &settings.client_key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert)?;
                let private_key = read_private_key(key)?;
                builder.with_client_auth_cert(chain, private_key).map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => TlsError(format!(
                        "{}: the private key in {} is not this certificate's key",
                        cert.display(),
                        key.display()
                    )),
                    other => TlsError::at(key, format!("unusable client key: {other}")),
                })?
            }
            _ => return Err(TlsError("tls: client_cert and client_key go together".to_string())),
        };
        Ok(BackendTls {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            settings: settings.clone(),
            server_name,
            config: Arc::new(config),
        })
    }

    /// Unique per load (see the field).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The settings it was loaded from.
    pub fn settings(&self) -> &BackendTlsConfig {
        &self.settings
    }

    /// An HTTPS connector for `protocol` over `http` (the TCP connector with
    /// the data path's timeouts), offering it by ALPN (`http/1.1` or `h2`).
    pub fn connector(
        &self,
        protocol: BackendProtocol,
        http: hyper_util::client::legacy::connect::HttpConnector,
    ) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
        let config = self.config.as_ref().clone();
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_only();
        let builder = match &self.server_name {
            Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name.clone())),
            None => builder,
        };
        match protocol {
            BackendProtocol::Http1 => builder.enable_http1().wrap_connector(http),
            BackendProtocol::Http2 => builder.enable_http2().wrap_connector(http),
        }
    }
}

/// The system's trusted roots (`/etc/ssl/certs`, or `SSL_CERT_FILE`).
fn system_roots() -> Result<rustls::RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(TlsError(format!(
            "tls: no system CA certificates found{why}; install ca-certificates or set tls.ca"
        )));
    }
    Ok(roots)
}

/// Accepts any server certificate (`insecure_skip_verify`), while still
/// checking that the handshake is signed by the certificate's key.
#[derive(Debug)]
struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
