//! A session's last request and result live in the distributor's progress record while
//! nothing else of the session changes: its own record is not written for every write. The
//! test writes log records into a stopped host's store (as in `log_records.rs`) and checks,
//! across restarts of the host, that
//! - a request logged again (a redelivery) is applied once, the newest one as well as an
//!   older one, and the progress record keeps the result;
//! - a change of anything else of the session (an ephemeral node) writes its record whole;
//! - at most 64 sessions are kept (when full, the others are written as before), and a
//!   result not renewed for 16 batches goes back to its session's record, not before;
//! - a progress record of the layout's first version (no batch numbers) still reads.

mod support;

use faaskeeper_core::apply::SessionRecord;
use faaskeeper_core::keys;
use faaskeeper_core::wire::Txn;
use faaskeeper_core::{CreateMode, SessionId};
use faaskeeper_storage::Store;
use support::{append_and_apply, create, idle_fresh_store, node, open, record, set, txn};

async fn session_record(system: &dyn Store, id: SessionId) -> SessionRecord {
    let bytes = system
        .get(&keys::session(id))
        .await
        .expect("read")
        .expect("session record");
    serde_json::from_slice(&bytes).expect("session record JSON")
}

/// The progress record's last results: session id → `[seq, zxid, result]`.
async fn last_results(system: &dyn Store) -> serde_json::Map<String, serde_json::Value> {
    let bytes = system
        .get(keys::DIST_APPLIED)
        .await
        .expect("read")
        .expect("progress");
    let progress: serde_json::Value = serde_json::from_slice(&bytes).expect("plain JSON here");
    progress
        .get("last_results")
        .and_then(|l| l.as_object().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_results_in_the_progress_record_still_apply_a_request_once() {
    const A: SessionId = 501;
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, system, user, start) = idle_fresh_store(dir.path()).await;
    let z = start.zxid;

    // A opens (a batch of its own: a session opened in a batch is written whole with it),
    // then creates /r and sets it twice.
    append_and_apply(
        &db,
        dir.path(),
        vec![record("r0", &start.id, vec![txn(z + 1, A, 0, open(A))])],
        z + 1,
    )
    .await;
    append_and_apply(
        &db,
        dir.path(),
        vec![record(
            "r1",
            "r0",
            vec![
                txn(z + 2, A, 1, create("/r", CreateMode::Persistent)),
                txn(z + 3, A, 2, set("/r", b"b")),
                txn(z + 4, A, 3, set("/r", b"c")),
            ],
        )],
        z + 4,
    )
    .await;
    assert_eq!(
        session_record(&*system, A).await.last_seq,
        0,
        "only the open wrote A's record"
    );
    let kept = last_results(&*system).await;
    assert_eq!(kept[&A.to_string()][0], 3, "A's last seq: {kept:?}");
    assert_eq!(kept[&A.to_string()][1], z + 4, "its zxid: {kept:?}");
    assert_eq!(kept[&A.to_string()][2]["stat"]["version"], 2, "its result");

    // The first version of this layout kept `[seq, zxid, result]`, without the batch: such a
    // progress record still reads (checked by the redeliveries below).
    let mut progress: serde_json::Value = serde_json::from_slice(
        &system
            .get(keys::DIST_APPLIED)
            .await
            .expect("read")
            .expect("progress"),
    )
    .expect("JSON");
    for (_, kept) in progress["last_results"]
        .as_object_mut()
        .expect("last results")
        .iter_mut()
    {
        kept.as_array_mut().expect("an array").truncate(3);
    }
    system
        .set(
            keys::DIST_APPLIED,
            serde_json::to_vec(&progress).expect("JSON"),
        )
        .await
        .expect("write");

    // After a restart: seq 3 logged again (with other data, to show it is not applied), seq
    // 2 again, then a new set.
    append_and_apply(
        &db,
        dir.path(),
        vec![record(
            "r2",
            "r1",
            vec![
                txn(z + 5, A, 3, set("/r", b"x")),
                txn(z + 6, A, 2, set("/r", b"y")),
                txn(z + 7, A, 4, set("/r", b"d")),
            ],
        )],
        z + 7,
    )
    .await;
    let r = node(&*user, "/r").await.expect("/r");
    assert_eq!(r.data, b"d");
    assert_eq!(
        (r.stat.version, r.stat.mzxid),
        (3, z + 7),
        "the sets of seq 2, 3 and 4, each once"
    );
    assert_eq!(last_results(&*system).await[&A.to_string()][0], 4);
    assert_eq!(session_record(&*system, A).await.last_seq, 0);

    // An ephemeral node changes A's record: written whole, with its last result.
    append_and_apply(
        &db,
        dir.path(),
        vec![record(
            "r3",
            "r2",
            vec![txn(z + 8, A, 5, create("/e", CreateMode::Ephemeral))],
        )],
        z + 8,
    )
    .await;
    let rec = session_record(&*system, A).await;
    assert_eq!(rec.last_seq, 5);
    assert!(rec.ephemerals.contains("/e"), "{rec:?}");
    assert!(
        !last_results(&*system).await.contains_key(&A.to_string()),
        "kept in the record now"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_64_last_results_are_kept_and_stale_ones_go_back_to_their_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, system, user, start) = idle_fresh_store(dir.path()).await;
    let z = start.zxid;

    // 70 sessions open, then create a node each and set it, in one record (one batch).
    let sessions: Vec<SessionId> = (1000..1070).collect();
    let opens = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| txn(z + 1 + i as i64, *s, 0, open(*s)))
        .collect();
    let z = z + sessions.len() as i64;
    append_and_apply(&db, dir.path(), vec![record("opens", &start.id, opens)], z).await;
    let mut txns = Vec::new();
    for (i, s) in sessions.iter().enumerate() {
        let path = format!("/s{i}");
        txns.push(txn(
            z + 1 + 2 * i as i64,
            *s,
            1,
            create(&path, CreateMode::Persistent),
        ));
        txns.push(txn(z + 2 + 2 * i as i64, *s, 2, set(&path, b"s")));
    }
    let last = z + 2 * sessions.len() as i64;
    append_and_apply(&db, dir.path(), vec![record("many", "opens", txns)], last).await;
    // Full at 64: the last six to come (the highest zxids) are written to their records.
    let kept = last_results(&*system).await;
    assert_eq!(kept.len(), 64, "{:?}", kept.keys());
    for (i, s) in sessions.iter().enumerate() {
        let rec = session_record(&*system, *s).await;
        if i >= 64 {
            assert_eq!(
                rec.last_seq, 2,
                "session {s}, refused when full, in its record"
            );
            assert!(!kept.contains_key(&s.to_string()));
        } else {
            assert_eq!(rec.last_seq, 0, "session {s}: only its open in its record");
            assert_eq!(kept[&s.to_string()][0], 2, "session {s}");
        }
        assert_eq!(
            node(&*user, &format!("/s{i}"))
                .await
                .expect("created")
                .stat
                .version,
            1
        );
    }

    // After a restart: a set by a session written to its record (still refused: full) and one
    // by a kept session, each logged twice, each applied once.
    let more = vec![
        txn(last + 1, sessions[69], 3, set("/s69", b"t")),
        txn(last + 2, sessions[69], 3, set("/s69", b"u")),
        txn(last + 3, sessions[40], 3, set("/s40", b"t")),
        txn(last + 4, sessions[40], 2, set("/s40", b"u")),
    ];
    let last = last + 4;
    append_and_apply(&db, dir.path(), vec![record("more", "many", more)], last).await;
    for path in ["/s69", "/s40"] {
        let n = node(&*user, path).await.expect("node");
        assert_eq!(
            (n.data.as_slice(), n.stat.version),
            (b"t".as_slice(), 2),
            "{path}"
        );
    }
    let kept = last_results(&*system).await;
    assert_eq!(kept.len(), 64);
    assert_eq!(kept[&sessions[40].to_string()][0], 3);
    assert!(!kept.contains_key(&sessions[69].to_string()));
    assert_eq!(session_record(&*system, sessions[69]).await.last_seq, 3);

    // 15 batches by session 40 alone (one record of 14 × 512 + 1 sets, cut into batches of
    // 512): the other results are 16 batches old then, and stay.
    let sets: Vec<Txn> = (0..14 * 512 + 1)
        .map(|i| txn(last + 1 + i, sessions[40], 4 + i, set("/s40", b"v")))
        .collect();
    let n = sets.len() as i64;
    append_and_apply(
        &db,
        dir.path(),
        vec![record("long", "more", sets)],
        last + n,
    )
    .await;
    assert_eq!(last_results(&*system).await.len(), 64, "none stale yet");
    assert_eq!(session_record(&*system, sessions[0]).await.last_seq, 0);

    // One batch more: every result but session 40's is 17 batches old and goes back to its
    // session's record.
    let last = last + n;
    let one = vec![txn(last + 1, sessions[40], 4 + n, set("/s40", b"w"))];
    append_and_apply(&db, dir.path(), vec![record("one", "long", one)], last + 1).await;
    let kept = last_results(&*system).await;
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        vec![&sessions[40].to_string()],
        "only the session still writing"
    );
    assert_eq!(kept[&sessions[40].to_string()][0], 4 + n);
    for s in &sessions[..64] {
        if *s != sessions[40] {
            assert_eq!(
                session_record(&*system, *s).await.last_seq,
                2,
                "session {s}"
            );
        }
    }
    assert_eq!(
        node(&*user, "/s40").await.expect("/s40").stat.version,
        3 + n as i32
    );
}
