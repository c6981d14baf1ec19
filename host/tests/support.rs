//! Starting the real `faaskeeper` binary for process-level tests, and a host in process over
//! an embedded store the test keeps a handle on (to rewrite what a host left behind), and
//! writing log records into a stopped host's store.
#![allow(dead_code)]

use faaskeeper_core::keys;
use faaskeeper_core::wire::{LogEntry, LogHead, NodeView, Op, Request, Txn, encode_log_record};
use faaskeeper_core::{CreateMode, SessionId, Zxid};
use faaskeeper_storage::Store;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    pub child: Child,
    pub url: String,
    /// What it printed before it listened.
    pub banner: Vec<String>,
}

impl Server {
    /// `faaskeeper serve` on a free port over `data_dir`; waits until it listens.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, &[])
    }

    /// [`Server::start`] with more arguments to `serve`.
    pub fn start_with(data_dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_faaskeeper"))
            .args(["serve", "--port", "0", "--zk-port", "0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn faaskeeper serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let url = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .expect("read stdout");
            if let Some(url) = line.strip_prefix("faaskeeper listening on ") {
                break url.trim().to_string();
            }
            banner.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url, banner }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An embedded store with the system and user buckets in `dir`.
pub fn embedded_store(dir: &Path) -> std::sync::Arc<faaskeeper_backend_embedded::EmbeddedDb> {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    faaskeeper_backend_embedded::EmbeddedDb::open(
        &dir.join("store.redb"),
        &[SYSTEM_BUCKET, USER_BUCKET],
    )
    .expect("store")
}

/// A host in this process over the buckets of `db`, with its data dir `dir`.
pub async fn embedded_host(
    db: &std::sync::Arc<faaskeeper_backend_embedded::EmbeddedDb>,
    dir: &Path,
) -> faaskeeper_host::RunningHost {
    start_embedded_host(db, dir).await.expect("host starts")
}

/// [`embedded_host`], or why it did not start (e.g. recovery refused what the store holds).
pub async fn start_embedded_host(
    db: &std::sync::Arc<faaskeeper_backend_embedded::EmbeddedDb>,
    dir: &Path,
) -> anyhow::Result<faaskeeper_host::RunningHost> {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    let stores = faaskeeper_storage::StoreManager::new()
        .with_bucket(SYSTEM_BUCKET, db.bucket(SYSTEM_BUCKET).expect("system"))
        .with_bucket(USER_BUCKET, db.bucket(USER_BUCKET).expect("user"));
    host_over(stores, dir).await
}

/// A host in this process over `stores`, with its data dir `dir`.
pub async fn host_over(
    stores: faaskeeper_storage::StoreManager,
    dir: &Path,
) -> anyhow::Result<faaskeeper_host::RunningHost> {
    faaskeeper_host::start(faaskeeper_host::ServeOptions {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        zk_listen: None,
        stores: Some(stores),
        ..Default::default()
    })
    .await
}

/// The log's head in `system`.
pub async fn head(system: &dyn Store) -> LogHead {
    let bytes = system
        .get(keys::LOG_HEAD)
        .await
        .expect("read")
        .expect("head");
    serde_json::from_slice(&bytes).expect("head")
}

/// Wait until the distributor has applied everything up to `zxid`, then stop the host.
pub async fn applied_then_stop(
    system: &dyn Store,
    running: faaskeeper_host::RunningHost,
    zxid: Zxid,
) {
    applied(system, zxid, Duration::from_secs(10)).await;
    drop(running);
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Wait (up to `wait`) until the progress record says everything up to `zxid` is applied and
/// no batch is in progress.
pub async fn applied(system: &dyn Store, zxid: Zxid, wait: Duration) {
    let mut progress = serde_json::Value::Null;
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until {
        let bytes = system.get(keys::DIST_APPLIED).await.expect("read");
        progress = serde_json::from_slice(&bytes.expect("progress")).expect("plain JSON here");
        if progress["applied"].as_i64() == Some(zxid) && progress.get("pending").is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not applied up to {zxid}: {progress}");
}

/// Append `records` (each: its id, its bytes, already chained, and whether to store it
/// deflated) and point the head at the last one.
pub async fn append(system: &dyn Store, records: Vec<(String, Vec<u8>, bool)>, zxid: Zxid) {
    let last = records.last().expect("records").0.clone();
    for (id, mut bytes, deflated) in records {
        if deflated {
            let packed = miniz_oxide::deflate::compress_to_vec(&bytes, 1);
            bytes = [b"\0fk-deflate\0".as_slice(), &packed].concat();
        }
        system.set(&keys::txn(&id), bytes).await.expect("record");
    }
    let head = LogHead { zxid, id: last };
    system
        .set(keys::LOG_HEAD, serde_json::to_vec(&head).expect("json"))
        .await
        .expect("head");
}

/// A node's object in the user bucket.
pub async fn node(user: &dyn Store, path: &str) -> Option<NodeView> {
    let bytes = user.get(&keys::user_node(path)).await.expect("read")?;
    Some(serde_json::from_slice(&bytes).expect("node object"))
}

/// A fresh embedded store in `dir` that a host has initialised and left idle (stopped): its
/// buckets and the log's head, for a test to append log records after.
pub async fn idle_fresh_store(
    dir: &Path,
) -> (
    std::sync::Arc<faaskeeper_backend_embedded::EmbeddedDb>,
    std::sync::Arc<dyn Store>,
    std::sync::Arc<dyn Store>,
    LogHead,
) {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    let db = embedded_store(dir);
    let system = db.bucket(SYSTEM_BUCKET).expect("system");
    let user = db.bucket(USER_BUCKET).expect("user");
    let first = embedded_host(&db, dir).await;
    let start = head(&*system).await;
    applied_then_stop(&*system, first, start.zxid).await;
    (db, system, user, start)
}

/// Append `records` (as [`append`]) to a stopped host's store, then run a host on it until
/// everything up to `zxid` is applied, and stop it.
pub async fn append_and_apply(
    db: &std::sync::Arc<faaskeeper_backend_embedded::EmbeddedDb>,
    dir: &Path,
    records: Vec<(String, Vec<u8>, bool)>,
    zxid: Zxid,
) {
    let system = db
        .bucket(faaskeeper_core::keys::SYSTEM_BUCKET)
        .expect("system");
    append(&*system, records, zxid).await;
    let host = embedded_host(db, dir).await;
    applied_then_stop(&*system, host, zxid).await;
}

/// A txn of `session`'s request `seq`, logged now.
pub fn txn(zxid: Zxid, session: SessionId, seq: i64, op: Op) -> Txn {
    Txn {
        zxid,
        time_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64,
        request: Request { session, seq, op },
    }
}

/// A session's open, with its results to the host's hub.
pub fn open(session: SessionId) -> Op {
    Op::OpenSession {
        timeout_ms: 30_000,
        // The host's hub, which has no channel for it: results are dropped as gone.
        notify: format!("http://sessions.faaskeeper.internal/v1/sessions/{session}/deliver"),
        fallback: None,
    }
}

/// A set of `path` to `data`, any version.
pub fn set(path: &str, data: &[u8]) -> Op {
    Op::SetData {
        path: path.into(),
        data: data.to_vec(),
        version: -1,
    }
}

/// A create of `path` with the data `a`.
pub fn create(path: &str, mode: CreateMode) -> Op {
    Op::Create {
        path: path.into(),
        data: b"a".to_vec(),
        mode,
        acl: None,
    }
}

/// One log record holding `txns`, after the record `prev`.
pub fn record(id: &str, prev: &str, txns: Vec<Txn>) -> (String, Vec<u8>, bool) {
    let bytes = encode_log_record(LogEntry {
        prev: prev.into(),
        txns,
    })
    .expect("binary record");
    (id.into(), bytes, false)
}
