//! `faaskeeper cost --measure`: count the billable requests of each operation on the AWS
//! backend, against any endpoint speaking the AWS APIs (moto locally, AWS itself).
//!
//! The deployment is the one a user runs: this host polls the writer queue and runs the
//! stages against DynamoDB (and S3), and the clients are on the AWS transport (writes to SQS,
//! reads straight from the user bucket, results on their session queues). `sessions` clients
//! each do `ops` operations of each kind, one after another, all sessions at once. What the
//! service's meters and the clients' meters count over each run, minus the idle background
//! traffic over the same time, divided by the operations, is the per-operation count. One
//! session is the worst case (nothing to batch with); with more, the writer and the
//! distributor share their fixed costs among the requests that arrive together.
//!
//! With [`Deployment::Lambda`] the stages run as the Lambda functions of
//! `deploy/aws/template.json` instead, in this process behind Lambda's event source mappings
//! ([`crate::aws::event_source`]): the functions' invocations and billed durations, and the
//! mappings' receives and deletes, are counted with the rest.

use super::{CountTable, OpCounts, SizeCounts};
use crate::aws::event_source::{DISTRIBUTOR_MAPPING, EventSource, Mapping, WRITER_MAPPING};
use crate::aws::lambda::{Function, FunctionOptions, Role};
use anyhow::Context;
use faaskeeper_backend_aws::{AwsBackend, AwsOptions, AwsUsage, Usage};
use faaskeeper_client::aws::Results;
use faaskeeper_client::{Client, Options};
use faaskeeper_core::CreateMode;
use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn counts(service: &AwsUsage, clients: &Usage) -> OpCounts {
    let all = [&service.system, &service.user, &service.queues, clients];
    let add = |f: fn(&Usage) -> u64| all.iter().map(|u| f(u)).sum::<u64>() as f64;
    OpCounts {
        dynamo_read_units: add(|u| u.dynamo_read_units),
        dynamo_write_units: add(|u| u.dynamo_write_units),
        s3_get: add(|u| u.s3_get),
        s3_put: add(|u| u.s3_put + u.s3_list),
        sqs_requests: add(|u| u.sqs_billed),
        lambda_invocations: add(|u| u.lambda_invocations),
        lambda_gb_seconds: add(|u| u.lambda_mb_ms) / 1024.0 / 1000.0,
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

/// `n` bytes that do not compress (xorshift), so that nothing deflated on the way, such
/// as the distributor's redo record, looks smaller than it would with real data.
fn incompressible(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// How long the idle traffic is counted for: one long poll (20 s) and a little more.
const IDLE_WINDOW: Duration = Duration::from_secs(21);

/// Where the stages run while they are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// This host polls the writer queue and runs the stages (`serve --backend aws`).
    Poller,
    /// The writer and distributor functions of `deploy/aws/template.json`, each invocation
    /// billed at `memory_mb`.
    Lambda {
        /// The functions' memory (the template's: 512).
        memory_mb: u64,
    },
}

/// The stages, running as `Deployment` says, until dropped.
struct Service {
    functions: Vec<Arc<Function>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _host: Option<crate::RunningHost>,
}

impl Service {
    async fn start(
        deployment: Deployment,
        opts: &AwsOptions,
        backend: &AwsBackend,
        direct_results: bool,
        dir: &std::path::Path,
    ) -> anyhow::Result<Service> {
        match deployment {
            Deployment::Poller => {
                let host = crate::start(crate::ServeOptions {
                    data_dir: dir.to_path_buf(),
                    listen: "127.0.0.1:0".parse()?,
                    zk_listen: None,
                    stores: Some(backend.store_manager(SYSTEM_BUCKET, USER_BUCKET)),
                    ..Default::default()
                })
                .await?;
                let tasks =
                    crate::aws::start_pollers(host.runtime(), backend.queues(), 2, direct_results);
                Ok(Service {
                    functions: Vec::new(),
                    tasks,
                    _host: Some(host),
                })
            }
            Deployment::Lambda { memory_mb } => {
                let options = FunctionOptions {
                    memory_mb,
                    cache_dir: Some(dir.join("compiled")),
                    direct_results,
                    log_usage: false,
                };
                let start = |role| Function::start(role, opts, options.clone());
                // The distributor first: its cold start initialises the store.
                let distributor = Arc::new(start(Role::Distributor).await?);
                let names = backend.queues().names();
                let source = |queue: String, mapping: Mapping| {
                    Arc::new(EventSource::new(
                        backend.queues().clone(),
                        queue,
                        mapping,
                        &opts.region,
                    ))
                };
                // One function instance per concurrent invocation the mapping allows (the
                // distributor's reserved concurrency is 1).
                let mut tasks = vec![
                    source(names.distributor(), DISTRIBUTOR_MAPPING).spawn(distributor.clone()),
                ];
                let mut functions = vec![distributor];
                let writers = source(names.writer(), WRITER_MAPPING);
                for _ in 0..WRITER_MAPPING.concurrency {
                    let writer = Arc::new(start(Role::Writer).await?);
                    tasks.push(writers.clone().spawn(writer.clone()));
                    functions.push(writer);
                }
                Ok(Service {
                    functions,
                    tasks,
                    _host: None,
                })
            }
        }
    }

    /// How long the service's traffic must be still for a count to be over: longer than the
    /// distributor's batching window on Lambda.
    fn quiet(&self) -> Duration {
        if self.functions.is_empty() {
            Duration::from_millis(250)
        } else {
            DISTRIBUTOR_MAPPING.window + Duration::from_millis(500)
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Everything counted so far: the service's meters and every client's.
struct Meters<'a> {
    backend: &'a AwsBackend,
    service: &'a Service,
    clients: &'a [Client],
}

impl Meters<'_> {
    fn now(&self) -> (AwsUsage, Usage) {
        let clients = self
            .clients
            .iter()
            .filter_map(Client::aws_usage)
            .fold(Usage::default(), |a, u| a.plus(&u));
        // A writer invocation that only carried session pings is what keeping the sessions
        // open costs, not what the operations cost (their pings' requests are idle traffic,
        // subtracted pro rata). Left out here exactly, because under load pings ride along
        // in the operations' batches and take no invocation of their own.
        let service = self
            .service
            .functions
            .iter()
            .fold(self.backend.usage(), |a, f| {
                let mut u = f.usage();
                u.queues = u.queues.since(&f.keepalive_usage());
                a.plus(&u)
            });
        (service, clients)
    }

    fn since(&self, before: &(AwsUsage, Usage)) -> OpCounts {
        let (s, c) = self.now();
        counts(&s.since(&before.0), &c.since(&before.1))
    }

    /// Wait until the service's store traffic and invocations stop (a write is answered
    /// before the distributor's last steps, which belong to it), at most 5 s.
    async fn settle(&self) {
        let store = |u: &AwsUsage| {
            let p = u.system.plus(&u.user);
            p.dynamo_requests + p.s3_put + p.s3_delete + u.queues.lambda_invocations
        };
        let quiet = self.service.quiet();
        let mut last = store(&self.now().0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            tokio::time::sleep(quiet).await;
            let now = store(&self.now().0);
            if now == last {
                return;
            }
            last = now;
        }
    }
}

/// Count `ops` operations of each kind per session, with `sessions` sessions at once, at
/// each of `sizes`, on the deployment `opts` names (its tables, bucket and queues are
/// created if missing), with the stages running as `deployment` says.
pub async fn measure(
    opts: &AwsOptions,
    deployment: Deployment,
    sizes: &[usize],
    ops: usize,
    sessions: usize,
    direct_results: bool,
    what: &str,
) -> anyhow::Result<CountTable> {
    anyhow::ensure!(ops > 0, "--ops must be at least 1");
    anyhow::ensure!(sessions > 0, "--sessions must be at least 1");
    let backend = Arc::new(
        AwsBackend::connect(opts)
            .await
            .context("connecting to the AWS endpoint")?,
    );
    let dir = tempfile::tempdir()?;
    let service = Service::start(deployment, opts, &backend, direct_results, dir.path()).await?;
    let results = if direct_results {
        Results::Direct {
            listen: "127.0.0.1:0".parse()?,
            advertise: None,
        }
    } else {
        Results::Queue
    };
    let mut clients = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        clients.push(
            Client::connect_aws_with(opts, Options::default(), &results)
                .await
                .context("opening a session on the AWS transport")?,
        );
    }
    let meters = Meters {
        backend: &backend,
        service: &service,
        clients: &clients,
    };
    meters.settle().await;
    let t = Instant::now();
    let before = meters.now();
    // Idle traffic is mostly long polls of 20 s (the pollers', and each session's queue), and
    // the sessions start theirs together: a window shorter than one poll saw all of them or
    // none, and the pro-rata subtraction below was off by up to one receive per session.
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = meters.since(&before);
    let idle_secs = t.elapsed().as_secs_f64();
    let root = format!("/cost-{}", std::process::id());
    clients[0]
        .create(&root, b"", CreateMode::Persistent)
        .await?;
    let total = ops * sessions;
    let mut rows = Vec::new();
    for &size in sizes {
        let data = incompressible(size);
        let data: &[u8] = &data;
        let base = format!("{root}/{size}");
        clients[0]
            .create(&base, b"", CreateMode::Persistent)
            .await?;
        let paths: Vec<Vec<String>> = (0..sessions)
            .map(|s| (0..ops).map(|i| format!("{base}/s{s}n{i}")).collect())
            .collect();
        let mut row = SizeCounts {
            data_bytes: size,
            ..SizeCounts::default()
        };
        macro_rules! count {
            ($field:ident, |$c:ident, $p:ident| $op:expr) => {{
                meters.settle().await;
                let t = Instant::now();
                let before = meters.now();
                let runs = clients.iter().zip(&paths).map(|($c, mine)| async move {
                    for $p in mine {
                        $op;
                    }
                    anyhow::Ok(())
                });
                for r in futures::future::join_all(runs).await {
                    r?;
                }
                meters.settle().await;
                let run = meters.since(&before);
                row.$field = per_op(run, t.elapsed().as_secs_f64(), idle, idle_secs, total);
            }};
        }
        count!(create, |c, p| c
            .create(p, data, CreateMode::Persistent)
            .await?);
        count!(set_data, |c, p| c.set_data(p, data, -1).await?);
        count!(get_data, |c, p| c.get_data(p).await?);
        count!(delete, |c, p| c.delete(p, -1).await?);
        clients[0].delete(&base, -1).await?;
        rows.push(row);
    }
    clients[0].delete(&root, -1).await?;
    for c in clients {
        c.close().await?;
    }
    drop(service);
    Ok(CountTable {
        measured: what.to_string(),
        ops_per_kind: ops,
        sessions,
        sizes: rows,
    })
}
