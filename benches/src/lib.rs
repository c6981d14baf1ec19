//! # faaskeeper-bench
//!
//! FaaSKeeper and Apache ZooKeeper 3.8 measured side by side in one run, with the same client
//! (the Rust `zookeeper-client` crate, through our ZooKeeper-protocol gateway): latency of
//! create/get/set/exists at 1 KiB, closed-loop throughput with 1, 8 and 32 sessions, and
//! watch latency. [`compare`] runs the workloads ([`workload`]) against every target;
//! [`report`] turns the results into JSON, a Markdown table of ratios and an SVG plot.
//! `faaskeeper bench` (the host binary) starts both servers and calls these;
//! `benches/benches/runtime.rs` measures what WebAssembly itself costs.
//!
//! Machines here are noisy and shared by server and client alike, so results are quoted as
//! ratios (ours ÷ ZooKeeper) of numbers taken in the same run.

pub mod report;
pub mod workload;
pub mod zookeeper;

use serde::{Deserialize, Serialize};
use std::time::Duration;
use workload::LatencyOp;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Operations timed per latency run.
    pub latency_ops: usize,
    /// Session counts of the throughput runs.
    pub sessions: Vec<usize>,
    /// Warm-up before each throughput run.
    pub warmup: Duration,
    /// Length of each throughput run.
    pub run: Duration,
    /// Watch events timed.
    pub watch_ops: usize,
}

impl Config {
    /// The full run the report in `docs/benchmarks.md` comes from.
    pub fn full() -> Config {
        Config {
            latency_ops: 2000,
            sessions: vec![1, 8, 32],
            warmup: Duration::from_secs(1),
            run: Duration::from_secs(5),
            watch_ops: 500,
        }
    }

    /// A run of a few seconds that exercises every workload (tests, smoke checks).
    pub fn quick() -> Config {
        Config {
            latency_ops: 30,
            sessions: vec![1, 4],
            warmup: Duration::from_millis(100),
            run: Duration::from_millis(400),
            watch_ops: 10,
        }
    }

    /// Number of steps [`compare`] reports progress for, per target.
    pub fn steps(&self) -> usize {
        LatencyOp::ALL.len() + 2 * self.sessions.len() + 1
    }
}

/// Percentiles of a latency sample, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Number of samples.
    pub samples: usize,
}

impl Percentiles {
    /// Nearest-rank percentiles of `sample`.
    pub fn of(mut sample: Vec<Duration>) -> Percentiles {
        sample.sort();
        let at = |q: f64| {
            if sample.is_empty() {
                return 0.0;
            }
            let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[rank - 1].as_secs_f64() * 1e3
        };
        Percentiles {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            samples: sample.len(),
        }
    }
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Concurrent sessions.
    pub sessions: usize,
    /// `setData` per second.
    pub writes_per_s: f64,
    /// `getData` per second.
    pub reads_per_s: f64,
}

/// Everything measured for one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// "ZooKeeper" or "FaaSKeeper".
    pub name: String,
    /// Latency per op name (`create`, `get`, `set`, `exists`).
    pub latency: Vec<(String, Percentiles)>,
    /// Throughput per session count.
    pub throughput: Vec<Throughput>,
    /// Set → event at another session.
    pub watch: Percentiles,
}

impl TargetResult {
    /// Latency of one op.
    pub fn latency_of(&self, op: &str) -> Option<Percentiles> {
        self.latency.iter().find(|(n, _)| n == op).map(|(_, p)| *p)
    }

    /// Throughput at a session count.
    pub fn throughput_at(&self, sessions: usize) -> Option<Throughput> {
        self.throughput
            .iter()
            .find(|t| t.sessions == sessions)
            .copied()
    }
}

/// A server to measure.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in the report.
    pub name: String,
    /// `host:port` of its ZooKeeper protocol endpoint.
    pub addr: String,
}

/// Run every workload against every target, one target at a time (so they never compete for
/// the machine), calling `progress(target, step)` before each step.
pub async fn compare(
    targets: &[Target],
    cfg: &Config,
    mut progress: impl FnMut(&str, &str),
) -> anyhow::Result<Vec<TargetResult>> {
    let mut out = Vec::new();
    for t in targets {
        let root = format!("/bench-{}", std::process::id());
        let c = workload::connect(&t.addr).await?;
        workload::ensure(&c, &root).await?;
        let mut latency = Vec::new();
        for op in LatencyOp::ALL {
            progress(&t.name, &format!("{} latency", op.name()));
            let sample = workload::latency(&t.addr, &root, op, cfg.latency_ops).await?;
            latency.push((op.name().to_string(), Percentiles::of(sample)));
        }
        let mut throughput = Vec::new();
        for &sessions in &cfg.sessions {
            progress(&t.name, &format!("writes, {sessions} sessions"));
            let w =
                workload::throughput(&t.addr, &root, sessions, true, cfg.warmup, cfg.run).await?;
            progress(&t.name, &format!("reads, {sessions} sessions"));
            let r =
                workload::throughput(&t.addr, &root, sessions, false, cfg.warmup, cfg.run).await?;
            throughput.push(Throughput {
                sessions,
                writes_per_s: w,
                reads_per_s: r,
            });
        }
        progress(&t.name, "watch latency");
        let watch = Percentiles::of(workload::watch_latency(&t.addr, &root, cfg.watch_ops).await?);
        out.push(TargetResult {
            name: t.name.clone(),
            latency,
            throughput,
            watch,
        });
    }
    Ok(out)
}

/// [`compare`] with a progress bar on stderr (hidden when it is not a terminal), then the
/// report written to `out`.
pub async fn run(
    targets: &[Target],
    cfg: &Config,
    out: &report::Outputs,
) -> anyhow::Result<report::Report> {
    let bar = indicatif::ProgressBar::new((cfg.steps() * targets.len()) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut first = true;
    let results = compare(targets, cfg, |target, step| {
        if !std::mem::take(&mut first) {
            bar.inc(1);
        }
        bar.set_message(format!("{target}: {step}"));
    })
    .await?;
    bar.finish_with_message("done");
    let report = report::Report::new(cfg, results);
    report::write(&report, out)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let sample: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = Percentiles::of(sample);
        assert_eq!((p.p50_ms, p.p99_ms, p.p999_ms), (500.0, 990.0, 999.0));
        assert_eq!(Percentiles::of(Vec::new()).samples, 0);
    }
}
