//! The report of one run: JSON (everything measured), a Markdown table of ratios with the
//! issue's targets, and an SVG plot.

use crate::{Config, TargetResult};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

/// One run, as written to JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// When (UTC, RFC 3339-ish, from the system clock).
    pub date: String,
    /// What it ran on.
    pub machine: String,
    /// The measurement settings.
    pub settings: String,
    /// One entry per server, ZooKeeper first.
    pub targets: Vec<TargetResult>,
}

impl Report {
    /// A report of `targets` measured with `cfg` now.
    pub fn new(cfg: &Config, targets: Vec<TargetResult>) -> Report {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Report {
            date: now_utc(),
            machine: format!("{cores} cores ({cpu}), shared by both servers and the client"),
            settings: format!(
                "1 KiB values; {} ops per latency run; throughput {:?} sessions, closed loop, \
                 {:?} warm-up + {:?} each; {} watch events",
                cfg.latency_ops, cfg.sessions, cfg.warmup, cfg.run, cfg.watch_ops
            ),
            targets,
        }
    }
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A target of the issue and whether this run met it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// What is compared.
    pub what: String,
    /// Ours ÷ ZooKeeper.
    pub ratio: f64,
    /// The target, as text.
    pub target: String,
    /// Met?
    pub met: bool,
}

/// The issue's targets for the comparison, judged on `zk` (reference) and `ours`.
pub fn verdicts(zk: &TargetResult, ours: &TargetResult) -> Vec<Verdict> {
    let mut v = Vec::new();
    let top = zk.throughput.iter().map(|t| t.sessions).max().unwrap_or(0);
    if let (Some(z), Some(o)) = (zk.throughput_at(top), ours.throughput_at(top)) {
        let w = ratio(o.writes_per_s, z.writes_per_s);
        v.push(Verdict {
            what: format!("write throughput, {top} sessions"),
            ratio: w,
            target: "≥ 1.0×".into(),
            met: w >= 1.0,
        });
        let r = ratio(o.reads_per_s, z.reads_per_s);
        v.push(Verdict {
            what: format!("read throughput, {top} sessions"),
            ratio: r,
            target: "≥ 1.0×".into(),
            met: r >= 1.0,
        });
    }
    if let (Some(z), Some(o)) = (zk.latency_of("set"), ours.latency_of("set")) {
        let r = ratio(o.p50_ms, z.p50_ms);
        v.push(Verdict {
            what: "write (set) p50 latency".into(),
            ratio: r,
            target: "≤ 2.0×".into(),
            met: r <= 2.0,
        });
    }
    v
}

fn ratio(ours: f64, zk: f64) -> f64 {
    if zk > 0.0 { ours / zk } else { f64::NAN }
}

/// The Markdown section of the comparison (tables only; the caller adds prose around it).
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let [zk, ours] = match report.targets.as_slice() {
        [a, b] => [a, b],
        _ => return "(the report needs exactly two targets)\n".into(),
    };
    let _ = writeln!(
        s,
        "Run: {} on {}.  \nSettings: {}.\n",
        report.date, report.machine, report.settings
    );
    let _ = writeln!(s, "| target | ours ÷ ZooKeeper | goal | met |");
    let _ = writeln!(s, "|---|---|---|---|");
    for v in verdicts(zk, ours) {
        let _ = writeln!(
            s,
            "| {} | {:.2}× | {} | {} |",
            v.what,
            v.ratio,
            v.target,
            if v.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(s, "\n**Latency** (ms, one session, 1 KiB):\n");
    let _ = writeln!(
        s,
        "| op | ZooKeeper p50 / p99 / p99.9 | FaaSKeeper p50 / p99 / p99.9 | p50 ratio |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    let mut rows: Vec<(String, crate::Percentiles, crate::Percentiles)> = zk
        .latency
        .iter()
        .filter_map(|(op, z)| ours.latency_of(op).map(|o| (op.clone(), *z, o)))
        .collect();
    rows.push(("watch (set → event)".into(), zk.watch, ours.watch));
    for (op, z, o) in rows {
        let _ = writeln!(
            s,
            "| {op} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.2}× |",
            z.p50_ms,
            z.p99_ms,
            z.p999_ms,
            o.p50_ms,
            o.p99_ms,
            o.p999_ms,
            ratio(o.p50_ms, z.p50_ms)
        );
    }
    let _ = writeln!(s, "\n**Throughput** (ops/s, closed loop, 1 KiB):\n");
    let _ = writeln!(
        s,
        "| sessions | ZooKeeper sets | FaaSKeeper sets | ratio | ZooKeeper gets | FaaSKeeper gets | ratio |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for z in &zk.throughput {
        if let Some(o) = ours.throughput_at(z.sessions) {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.0} | {:.2}× | {:.0} | {:.0} | {:.2}× |",
                z.sessions,
                z.writes_per_s,
                o.writes_per_s,
                ratio(o.writes_per_s, z.writes_per_s),
                z.reads_per_s,
                o.reads_per_s,
                ratio(o.reads_per_s, z.reads_per_s)
            );
        }
    }
    s
}

/// Plot throughput against sessions (left) and p50 latency per op (right) as SVG.
pub fn svg(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (left, right) = root.split_horizontally(520);
    let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];

    let max_sessions = report
        .targets
        .iter()
        .flat_map(|t| t.throughput.iter().map(|x| x.sessions))
        .max()
        .unwrap_or(1) as f64;
    let max_tp = report
        .targets
        .iter()
        .flat_map(|t| {
            t.throughput
                .iter()
                .map(|x| x.writes_per_s.max(x.reads_per_s))
        })
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption("Throughput (ops/s, 1 KiB)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_sessions * 1.05, 0.0..max_tp * 1.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("sessions")
        .y_desc("ops/s")
        .draw()
        .map_err(plot_err)?;
    for (t, color) in report.targets.iter().zip(colors) {
        for (writes, style) in [
            (true, color.stroke_width(2)),
            (false, color.stroke_width(1)),
        ] {
            let points: Vec<(f64, f64)> = t
                .throughput
                .iter()
                .map(|x| {
                    (
                        x.sessions as f64,
                        if writes {
                            x.writes_per_s
                        } else {
                            x.reads_per_s
                        },
                    )
                })
                .collect();
            let label = format!("{} {}", t.name, if writes { "sets" } else { "gets" });
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(plot_err)?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;

    // p50 latency per op, one bar per server.
    let ops: Vec<String> = report
        .targets
        .first()
        .map(|t| t.latency.iter().map(|(op, _)| op.clone()).collect())
        .unwrap_or_default();
    let max_lat = report
        .targets
        .iter()
        .flat_map(|t| t.latency.iter().map(|(_, p)| p.p50_ms))
        .fold(0.01, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("p50 latency (ms, 1 session)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..ops.len() as f64, 0.0..max_lat * 1.15)
        .map_err(plot_err)?;
    let names = ops.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(ops.len() * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("ms")
        .draw()
        .map_err(plot_err)?;
    let n = report.targets.len().max(1) as f64;
    for (k, (t, color)) in report.targets.iter().zip(colors).enumerate() {
        let bars = t.latency.iter().enumerate().map(|(i, (_, p))| {
            let x0 = i as f64 + 0.1 + 0.8 * k as f64 / n;
            Rectangle::new([(x0, 0.0), (x0 + 0.8 / n, p.p50_ms)], color.filled())
        });
        chart
            .draw_series(bars)
            .map_err(plot_err)?
            .label(t.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting failed: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Percentiles, Throughput};

    fn target(name: &str, scale: f64) -> TargetResult {
        let p = |ms: f64| Percentiles {
            p50_ms: ms,
            p99_ms: ms * 2.0,
            p999_ms: ms * 3.0,
            samples: 10,
        };
        TargetResult {
            name: name.into(),
            latency: vec![
                ("set".into(), p(0.3 * scale)),
                ("get".into(), p(0.1 * scale)),
            ],
            throughput: vec![
                Throughput {
                    sessions: 1,
                    writes_per_s: 1000.0 / scale,
                    reads_per_s: 5000.0 / scale,
                },
                Throughput {
                    sessions: 32,
                    writes_per_s: 15_000.0 / scale,
                    reads_per_s: 40_000.0 / scale,
                },
            ],
            watch: p(0.5 * scale),
        }
    }

    #[test]
    fn verdicts_follow_the_issue_targets() {
        let v = verdicts(&target("ZooKeeper", 1.0), &target("FaaSKeeper", 2.5));
        let got: Vec<(String, bool)> = v.iter().map(|v| (v.what.clone(), v.met)).collect();
        assert_eq!(
            got,
            vec![
                ("write throughput, 32 sessions".to_string(), false),
                ("read throughput, 32 sessions".to_string(), false),
                ("write (set) p50 latency".to_string(), false),
            ]
        );
        assert!((v[2].ratio - 2.5).abs() < 1e-9);
        let fast = verdicts(&target("ZooKeeper", 1.0), &target("FaaSKeeper", 0.5));
        assert!(fast.iter().all(|v| v.met));
    }

    #[test]
    fn markdown_and_svg_render() {
        let report = Report::new(
            &Config::quick(),
            vec![target("ZooKeeper", 1.0), target("FaaSKeeper", 1.5)],
        );
        let md = markdown(&report);
        assert!(
            md.contains("| write throughput, 32 sessions | 0.67× | ≥ 1.0× | **no** |"),
            "{md}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plot.svg");
        svg(&report, &path).expect("svg");
        let text = std::fs::read_to_string(&path).expect("read svg");
        assert!(text.starts_with("<svg") && text.contains("FaaSKeeper sets"));
    }
}

/// Where a run's outputs go.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// The Markdown document; the generated part replaces what is between
    /// [`BEGIN`] and [`END`], the prose around it is kept.
    pub markdown: std::path::PathBuf,
    /// Everything measured, as JSON.
    pub json: std::path::PathBuf,
    /// The plot.
    pub svg: std::path::PathBuf,
}

/// Start of the generated part of the Markdown document.
pub const BEGIN: &str = "<!-- generated by `faaskeeper bench`: begin -->";
/// End of the generated part.
pub const END: &str = "<!-- generated by `faaskeeper bench`: end -->";

/// Write the JSON, the SVG and the generated part of the Markdown document.
pub fn write(report: &Report, out: &Outputs) -> anyhow::Result<()> {
    for p in [&out.json, &out.svg, &out.markdown] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&out.json, serde_json::to_vec_pretty(report)?)?;
    svg(report, &out.svg)?;
    let svg_name = out
        .svg
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let generated = format!(
        "{BEGIN}\n{}\n![throughput and latency]({svg_name})\n{END}",
        markdown(report)
    );
    let doc = match std::fs::read_to_string(&out.markdown) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{generated}{}", &old[..b], &old[e + END.len()..])
            }
            _ => format!("{old}\n{generated}\n"),
        },
        Err(_) => format!("# Benchmarks\n\n{generated}\n"),
    };
    std::fs::write(&out.markdown, doc)?;
    Ok(())
}
