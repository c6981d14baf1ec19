//! The AWS backend against moto: both buckets pass the shared conformance suite; CAS and
//! counters lose no update under concurrent tasks (what the writer's log append and the
//! distributor's lease rely on, Guarantee 1); values over DynamoDB's item limit round-trip
//! through S3; the meter counts what DynamoDB and S3 would bill.
//!
//! Each test starts its own moto server (`MotoServer`, needs `pip install 'moto[server]'`).
use faaskeeper_backend_aws::moto::MotoServer;
use faaskeeper_backend_aws::{AwsBackend, AwsOptions, USER_INLINE_MAX, Usage, UserStorage};
use faaskeeper_storage::{Store, StoreError, conformance};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

async fn backend(moto: &MotoServer, prefix: &str) -> AwsBackend {
    AwsBackend::connect(&moto.options(prefix))
        .await
        .expect("connect to moto")
}

/// The store conformance suite on the bucket `pick` takes from fresh backends of `storage`.
async fn conforms(label: &str, storage: UserStorage, pick: fn(&AwsBackend) -> Arc<dyn Store>) {
    let moto = MotoServer::start().expect("moto");
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        let prefix = format!("conf-{label}-{}", n.fetch_add(1, Ordering::SeqCst));
        let moto = &moto;
        async move {
            let aws = AwsBackend::connect(&AwsOptions {
                user_storage: storage,
                ..moto.options(&prefix)
            })
            .await
            .expect("connect to moto");
            pick(&aws)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_system_bucket_conforms() {
    conforms("sys", UserStorage::S3, AwsBackend::system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_user_bucket_conforms() {
    conforms("user", UserStorage::S3, AwsBackend::user).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_user_bucket_conforms() {
    conforms("nodes", UserStorage::DynamoDb, AwsBackend::user).await;
}

async fn dynamodb_user_backend(moto: &MotoServer, prefix: &str) -> AwsBackend {
    AwsBackend::connect(&AwsOptions {
        user_storage: UserStorage::DynamoDb,
        ..moto.options(prefix)
    })
    .await
    .expect("connect to moto")
}

/// The user bucket on DynamoDB keeps node objects up to `USER_INLINE_MAX` in the item and
/// larger ones in S3, and a node that grows and shrinks across the limit reads back right
/// each time, through every read path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_user_bucket_spills_large_nodes_to_s3() {
    let moto = MotoServer::start().expect("moto");
    let aws = dynamodb_user_backend(&moto, "nodes-spill").await;
    let user = aws.user();
    let at_limit = vec![7u8; USER_INLINE_MAX];
    let over = vec![8u8; USER_INLINE_MAX + 1];
    let before = aws.usage().user;
    user.set("/a", at_limit.clone())
        .await
        .expect("set at the limit");
    let u = aws.usage().user.since(&before);
    // 8 KiB of value plus the key and attribute names: 9 started KiB.
    assert_eq!((u.s3_put, u.dynamo_write_units), (0, 9), "{u:?}");
    let before = aws.usage().user;
    user.set("/a", over.clone())
        .await
        .expect("set over the limit");
    let u = aws.usage().user.since(&before);
    assert_eq!(u.s3_put, 1, "over the limit the object goes to S3: {u:?}");
    assert_eq!(user.get("/a").await.expect("get"), Some(over.clone()));
    user.set_many(vec![
        ("/a".into(), b"small".to_vec()),
        ("/b".into(), over.clone()),
    ])
    .await
    .expect("set_many");
    assert_eq!(
        user.get_many(&["/a".into(), "/b".into(), "/c".into()])
            .await
            .expect("get_many"),
        vec![Some(b"small".to_vec()), Some(over.clone()), None]
    );
    let queues = faaskeeper_backend_aws::Queues::connect(&AwsOptions {
        user_storage: UserStorage::DynamoDb,
        ..moto.options("nodes-spill")
    })
    .await
    .expect("a client's view");
    assert_eq!(
        queues.read_node("/b").await.expect("client read"),
        Some(over)
    );
    assert_eq!(
        queues.read_node("/a").await.expect("client read"),
        Some(b"small".to_vec())
    );
    user.delete("/b").await.expect("delete");
    assert_eq!(queues.read_node("/b").await.expect("client read"), None);
}

/// `tasks` tasks each add 1 `rounds` times with `increment` and, on another key, with
/// read + compare-and-swap; both totals must be exact. Returns (increments, swaps, conflicts).
async fn stress(s: Arc<dyn Store>, tasks: usize, rounds: usize) -> (usize, usize, usize) {
    let conflicts = Arc::new(AtomicUsize::new(0));
    s.compare_and_swap("swapped", None, 0u64.to_le_bytes().to_vec())
        .await
        .expect("create");
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let s = s.clone();
        let conflicts = conflicts.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..rounds {
                s.increment("counted", 1).await.expect("increment");
                loop {
                    let cur = s.get("swapped").await.expect("get").expect("present");
                    let n = u64::from_le_bytes(cur.as_slice().try_into().expect("8 bytes"));
                    match s
                        .compare_and_swap("swapped", Some(&cur), (n + 1).to_le_bytes().to_vec())
                        .await
                    {
                        Ok(()) => break,
                        Err(StoreError::CasConflict) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("swap: {e}"),
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let total = (tasks * rounds) as i64;
    assert_eq!(
        s.increment("counted", 0).await.expect("read"),
        total,
        "no lost increments"
    );
    let v = s.get("swapped").await.expect("get").expect("present");
    assert_eq!(
        u64::from_le_bytes(v.as_slice().try_into().expect("8 bytes")),
        total as u64,
        "no lost swaps"
    );
    (
        tasks * rounds,
        tasks * rounds,
        conflicts.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_and_increments_lose_no_update() {
    let moto = MotoServer::start().expect("moto");
    let aws = backend(&moto, "stress").await;
    let (inc, swaps, conflicts) = stress(aws.system(), 8, 40).await;
    println!("dynamodb: {inc} increments, {swaps} swaps, {conflicts} swap conflicts retried");
    let (inc, swaps, conflicts) = stress(aws.user(), 8, 15).await;
    println!("s3: {inc} increments, {swaps} swaps, {conflicts} swap conflicts retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_bytes_are_one_value() {
    let moto = MotoServer::start().expect("moto");
    let s = backend(&moto, "counters").await.system();
    // A counter made by increment (a DynamoDB number) reads as 8 bytes and swaps as them.
    assert_eq!(s.increment("c", 41).await.expect("inc"), 41);
    assert_eq!(
        s.get("c").await.expect("get"),
        Some(41i64.to_le_bytes().to_vec())
    );
    assert_eq!(
        s.compare_and_swap("c", Some(&40i64.to_le_bytes()), vec![1])
            .await,
        Err(StoreError::CasConflict)
    );
    s.compare_and_swap("c", Some(&41i64.to_le_bytes()), 7i64.to_le_bytes().to_vec())
        .await
        .expect("swap a counter by its bytes");
    // Now bytes again; increment still adds.
    assert_eq!(s.increment("c", 1).await.expect("inc"), 8);
    // Overflow wraps as two's complement.
    s.set("w", i64::MAX.to_le_bytes().to_vec())
        .await
        .expect("set");
    assert_eq!(s.increment("w", 1).await.expect("inc"), i64::MIN);
    assert_eq!(s.increment("x", i64::MAX).await.expect("inc"), i64::MAX);
    assert_eq!(s.increment("x", 2).await.expect("inc"), i64::MIN + 1);
    assert_eq!(
        s.get("x").await.expect("get"),
        Some((i64::MIN + 1).to_le_bytes().to_vec())
    );
    assert_eq!(s.increment("x", -2).await.expect("inc"), i64::MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_the_item_limit_live_in_s3() {
    let moto = MotoServer::start().expect("moto");
    let s = backend(&moto, "spill").await.system();
    let big = |b: u8| vec![b; faaskeeper_backend_aws::INLINE_MAX + 1];
    s.set("a", big(1)).await.expect("set big");
    assert_eq!(s.get("a").await.expect("get"), Some(big(1)));
    s.compare_and_swap("a", Some(&big(2)), vec![0])
        .await
        .expect_err("wrong big expected");
    s.compare_and_swap("a", Some(&big(1)), big(3))
        .await
        .expect("big to big");
    s.compare_and_swap("a", Some(&big(3)), b"small".to_vec())
        .await
        .expect("big to small");
    s.compare_and_swap("a", Some(b"small"), big(4))
        .await
        .expect("small to big");
    s.set_many(vec![("b".into(), big(5)), ("c".into(), b"c".to_vec())])
        .await
        .expect("set_many");
    assert_eq!(
        s.get_many(&["a".into(), "b".into(), "c".into(), "d".into()])
            .await
            .expect("get_many"),
        vec![Some(big(4)), Some(big(5)), Some(b"c".to_vec()), None]
    );
    assert!(matches!(
        s.increment("a", 1).await,
        Err(StoreError::InvalidValue(_))
    ));
    s.delete("a").await.expect("delete");
    assert_eq!(s.get("a").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meter_counts_billable_requests() {
    let moto = MotoServer::start().expect("moto");
    let aws = backend(&moto, "meter").await;
    let (system, user) = (aws.system(), aws.user());
    let before = aws.usage();
    system.set("k", vec![0; 100]).await.expect("set");
    system.set("k2", vec![0; 5000]).await.expect("set");
    system.get("k2").await.expect("get");
    system.get("absent").await.expect("get");
    system.increment("n", 1).await.expect("inc");
    let u = aws.usage().since(&before).system;
    assert_eq!(
        (u.dynamo_requests, u.dynamo_write_units, u.dynamo_read_units),
        (5, 1 + 5 + 1, 2 + 1)
    );
    // DynamoDB bills an overwrite by the larger item and a delete by the item removed.
    let before = aws.usage();
    system.set("k2", vec![0; 10]).await.expect("shrink");
    system.delete_many(vec!["k2".into()]).await.expect("delete");
    system.set("k3", vec![0; 3000]).await.expect("set");
    system.delete("k3").await.expect("delete");
    let u = aws.usage().since(&before).system;
    assert_eq!(u.dynamo_write_units, 5 + 1 + 3 + 3, "{u:?}");
    user.set("/a", b"x".to_vec()).await.expect("set");
    user.get("/a").await.expect("get");
    user.list_keys(None, 10).await.expect("list");
    user.delete_many(vec!["/a".into()]).await.expect("delete");
    assert_eq!(
        aws.usage().since(&before).user,
        Usage {
            s3_get: 1,
            s3_put: 1,
            s3_list: 1,
            s3_delete: 1,
            ..Usage::default()
        }
    );
}
