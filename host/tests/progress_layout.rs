//! A store written before the distributor kept its redo record inside `dist/applied` still
//! starts and finishes the batch it was in: the old layout was a bare zxid in `dist/applied`
//! and the redo record, with raw base64 writes, under `dist/pending`. The test stops a host,
//! rewrites its store as the old version would have left it in the middle of a batch, starts
//! a new host on it, and checks the batch is finished, the old key gone, and writes go on.

mod support;

use faaskeeper_backend_embedded::EmbeddedDb;
use faaskeeper_client::{Client, Options};
use faaskeeper_core::apply::NodeRecord;
use faaskeeper_core::keys::{self, SYSTEM_BUCKET, USER_BUCKET};
use faaskeeper_core::wire::NodeView;
use faaskeeper_core::{CreateMode, SessionId, Stat};
use serde::Serialize;
use std::time::Duration;
use support::{embedded_host, embedded_store, start_embedded_host};

/// A raw write of the old redo record.
#[derive(Serialize)]
struct Put {
    key: String,
    #[serde(with = "faaskeeper_core::wire::b64")]
    value: Vec<u8>,
}

/// The distributor's progress record once it holds no batch in progress (a write is
/// answered before its batch is marked applied). Off DynamoDB it is plain JSON.
async fn idle_progress(system: &dyn faaskeeper_storage::Store) -> serde_json::Value {
    let mut progress = serde_json::Value::Null;
    for _ in 0..100 {
        let bytes = system
            .get(keys::DIST_APPLIED)
            .await
            .expect("read")
            .expect("progress record");
        progress = serde_json::from_slice(&bytes).expect("a progress record is plain JSON here");
        if progress.get("pending").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress
}

/// What a host left behind once idle: a store holding `/a` (data "one"), created by a
/// session that is closed since, and no batch in progress.
struct Left {
    db: std::sync::Arc<EmbeddedDb>,
    system: std::sync::Arc<dyn faaskeeper_storage::Store>,
    /// The last applied zxid.
    applied: i64,
    /// `/a` as created.
    stat: Stat,
    /// The session that created it.
    session: SessionId,
}

/// Run a host on a fresh store in `dir`, create `/a`, close the session, and stop the host
/// only once its distributor is idle (the close's batch finished): the store is then as an
/// idle host leaves it, up to what a test rewrites.
async fn idle_store_with_a(dir: &std::path::Path) -> Left {
    let db = embedded_store(dir);
    let first = embedded_host(&db, dir).await;
    let c = Client::connect(&first.url(), Options::default())
        .await
        .expect("connect");
    let (_, stat) = c
        .create2("/a", b"one", CreateMode::Persistent)
        .await
        .expect("create");
    let session = c.session_id();
    c.close().await.expect("close");
    let system = db.bucket(SYSTEM_BUCKET).expect("system");
    let progress = idle_progress(&*system).await;
    drop(first);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let applied = progress["applied"].as_i64().expect("applied zxid");
    assert!(progress.get("pending").is_none(), "idle: {progress}");
    Left {
        db,
        system,
        applied,
        stat,
        session,
    }
}

/// `/a`'s node record as the idle host left it, with its data replaced by `data`.
async fn node_a_with(system: &dyn faaskeeper_storage::Store, data: &[u8]) -> NodeRecord {
    let mut node = NodeRecord::from_record(
        &system
            .get(&keys::node("/a"))
            .await
            .expect("read")
            .expect("node record"),
    )
    .expect("node record");
    node.data = data.to_vec();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_in_the_old_progress_layout_is_finished_and_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Left {
        db,
        system,
        applied,
        stat,
        ..
    } = idle_store_with_a(dir.path()).await;

    // As the old version left a batch that wrote /a's data "legacy" and crashed before
    // marking it applied.
    let node = node_a_with(&*system, b"legacy").await;
    let view: NodeView = node.view();
    let legacy = serde_json::json!({
        "to_zxid": applied,
        "system_puts": [Put { key: keys::node("/a"), value: serde_json::to_vec(&node).expect("json") }],
        "system_deletes": [],
        "user_puts": [Put { key: keys::user_node("/a"), value: serde_json::to_vec(&view).expect("json") }],
        "user_deletes": [],
        "deliveries": [],
        "txn_ids": [],
    });
    system
        .set(keys::DIST_APPLIED, (applied - 1).to_string().into_bytes())
        .await
        .expect("bare zxid");
    system
        .set(
            keys::DIST_PENDING,
            serde_json::to_vec(&legacy).expect("json"),
        )
        .await
        .expect("old redo record");

    let second = embedded_host(&db, dir.path()).await;
    let c = Client::connect(&second.url(), Options::default())
        .await
        .expect("connect");
    c.create("/b", b"two", CreateMode::Persistent)
        .await
        .expect("writes go on");
    let (data, now) = c.get_data("/a").await.expect("read /a");
    assert_eq!(data, b"legacy", "the old redo record was carried out");
    assert_eq!(now.version, stat.version);
    assert_eq!(c.get_data("/b").await.expect("read /b").0, b"two");
    assert_eq!(
        system.get(keys::DIST_PENDING).await.expect("read"),
        None,
        "the old redo record is gone once finished"
    );
    // A write is answered before its batch is marked applied: wait for the idle record.
    let progress = idle_progress(&*system).await;
    assert!(
        progress["applied"].as_i64().expect("zxid") > applied,
        "{progress}"
    );
    c.close().await.expect("close");
}

/// The redo record keeps session records and deliveries as the JSON they are written as;
/// a damaged one is refused on the redo path, before any of the batch is carried out, and
/// the host does not start on it (rather than write a broken session record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redo_record_with_a_damaged_session_record_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Left {
        db,
        system,
        applied,
        session,
        ..
    } = idle_store_with_a(dir.path()).await;
    let user = db.bucket(USER_BUCKET).expect("user");
    let object_before = user
        .get(&keys::user_node("/a"))
        .await
        .expect("read")
        .expect("user object");
    let node = node_a_with(&*system, b"redo").await;
    let damaged = serde_json::json!({
        "applied": applied,
        "pending": {
            "to_zxid": applied + 1,
            "nodes": [["/a", node]],
            "sessions": [[session, { "timeout_ms": "not a number" }]],
            "deliveries": [],
            "txn_ids": [],
        },
    });
    let damaged = serde_json::to_vec(&damaged).expect("json");
    system
        .set(keys::DIST_APPLIED, damaged.clone())
        .await
        .expect("damaged redo record");

    let refused = start_embedded_host(&db, dir.path()).await;
    let err = match refused {
        Ok(_) => panic!("a host started on a damaged redo record"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("redo record: session"), "{err}");
    assert_eq!(
        user.get(&keys::user_node("/a")).await.expect("read"),
        Some(object_before),
        "nothing of the refused batch was carried out"
    );
    assert_eq!(
        system.get(keys::DIST_APPLIED).await.expect("read"),
        Some(damaged),
        "the redo record stays for a repaired host"
    );
}
