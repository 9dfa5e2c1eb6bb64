//! Access logs: one line per request, written by a thread of its own.
//!
//! The request path only fills a [`Record`] (a few clones, no formatting, no
//! I/O) and offers it to a bounded queue; when the writer falls behind the
//! record is dropped and counted, never waited for. Formatting and writing
//! happen on the writer thread, which flushes whenever the queue runs dry so
//! lines appear promptly at low rates and in large writes at high ones.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode};

use super::Metrics;

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
    pub backend: Option<Arc<str>>,
    /// The picker that routed it.
    pub picker: Option<Arc<str>>,
    /// Attempts made.
    pub attempts: u32,
    /// Client address.
    pub client: SocketAddr,
}

/// A running access log.
#[derive(Debug)]
pub struct AccessLog {
    sender: SyncSender<Record>,
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
        let (sender, receiver) = std::sync::mpsc::sync_channel(config.queue.max(1));
        let format = config.format;
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("veer-access-log".into())
            .spawn(move || write_lines(receiver, BufWriter::with_capacity(64 * 1024, out), format, &writer_metrics))?;
        Ok(AccessLog {
            sender,
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
        match self.sender.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.access_log_counts.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_lines(receiver: Receiver<Record>, mut out: impl Write, format: LogFormat, metrics: &Metrics) {
    let mut line = String::with_capacity(512);
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            match format {
                LogFormat::Json => json_line(&record, &mut line),
                LogFormat::Text => text_line(&record, &mut line),
            }
            if let Err(error) = out.write_all(line.as_bytes()) {
                tracing::warn!(%error, "access log write failed");
                metrics.access_log_counts.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                metrics.access_log_counts.written.fetch_add(1, Ordering::Relaxed);
            }
            next = receiver.try_recv().ok();
        }
        if let Err(error) = out.flush() {
            tracing::warn!(%error, "access log flush failed");
        }
    }
}

/// The record as one JSON object (fields in a fixed order, time first) and a newline.
pub fn json_line(record: &Record, line: &mut String) {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        time: String,
        request_id: &'a str,
        client: String,
        method: &'a str,
        path: &'a str,
        status: u16,
        bytes: u64,
        duration_ms: f64,
        backend: Option<&'a str>,
        picker: Option<&'a str>,
        attempts: u32,
    }
    let value = Line {
        time: humantime::format_rfc3339_millis(record.time).to_string(),
        request_id: record.request_id.to_str().unwrap_or("-"),
        client: record.client.to_string(),
        method: record.method.as_str(),
        path: record.target.as_str(),
        status: record.status.as_u16(),
        bytes: record.bytes,
        duration_ms: duration_ms(record.duration),
        backend: record.backend.as_deref(),
        picker: record.picker.as_deref(),
        attempts: record.attempts,
    };
    if let Ok(json) = serde_json::to_string(&value) {
        line.push_str(&json);
        line.push('\n');
    }
}

/// Milliseconds with microsecond precision (no float noise in the logs).
fn duration_ms(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

/// The record as `key=value` pairs and a newline.
pub fn text_line(record: &Record, line: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        line,
        "{} request_id={} client={} method={} path={:?} status={} bytes={} duration_ms={:.3} backend={} picker={} attempts={}",
        humantime::format_rfc3339_millis(record.time),
        record.request_id.to_str().unwrap_or("-"),
        record.client,
        record.method,
        record.target.as_str(),
        record.status.as_u16(),
        record.bytes,
        record.duration.as_secs_f64() * 1000.0,
        record.backend.as_deref().unwrap_or("-"),
        record.picker.as_deref().unwrap_or("-"),
        record.attempts,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: u16) -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: HeaderValue::from_static("abc"),
            method: Method::GET,
            target: http::uri::PathAndQuery::from_static("/a?b=c"),
            status: StatusCode::from_u16(status).unwrap(),
            bytes: 42,
            duration: Duration::from_micros(1500),
            backend: Some("b1".into()),
            picker: Some("round-robin".into()),
            attempts: 2,
            client: "127.0.0.1:5000".parse().unwrap(),
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut line = String::new();
        json_line(&record(200), &mut line);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(value["request_id"], "abc");
        assert_eq!(value["path"], "/a?b=c");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes"], 42);
        assert_eq!(value["duration_ms"], 1.5);
        assert_eq!(value["backend"], "b1");
        assert_eq!(value["picker"], "round-robin");
        assert_eq!(value["attempts"], 2);
        assert_eq!(value["client"], "127.0.0.1:5000");
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn text_lines_are_key_value_pairs() {
        let mut line = String::new();
        text_line(&record(502), &mut line);
        assert!(line.starts_with("2023-11-14T22:13:20.123Z request_id=abc"), "{line}");
        assert!(line.contains(" status=502 ") && line.contains(" backend=b1 "), "{line}");
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
        let counts = &metrics.access_log_counts;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counts.written.load(Ordering::Relaxed) + counts.dropped.load(Ordering::Relaxed) < 10_000 {
            assert!(std::time::Instant::now() < deadline, "the writer never caught up");
            std::thread::sleep(Duration::from_millis(10));
        }
        let written = counts.written.load(Ordering::Relaxed);
        assert!(written >= 1);
        // The writer flushes once its queue is empty, which it is for good now.
        while std::fs::read_to_string(&path).unwrap().lines().count() as u64 != written {
            assert!(std::time::Instant::now() < deadline, "written lines never reached the file");
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(&path);
    }
}
