//! The dashboard: a page the admin listener serves at `GET /` (one embedded
//! file, no CDN), and the live stream it draws from, `GET /events`
//! (server-sent events), which scripts can read too.
//!
//! Once a second the stream sends `stats`: every upstream with its picker
//! (faults, fallbacks, swaps) and every backend with its state, EWMA
//! latency, in-flight count, requests per second, error rate and share of
//! its group's traffic over the last second, and the whole proxy's requests
//! per second, p50, p99 and error rate. Between two readings it also sends
//! what changed, one event each: `eligibility`, `breaker`, `ejection`,
//! `drain`, `membership`, `swap`, `trial` (a candidate picker started, replaced or ended) and `reload`. The changes are found by
//! comparing readings, so no component needs a hook, and one second is the
//! resolution.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::config::reload::Reloader;
use veer_data_plane::health::BreakerPhase;
use veer_data_plane::proxy::Proxy;

/// The page, with its script and style inline.
pub const PAGE: &str = include_str!("index.html");

/// How often `stats` is sent and changes are looked for.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The stream's producer: one reading per interval, sent to every subscriber.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<Bytes>,
    /// The last `stats`, sent first to a new subscriber.
    last: parking_lot::Mutex<Option<Bytes>>,
}

/// One backend as read at one moment.
#[derive(Debug, Clone)]
struct BackendReading {
    address: String,
    requests: u64,
    failures: u64,
    eligible: bool,
    healthy: bool,
    breaker: BreakerPhase,
    ejected: bool,
    drained: bool,
    in_flight: u32,
    ewma_ms: f64,
    weight: u32,
}

/// One group's picker as read at one moment.
#[derive(Debug, Clone)]
struct PickerReading {
    source: String,
    swaps: u64,
    /// The candidate on trial (as `source`), if any.
    candidate: Option<String>,
}

/// Everything compared between two readings.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    requests: u64,
    errors: u64,
    latency: Vec<(f64, u64)>,
    backends: BTreeMap<(String, String), BackendReading>,
    pickers: BTreeMap<String, PickerReading>,
    reloads: (u64, u64),
}

impl Events {
    /// A stream nobody reads yet.
    pub fn new() -> Arc<Events> {
        let (sender, _) = broadcast::channel(64);
        Arc::new(Events { sender, last: parking_lot::Mutex::default() })
    }

    /// Reads `proxy` every [`INTERVAL`] and sends what it found, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        proxy: Arc<Proxy>,
        reloader: Arc<Reloader>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut ticker = tokio::time::interval(INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = read(&proxy, &reloader);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticker.tick() => {}
            }
            let now = read(&proxy, &reloader);
            for (name, data) in changes(&previous, &now) {
                let _ = self.sender.send(frame(name, &data));
            }
            let stats = frame("stats", &stats(&proxy, &previous, &now));
            *self.last.lock() = Some(stats.clone());
            let _ = self.sender.send(stats);
            previous = now;
        }
    }

    /// A new subscriber's stream: the last `stats` at once, then everything
    /// sent from now on. A subscriber too slow to keep up misses events
    /// rather than holding memory.
    pub fn subscribe(&self) -> EventStream {
        let mut events = self.sender.subscribe();
        let (sender, receiver) = mpsc::channel(16);
        let first = self.last.lock().clone();
        tokio::spawn(async move {
            // A reconnecting EventSource waits 2 s.
            if sender.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err() {
                return;
            }
            if let Some(first) = first
                && sender.send(first).await.is_err()
            {
                return;
            }
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if sender.send(event).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        EventStream { receiver }
    }
}

/// The body of a `GET /events` answer.
#[derive(Debug)]
pub struct EventStream {
    receiver: mpsc::Receiver<Bytes>,
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.receiver.poll_recv(cx).map(|event| event.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }
}

/// One server-sent event.
fn frame(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn read(proxy: &Proxy, reloader: &Reloader) -> Reading {
    let metrics = proxy.metrics();
    let by_class = metrics.requests_by_class();
    let mut backends = BTreeMap::new();
    let mut pickers = BTreeMap::new();
    for group in proxy.routes().upstreams() {
        let health: BTreeMap<_, _> = group.health.snapshot().into_iter().map(|h| (h.id, h)).collect();
        for backend in group.pool.all() {
            let live = backend.snapshot();
            let Some(health) = health.get(&live.id) else { continue };
            let reading = BackendReading {
                address: live.address,
                requests: live.requests,
                failures: live.failures,
                eligible: health.eligible,
                healthy: health.healthy,
                breaker: health.breaker,
                ejected: health.ejected_for_ms.is_some(),
                drained: health.drained,
                in_flight: live.in_flight,
                ewma_ms: live.ewma_latency_ms,
                weight: health.effective_weight,
            };
            backends.insert((group.name.to_string(), live.name), reading);
        }
        let describe =
            |info: &veer_plugin_runtime::PickerInfo| format!("{} {} ({})", info.name, info.version, info.source);
        let source = describe(group.slot.current().info());
        let candidate = group.slot.trial().map(|trial| describe(&trial.candidate));
        pickers.insert(group.name.to_string(), PickerReading { source, swaps: group.slot.swaps(), candidate });
    }
    Reading {
        at: Instant::now(),
        requests: by_class.iter().map(|(_, count)| count).sum(),
        errors: by_class.iter().filter(|(class, _)| *class == "5xx").map(|(_, count)| count).sum(),
        latency: metrics.request_duration_buckets(),
        backends,
        pickers,
        reloads: (reloader.reloads(), reloader.rejected()),
    }
}

/// The discrete changes from `before` to `now`.
fn changes(before: &Reading, now: &Reading) -> Vec<(&'static str, Value)> {
    let mut events = Vec::new();
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    for ((upstream, name), b) in &now.backends {
        let Some(a) = before.backends.get(&(upstream.clone(), name.clone())) else {
            events.push((
                "membership",
                json!({"time": at, "upstream": upstream, "backend": name, "change": "added", "address": b.address}),
            ));
            continue;
        };
        let event = |change: &str| json!({"time": at, "upstream": upstream, "backend": name, "change": change});
        if a.breaker != b.breaker {
            events.push(("breaker", event(&format!("{} -> {}", phase(a.breaker), phase(b.breaker)))));
        }
        if a.ejected != b.ejected {
            events.push(("ejection", event(if b.ejected { "ejected" } else { "returned" })));
        }
        if a.drained != b.drained {
            events.push(("drain", event(if b.drained { "drained" } else { "undrained" })));
        }
        if a.eligible != b.eligible {
            let why = state(b);
            events.push(("eligibility", event(if b.eligible { "eligible" } else { why })));
        }
    }
    for (upstream, name) in before.backends.keys().filter(|key| !now.backends.contains_key(*key)) {
        events.push(("membership", json!({"time": at, "upstream": upstream, "backend": name, "change": "removed"})));
    }
    for (upstream, picker) in &now.pickers {
        if let Some(old) = before.pickers.get(upstream)
            && (old.swaps != picker.swaps || old.source != picker.source)
        {
            events.push(("swap", json!({"time": at, "upstream": upstream, "from": old.source, "to": picker.source})));
        }
        if let Some(old) = before.pickers.get(upstream)
            && old.candidate != picker.candidate
        {
            let event = json!({"time": at, "upstream": upstream, "from": old.candidate, "to": picker.candidate});
            events.push(("trial", event));
        }
    }
    if now.reloads.0 > before.reloads.0 {
        events.push(("reload", json!({"time": at, "result": "applied", "reloads": now.reloads.0})));
    }
    if now.reloads.1 > before.reloads.1 {
        events.push(("reload", json!({"time": at, "result": "refused", "refused": now.reloads.1})));
    }
    events
}

/// A breaker phase as the API spells it (`half-open`).
fn phase(phase: BreakerPhase) -> String {
    json!(phase).as_str().unwrap_or_default().to_string()
}

/// A backend's state in one word, the most telling first.
fn state(b: &BackendReading) -> &'static str {
    if b.drained {
        "drained"
    } else if b.ejected {
        "ejected"
    } else if b.breaker == BreakerPhase::Open {
        "breaker open"
    } else if !b.healthy {
        "unhealthy"
    } else if b.eligible {
        "eligible"
    } else {
        "ineligible"
    }
}

/// The `stats` event: rates over the interval from `before` to `now`.
fn stats(proxy: &Proxy, before: &Reading, now: &Reading) -> Value {
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let requests = now.requests.saturating_sub(before.requests);
    let errors = now.errors.saturating_sub(before.errors);
    let window: Vec<(f64, u64)> = now
        .latency
        .iter()
        .zip(&before.latency)
        .map(|((bound, count), (_, earlier))| (*bound, count.saturating_sub(*earlier)))
        .collect();
    let mut upstreams = Vec::new();
    for group in proxy.routes().upstreams() {
        let picker = group.slot.current();
        let lifetime = group.slot.lifetime_stats();
        let rows: Vec<(&String, &BackendReading, u64, u64)> = now
            .backends
            .iter()
            .filter(|((upstream, _), _)| **upstream == *group.name)
            .map(|((_, name), b)| {
                let a = before.backends.get(&(group.name.to_string(), name.clone()));
                let sent = b.requests.saturating_sub(a.map_or(b.requests, |a| a.requests));
                let failed = b.failures.saturating_sub(a.map_or(b.failures, |a| a.failures));
                (name, b, sent, failed)
            })
            .collect();
        let group_sent: u64 = rows.iter().map(|(_, _, sent, _)| sent).sum();
        let backends: Vec<Value> = rows
            .iter()
            .map(|(name, b, sent, failed)| {
                json!({
                    "name": name, "address": b.address, "state": state(b), "eligible": b.eligible,
                    "healthy": b.healthy, "breaker": phase(b.breaker),
                    "ejected": b.ejected, "drained": b.drained, "weight": b.weight,
                    "ewma_ms": round(b.ewma_ms), "in_flight": b.in_flight,
                    "requests_per_second": round(*sent as f64 / seconds),
                    "error_rate": ratio(*failed, *sent), "share": ratio(*sent, group_sent),
                })
            })
            .collect();
        upstreams.push(json!({
            "name": &*group.name,
            "picker": {
                "name": picker.info().name, "version": picker.info().version, "source": picker.info().source,
                "health": picker.health(), "faults": lifetime.traps + lifetime.deadlines + lifetime.invalid_answers + lifetime.empty_answers,
                "fallbacks": lifetime.fallbacks, "swaps": group.slot.swaps(),
            },
            "backends": backends,
        }));
    }
    json!({
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "requests_per_second": round(requests as f64 / seconds),
        "error_rate": ratio(errors, requests),
        "p50_ms": quantile(&window, 0.5).map(|s| round(s * 1e3)),
        "p99_ms": quantile(&window, 0.99).map(|s| round(s * 1e3)),
        "in_flight": proxy.metrics().in_flight(),
        "upstreams": upstreams,
    })
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { round(part as f64 / whole as f64) }
}

/// The `q` quantile of a window's cumulative buckets, interpolated within
/// its bucket (as Prometheus's `histogram_quantile` does); `None` for an
/// empty window.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let within = (count - lower.1).max(1) as f64;
            return Some(lower.0 + (bound - lower.0) * (rank - lower.1 as f64) / within);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let buckets = [(0.01, 50), (0.1, 90), (1.0, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.01));
        let p99 = quantile(&buckets, 0.99).unwrap_or_default();
        assert!((p99 - 0.91).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 0)], 0.5), None);
        assert_eq!(quantile(&[(0.01, 0), (f64::INFINITY, 3)], 0.5), Some(0.01), "past the last bound: the bound");
    }
}
