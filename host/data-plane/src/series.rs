//! Making and registering Prometheus series: the toolkit each component uses
//! to declare its own series (`pool`, `health`, `admission`, `upstream`'s
//! picker, `observe`'s request series), so that `observe::Metrics` only
//! composes them into one registry and none is listed twice.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Makes each series and registers it in the same step, so that none can be
/// made and forgotten. Names, help and labels are constants of the modules
/// that call it: a bad or repeated one is a programming error, caught by
/// every test that builds `observe::Metrics`.
#[derive(Debug, Clone, Copy)]
pub struct Registrar<'r>(&'r Registry);

impl<'r> Registrar<'r> {
    /// Registers into `registry`.
    pub fn new(registry: &'r Registry) -> Self {
        Registrar(registry)
    }

    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, collector: C) -> C {
        self.0.register(Box::new(collector.clone())).expect("metric names are valid and unique");
        collector
    }

    /// A counter.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("a valid metric"))
    }

    /// An integer gauge.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("a valid metric"))
    }

    /// Counters by `labels`.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    /// Integer gauges by `labels`.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    /// Float gauges by `labels`.
    pub fn float_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric"))
    }

    /// A histogram with `buckets`.
    pub fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        self.register(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("a valid metric"))
    }

    /// Histograms by `labels`, with `buckets`.
    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(HistogramVec::new(opts, labels).expect("a valid metric"))
    }
}

/// Histogram buckets for request and backend durations, in seconds.
pub fn duration_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

/// Brings a counter that mirrors a monotonic count kept elsewhere up to it.
pub fn catch_up(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

/// A count as a gauge's value, saturating.
pub fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
