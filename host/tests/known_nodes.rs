//! Where the user bucket keeps the node records and bills every read (an S3 GET each), the
//! distributor does not read again the records it knows (nodes, sessions, watches): what its
//! batches read and wrote is handed from run to run through the host (the distributor's
//! `memo`), and taken only if the progress record shows that no other distributor started a
//! batch since.
//!
//! On the embedded store, its user bucket wrapped to bill every write (so the store keeps
//! each node there only, as on S3), and both buckets to note every key read from them:
//! - sets of a node created by an earlier run read neither the node nor the session's or
//!   the watches' records;
//! - after another host's distributor applied a set in between, the first host reads the
//!   node again, and a conditional set on the version the other one left succeeds;
//! - then it knows the node again.

mod support;

use async_trait::async_trait;
use faaskeeper_core::keys::{self, SYSTEM_BUCKET, USER_BUCKET};
use faaskeeper_core::wire::Op;
use faaskeeper_core::{CreateMode, SessionId};
use faaskeeper_storage::{Store, StoreError};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{append, applied, create, embedded_store, head, node, open, record, set, txn};

/// A bucket that bills every write, as S3 does, and notes the keys read from it.
struct Billed {
    inner: Arc<dyn Store>,
    reads: Mutex<Vec<String>>,
}

impl Billed {
    fn over(inner: Arc<dyn Store>) -> Arc<Billed> {
        Arc::new(Billed {
            inner,
            reads: Mutex::new(Vec::new()),
        })
    }

    fn note(&self, keys: &[String]) {
        self.reads
            .lock()
            .expect("lock")
            .extend(keys.iter().cloned());
    }

    /// The keys read since the last call.
    fn take_reads(&self) -> Vec<String> {
        std::mem::take(&mut *self.reads.lock().expect("lock"))
    }
}

#[async_trait]
impl Store for Billed {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.note(&[key.to_string()]);
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.note(keys);
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.inner.set(key, value).await
    }
    async fn set_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.inner.set_many(items).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.inner.delete_many(keys).await
    }
    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        self.inner.list_keys(cursor, limit).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.inner.increment(key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.inner.compare_and_swap(key, expected, new).await
    }
    fn summary(&self) -> String {
        format!("{} (billing every write)", self.inner.summary())
    }
    fn bills_writes(&self) -> bool {
        true
    }
}

/// A host in this process over the buckets.
async fn host(
    system: &Arc<Billed>,
    user: &Arc<Billed>,
    dir: &Path,
) -> faaskeeper_host::RunningHost {
    let stores = faaskeeper_storage::StoreManager::new()
        .with_bucket(SYSTEM_BUCKET, system.clone())
        .with_bucket(USER_BUCKET, user.clone());
    support::host_over(stores, dir).await.expect("host starts")
}

fn set_version(path: &str, data: &[u8], version: i32) -> Op {
    Op::SetData {
        path: path.into(),
        data: data.to_vec(),
        version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_nodes_are_not_read_again_unless_another_distributor_ran_between() {
    const A: SessionId = 601;
    const C: SessionId = 602;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = embedded_store(dir.path());
    let billed_system = Billed::over(db.bucket(SYSTEM_BUCKET).expect("system"));
    let system = billed_system.inner.clone();
    let user = Billed::over(db.bucket(USER_BUCKET).expect("user"));
    let first = host(&billed_system, &user, &dir.path().join("first")).await;
    let progress = system.get(keys::DIST_APPLIED).await.expect("read");
    let progress: serde_json::Value =
        serde_json::from_slice(&progress.expect("made by init")).expect("JSON");
    assert_eq!(
        progress["nodes_in_user"], true,
        "a user bucket that bills writes keeps the nodes: {progress}"
    );
    let start = head(&*system).await;
    let z = start.zxid;
    let wait = Duration::from_secs(10);

    // A opens and creates /k; then three runs each set it.
    append(
        &*system,
        vec![record(
            "r0",
            &start.id,
            vec![
                txn(z + 1, A, 0, open(A)),
                txn(z + 2, A, 1, create("/k", CreateMode::Persistent)),
            ],
        )],
        z + 2,
    )
    .await;
    first.runtime().kick_distributor();
    applied(&*system, z + 2, wait).await;
    user.take_reads();
    billed_system.take_reads();
    let mut prev = "r0".to_string();
    for i in 0..3 {
        let id = format!("s{i}");
        let zxid = z + 3 + i;
        let op = set("/k", format!("v{i}").as_bytes());
        append(
            &*system,
            vec![record(&id, &prev, vec![txn(zxid, A, 2 + i, op)])],
            zxid,
        )
        .await;
        first.runtime().kick_distributor();
        applied(&*system, zxid, wait).await;
        prev = id;
    }
    // (The user bucket holds only nodes: every key read is a node's.)
    let read = user.take_reads();
    assert!(
        read.is_empty(),
        "three sets of a node an earlier run created read {read:?}"
    );
    let records = [keys::session(A), keys::watches("/k"), keys::watches("/")];
    let read: Vec<String> = billed_system
        .take_reads()
        .into_iter()
        .filter(|k| records.contains(k))
        .collect();
    assert!(read.is_empty(), "nor the records of A or watches: {read:?}");
    let k = node(&*user.inner, "/k").await.expect("/k");
    assert_eq!((k.data.as_slice(), k.stat.version), (b"v2".as_slice(), 3));

    // A second host takes the lease over (as a host does when it starts) and applies a set;
    // the first host's memo still says version 3.
    let second = host(&billed_system, &user, &dir.path().join("second")).await;
    append(
        &*system,
        vec![record(
            "b0",
            &prev,
            vec![
                txn(z + 6, A, 5, set_version("/k", b"second", 3)),
                // Closed, so that it does not lapse (30 s after its open, unpinged) while
                // the lease expires: the sweep would append to the log beside this test.
                txn(z + 7, A, 6, Op::CloseSession),
            ],
        )],
        z + 7,
    )
    .await;
    second.runtime().kick_distributor();
    applied(&*system, z + 7, wait).await;
    drop(second);
    user.take_reads();

    // The first host's distributor gets the lease back once the second's expires (10 s):
    // a set on the version the second left must succeed.
    append(
        &*system,
        vec![record(
            "a0",
            "b0",
            vec![
                txn(z + 8, C, 0, open(C)),
                txn(z + 9, C, 1, set_version("/k", b"first again", 4)),
            ],
        )],
        z + 9,
    )
    .await;
    applied(&*system, z + 9, Duration::from_secs(30)).await;
    let k = node(&*user.inner, "/k").await.expect("/k");
    assert_eq!(
        (k.data.as_slice(), k.stat.version),
        (b"first again".as_slice(), 5),
        "the set on version 4 was applied against the node as the second host left it"
    );
    let read = user.take_reads();
    assert!(
        read.contains(&keys::user_node("/k")),
        "the first host read /k again: {read:?}"
    );

    // From then on it knows /k again.
    append(
        &*system,
        vec![record(
            "a1",
            "a0",
            vec![
                txn(z + 10, C, 2, set("/k", b"last")),
                txn(z + 11, C, 3, Op::CloseSession),
            ],
        )],
        z + 11,
    )
    .await;
    first.runtime().kick_distributor();
    applied(&*system, z + 11, wait).await;
    let read = user.take_reads();
    assert!(read.is_empty(), "a set after it read {read:?}");
    let k = node(&*user.inner, "/k").await.expect("/k");
    assert_eq!((k.data.as_slice(), k.stat.version), (b"last".as_slice(), 6));
}
