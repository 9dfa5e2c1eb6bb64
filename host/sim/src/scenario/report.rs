//! What the runner writes: per scenario a timeline CSV, a per-backend CSV and
//! an SVG plot; over all scenarios a summary CSV, a markdown table and an SVG
//! of every strategy's goodput as a fraction of the reference (the better of
//! the oracle and the best strategy).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::run::{RequestRecord, RunResult, Strategy};
use super::spec::Scenario;

/// One strategy's numbers in one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The strategy's label.
    pub strategy: String,
    /// Requests answered (any way).
    pub requests: u64,
    /// 2xx answers.
    pub successes: u64,
    /// Seconds from the start of the load to the end of its last request.
    pub seconds: f64,
    /// Mean latency of all requests, ms.
    pub mean_ms: f64,
    /// 99th-percentile latency of all requests, ms.
    pub p99_ms: f64,
}

impl Summary {
    /// Summarises one run.
    pub fn of(result: &RunResult) -> Summary {
        let records = &result.records;
        let mut latencies: Vec<u64> = records.iter().map(|r| r.latency_us).collect();
        latencies.sort_unstable();
        let mean_ms = if records.is_empty() {
            0.0
        } else {
            latencies.iter().map(|&l| l as f64).sum::<f64>() / records.len() as f64 / 1e3
        };
        Summary {
            strategy: result.strategy.clone(),
            requests: records.len() as u64,
            successes: records.iter().filter(|r| r.succeeded()).count() as u64,
            seconds: result.elapsed.as_secs_f64().max(1e-6),
            mean_ms,
            p99_ms: percentile(&latencies, 0.99) as f64 / 1e3,
        }
    }

    /// Answered requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// Successful requests per second.
    pub fn goodput(&self) -> f64 {
        self.successes as f64 / self.seconds
    }

    /// Share of requests that failed.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { 1.0 - self.successes as f64 / self.requests as f64 }
    }
}

/// The nearest-rank percentile of sorted values (0 when empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The results of one scenario: every strategy's run, in the order they ran.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub name: String,
    /// What it tests.
    pub description: String,
    /// One per strategy.
    pub summaries: Vec<Summary>,
}

impl ScenarioReport {
    /// The reference goodput, if the oracle ran: the better of the oracle's
    /// and the best strategy's. The oracle routes by a model of the backends
    /// that is not always optimal (with capacities and phases a learner can
    /// beat it), and a reference a strategy can exceed says nothing; this
    /// one is an upper bound of what was achieved, so "% of the reference"
    /// never exceeds 100.
    pub fn reference_goodput(&self) -> Option<f64> {
        reference_goodput(&self.summaries)
    }

    /// A strategy's goodput as a fraction of the reference's.
    pub fn fraction_of_reference(&self, summary: &Summary) -> Option<f64> {
        self.reference_goodput().filter(|&reference| reference > 0.0).map(|reference| summary.goodput() / reference)
    }
}

/// The reference goodput of one run of every strategy (see
/// [`ScenarioReport::reference_goodput`]); `None` without the oracle.
pub fn reference_goodput(summaries: &[Summary]) -> Option<f64> {
    let oracle = summaries.iter().find(|s| s.strategy == Strategy::ORACLE).map(Summary::goodput)?;
    Some(summaries.iter().map(Summary::goodput).fold(oracle, f64::max))
}

/// Width of the timeline buckets: a fortieth of the run, at least 50 ms.
fn bucket_of(results: &[RunResult]) -> Duration {
    let longest = results.iter().map(|r| r.elapsed).max().unwrap_or_default();
    (longest / 40).max(Duration::from_millis(50))
}

/// Per bucket: (requests, successes, latencies in µs).
fn timeline(records: &[RequestRecord], bucket: Duration) -> Vec<(u64, u64, Vec<u64>)> {
    let bucket_us = bucket.as_micros().max(1) as u64;
    let mut buckets: Vec<(u64, u64, Vec<u64>)> = Vec::new();
    for record in records {
        // By completion time: that is when the client has its answer.
        let at = ((record.start_us + record.latency_us) / bucket_us) as usize;
        if buckets.len() <= at {
            buckets.resize_with(at + 1, Default::default);
        }
        let slot = &mut buckets[at];
        slot.0 += 1;
        slot.1 += u64::from(record.succeeded());
        slot.2.push(record.latency_us);
    }
    buckets
}

/// Writes `NAME.csv` (timeline), `NAME.backends.csv` (where requests went) and
/// `NAME.svg` (goodput over time) into `dir`, and returns the scenario's summaries.
pub fn write_scenario(dir: &Path, scenario: &Scenario, results: &[RunResult]) -> std::io::Result<ScenarioReport> {
    let bucket = bucket_of(results);
    let mut timeline_csv = String::from("strategy,t_ms,requests,successes,goodput_per_s,mean_ms,p99_ms\n");
    let mut series = Vec::new();
    for result in results {
        let buckets = timeline(&result.records, bucket);
        let mut points = Vec::with_capacity(buckets.len());
        for (index, (requests, successes, mut latencies)) in buckets.into_iter().enumerate() {
            latencies.sort_unstable();
            let mean =
                if latencies.is_empty() { 0.0 } else { latencies.iter().sum::<u64>() as f64 / latencies.len() as f64 };
            let t_ms = (bucket * index as u32).as_millis();
            let goodput = successes as f64 / bucket.as_secs_f64();
            let _ = writeln!(
                timeline_csv,
                "{},{t_ms},{requests},{successes},{goodput:.1},{:.3},{:.3}",
                csv_field(&result.strategy),
                mean / 1e3,
                percentile(&latencies, 0.99) as f64 / 1e3
            );
            points.push(((bucket * index as u32 + bucket / 2).as_secs_f64(), goodput));
        }
        series.push((result.strategy.clone(), points));
    }
    std::fs::write(dir.join(format!("{}.csv", scenario.name)), timeline_csv)?;
    let mut backends_csv = String::from("strategy,backend,requests,successes\n");
    for result in results {
        let mut counts = vec![(0u64, 0u64); result.backends.len()];
        for record in &result.records {
            if let Some(slot) = record.backend.and_then(|b| counts.get_mut(usize::from(b))) {
                slot.0 += 1;
                slot.1 += u64::from(record.succeeded());
            }
        }
        for (name, (requests, successes)) in result.backends.iter().zip(counts) {
            let _ =
                writeln!(backends_csv, "{},{},{requests},{successes}", csv_field(&result.strategy), csv_field(name));
        }
    }
    std::fs::write(dir.join(format!("{}.backends.csv", scenario.name)), backends_csv)?;
    let title = format!("{} — goodput over time (successful req/s)", scenario.name);
    std::fs::write(dir.join(format!("{}.svg", scenario.name)), line_chart(&title, &scenario.description, &series))?;
    Ok(ScenarioReport {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        summaries: results.iter().map(Summary::of).collect(),
    })
}

/// Writes `summary.csv`, `summary.md` and `summary.svg` into `dir`.
pub fn write_summary(dir: &Path, reports: &[ScenarioReport]) -> std::io::Result<()> {
    let mut csv = String::from(
        "scenario,strategy,requests,successes,seconds,throughput_per_s,goodput_per_s,fraction_of_reference,mean_ms,p99_ms,error_rate\n",
    );
    for report in reports {
        for s in &report.summaries {
            let fraction = report.fraction_of_reference(s).map_or(String::new(), |f| format!("{f:.4}"));
            let _ = writeln!(
                csv,
                "{},{},{},{},{:.3},{:.1},{:.1},{fraction},{:.3},{:.3},{:.5}",
                report.name,
                csv_field(&s.strategy),
                s.requests,
                s.successes,
                s.seconds,
                s.throughput(),
                s.goodput(),
                s.mean_ms,
                s.p99_ms,
                s.error_rate()
            );
        }
    }
    std::fs::write(dir.join("summary.csv"), csv)?;
    std::fs::write(dir.join("summary.md"), markdown(reports))?;
    std::fs::write(dir.join("summary.svg"), oracle_chart(reports))?;
    Ok(())
}

/// The strategies in the order they first appear.
fn strategies(reports: &[ScenarioReport]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for summary in reports.iter().flat_map(|r| &r.summaries) {
        if !names.contains(&summary.strategy) {
            names.push(summary.strategy.clone());
        }
    }
    names
}

/// Formats one strategy's cell of a table.
type CellFormat = dyn Fn(&ScenarioReport, &Summary) -> String;

/// Three markdown tables (rows: scenarios; columns: strategies): goodput with
/// its fraction of the reference, p99 latency, and error rate.
pub fn markdown(reports: &[ScenarioReport]) -> String {
    let names = strategies(reports);
    let short: Vec<&str> = names.iter().map(|n| n.strip_prefix("builtin:").unwrap_or(n)).collect();
    let header = |first: &str| {
        let mut line = format!("| {first} |");
        let mut rule = String::from("| --- |");
        for name in &short {
            let _ = write!(line, " {name} |");
            rule.push_str(" ---: |");
        }
        format!("{line}\n{rule}\n")
    };
    let mut out = String::new();
    let cell = |report: &ScenarioReport, name: &str, f: &CellFormat| {
        report.summaries.iter().find(|s| s.strategy == name).map_or("–".to_string(), |s| f(report, s))
    };
    let tables: [(&str, &CellFormat); 3] = [
        (
            "Goodput, successful req/s (% of the reference: the better of the oracle and the best strategy)",
            &|report, s| match report.fraction_of_reference(s) {
                Some(fraction) => format!("{:.0} ({:.0}%)", s.goodput(), fraction * 100.0),
                None => format!("{:.0}", s.goodput()),
            },
        ),
        ("p99 latency, ms", &|_, s| format!("{:.1}", s.p99_ms)),
        ("Error rate", &|_, s| format!("{:.2}%", s.error_rate() * 100.0)),
    ];
    for (title, format) in tables {
        let _ = writeln!(out, "**{title}**\n");
        out.push_str(&header("scenario"));
        for report in reports {
            let _ = write!(out, "| {} |", report.name);
            for name in &names {
                let _ = write!(out, " {} |", cell(report, name, format));
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Quotes a CSV field when it needs it (a strategy label may hold commas).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() }
}

/// Escapes text for SVG.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Line colours, distinguishable in print and for common colour blindness (Okabe–Ito).
const COLOURS: [&str; 8] = ["#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#000000", "#CC79A7", "#F0E442"];

fn colour(index: usize) -> &'static str {
    COLOURS[index % COLOURS.len()]
}

/// A "nice" axis maximum and tick step at or above `max`.
fn axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() { max } else { 1.0 };
    let magnitude = 10f64.powf(max.log10().floor());
    let step =
        [0.1, 0.2, 0.5, 1.0, 2.0, 5.0].into_iter().map(|m| m * magnitude).find(|s| max / s <= 6.0).unwrap_or(magnitude);
    ((max / step).ceil() * step, step)
}

const WIDTH: f64 = 760.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 50.0;

/// A line chart of `(x seconds, y)` series with a legend on the right.
fn line_chart(title: &str, subtitle: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let height = 340.0;
    let bottom = 40.0;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, height - TOP - bottom);
    let x_max = series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x)).fold(0.0, f64::max);
    let y_max = series.iter().flat_map(|(_, p)| p.iter().map(|&(_, y)| y)).fold(0.0, f64::max);
    let ((x_top, x_step), (y_top, y_step)) = (axis(x_max), axis(y_max));
    let mut svg = svg_start(height, title, subtitle);
    for i in 0..=((y_top / y_step).round() as usize) {
        let value = i as f64 * y_step;
        let y = TOP + plot_h - value / y_top * plot_h;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            value
        );
    }
    for i in 0..=((x_top / x_step).round() as usize) {
        let value = i as f64 * x_step;
        let x = LEFT + value / x_top * plot_w;
        let _ = writeln!(svg, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{value}</text>"#, TOP + plot_h + 16.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds into the run</text>"#,
        LEFT + plot_w / 2.0,
        height - 6.0
    );
    for (index, (name, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", LEFT + x / x_top * plot_w, TOP + plot_h - y / y_top * plot_h))
            .collect();
        let dash = if name == Strategy::ORACLE { r#" stroke-dasharray="5,3""# } else { "" };
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
            colour(index),
            path.join(" ")
        );
        legend(&mut svg, index, name, dash);
    }
    svg.push_str("</svg>\n");
    svg
}

/// A grouped horizontal bar chart: per scenario, each strategy's goodput as a
/// percentage of the reference (capped at 150% for the axis).
fn oracle_chart(reports: &[ScenarioReport]) -> String {
    let names = strategies(reports);
    let row = 6.0 * names.len() as f64 + 8.0;
    let plot_h = row * reports.len() as f64;
    let height = TOP + plot_h + 40.0;
    let left = 120.0;
    let plot_w = WIDTH - left - RIGHT;
    let x_top = 150.0;
    let mut svg = svg_start(
        height,
        "Goodput as % of the reference (the better of the oracle and the best strategy), per scenario",
        "dashed line: the reference (100%)",
    );
    for tick in (0..=150).step_by(25) {
        let x = left + f64::from(tick) / x_top * plot_w;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{tick}%</text>"##,
            TOP + plot_h,
            TOP + plot_h + 16.0
        );
    }
    for (r, report) in reports.iter().enumerate() {
        let y0 = TOP + r as f64 * row + 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y0 + row / 2.0,
            xml(&report.name)
        );
        for (index, name) in names.iter().enumerate() {
            let Some(summary) = report.summaries.iter().find(|s| &s.strategy == name) else { continue };
            let Some(fraction) = report.fraction_of_reference(summary) else { continue };
            let w = (fraction * 100.0).min(x_top) / x_top * plot_w;
            let _ = writeln!(
                svg,
                r#"<rect x="{left}" y="{:.1}" width="{w:.1}" height="5" fill="{}"><title>{}: {:.1}%</title></rect>"#,
                y0 + index as f64 * 6.0,
                colour(index),
                xml(name),
                fraction * 100.0
            );
        }
    }
    let x100 = left + 100.0 / x_top * plot_w;
    let _ = writeln!(
        svg,
        r#"<line x1="{x100:.1}" y1="{TOP}" x2="{x100:.1}" y2="{:.1}" stroke="black" stroke-dasharray="5,3"/>"#,
        TOP + plot_h
    );
    for (index, name) in names.iter().enumerate() {
        legend(&mut svg, index, name, "");
    }
    svg.push_str("</svg>\n");
    svg
}

fn svg_start(height: f64, title: &str, subtitle: &str) -> String {
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    svg.push('\n');
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#, xml(title));
    let _ = writeln!(svg, r##"<text x="{LEFT}" y="36" fill="#555">{}</text>"##, xml(subtitle));
    svg
}

fn legend(svg: &mut String, index: usize, name: &str, dash: &str) {
    let (x, y) = (WIDTH - RIGHT + 14.0, TOP + 8.0 + index as f64 * 16.0);
    let label = name.strip_prefix("builtin:").unwrap_or(name);
    let _ = writeln!(
        svg,
        r#"<line x1="{x}" y1="{y}" x2="{:.1}" y2="{y}" stroke="{}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
        x + 18.0,
        colour(index),
        x + 24.0,
        y + 4.0,
        xml(label)
    );
}

/// The virtual mode's tables: per scenario and strategy, goodput as a
/// percentage of the reference (mean ± spread over the seeds), p99 and errors.
pub fn seeded_markdown(seeded: &[(String, Vec<super::Seeded>)]) -> String {
    let Some((_, first)) = seeded.first() else { return String::new() };
    let short: Vec<&str> = first.iter().map(|c| c.strategy.strip_prefix("builtin:").unwrap_or(&c.strategy)).collect();
    let seeds = first.first().map_or(0, |c| c.goodput.len());
    let mut out = String::new();
    type Cell = dyn Fn(&super::Seeded) -> String;
    let tables: [(&str, &Cell); 3] = [
        (
            "Goodput, % of the reference: the better of the oracle and the best strategy in the same seed (mean ± spread)",
            &|c| {
                let (mean, spread) = super::mean_spread(&c.of_reference);
                format!("{:.1} ± {:.1}", mean * 100.0, spread * 100.0)
            },
        ),
        ("p99 latency, ms (mean)", &|c| format!("{:.1}", super::mean_spread(&c.p99_ms).0)),
        ("Error rate (mean)", &|c| format!("{:.2}%", super::mean_spread(&c.error_rate).0 * 100.0)),
    ];
    for (title, cell) in tables {
        let _ = writeln!(out, "**{title}, virtual time, {seeds} seeds**\n");
        let _ = writeln!(out, "| scenario | {} |", short.join(" | "));
        let _ = writeln!(out, "| --- |{}", " ---: |".repeat(short.len()));
        for (name, cells) in seeded {
            let _ = writeln!(out, "| {name} | {} |", cells.iter().map(cell).collect::<Vec<_>>().join(" | "));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(start_ms: u64, latency_ms: u64, status: u16) -> RequestRecord {
        RequestRecord { start_us: start_ms * 1000, latency_us: latency_ms * 1000, status, backend: Some(0) }
    }

    #[test]
    fn summaries_count_successes_and_take_the_nearest_rank_p99() {
        let mut records: Vec<_> = (0..99).map(|i| record(i, 10, 200)).collect();
        records.push(record(99, 500, 500));
        let result =
            RunResult { strategy: "x".into(), backends: vec!["a".into()], records, elapsed: Duration::from_secs(2) };
        let summary = Summary::of(&result);
        assert_eq!((summary.requests, summary.successes), (100, 99));
        assert_eq!(summary.goodput(), 49.5);
        assert_eq!(summary.p99_ms, 10.0);
        assert!((summary.error_rate() - 0.01).abs() < 1e-12);
        assert!((summary.mean_ms - 14.9).abs() < 1e-9);
    }

    #[test]
    fn fractions_are_relative_to_the_oracle_and_tables_show_them() {
        let summary = |strategy: &str, successes| Summary {
            strategy: strategy.into(),
            requests: 100,
            successes,
            seconds: 1.0,
            mean_ms: 1.0,
            p99_ms: 2.0,
        };
        let report = ScenarioReport {
            name: "s".into(),
            description: "d".into(),
            summaries: vec![summary("builtin:round-robin", 50), summary(Strategy::ORACLE, 100)],
        };
        assert_eq!(report.fraction_of_reference(&report.summaries[0]), Some(0.5));
        let beaten = ScenarioReport {
            name: "b".into(),
            description: "d".into(),
            summaries: vec![summary("builtin:prequal", 120), summary(Strategy::ORACLE, 100)],
        };
        assert_eq!(beaten.reference_goodput(), Some(120.0), "a strategy that beats the oracle is the reference");
        assert_eq!(beaten.fraction_of_reference(&beaten.summaries[1]), Some(100.0 / 120.0));
        let table = markdown(&[report]);
        assert!(table.contains("| scenario | round-robin | oracle |"), "{table}");
        assert!(table.contains("| s | 50 (50%) | 100 (100%) |"), "{table}");
        assert!(table.contains("| s | 50.00% | 0.00% |"), "{table}");
    }

    #[test]
    fn axes_round_up_to_readable_steps() {
        assert_eq!(axis(950.0), (1000.0, 200.0));
        assert_eq!(axis(8.0), (8.0, 2.0));
        assert_eq!(axis(0.0), (1.0, 0.2));
    }
}
