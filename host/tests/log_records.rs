//! Log records of several txns, read by the distributor as a store holds them: records of
//! every layout in one chain (one txn under `txn` and several under `txns` in JSON, as
//! writers before wrote; the binary layout of `wire::encode_log_record`, as they write now),
//! a record longer than one batch of the distributor, a progress record that stops in the
//! middle of a record (a batch of an earlier run ended there), and records stored deflated
//! (as writers store records over a write unit where writes are billed by size:
//! `faaskeeper_guest::pack`). The test writes the records into a stopped host's store,
//! starts a host on it and checks what it applied and that every spent record is deleted.

mod support;

use faaskeeper_core::keys;
use faaskeeper_core::wire::{LogEntry, Op, Txn, encode_log_record};
use faaskeeper_core::{CreateMode, Zxid};
use faaskeeper_storage::Store;
use support::{
    append, append_and_apply, applied_then_stop, embedded_host, head, idle_fresh_store, node, set,
};

const SESSION: i64 = 77;

/// A txn of this test's session, its seq the zxid.
fn txn(zxid: Zxid, op: Op) -> Txn {
    support::txn(zxid, SESSION, zxid, op)
}

/// A record in JSON, as writers stored them before the binary layout.
fn json(record: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&record).expect("json")
}

/// A record in the binary layout writers store now.
fn binary(record: LogEntry) -> Vec<u8> {
    encode_log_record(record).expect("binary record")
}

async fn txn_keys(system: &dyn Store) -> Vec<String> {
    let (keys, _) = system.list_keys(None, 100_000).await.expect("list");
    keys.into_iter()
        .filter(|k| k.starts_with(keys::TXN_PREFIX))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_both_layouts_longer_than_a_batch_and_resumed_mid_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, system, user, start) = idle_fresh_store(dir.path()).await;

    // One chain: a session opened in the old layout, 600 creates in one deflated record (more
    // than the distributor's batch of 512), then three sets of /n0.
    let z = start.zxid;
    let open = txn(
        z + 1,
        Op::OpenSession {
            timeout_ms: 30_000,
            // The host's hub, which has no channel for it: results are dropped as gone.
            notify: format!("http://sessions.faaskeeper.internal/v1/sessions/{SESSION}/deliver"),
            fallback: None,
        },
    );
    let creates: Vec<Txn> = (0..600)
        .map(|i| {
            txn(
                z + 2 + i,
                Op::Create {
                    path: format!("/n{i}"),
                    data: vec![i as u8; 10],
                    mode: CreateMode::Persistent,
                    acl: None,
                },
            )
        })
        .collect();
    let sets: Vec<Txn> = (0..3)
        .map(|i| txn(z + 602 + i, set("/n0", &[b'a' + i as u8])))
        .collect();
    append_and_apply(
        &db,
        dir.path(),
        vec![
            (
                "old".into(),
                json(serde_json::json!({ "prev": start.id, "txn": open })),
                false,
            ),
            (
                "big".into(),
                json(
                    serde_json::to_value(LogEntry {
                        prev: "old".into(),
                        txns: creates,
                    })
                    .expect("json"),
                ),
                true,
            ),
            (
                "sets".into(),
                binary(LogEntry {
                    prev: "big".into(),
                    txns: sets,
                }),
                false,
            ),
        ],
        z + 604,
    )
    .await;
    for i in [1, 300, 511, 512, 599] {
        let n = node(&*user, &format!("/n{i}")).await.expect("created");
        assert_eq!(n.data, vec![i as u8; 10], "/n{i}");
    }
    let n0 = node(&*user, "/n0").await.expect("/n0");
    assert_eq!((n0.data.as_slice(), n0.stat.version), (b"c".as_slice(), 3));
    assert_eq!(n0.stat.mzxid, z + 604);
    assert_eq!(
        txn_keys(&*system).await,
        Vec::<String>::new(),
        "spent records stay"
    );

    // A record of ten sets of which an earlier run applied five: the run that resumes applies
    // the other five only, then deletes the record.
    let z = head(&*system).await.zxid;
    let tens: Vec<Txn> = (0..10)
        .map(|i| txn(z + 1 + i, set("/n1", format!("v{i}").as_bytes())))
        .collect();
    append(
        &*system,
        vec![(
            "tens".into(),
            binary(LogEntry {
                prev: "sets".into(),
                txns: tens,
            }),
            true,
        )],
        z + 10,
    )
    .await;
    system
        .set(
            keys::DIST_APPLIED,
            serde_json::to_vec(&serde_json::json!({ "applied": z + 5 })).expect("json"),
        )
        .await
        .expect("progress");
    let third = embedded_host(&db, dir.path()).await;
    applied_then_stop(&*system, third, z + 10).await;
    let n1 = node(&*user, "/n1").await.expect("/n1");
    assert_eq!(n1.data, b"v9");
    assert_eq!(n1.stat.version, 5, "only the five unapplied sets");
    assert_eq!(
        txn_keys(&*system).await,
        Vec::<String>::new(),
        "spent records stay"
    );
}

/// A backlog of many batches is applied over several invocations: a run starts no batch
/// after its budget (here 0 ms: one batch, `{"budget_ms": 0}`) and answers `"more": true`
/// while the log holds more, so that the platform wakes it again; the last run answers
/// without it, and everything is applied once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_applied_over_invocations_that_say_more() {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, system, user, start) = idle_fresh_store(dir.path()).await;
    // A session's open and 1,100 creates: three batches of at most 512.
    let z = start.zxid;
    let mut txns = vec![txn(z + 1, support::open(SESSION))];
    txns.extend((0..1100).map(|i| {
        txn(
            z + 2 + i,
            Op::Create {
                path: format!("/m{i}"),
                data: vec![7; 10],
                mode: CreateMode::Persistent,
                acl: None,
            },
        )
    }));
    let last = z + 1101;
    append(
        &*system,
        vec![(
            "backlog".into(),
            binary(LogEntry {
                prev: start.id.clone(),
                txns,
            }),
            false,
        )],
        last,
    )
    .await;
    let rt = stages_alone(
        db.bucket(SYSTEM_BUCKET).expect("system"),
        db.bucket(USER_BUCKET).expect("user"),
    );
    let fence = lease(&*system).await["fence"].as_u64().expect("fence");
    let mut answers = Vec::new();
    loop {
        let (answer, more) = recover(&rt, b"{\"budget_ms\": 0}").await;
        // A run without an owner takes the lease once and leaves it free when it stops,
        // with txns left (its budget) or not.
        let after = lease(&*system).await;
        assert_eq!(after["owner"], "", "released: {after}");
        assert_eq!(
            after["fence"].as_u64(),
            Some(fence + answers.len() as u64 + 1),
            "taken once: {after}"
        );
        answers.push(answer);
        if !more {
            break;
        }
        assert!(answers.len() < 10, "no end: {answers:?}");
    }
    let applied: Vec<i64> = answers
        .iter()
        .map(|a| a["applied"].as_i64().expect("applied"))
        .collect();
    assert_eq!(answers.len(), 3, "one batch an invocation: {answers:?}");
    assert!(
        applied.windows(2).all(|w| w[0] < w[1]) && applied[2] == last,
        "each run went on where the last stopped: {applied:?}"
    );
    for i in [0, 511, 512, 1099] {
        let n = node(&*user, &format!("/m{i}")).await.expect("created");
        assert_eq!(n.stat.czxid, z + 2 + i, "/m{i}");
    }
    assert_eq!(txn_keys(&*system).await, Vec::<String>::new());
}

/// The stages over the two buckets, as a platform runs them: no distributor loop wakes
/// them here.
fn stages_alone(
    system: std::sync::Arc<dyn Store>,
    user: std::sync::Arc<dyn Store>,
) -> std::sync::Arc<faaskeeper_host::runtime::Runtime> {
    let stores = faaskeeper_storage::StoreManager::new()
        .with_bucket(keys::SYSTEM_BUCKET, system)
        .with_bucket(keys::USER_BUCKET, user);
    faaskeeper_host::runtime::Runtime::new(
        &faaskeeper_host::embedded_stages(),
        stores,
        Default::default(),
        Default::default(),
    )
    .expect("runtime")
}

/// One distributor invocation of `rt` with the wake-up `body`, taking over the stopped
/// host's lease as after a restart: its answer, and whether it says the log holds more.
async fn recover(
    rt: &std::sync::Arc<faaskeeper_host::runtime::Runtime>,
    body: &'static [u8],
) -> (serde_json::Value, bool) {
    let (status, body) = rt
        .invoke(
            faaskeeper_host::runtime::StageName::Distributor,
            "/recover",
            bytes::Bytes::from_static(body),
        )
        .await
        .expect("invocation");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer = serde_json::from_slice(&body).expect("json");
    (answer, faaskeeper_host::runtime::more_to_distribute(&body))
}

/// The distributor's lease record, as stored.
async fn lease(system: &dyn Store) -> serde_json::Value {
    let bytes = system
        .get(keys::DIST_LEASE)
        .await
        .expect("get")
        .expect("a lease record");
    serde_json::from_slice(&bytes).expect("lease json")
}

/// The system bucket, with one extra writer: right after the distributor's first progress
/// write, it appends `record` to the log, so that the run finds the log grown when its first
/// round ends, as it would under a steady stream of writes.
struct GrowsDuringRun {
    inner: std::sync::Arc<dyn Store>,
    record: std::sync::Mutex<Option<Appended>>,
}

/// Log records as [`append`] takes them, and the zxid of the head after them.
type Appended = (Vec<(String, Vec<u8>, bool)>, faaskeeper_core::Zxid);

#[async_trait::async_trait]
impl Store for GrowsDuringRun {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, faaskeeper_storage::StoreError> {
        self.inner.get(key).await
    }
    async fn get_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, faaskeeper_storage::StoreError> {
        self.inner.get_many(keys).await
    }
    async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), faaskeeper_storage::StoreError> {
        self.inner.set(key, value).await?;
        if key == keys::DIST_APPLIED {
            let next = self.record.lock().expect("lock").take();
            if let Some((records, zxid)) = next {
                append(&*self.inner, records, zxid).await;
            }
        }
        Ok(())
    }
    async fn set_many(
        &self,
        items: Vec<(String, Vec<u8>)>,
    ) -> Result<(), faaskeeper_storage::StoreError> {
        self.inner.set_many(items).await
    }
    async fn delete(&self, key: &str) -> Result<(), faaskeeper_storage::StoreError> {
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: Vec<String>) -> Result<(), faaskeeper_storage::StoreError> {
        self.inner.delete_many(keys).await
    }
    async fn list_keys(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<String>), faaskeeper_storage::StoreError> {
        self.inner.list_keys(cursor, limit).await
    }
    async fn increment(
        &self,
        key: &str,
        delta: i64,
    ) -> Result<i64, faaskeeper_storage::StoreError> {
        self.inner.increment(key, delta).await
    }
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<(), faaskeeper_storage::StoreError> {
        self.inner.compare_and_swap(key, expected, new).await
    }
    fn summary(&self) -> String {
        self.inner.summary()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ownerless_run_keeps_the_lease_while_the_log_grows() {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, system, user, start) = idle_fresh_store(dir.path()).await;
    let z = start.zxid;
    let create = |zxid, i: i64| {
        txn(
            zxid,
            Op::Create {
                path: format!("/g{i}"),
                data: vec![1; 10],
                mode: CreateMode::Persistent,
                acl: None,
            },
        )
    };
    // The log before the run: the session's open and two creates. The record appended
    // during the run: two more creates.
    let first = LogEntry {
        prev: start.id.clone(),
        txns: vec![
            txn(z + 1, support::open(SESSION)),
            create(z + 2, 0),
            create(z + 3, 1),
        ],
    };
    append(
        &*system,
        vec![("first".into(), binary(first), false)],
        z + 3,
    )
    .await;
    let second = LogEntry {
        prev: "first".into(),
        txns: vec![create(z + 4, 2), create(z + 5, 3)],
    };
    let grows: std::sync::Arc<dyn Store> = std::sync::Arc::new(GrowsDuringRun {
        inner: db.bucket(SYSTEM_BUCKET).expect("system"),
        record: std::sync::Mutex::new(Some((
            vec![("second".into(), binary(second), false)],
            z + 5,
        ))),
    });
    let rt = stages_alone(grows, db.bucket(USER_BUCKET).expect("user"));
    let fence = lease(&*system).await["fence"].as_u64().expect("fence");
    // No owner named, as a Lambda function runs it.
    let (answer, more) = recover(&rt, b"{}").await;
    assert_eq!(
        answer["applied"].as_i64(),
        Some(z + 5),
        "both rounds: {answer}"
    );
    assert!(!more, "{answer}");
    for i in 0..4 {
        let n = node(&*user, &format!("/g{i}")).await.expect("created");
        assert_eq!(n.stat.czxid, z + 2 + i, "/g{i}");
    }
    // Two rounds, one lease: taken when the run started, released when the log ran dry.
    let after = lease(&*system).await;
    assert_eq!(after["owner"], "", "released: {after}");
    assert_eq!(
        after["fence"].as_u64(),
        Some(fence + 1),
        "taken once: {after}"
    );
    assert_eq!(txn_keys(&*system).await, Vec::<String>::new());
}

/// A store whose log head is gone while its progress record shows applied txns (a log lost
/// or cut short) is refused at start: a fresh head would number new writes below the
/// applied ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_its_log_head_after_applied_txns_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, system, _user, start) = idle_fresh_store(dir.path()).await;
    let z = start.zxid;
    let open = txn(
        z + 1,
        Op::OpenSession {
            timeout_ms: 30_000,
            notify: format!("http://sessions.faaskeeper.internal/v1/sessions/{SESSION}/deliver"),
            fallback: None,
        },
    );
    append_and_apply(
        &db,
        dir.path(),
        vec![(
            "only".into(),
            binary(LogEntry {
                prev: start.id.clone(),
                txns: vec![open],
            }),
            false,
        )],
        z + 1,
    )
    .await;
    system.delete(keys::LOG_HEAD).await.expect("delete head");

    let refused = support::start_embedded_host(&db, dir.path()).await;
    let Err(e) = refused else {
        panic!("a host started on a store without its log head");
    };
    assert!(
        format!("{e:#}").contains("log head missing"),
        "unexpected error: {e:#}"
    );
    assert!(
        system.get(keys::LOG_HEAD).await.expect("read").is_none(),
        "the refused start made a head"
    );
}
