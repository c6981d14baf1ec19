//! Log mode: the log's keys live in an append-only write-ahead log. What it acknowledged is
//! there after a reopen, a torn last record (a crash in the middle of an append) is cut and
//! nothing before it is lost, a log mostly made of deleted entries is compacted, and a log an
//! earlier version kept in redb is taken over.
use faaskeeper_backend_embedded::{EmbeddedDb, LogKeys};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const BUCKETS: &[&str] = &["system", "user"];

fn log_keys() -> LogKeys {
    LogKeys {
        keys: vec![
            ("system".to_string(), "log/head".to_string()),
            ("system".to_string(), "txn/".to_string()),
        ],
        checkpoint: Duration::from_millis(10),
    }
}

/// Open in log mode, waiting for the committer threads of a dropped handle to let go.
fn open(dir: &Path) -> Arc<EmbeddedDb> {
    let mut last = None;
    for _ in 0..200 {
        match EmbeddedDb::open_with_log(
            &dir.join("state.redb"),
            &dir.join("log.wal"),
            BUCKETS,
            log_keys(),
        ) {
            Ok(db) => return db,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("reopen failed: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_writes_survive_reopen_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = open(dir.path());
        let s = db.bucket("system").expect("bucket");
        for i in 0..20 {
            s.set(&format!("txn/{i:03}"), vec![i; 100])
                .await
                .expect("set");
        }
        s.compare_and_swap("log/head", None, b"h1".to_vec())
            .await
            .expect("cas");
        assert!(
            s.compare_and_swap("log/head", None, b"h2".to_vec())
                .await
                .is_err(),
            "a CAS against a stale value loses"
        );
        s.compare_and_swap("log/head", Some(b"h1"), b"h2".to_vec())
            .await
            .expect("cas");
        assert_eq!(s.increment("log/head-count", 5).await.expect("incr"), 5);
        s.set("other", b"state".to_vec()).await.expect("state key");
        let (keys, _) = s.list_keys(None, 100).await.expect("list");
        assert_eq!(
            keys.len(),
            23,
            "log and state keys listed together: {keys:?}"
        );
        assert_eq!(keys.first().map(String::as_str), Some("log/head"));
    }
    // A crash in the middle of an append leaves part of a record behind.
    std::thread::sleep(Duration::from_millis(100));
    let log = dir.path().join("log.wal");
    let whole = records_end(&log);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, b'x', b'y'], whole))
        .expect("tear");
    {
        let db = open(dir.path());
        let s = db.bucket("system").expect("bucket");
        let bytes = std::fs::read(&log).expect("log");
        assert!(
            bytes[whole as usize..].iter().all(|b| *b == 0),
            "tail cut: zeros follow the last whole record"
        );
        assert_eq!(
            std::fs::read(dir.path().join(format!("log.wal.cut-{whole}"))).expect("cut kept"),
            [200, 0, 0, 0, 1, 2, 3, 4, b'x', b'y'],
            "the bytes cut are kept beside the log"
        );
        assert_eq!(s.get("log/head").await.expect("get"), Some(b"h2".to_vec()));
        assert_eq!(s.get("txn/007").await.expect("get"), Some(vec![7; 100]));
        assert_eq!(s.increment("log/head-count", 1).await.expect("incr"), 6);
        // Appends after the cut are readable after the next reopen.
        s.set("txn/100", b"after".to_vec()).await.expect("set");
        s.compare_and_swap("log/head", Some(b"h2"), b"h3".to_vec())
            .await
            .expect("cas");
    }
    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    assert_eq!(s.get("log/head").await.expect("get"), Some(b"h3".to_vec()));
    assert_eq!(
        s.get("txn/100").await.expect("get"),
        Some(b"after".to_vec())
    );

    // A record whose checksum matches but whose content is not a log record is refused
    // rather than skipped: that is a bug, not a torn write.
    drop(s);
    drop(db);
    std::thread::sleep(Duration::from_millis(100));
    let garbage = [9u8, 9, 9];
    let mut record = (garbage.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&crc32(&garbage).to_le_bytes());
    record.extend_from_slice(&garbage);
    let end = records_end(&log);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .and_then(|f| f.write_all_at(&record, end))
        .expect("append");
    let err = EmbeddedDb::open_with_log(&dir.path().join("state2.redb"), &log, BUCKETS, log_keys())
        .err()
        .expect("an unreadable record is refused");
    assert!(err.to_string().contains("unreadable record"), "{err}");
}

/// Where the records of the log file end (the zeros of its preallocation follow): after the
/// 8-byte magic, each record is its length, its checksum and its payload.
fn records_end(log: &Path) -> u64 {
    *record_starts(log).last().expect("magic")
}

/// Where each record of the log file starts, and, last, where the records end.
fn record_starts(log: &Path) -> Vec<u64> {
    let bytes = std::fs::read(log).expect("log");
    let mut at = 8;
    let mut starts = vec![];
    while let Some(h) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len == 0 {
            break;
        }
        starts.push(at as u64);
        at += 8 + len;
    }
    starts.push(at as u64);
    starts
}

/// A log in use by one open is refused to another (with a state file of its own, so that
/// redb's lock does not decide it), and the refused open leaves the file as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_in_use_is_refused_to_a_second_open_which_leaves_it_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.wal");
    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    s.set("txn/001", vec![1; 100]).await.expect("set");
    s.compare_and_swap("log/head", None, b"h1".to_vec())
        .await
        .expect("cas");
    let before = std::fs::read(&log).expect("log");

    let err = EmbeddedDb::open_with_log(&dir.path().join("other.redb"), &log, BUCKETS, log_keys())
        .err()
        .expect("a log in use is refused");
    assert!(err.to_string().contains("in use"), "{err}");
    assert_eq!(
        std::fs::read(&log).expect("log"),
        before,
        "the refused open changed the log"
    );

    s.compare_and_swap("log/head", Some(b"h1"), b"h2".to_vec())
        .await
        .expect("the first open still appends");
    drop(s);
    drop(db);
    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    assert_eq!(s.get("log/head").await.expect("get"), Some(b"h2".to_vec()));
    assert_eq!(s.get("txn/001").await.expect("get"), Some(vec![1; 100]));
}

/// A damaged record with whole records after it (a crash in the middle of unsynced appends
/// looks the same) is cut where the damage is, and everything cut is kept beside the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_before_whole_ones_is_cut_and_what_follows_kept_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.wal");
    {
        let db = open(dir.path());
        let s = db.bucket("system").expect("bucket");
        let mut head: Option<Vec<u8>> = None;
        for i in 0..4u8 {
            let next = vec![b'h', i];
            s.compare_and_swap("log/head", head.as_deref(), next.clone())
                .await
                .expect("cas");
            head = Some(next);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let starts = record_starts(&log);
    let end = *starts.last().expect("end");
    // The second record (one CAS each; the first is the snapshot of a new log, if any).
    let damaged = starts[starts.len() - 4];
    let flip = damaged + 12;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .expect("log");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, flip).expect("read");
    file.write_all_at(&[byte[0] ^ 0x40], flip).expect("flip");
    let whole = std::fs::read(&log).expect("log");
    drop(file);

    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    assert_eq!(
        s.get("log/head").await.expect("get"),
        Some(vec![b'h', 0]),
        "the log is cut at the damaged record"
    );
    assert_eq!(
        std::fs::read(dir.path().join(format!("log.wal.cut-{damaged}"))).expect("cut kept"),
        whole[damaged as usize..end as usize],
        "the damaged record and the whole ones after it are kept beside the log"
    );
}

/// CRC-32 (IEEE), as the log's records carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_deleted_entries_is_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log.wal");
    {
        let db = open(dir.path());
        let s = db.bucket("system").expect("bucket");
        let value = vec![b'v'; 4096];
        // 12 MiB of entries, each deleted once written, as the distributor drops applied
        // txns; the head moves on with each.
        for i in 0..3072u32 {
            let key = format!("txn/{i:05}");
            s.set(&key, value.clone()).await.expect("set");
            s.compare_and_swap(
                "log/head",
                (i > 0)
                    .then(|| (i - 1).to_le_bytes())
                    .as_ref()
                    .map(|b| &b[..]),
                i.to_le_bytes().to_vec(),
            )
            .await
            .expect("cas");
            s.delete(&key).await.expect("delete");
        }
        s.set("txn/live", b"kept".to_vec()).await.expect("set");
        // Deletes of log keys wait for a checkpoint of the state; give them time.
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.compare_and_swap("log/head", Some(&3071u32.to_le_bytes()), b"last".to_vec())
            .await
            .expect("cas");
        let len = records_end(&log);
        assert!(len < 8 << 20, "compacted: {len} bytes of records");
    }
    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    assert_eq!(
        s.get("log/head").await.expect("get"),
        Some(b"last".to_vec())
    );
    assert_eq!(
        s.get("txn/live").await.expect("get"),
        Some(b"kept".to_vec())
    );
    assert_eq!(s.get("txn/00005").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_kept_in_redb_by_an_earlier_version_is_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let legacy = dir.path().join("log.redb");
    {
        let old = EmbeddedDb::open(&legacy, BUCKETS).expect("old log");
        let s = old.bucket("system").expect("bucket");
        s.set("log/head", b"old-head".to_vec()).await.expect("set");
        s.set("txn/a", b"entry".to_vec()).await.expect("set");
    }
    std::thread::sleep(Duration::from_millis(100));
    {
        let db = open(dir.path());
        let s = db.bucket("system").expect("bucket");
        assert_eq!(
            s.get("log/head").await.expect("get"),
            Some(b"old-head".to_vec())
        );
        assert_eq!(s.get("txn/a").await.expect("get"), Some(b"entry".to_vec()));
        assert!(!legacy.exists(), "the old log is removed once taken over");
        s.compare_and_swap("log/head", Some(b"old-head"), b"new".to_vec())
            .await
            .expect("cas");
    }
    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    assert_eq!(s.get("log/head").await.expect("get"), Some(b"new".to_vec()));
}

/// Plain sets are appended by the caller when no group is being committed, and join a group
/// otherwise; either way every set a task made before its acknowledged head update is there
/// after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_appended_inline_or_in_a_group_survive_with_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    const TASKS: usize = 8;
    const EACH: usize = 40;
    {
        let db = open(dir.path());
        let s = db.bucket("system").expect("bucket");
        s.compare_and_swap("log/head", None, 0u64.to_le_bytes().to_vec())
            .await
            .expect("cas");
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..EACH {
                    s.set(&format!("txn/{t}-{i:03}"), vec![t as u8; 64])
                        .await
                        .expect("set");
                    loop {
                        let cur = s.get("log/head").await.expect("get").expect("head");
                        let n = u64::from_le_bytes(cur.as_slice().try_into().expect("u64"));
                        let next = (n + 1).to_le_bytes().to_vec();
                        if s.compare_and_swap("log/head", Some(&cur), next)
                            .await
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let db = open(dir.path());
    let s = db.bucket("system").expect("bucket");
    let head = s.get("log/head").await.expect("get").expect("head");
    assert_eq!(
        u64::from_le_bytes(head.as_slice().try_into().expect("u64")),
        (TASKS * EACH) as u64
    );
    for t in 0..TASKS {
        for i in 0..EACH {
            assert_eq!(
                s.get(&format!("txn/{t}-{i:03}")).await.expect("get"),
                Some(vec![t as u8; 64]),
                "txn/{t}-{i:03}"
            );
        }
    }
}
