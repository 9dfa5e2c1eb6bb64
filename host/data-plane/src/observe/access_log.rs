//! Access logs: one line per request, written by a thread of its own.
//!
//! The request path only fills a [`Record`] (reference-count bumps, no
//! formatting, no I/O) and pushes it onto a bounded queue; when the writer
//! falls behind the record is dropped and counted, never waited for. The
//! writer thread wakes on its own every [`WRITE_INTERVAL`] and writes what
//! has gathered in one go: a request never wakes it (a cross-thread wakeup
//! per request cost a third more CPU per request than the whole log line),
//! and lines reach the file within that interval.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::series::Registrar;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode};
use prometheus::IntCounter;

use super::Metrics;
use crate::pool::BackendState;
use veer_plugin_runtime::Picker;

/// Line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, for people reading a terminal.
    Text,
}

/// Which requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Every request (subject to `sample`).
    #[default]
    All,
    /// Only requests answered with a 5xx (never sampled away).
    Errors,
}

/// Access log settings.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Where lines go: a file path (appended to), or `-` for standard output.
    pub path: PathBuf,
    /// Line format.
    pub format: LogFormat,
    /// Which requests are logged.
    pub level: LogLevel,
    /// Share of non-error requests logged, 0.0 to 1.0; 5xx answers are always logged.
    pub sample: f64,
    /// Records that may wait for the writer; more are dropped and counted.
    pub queue: usize,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            path: PathBuf::from("-"),
            format: LogFormat::Json,
            level: LogLevel::All,
            sample: 1.0,
            queue: 65_536,
        }
    }
}

/// The access log's series, counted as records are written or dropped.
#[derive(Debug)]
pub struct AccessLogSeries {
    /// Records written.
    pub written: IntCounter,
    /// Records dropped because the writer fell behind (or a write failed).
    pub dropped: IntCounter,
}

impl AccessLogSeries {
    /// The series, registered.
    pub fn register(r: Registrar<'_>) -> Self {
        AccessLogSeries {
            written: r.counter("veer_access_log_records_total", "Access log records written."),
            dropped: r
                .counter("veer_access_log_dropped_total", "Access log records dropped because the writer fell behind."),
        }
    }
}

/// The names a routed request is counted and logged under: its route's and
/// the upstream's (both bounded by the config), as its picker hears them.
pub use veer_plugin_runtime::RouteNames as RouteLabels;

/// What is known of a finished request.
#[derive(Debug)]
pub struct Record {
    /// When the request arrived.
    pub time: SystemTime,
    /// Its request id.
    pub request_id: HeaderValue,
    /// Method.
    pub method: Method,
    /// Path and query as the client sent them.
    pub target: http::uri::PathAndQuery,
    /// Status sent to the client.
    pub status: StatusCode,
    /// Response body bytes sent.
    pub bytes: u64,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    /// The backend of the last attempt, if any was made.
    pub backend: Option<Arc<BackendState>>,
    /// The picker that routed it.
    pub picker: Option<Arc<Picker>>,
    /// Attempts made.
    pub attempts: u32,
    /// The side at fault for a failure, if one failed (`client:gone`, `backend:connect`...).
    pub fault: Option<crate::fault::Fault>,
    /// The route that took the request and the upstream it went to, if one did.
    pub route: Option<RouteLabels>,
    /// Client address.
    pub client: SocketAddr,
    /// The request's trace id (32 hex digits), when tracing is on.
    pub trace_id: Option<String>,
}

/// How often the writer thread writes what has gathered.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// What the request path and the writer thread share.
#[derive(Debug)]
struct Queue {
    records: parking_lot::Mutex<Vec<Record>>,
    capacity: usize,
    closed: AtomicBool,
}

/// A running access log; dropping it writes what is queued and stops the writer.
#[derive(Debug)]
pub struct AccessLog {
    queue: Arc<Queue>,
    writer: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    level: LogLevel,
    /// `sample` as a threshold on a 32-bit hash.
    sample_threshold: u64,
    sequence: AtomicU64,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Opens the destination and starts the writer thread.
    pub fn start(config: &AccessLogConfig, metrics: Arc<Metrics>) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = if config.path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(OpenOptions::new().create(true).append(true).open(&config.path)?)
        };
        let capacity = config.queue.max(1);
        let queue = Arc::new(Queue {
            records: parking_lot::Mutex::new(Vec::with_capacity(capacity.min(4096))),
            capacity,
            closed: AtomicBool::new(false),
        });
        let format = config.format;
        let (writer_queue, writer_metrics) = (queue.clone(), metrics.clone());
        let writer = std::thread::Builder::new().name("veer-access-log".into()).spawn(move || {
            write_lines(&writer_queue, BufWriter::with_capacity(64 * 1024, out), format, &writer_metrics)
        })?;
        Ok(AccessLog {
            queue,
            writer: parking_lot::Mutex::new(Some(writer)),
            level: config.level,
            sample_threshold: (config.sample.clamp(0.0, 1.0) * f64::from(u32::MAX)) as u64,
            sequence: AtomicU64::new(0),
            metrics,
        })
    }

    /// Whether a request that ended with `status` is to be logged.
    pub fn wants(&self, status: StatusCode) -> bool {
        if status.is_server_error() {
            return true;
        }
        if self.level == LogLevel::Errors {
            return false;
        }
        // A mixed sequence number spreads the sample evenly without a random source.
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) <= self.sample_threshold
    }

    /// Queues `record` for the writer, or drops and counts it if the queue is full.
    pub fn submit(&self, record: Record) {
        let mut records = self.queue.records.lock();
        if records.len() < self.queue.capacity {
            records.push(record);
        } else {
            drop(records);
            self.metrics.access_log.dropped.inc();
        }
    }
}

impl AccessLog {
    /// Writes what is queued and stops the writer; records submitted later
    /// are not written. At shutdown, once no request is left.
    pub fn finish(&self) {
        self.queue.closed.store(true, Ordering::Release);
        if let Some(writer) = self.writer.lock().take() {
            writer.thread().unpark();
            // The last batch is small: at most one interval's worth.
            let _ = writer.join();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write_lines(queue: &Queue, mut out: impl Write, format: LogFormat, metrics: &Metrics) {
    let mut formatter = LineFormatter::default();
    let mut batch = Vec::new();
    loop {
        let closing = queue.closed.load(Ordering::Acquire);
        std::mem::swap(&mut batch, &mut *queue.records.lock());
        let (mut written, mut failed) = (0, 0);
        for record in batch.drain(..) {
            match out.write_all(formatter.format(&record, format)) {
                Ok(()) => written += 1,
                Err(error) => {
                    if failed == 0 {
                        tracing::warn!(%error, "access log write failed");
                    }
                    failed += 1;
                }
            }
        }
        if written + failed > 0 {
            if let Err(error) = out.flush() {
                tracing::warn!(%error, "access log flush failed");
            }
            metrics.access_log.written.inc_by(written);
            metrics.access_log.dropped.inc_by(failed);
        }
        if closing {
            return;
        }
        std::thread::park_timeout(WRITE_INTERVAL);
    }
}

/// Turns records into lines, reusing its buffers; the writer thread's only
/// per-record work besides the write.
#[derive(Debug, Default)]
pub struct LineFormatter {
    /// The line being made.
    line: Vec<u8>,
    /// `record.time` to the second (`2026-11-23T16:54:25`), made once a second.
    second: Option<(u64, String)>,
    time: String,
    client: String,
}

impl LineFormatter {
    /// `record` as one line in `format`, newline included.
    pub fn format(&mut self, record: &Record, format: LogFormat) -> &[u8] {
        use std::fmt::Write as _;
        self.line.clear();
        self.set_time(record.time);
        self.client.clear();
        let _ = write!(self.client, "{}", record.client);
        match format {
            LogFormat::Json => self.json(record),
            LogFormat::Text => self.text(record),
        }
        self.line.push(b'\n');
        &self.line
    }

    fn set_time(&mut self, time: SystemTime) {
        let since_epoch = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second.as_ref().is_none_or(|(cached, _)| *cached != second) {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            self.second = Some((second, text.trim_end_matches('Z').to_string()));
        }
        self.time.clear();
        let prefix = self.second.as_ref().map_or("", |(_, text)| text.as_str());
        self.time.push_str(prefix);
        use std::fmt::Write as _;
        let _ = write!(self.time, ".{:03}Z", since_epoch.subsec_millis());
    }

    fn json(&mut self, record: &Record) {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: &'a str,
            request_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            trace_id: Option<&'a str>,
            client: &'a str,
            method: &'a str,
            path: &'a str,
            status: u16,
            bytes: u64,
            duration_ms: f64,
            route: Option<&'a str>,
            upstream: Option<&'a str>,
            backend: Option<&'a str>,
            picker: Option<&'a str>,
            attempts: u32,
            fault: Option<&'a str>,
        }
        let line = Line {
            time: &self.time,
            request_id: record.request_id.to_str().unwrap_or("-"),
            trace_id: record.trace_id.as_deref(),
            client: &self.client,
            method: record.method.as_str(),
            path: record.target.as_str(),
            status: record.status.as_u16(),
            bytes: record.bytes,
            duration_ms: duration_ms(record.duration),
            route: record.route.as_ref().map(|r| &*r.route),
            upstream: record.route.as_ref().map(|r| &*r.upstream),
            backend: record.backend.as_ref().map(|b| b.spec.name.as_str()),
            picker: record.picker.as_ref().map(|p| p.info().name.as_str()),
            attempts: record.attempts,
            fault: record.fault.map(|f| f.label()),
        };
        // Serialising plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.line, &line);
    }

    fn text(&mut self, record: &Record) {
        use std::io::Write as _;
        let _ = write!(
            self.line,
            "{} request_id={}{}{} client={} method={} path={:?} status={} bytes={} duration_ms={:.3} route={} upstream={} backend={} picker={} attempts={} fault={}",
            self.time,
            record.request_id.to_str().unwrap_or("-"),
            if record.trace_id.is_some() { " trace_id=" } else { "" },
            record.trace_id.as_deref().unwrap_or(""),
            self.client,
            record.method,
            record.target.as_str(),
            record.status.as_u16(),
            record.bytes,
            duration_ms(record.duration),
            record.route.as_ref().map_or("-", |r| &*r.route),
            record.route.as_ref().map_or("-", |r| &*r.upstream),
            record.backend.as_ref().map_or("-", |b| b.spec.name.as_str()),
            record.picker.as_ref().map_or("-", |p| p.info().name.as_str()),
            record.attempts,
            record.fault.map_or("-", |f| f.label()),
        );
    }
}

/// Milliseconds with microsecond precision (no float noise in the logs).
fn duration_ms(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Arc<BackendState> {
        let spec = crate::pool::BackendSpec {
            name: "b1".into(),
            address: "127.0.0.1:9001".parse().unwrap(),
            weight: 1,
            protocol: crate::pool::BackendProtocol::Http1,
            max_concurrent: None,
            labels: Default::default(),
        };
        crate::pool::Pool::new(vec![spec], Arc::new(crate::pool::Unrecorded)).0.get(1).unwrap()
    }

    fn picker() -> Arc<Picker> {
        static PICKER: std::sync::OnceLock<Arc<Picker>> = std::sync::OnceLock::new();
        PICKER
            .get_or_init(|| {
                let runtime = veer_plugin_runtime::PluginRuntime::new(veer_plugin_runtime::Limits::default()).unwrap();
                Arc::new(Picker::native_round_robin(runtime, veer_plugin_runtime::Membership::default()))
            })
            .clone()
    }

    fn record(status: u16) -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: HeaderValue::from_static("abc"),
            method: Method::GET,
            target: http::uri::PathAndQuery::from_static("/a?b=c"),
            status: StatusCode::from_u16(status).unwrap(),
            bytes: 42,
            duration: Duration::from_micros(1500),
            backend: Some(backend()),
            picker: Some(picker()),
            attempts: 2,
            fault: None,
            route: Some(RouteLabels { route: "api".into(), upstream: "default".into() }),
            client: "127.0.0.1:5000".parse().unwrap(),
            trace_id: None,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut formatter = LineFormatter::default();
        let line = String::from_utf8(formatter.format(&record(200), LogFormat::Json).to_vec()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["path"], "/a?b=c");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 42);
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["backend"], "b1");
        assert_eq!((&value["route"], &value["upstream"]), (&serde_json::json!("api"), &serde_json::json!("default")));
        assert_eq!(value["picker"], picker().info().name.as_str());
        assert_eq!(value["attempts"], 2);
        assert_eq!(value["client"], "127.0.0.1:5000");
        assert!(value.get("trace_id").is_none(), "no trace id without tracing");
        assert!(line.ends_with('\n'));
        let traced = Record { trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()), ..record(200) };
        let line = String::from_utf8(formatter.format(&traced, LogFormat::Json).to_vec()).unwrap();
        assert!(line.contains(r#""request_id":"abc","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736""#), "{line}");
        // The cached second moves on with the records.
        let later = Record { time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_001_007), ..record(200) };
        let line = String::from_utf8(formatter.format(&later, LogFormat::Json).to_vec()).unwrap();
        assert!(line.starts_with(r#"{"time":"2023-11-14T22:13:21.007Z""#), "{line}");
    }

    #[test]
    fn text_lines_are_key_value_pairs() {
        let mut formatter = LineFormatter::default();
        let line = String::from_utf8(formatter.format(&record(502), LogFormat::Text).to_vec()).unwrap();
        assert!(line.starts_with("2023-11-14T22:13:20.123Z request_id=abc"), "{line}");
        assert!(line.contains(" status=502 ") && line.contains(" backend=b1 "), "{line}");
        assert!(line.contains(" route=api upstream=default "), "{line}");
        assert!(line.contains(&format!(" picker={} ", picker().info().name)), "{line}");
        let traced = Record { trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()), ..record(200) };
        let line = String::from_utf8(formatter.format(&traced, LogFormat::Text).to_vec()).unwrap();
        assert!(line.contains("request_id=abc trace_id=4bf92f3577b34da6a3ce929d0e0e4736 client="), "{line}");
    }

    fn start_log(level: LogLevel, sample: f64, queue: usize) -> (AccessLog, Arc<Metrics>, PathBuf) {
        let path = std::env::temp_dir().join(format!("veer-access-{}-{level:?}-{sample}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let metrics = Arc::new(Metrics::new());
        let config = AccessLogConfig { path: path.clone(), level, sample, queue, ..AccessLogConfig::default() };
        (AccessLog::start(&config, metrics.clone()).unwrap(), metrics, path)
    }

    #[test]
    fn sampling_keeps_about_the_configured_share_and_every_error() {
        let (log, _, _) = start_log(LogLevel::All, 0.25, 16);
        let kept = (0..10_000).filter(|_| log.wants(StatusCode::OK)).count();
        assert!((2_000..3_000).contains(&kept), "kept {kept} of 10000 at 25%");
        assert!(log.wants(StatusCode::BAD_GATEWAY));
        let (errors_only, _, _) = start_log(LogLevel::Errors, 1.0, 16);
        assert!(!errors_only.wants(StatusCode::OK) && errors_only.wants(StatusCode::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn records_reach_the_file_and_a_full_queue_drops_instead_of_blocking() {
        let (log, metrics, path) = start_log(LogLevel::All, 1.0, 4);
        for _ in 0..10_000 {
            log.submit(record(200));
        }
        drop(log);
        let counts = &metrics.access_log;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counts.written.get() + counts.dropped.get() < 10_000 {
            assert!(std::time::Instant::now() < deadline, "the writer never caught up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let written = counts.written.get();
        assert!(written >= 1);
        // The writer flushes once its queue is empty, which it is for good now.
        while std::fs::read_to_string(&path).unwrap().lines().count() as u64 != written {
            assert!(std::time::Instant::now() < deadline, "written lines never reached the file");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&path);
    }
}
