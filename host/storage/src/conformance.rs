//! The backend conformance suite. Every backend crate calls [`run_all`] from its tests with a
//! factory for fresh, empty buckets; a backend that passes behaves as the protocol assumes.

use crate::{Store, StoreError};
use std::sync::Arc;

/// Run every check against fresh buckets from `make`. Panics with the failing check's name.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn Store>>,
{
    get_set_delete(make().await).await;
    batches(make().await).await;
    list_keys_pages(make().await).await;
    increment_is_atomic(make().await).await;
    cas_is_exact(make().await).await;
    cas_races_have_one_winner(make().await).await;
}

async fn get_set_delete(s: Arc<dyn Store>) {
    assert_eq!(s.get("a").await.expect("get"), None, "absent key");
    s.set("a", b"1".to_vec()).await.expect("set");
    assert_eq!(s.get("a").await.expect("get"), Some(b"1".to_vec()));
    s.set("a", Vec::new()).await.expect("set empty");
    assert_eq!(
        s.get("a").await.expect("get"),
        Some(Vec::new()),
        "empty value is a value"
    );
    s.delete("a").await.expect("delete");
    s.delete("a").await.expect("delete is idempotent");
    assert_eq!(s.get("a").await.expect("get"), None);
    let big = vec![7u8; 3 * 1024 * 1024];
    s.set("big", big.clone()).await.expect("set 3 MiB");
    assert_eq!(s.get("big").await.expect("get"), Some(big));
}

async fn batches(s: Arc<dyn Store>) {
    s.set_many(vec![
        ("x".into(), b"1".to_vec()),
        ("y".into(), b"2".to_vec()),
    ])
    .await
    .expect("set_many");
    let got = s
        .get_many(&["y".into(), "nope".into(), "x".into()])
        .await
        .expect("get_many");
    assert_eq!(got, vec![Some(b"2".to_vec()), None, Some(b"1".to_vec())]);
    s.delete_many(vec!["x".into(), "nope".into()])
        .await
        .expect("delete_many");
    assert_eq!(s.get("x").await.expect("get"), None);
    assert_eq!(s.get("y").await.expect("get"), Some(b"2".to_vec()));
}

async fn list_keys_pages(s: Arc<dyn Store>) {
    for i in 0..25 {
        s.set(&format!("k{i:02}"), vec![]).await.expect("set");
    }
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let (keys, next) = s.list_keys(cursor, 10).await.expect("list");
        assert!(keys.len() <= 10);
        all.extend(keys);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(all, want, "every key once, in order");
}

async fn increment_is_atomic(s: Arc<dyn Store>) {
    assert_eq!(
        s.increment("c", 5).await.expect("inc"),
        5,
        "absent counts as 0"
    );
    assert_eq!(s.increment("c", -2).await.expect("inc"), 3);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                s.increment("c", 1).await.expect("inc");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        s.increment("c", 0).await.expect("inc"),
        403,
        "no lost increments"
    );
    s.set("notcounter", b"abc".to_vec()).await.expect("set");
    assert!(matches!(
        s.increment("notcounter", 1).await,
        Err(StoreError::InvalidValue(_))
    ));
}

async fn cas_is_exact(s: Arc<dyn Store>) {
    s.compare_and_swap("h", None, b"1".to_vec())
        .await
        .expect("swap on absent key with expected None");
    assert_eq!(
        s.compare_and_swap("h", None, b"x".to_vec()).await,
        Err(StoreError::CasConflict),
        "key exists now"
    );
    assert_eq!(
        s.compare_and_swap("h", Some(b"0"), b"x".to_vec()).await,
        Err(StoreError::CasConflict)
    );
    assert_eq!(
        s.get("h").await.expect("get"),
        Some(b"1".to_vec()),
        "failed swap changes nothing"
    );
    s.compare_and_swap("h", Some(b"1"), b"2".to_vec())
        .await
        .expect("swap");
    assert_eq!(s.get("h").await.expect("get"), Some(b"2".to_vec()));
}

async fn cas_races_have_one_winner(s: Arc<dyn Store>) {
    s.set("r", 0u64.to_le_bytes().to_vec()).await.expect("set");
    // 8 tasks each add 1 twenty times with read-CAS loops; the total must be exact.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 20 {
                let cur = s.get("r").await.expect("get").expect("present");
                let n = u64::from_le_bytes(cur.as_slice().try_into().expect("8 bytes"));
                match s
                    .compare_and_swap("r", Some(&cur), (n + 1).to_le_bytes().to_vec())
                    .await
                {
                    Ok(()) => done += 1,
                    Err(StoreError::CasConflict) => tokio::task::yield_now().await,
                    Err(e) => panic!("cas: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let v = s.get("r").await.expect("get").expect("present");
    assert_eq!(
        u64::from_le_bytes(v.as_slice().try_into().expect("8 bytes")),
        160
    );
}
