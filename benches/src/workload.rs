//! The workloads, driven through the ZooKeeper protocol by the Rust `zookeeper-client` crate,
//! so that both servers are measured with the very same client code.

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use zookeeper_client as zk;

/// Payload of every write: 1 KiB, as in the reference figures.
pub const VALUE_LEN: usize = 1024;

/// Connect one session.
pub async fn connect(addr: &str) -> anyhow::Result<zk::Client> {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(20))
        .connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))
}

fn persistent() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

/// Create `path` unless it exists.
pub async fn ensure(c: &zk::Client, path: &str) -> anyhow::Result<()> {
    match c.create(path, b"", &persistent()).await {
        Ok(_) | Err(zk::Error::NodeExists) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("create {path}")),
    }
}

/// Which single-session operation a latency run times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyOp {
    /// `create` of a fresh node with 1 KiB.
    Create,
    /// `getData` of a 1 KiB node.
    Get,
    /// `setData` of 1 KiB.
    Set,
    /// `exists` of an existing node.
    Exists,
}

impl LatencyOp {
    /// Every op, in report order.
    pub const ALL: [LatencyOp; 4] = [
        LatencyOp::Create,
        LatencyOp::Get,
        LatencyOp::Set,
        LatencyOp::Exists,
    ];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            LatencyOp::Create => "create",
            LatencyOp::Get => "get",
            LatencyOp::Set => "set",
            LatencyOp::Exists => "exists",
        }
    }
}

/// Time `n` operations of one kind, one at a time, on one session under `root`.
pub async fn latency(
    addr: &str,
    root: &str,
    op: LatencyOp,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let c = connect(addr).await?;
    let base = format!("{root}/lat-{}", op.name());
    ensure(&c, &base).await?;
    let value = vec![b'v'; VALUE_LEN];
    let node = format!("{base}/n");
    if op != LatencyOp::Create {
        ensure(&c, &node).await?;
        c.set_data(&node, &value, None).await?;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        match op {
            LatencyOp::Create => {
                c.create(&format!("{base}/c{i}"), &value, &persistent())
                    .await?;
            }
            LatencyOp::Get => {
                c.get_data(&node).await?;
            }
            LatencyOp::Set => {
                c.set_data(&node, &value, None).await?;
            }
            LatencyOp::Exists => {
                c.check_stat(&node).await?;
            }
        }
        out.push(start.elapsed());
    }
    Ok(out)
}

/// Closed-loop throughput: `sessions` sessions each issue their next request as soon as the
/// previous one is answered, for `run` after a `warmup`; returns operations per second.
/// Writes are `setData` of 1 KiB on the session's own node, reads `getData` of it.
pub async fn throughput(
    addr: &str,
    root: &str,
    sessions: usize,
    writes: bool,
    warmup: Duration,
    run: Duration,
) -> anyhow::Result<f64> {
    let value = Arc::new(vec![b't'; VALUE_LEN]);
    let mut clients = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let c = connect(addr).await?;
        let node = format!("{root}/tp-{i}");
        ensure(&c, &node).await?;
        c.set_data(&node, &value, None).await?;
        clients.push((c, node));
    }
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(sessions);
    for (c, node) in clients {
        let (counting, stop, done, value) =
            (counting.clone(), stop.clone(), done.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if writes {
                    c.set_data(&node, &value, None).await?;
                } else {
                    c.get_data(&node).await?;
                }
                if counting.load(Ordering::Relaxed) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(warmup).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(run).await;
    let ops = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("worker panicked")??;
    }
    Ok(ops as f64 / elapsed.as_secs_f64())
}

/// Watch latency: session A leaves a data watch, session B sets the node; the time from B's
/// request to A's event, `n` times.
pub async fn watch_latency(addr: &str, root: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let a = connect(addr).await?;
    let b = connect(addr).await?;
    let node = format!("{root}/watched");
    ensure(&a, &node).await?;
    let value = vec![b'w'; VALUE_LEN];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (_, _, watcher) = a.get_and_watch_data(&node).await?;
        let start = Instant::now();
        let (set, event) = tokio::join!(b.set_data(&node, &value, None), async {
            let e = watcher.changed().await;
            (start.elapsed(), e)
        });
        set?;
        let (elapsed, event) = event;
        anyhow::ensure!(
            event.event_type == zk::EventType::NodeDataChanged,
            "unexpected event {event:?}"
        );
        out.push(elapsed);
    }
    Ok(out)
}
