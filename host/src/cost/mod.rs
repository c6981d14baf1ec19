//! `faaskeeper cost`: what a workload costs per month on AWS, from counted requests.
//!
//! The counts are never estimated here: they are what the AWS backend's and the clients'
//! meters counted per client operation on a real AWS API (moto locally), at a few data sizes
//! ([`CountTable`], committed as `docs/cost-counts.json` for the user bucket on S3 and
//! `docs/cost-counts-dynamodb.json` for it on DynamoDB, and remade by `faaskeeper cost
//! --measure`). This
//! module only interpolates between the measured sizes and prices the result with a dated
//! price table ([`prices`]), and compares it with provisioned ZooKeeper VMs, the FaaSKeeper
//! paper's baseline.

#[cfg(feature = "aws")]
pub mod measure;
pub mod prices;

use prices::Prices;
use serde::{Deserialize, Serialize};

/// Billable requests of one client operation (means over many operations, so fractional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounts {
    /// DynamoDB read request units.
    #[serde(default)]
    pub dynamo_read_units: f64,
    /// DynamoDB write request units.
    #[serde(default)]
    pub dynamo_write_units: f64,
    /// S3 GET requests.
    #[serde(default)]
    pub s3_get: f64,
    /// S3 PUT, COPY, POST and LIST requests (one price class).
    #[serde(default)]
    pub s3_put: f64,
    /// SQS requests, each counted per started 64 KiB of payload.
    #[serde(default)]
    pub sqs_requests: f64,
    /// Lambda invocations.
    #[serde(default)]
    pub lambda_invocations: f64,
    /// Lambda compute, GB-seconds.
    #[serde(default)]
    pub lambda_gb_seconds: f64,
}

impl OpCounts {
    /// Dollars for one operation.
    pub fn dollars(&self, p: &Prices) -> f64 {
        (self.dynamo_read_units * p.dynamo_read_unit
            + self.dynamo_write_units * p.dynamo_write_unit
            + self.s3_get * p.s3_get
            + self.s3_put * p.s3_put
            + self.sqs_requests * p.sqs_request
            + self.lambda_invocations * p.lambda_invocation
            + self.lambda_gb_seconds * p.lambda_gb_second)
            / 1e6
    }

    fn lerp(a: &OpCounts, b: &OpCounts, t: f64) -> OpCounts {
        let f = |x: f64, y: f64| (x + (y - x) * t).max(0.0);
        OpCounts {
            dynamo_read_units: f(a.dynamo_read_units, b.dynamo_read_units),
            dynamo_write_units: f(a.dynamo_write_units, b.dynamo_write_units),
            s3_get: f(a.s3_get, b.s3_get),
            s3_put: f(a.s3_put, b.s3_put),
            sqs_requests: f(a.sqs_requests, b.sqs_requests),
            lambda_invocations: f(a.lambda_invocations, b.lambda_invocations),
            lambda_gb_seconds: f(a.lambda_gb_seconds, b.lambda_gb_seconds),
        }
    }
}

/// The counts of each operation kind at one data size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SizeCounts {
    /// Bytes of data per create and set.
    pub data_bytes: usize,
    /// `create` (persistent).
    pub create: OpCounts,
    /// `set_data`, unconditional.
    pub set_data: OpCounts,
    /// `delete`.
    pub delete: OpCounts,
    /// `get_data` (read straight from the user bucket).
    pub get_data: OpCounts,
}

/// Counted requests at several data sizes, and how they were counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountTable {
    /// What was measured, on which setup, and when.
    pub measured: String,
    /// Operations of each kind per size and session the means are taken over.
    pub ops_per_kind: usize,
    /// Sessions that ran them at once (1: the worst case, nothing batched).
    #[serde(default = "one")]
    pub sessions: usize,
    /// Rows, by increasing data size.
    pub sizes: Vec<SizeCounts>,
}

fn one() -> usize {
    1
}

/// Why a count table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// The JSON does not parse.
    #[error("count table: {0}")]
    Parse(#[from] serde_json::Error),
    /// No rows, or rows out of order.
    #[error("count table: {0}")]
    Invalid(&'static str),
}

/// The table `faaskeeper cost` uses unless told otherwise (user bucket on S3).
pub const COMMITTED_COUNTS: &str = include_str!("../../../docs/cost-counts.json");
/// The table of the deployment whose user bucket is on DynamoDB (`--user-storage dynamodb`).
pub const COMMITTED_COUNTS_DYNAMODB: &str = include_str!("../../../docs/cost-counts-dynamodb.json");

impl CountTable {
    /// Parse and check a table.
    pub fn from_json(json: &str) -> Result<CountTable, CostError> {
        let table: CountTable = serde_json::from_str(json)?;
        if table.sizes.is_empty() {
            return Err(CostError::Invalid("no measured sizes"));
        }
        if table
            .sizes
            .windows(2)
            .any(|w| w[0].data_bytes >= w[1].data_bytes)
        {
            return Err(CostError::Invalid("sizes must increase"));
        }
        Ok(table)
    }

    /// Counts at `data_bytes`: linear between the two nearest measured sizes (DynamoDB units
    /// grow with item size, request counts do not), and along the last measured segment
    /// beyond the largest.
    pub fn at(&self, data_bytes: usize) -> SizeCounts {
        let s = &self.sizes;
        let (a, b) = match s.iter().position(|r| r.data_bytes >= data_bytes) {
            Some(0) => return s[0],
            Some(i) => (&s[i - 1], &s[i]),
            None if s.len() == 1 => return s[0],
            None => (&s[s.len() - 2], &s[s.len() - 1]),
        };
        let t = (data_bytes as f64 - a.data_bytes as f64) / (b.data_bytes - a.data_bytes) as f64;
        SizeCounts {
            data_bytes,
            create: OpCounts::lerp(&a.create, &b.create, t),
            set_data: OpCounts::lerp(&a.set_data, &b.set_data, t),
            delete: OpCounts::lerp(&a.delete, &b.delete, t),
            get_data: OpCounts::lerp(&a.get_data, &b.get_data, t),
        }
    }
}

/// Operations per day, and their data size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Workload {
    /// `get_data` per day.
    pub reads_per_day: f64,
    /// `create` per day.
    pub creates_per_day: f64,
    /// `set_data` per day.
    pub sets_per_day: f64,
    /// `delete` per day.
    pub deletes_per_day: f64,
    /// Bytes of data per create and set.
    pub data_bytes: usize,
}

impl Workload {
    /// `writes_per_day` split as a tree in steady state sees them: as many deletes as
    /// creates, and twice as many sets as either.
    pub fn mixed(reads_per_day: f64, writes_per_day: f64, data_bytes: usize) -> Workload {
        Workload {
            reads_per_day,
            creates_per_day: writes_per_day / 4.0,
            sets_per_day: writes_per_day / 2.0,
            deletes_per_day: writes_per_day / 4.0,
            data_bytes,
        }
    }

    fn requests_per_day(&self) -> f64 {
        self.reads_per_day + self.creates_per_day + self.sets_per_day + self.deletes_per_day
    }
}

/// Average days per month (365 / 12), as AWS bills.
pub const DAYS_PER_MONTH: f64 = 365.0 / 12.0;

/// One ZooKeeper deployment to compare with.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakEven {
    /// E.g. "3 × t3.small".
    pub deployment: String,
    /// Its cost per month.
    pub monthly: f64,
    /// Requests per day of this workload's mix at which both cost the same.
    pub requests_per_day: f64,
}

/// What a workload costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// The counts used (interpolated at the workload's data size).
    pub counts: SizeCounts,
    /// Dollars per million operations of each kind: create, set, delete, get.
    pub per_million: [f64; 4],
    /// Dollars per month, each kind: create, set, delete, get.
    pub monthly_by_kind: [f64; 4],
    /// Dollars per month in all.
    pub monthly: f64,
    /// Against provisioned ZooKeeper.
    pub break_even: Vec<BreakEven>,
}

/// Price `workload` with `prices`, using `table`.
pub fn estimate(table: &CountTable, prices: &Prices, workload: &Workload) -> Estimate {
    let counts = table.at(workload.data_bytes);
    let ops = [
        counts.create,
        counts.set_data,
        counts.delete,
        counts.get_data,
    ];
    let per_day = [
        workload.creates_per_day,
        workload.sets_per_day,
        workload.deletes_per_day,
        workload.reads_per_day,
    ];
    let per_op: Vec<f64> = ops.iter().map(|c| c.dollars(prices)).collect();
    let per_million = [0, 1, 2, 3].map(|i| per_op[i] * 1e6);
    let monthly_by_kind = [0, 1, 2, 3].map(|i| per_op[i] * per_day[i] * DAYS_PER_MONTH);
    let monthly: f64 = monthly_by_kind.iter().sum();
    let requests = workload.requests_per_day();
    // Dollars per request of this workload's mix.
    let per_request = if requests > 0.0 {
        monthly / DAYS_PER_MONTH / requests
    } else {
        0.0
    };
    let break_even = prices
        .zookeeper
        .iter()
        .map(|vm| {
            let monthly = 3.0 * vm.hourly * prices::HOURS_PER_MONTH;
            BreakEven {
                deployment: format!("3 × {}", vm.name),
                monthly,
                requests_per_day: if per_request > 0.0 {
                    monthly / DAYS_PER_MONTH / per_request
                } else {
                    f64::INFINITY
                },
            }
        })
        .collect();
    Estimate {
        counts,
        per_million,
        monthly_by_kind,
        monthly,
        break_even,
    }
}

/// The report `faaskeeper cost` prints.
pub fn render(table: &CountTable, prices: &Prices, w: &Workload, e: &Estimate) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Counts: {} ({} ops per kind)",
        table.measured, table.ops_per_kind
    );
    let _ = writeln!(s, "Prices: {}", prices.source);
    let _ = writeln!(s, "Data size: {} B per create/set\n", w.data_bytes);
    let _ = writeln!(
        s,
        "{:<10} {:>9} {:>9} {:>7} {:>7} {:>7} {:>8} {:>12} {:>12} {:>12}",
        "operation",
        "ddb RRU",
        "ddb WRU",
        "S3 GET",
        "S3 PUT",
        "SQS",
        "Lambda",
        "$ / million",
        "per day",
        "$ / month"
    );
    let rows = [
        ("create", e.counts.create, w.creates_per_day),
        ("set_data", e.counts.set_data, w.sets_per_day),
        ("delete", e.counts.delete, w.deletes_per_day),
        ("get_data", e.counts.get_data, w.reads_per_day),
    ];
    for (i, (name, c, per_day)) in rows.iter().enumerate() {
        let _ = writeln!(
            s,
            "{:<10} {:>9.2} {:>9.2} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>12.2} {:>12.0} {:>12.2}",
            name,
            c.dynamo_read_units,
            c.dynamo_write_units,
            c.s3_get,
            c.s3_put,
            c.sqs_requests,
            c.lambda_invocations,
            e.per_million[i],
            per_day,
            e.monthly_by_kind[i]
        );
    }
    let _ = writeln!(s, "\nTotal: ${:.2} per month", e.monthly);
    let _ = writeln!(
        s,
        "\nBreak-even against provisioned ZooKeeper (VMs only, on-demand):"
    );
    for b in &e.break_even {
        let _ = writeln!(
            s,
            "  {:<14} ${:>7.2} per month  = this mix at {:>12.0} requests per day",
            b.deployment, b.monthly, b.requests_per_day
        );
    }
    s
}

/// Today's UTC date as `YYYY-MM-DD`, to date a count table.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date((secs / 86_400) as i64)
}

/// The proleptic Gregorian date of a day number since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_date(0), "1970-01-01");
        assert_eq!(super::civil_date(20_784), "2026-11-27");
        assert_eq!(super::civil_date(11_016), "2000-02-29");
    }

    use super::*;

    fn one_unit_each() -> CountTable {
        let op = |wru: f64| OpCounts {
            dynamo_write_units: wru,
            ..OpCounts::default()
        };
        CountTable {
            measured: "test".into(),
            ops_per_kind: 1,
            sessions: 1,
            sizes: vec![
                SizeCounts {
                    data_bytes: 100,
                    create: op(1.0),
                    set_data: op(1.0),
                    delete: op(1.0),
                    get_data: OpCounts {
                        s3_get: 1.0,
                        ..OpCounts::default()
                    },
                },
                SizeCounts {
                    data_bytes: 1100,
                    create: op(3.0),
                    set_data: op(3.0),
                    delete: op(1.0),
                    get_data: OpCounts {
                        s3_get: 1.0,
                        ..OpCounts::default()
                    },
                },
            ],
        }
    }

    #[test]
    fn interpolates_between_measured_sizes_and_beyond() {
        let t = one_unit_each();
        assert_eq!(t.at(50).create.dynamo_write_units, 1.0);
        assert_eq!(t.at(600).create.dynamo_write_units, 2.0);
        assert_eq!(t.at(2100).create.dynamo_write_units, 5.0);
        assert_eq!(t.at(2100).delete.dynamo_write_units, 1.0);
    }

    #[test]
    fn prices_a_workload_per_month() {
        let p = prices::AWS_US_EAST_1_2025;
        // One million sets a day at one write unit each: 1e6 × 365/12 × $0.625 per million.
        let w = Workload {
            reads_per_day: 0.0,
            creates_per_day: 0.0,
            sets_per_day: 1e6,
            deletes_per_day: 0.0,
            data_bytes: 100,
        };
        let e = estimate(&one_unit_each(), &p, &w);
        assert!((e.per_million[1] - 0.625).abs() < 1e-9);
        assert!((e.monthly - 0.625 * 365.0 / 12.0).abs() < 1e-9);
        // 3 × t3.small for a month, in sets of $0.625 per million.
        let small = &e.break_even[0];
        assert_eq!(small.deployment, "3 × t3.small");
        let expected = 3.0 * 0.0208 * 730.0 / (365.0 / 12.0) / 0.625e-6;
        assert!((small.requests_per_day - expected).abs() / expected < 1e-9);
    }

    #[test]
    fn refuses_bad_tables() {
        assert!(CountTable::from_json("{").is_err());
        assert!(CountTable::from_json(r#"{"measured":"x","ops_per_kind":1,"sizes":[]}"#).is_err());
        let mut t = one_unit_each();
        t.sizes.reverse();
        let json = serde_json::to_string(&t).expect("json");
        assert!(CountTable::from_json(&json).is_err());
    }

    #[test]
    fn the_committed_tables_parse() {
        let t = CountTable::from_json(COMMITTED_COUNTS).expect("docs/cost-counts.json");
        assert!(t.sizes.iter().all(|s| s.create.s3_put >= 1.0));
        assert!(t.sizes.iter().all(|s| s.set_data.sqs_requests >= 3.0));
        let d = CountTable::from_json(COMMITTED_COUNTS_DYNAMODB)
            .expect("docs/cost-counts-dynamodb.json");
        // Small nodes live in the table; only the 64 KiB row goes to S3.
        assert_eq!(d.at(100).set_data.s3_put, 0.0);
        assert!(
            d.at(100).set_data.dollars(&prices::AWS_US_EAST_1_2025)
                < t.at(100).set_data.dollars(&prices::AWS_US_EAST_1_2025)
        );
    }
}
