//! The embedded backend passes the shared conformance suite, and what it acknowledged is
//! there after the database is reopened (Guarantee 1 at the storage layer).
use faaskeeper_backend_embedded::EmbeddedDb;
use faaskeeper_storage::{Store, conformance};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let dir_path = dir.path().to_path_buf();
    conformance::run_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = dir_path.join(format!("db{n}.redb"));
        async move {
            let db = EmbeddedDb::open(&path, &["b"]).expect("open");
            db.bucket("b").expect("bucket")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.redb");
    {
        let db = EmbeddedDb::open(&path, &["system", "user"]).expect("open");
        let s = db.bucket("system").expect("bucket");
        let mut tasks = Vec::new();
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.set(&format!("k{i}"), vec![i as u8]).await.expect("set");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert!(db.bucket("other").is_err(), "unknown bucket refused");
    }
    // The committer thread still holds the file; a second open must wait for it to let go,
    // so reopen through a fresh process-local handle after dropping ours.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let db = reopen(&path);
    let s: Arc<dyn Store> = db.bucket("system").expect("bucket");
    for i in 0..50 {
        assert_eq!(
            s.get(&format!("k{i}")).await.expect("get"),
            Some(vec![i as u8])
        );
    }
}

fn reopen(path: &std::path::Path) -> Arc<EmbeddedDb> {
    for _ in 0..100 {
        if let Ok(db) = EmbeddedDb::open(path, &["system", "user"]) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("database not released");
}
