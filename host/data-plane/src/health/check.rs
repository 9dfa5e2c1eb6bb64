//! The active health checker: one task per backend sends the configured HTTP
//! request, judges the answer, waits the interval (with jitter) and repeats.
//!
//! A check starts only after the previous one ended or timed out, so checks of
//! a slow backend never pile up. Checks use their own connections (not the
//! data path's pool) and never touch the request path.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::transport::{PoolSettings, TlsSlot, Transport};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{CheckConfig, Health};
use crate::clock;
use crate::pool::{BackendProtocol, BackendState};
use veer_core::rng::SplitMix64;

/// Most body bytes read when `expect_body` is set.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Sends checks as configured; cheap to clone (one per backend task).
#[derive(Clone)]
pub struct Checker {
    config: Arc<CheckConfig>,
    method: Method,
    transport: Arc<Transport<Empty<Bytes>>>,
    /// The group's TLS towards its backends, read at each check.
    tls: TlsSlot,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Checker {
    /// A checker for `config` (validated: an invalid method falls back to
    /// GET), over TLS when `tls` holds settings.
    pub fn new(config: &CheckConfig, tls: TlsSlot) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder.pool_timer(TokioTimer::new()).timer(TokioTimer::new()).pool_max_idle_per_host(1);
        // One connection per backend is enough: checks never overlap.
        let settings = PoolSettings {
            connect_timeout: config.timeout,
            idle_timeout: Duration::from_secs(90),
            max_idle_per_backend: 1,
        };
        Checker {
            method: Method::from_bytes(config.method.as_bytes()).unwrap_or(Method::GET),
            config: Arc::new(config.clone()),
            transport: Arc::new(Transport::new(builder, connector, settings)),
            tls,
        }
    }

    /// Checks `backend` until `health` is gone or no longer tracks it (it was
    /// removed), or the task is aborted.
    pub async fn run(self, health: Weak<Health>, backend: Arc<BackendState>) {
        let mut rng = SplitMix64::new(u64::from(backend.id) ^ seed_from_clock());
        loop {
            tokio::time::sleep(jittered(self.config.interval, self.config.jitter, &mut rng)).await;
            if !health.upgrade().is_some_and(|health| health.tracks(backend.id)) {
                return;
            }
            let verdict = self.check(&backend).await;
            let Some(health) = health.upgrade() else { return };
            health.record_check(backend.id, verdict, clock::now());
        }
    }

    /// One check: `Ok` if the answer passes, else why not.
    pub async fn check(&self, backend: &BackendState) -> Result<(), String> {
        match tokio::time::timeout(self.config.timeout, self.exchange(backend)).await {
            Ok(verdict) => verdict,
            Err(_) => Err(format!("no complete answer within {:?}", self.config.timeout)),
        }
    }

    async fn exchange(&self, backend: &BackendState) -> Result<(), String> {
        let uri = format!("http://{}{}", backend.spec.address, self.config.path);
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri.parse().map_err(|e| format!("check URI {uri}: {e}"))?;
        if backend.spec.protocol == BackendProtocol::Http1 {
            let host = self.config.host.clone().unwrap_or_else(|| backend.spec.address.to_string());
            let host = HeaderValue::from_str(&host).map_err(|e| format!("check Host header {host:?}: {e}"))?;
            request.headers_mut().insert(header::HOST, host);
        }
        request.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("veer-health-check"));
        let tls = self.tls.load_full();
        let response =
            self.transport.request(backend.spec.protocol, tls.as_ref(), request).await.map_err(|e| root_cause(&e))?;
        let status = response.status().as_u16();
        if !(self.config.expect_status_min..=self.config.expect_status_max).contains(&status) {
            return Err(format!(
                "status {status}, expected {}..={}",
                self.config.expect_status_min, self.config.expect_status_max
            ));
        }
        if let Some(expected) = &self.config.expect_body {
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            if !String::from_utf8_lossy(&body).contains(expected.as_str()) {
                return Err(format!("body does not contain {expected:?}"));
            }
        }
        Ok(())
    }
}

/// `interval` stretched or shrunk by a uniform random share within ±`jitter`.
fn jittered(interval: Duration, jitter: f64, rng: &mut SplitMix64) -> Duration {
    interval.mul_f64((1.0 + jitter * (2.0 * rng.next_f64() - 1.0)).max(0.0))
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::pool::{BackendSpec, Pool};

    /// A one-connection-at-a-time server that answers every request with
    /// `status` and `body`, and records the request heads it saw.
    async fn server(status: u16, body: &'static str) -> (SocketAddr, Arc<parking_lot::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = vec![0; 4096];
                let n = stream.read(&mut head).await.unwrap_or(0);
                log.lock().push(String::from_utf8_lossy(&head[..n]).to_lowercase());
                let answer =
                    format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (address, seen)
    }

    fn backend(address: SocketAddr) -> Arc<BackendState> {
        Pool::new(vec![BackendSpec::new("b", address)], Arc::new(crate::pool::Unrecorded)).0.get(1).unwrap()
    }

    #[tokio::test]
    async fn a_check_sends_the_configured_request_and_judges_status_and_body() {
        let (address, seen) = server(200, "status: ok").await;
        let config = CheckConfig {
            method: "HEAD".into(),
            path: "/ready?deep=1".into(),
            host: Some("svc.internal".into()),
            ..CheckConfig::default()
        };
        let b = backend(address);
        assert_eq!(Checker::new(&config, TlsSlot::default()).check(&b).await, Ok(()));
        let head = seen.lock()[0].clone();
        assert!(head.starts_with("head /ready?deep=1 http/1.1"), "{head}");
        assert!(head.contains("host: svc.internal"), "{head}");

        let config = CheckConfig { expect_body: Some("status: ok".into()), ..CheckConfig::default() };
        assert_eq!(Checker::new(&config, TlsSlot::default()).check(&b).await, Ok(()));
        let config = CheckConfig { expect_body: Some("ready".into()), ..CheckConfig::default() };
        assert!(
            Checker::new(&config, TlsSlot::default()).check(&b).await.unwrap_err().contains("body does not contain")
        );
        let config = CheckConfig { expect_status_min: 204, expect_status_max: 204, ..CheckConfig::default() };
        assert!(Checker::new(&config, TlsSlot::default()).check(&b).await.unwrap_err().starts_with("status 200"));
    }

    #[tokio::test]
    async fn a_check_fails_on_a_5xx_a_refused_connection_and_a_timeout() {
        let (address, _) = server(503, "").await;
        let checker = Checker::new(
            &CheckConfig { timeout: Duration::from_millis(200), ..CheckConfig::default() },
            TlsSlot::default(),
        );
        assert!(checker.check(&backend(address)).await.unwrap_err().contains("503"));
        // A listener that never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let error = checker.check(&backend(silent.local_addr().unwrap())).await.unwrap_err();
        assert!(error.contains("within"), "{error}");
        drop(silent);
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(checker.check(&backend(refused)).await.is_err());
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let mut rng = SplitMix64::new(1);
        let interval = Duration::from_secs(2);
        for _ in 0..1000 {
            let d = jittered(interval, 0.1, &mut rng);
            assert!(d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200), "{d:?}");
        }
        assert_eq!(jittered(interval, 0.0, &mut rng), interval);
    }
}
