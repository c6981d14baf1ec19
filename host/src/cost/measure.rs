//! `faaskeeper cost --measure`: count the billable requests of each operation on the AWS
//! backend, against any endpoint speaking the AWS APIs (moto locally, AWS itself).
//!
//! One session does `ops` operations of each kind, one after another, at each data size; the
//! meter's counts over each run, minus the host's idle background traffic over the same time,
//! divided by `ops`, are the per-operation counts. A single session is the worst case: nothing
//! is batched with other sessions' requests.

use super::{CountTable, OpCounts, SizeCounts};
use anyhow::Context;
use faaskeeper_backend_aws::{AwsBackend, AwsOptions, AwsUsage, Usage};
use faaskeeper_client::{Client, Options};
use faaskeeper_core::CreateMode;
use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn counts(u: &AwsUsage) -> OpCounts {
    let add = |f: fn(&Usage) -> u64| (f(&u.system) + f(&u.user)) as f64;
    OpCounts {
        dynamo_read_units: add(|u| u.dynamo_read_units),
        dynamo_write_units: add(|u| u.dynamo_write_units),
        s3_get: add(|u| u.s3_get),
        s3_put: add(|u| u.s3_put + u.s3_list),
        ..OpCounts::default()
    }
}

/// Per operation: `run` minus `idle` scaled to the run's duration, over `ops`.
fn per_op(run: OpCounts, secs: f64, idle: OpCounts, idle_secs: f64, ops: usize) -> OpCounts {
    let k = secs / idle_secs;
    let f = |r: f64, i: f64| ((r - i * k) / ops as f64).max(0.0);
    OpCounts {
        dynamo_read_units: f(run.dynamo_read_units, idle.dynamo_read_units),
        dynamo_write_units: f(run.dynamo_write_units, idle.dynamo_write_units),
        s3_get: f(run.s3_get, idle.s3_get),
        s3_put: f(run.s3_put, idle.s3_put),
        sqs_requests: f(run.sqs_requests, idle.sqs_requests),
        lambda_invocations: f(run.lambda_invocations, idle.lambda_invocations),
        lambda_gb_seconds: f(run.lambda_gb_seconds, idle.lambda_gb_seconds),
    }
}

/// Count `ops` operations of each kind at each of `sizes` on the backend `opts` names
/// (its table and bucket are created if missing), with this host running the stages.
pub async fn measure(
    opts: &AwsOptions,
    sizes: &[usize],
    ops: usize,
    what: &str,
) -> anyhow::Result<CountTable> {
    anyhow::ensure!(ops > 0, "--ops must be at least 1");
    let backend = Arc::new(
        AwsBackend::connect(opts)
            .await
            .context("connecting to the AWS endpoint")?,
    );
    let dir = tempfile::tempdir()?;
    let host = crate::start(crate::ServeOptions {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        zk_listen: None,
        stores: Some(backend.store_manager(SYSTEM_BUCKET, USER_BUCKET)),
        ..Default::default()
    })
    .await?;
    let client = Client::connect(&host.url(), Options::default()).await?;
    let t = Instant::now();
    let before = backend.usage();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = counts(&backend.usage().since(&before));
    let idle_secs = t.elapsed().as_secs_f64();
    let root = format!("/cost-{}", std::process::id());
    client.create(&root, b"", CreateMode::Persistent).await?;
    let mut rows = Vec::new();
    for &size in sizes {
        let data = vec![0x5a_u8; size];
        let base = format!("{root}/{size}");
        client.create(&base, b"", CreateMode::Persistent).await?;
        let paths: Vec<String> = (0..ops).map(|i| format!("{base}/n{i}")).collect();
        let mut row = SizeCounts {
            data_bytes: size,
            ..SizeCounts::default()
        };
        macro_rules! count {
            ($field:ident, |$p:ident| $op:expr) => {{
                let t = Instant::now();
                let before = backend.usage();
                for $p in &paths {
                    $op;
                }
                let run = counts(&backend.usage().since(&before));
                row.$field = per_op(run, t.elapsed().as_secs_f64(), idle, idle_secs, ops);
            }};
        }
        count!(create, |p| client
            .create(p, &data, CreateMode::Persistent)
            .await?);
        count!(set_data, |p| client.set_data(p, &data, -1).await?);
        count!(get_data, |p| client.get_data(p).await?);
        count!(delete, |p| client.delete(p, -1).await?);
        client.delete(&base, -1).await?;
        rows.push(row);
    }
    client.delete(&root, -1).await?;
    client.close().await?;
    Ok(CountTable {
        measured: what.to_string(),
        ops_per_kind: ops,
        sizes: rows,
    })
}
