//! The active health checker: one task per backend sends the configured HTTP
//! request, judges the answer, waits the interval (with jitter) and repeats.
//!
//! A check starts only after the previous one ended or timed out, so checks of
//! a slow backend never pile up. Checks use their own connections (not the
//! data path's pool) and never touch the request path.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{CheckConfig, Health};
use crate::pool::{BackendProtocol, BackendState};
use crate::sim::SplitMix64;

/// Most body bytes read when `expect_body` is set.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Sends checks as configured; cheap to clone (one per backend task).
#[derive(Clone)]
pub struct Checker {
    config: Arc<CheckConfig>,
    method: Method,
    http1: Client<HttpConnector, Empty<Bytes>>,
    http2: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Checker {
    /// A checker for `config` (validated: an invalid method falls back to GET).
    pub fn new(config: &CheckConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let client = |http2_only: bool| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_max_idle_per_host(1)
                .http2_only(http2_only)
                .build(connector.clone())
        };
        Checker {
            method: Method::from_bytes(config.method.as_bytes()).unwrap_or(Method::GET),
            config: Arc::new(config.clone()),
            http1: client(false),
            http2: client(true),
        }
    }

    /// Checks `backend` until `health` is gone (or the task is aborted).
    pub async fn run(self, health: Weak<Health>, backend: Arc<BackendState>) {
        let mut rng = SplitMix64::new(u64::from(backend.id) ^ seed_from_clock());
        loop {
            tokio::time::sleep(jittered(self.config.interval, self.config.jitter, &mut rng)).await;
            let verdict = self.check(&backend).await;
            let Some(health) = health.upgrade() else { return };
            health.record_check(backend.id, verdict, Instant::now());
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
        let client = match backend.spec.protocol {
            BackendProtocol::Http1 => {
                let host = self.config.host.clone().unwrap_or_else(|| backend.spec.address.to_string());
                let host = HeaderValue::from_str(&host).map_err(|e| format!("check Host header {host:?}: {e}"))?;
                request.headers_mut().insert(header::HOST, host);
                &self.http1
            }
            BackendProtocol::Http2 => &self.http2,
        };
        request.headers_mut().insert(header::USER_AGENT, HeaderValue::from_static("veer-health-check"));
        let response = client.request(request).await.map_err(|e| root_cause(&e))?;
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
    use super::*;

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
