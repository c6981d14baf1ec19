//! The client's recipes under contention, through the real host and stages (Guarantee 2, 5
//! and the lock/election/barrier/queue contracts): N clients, exactly one lock holder at a
//! time, every waiter eventually acquires; a barrier holds until lowered; a queue hands each
//! item to exactly one consumer in FIFO order.

use faaskeeper_client::recipes::{Barrier, LeaderElection, Lock, Queue};
use faaskeeper_client::{Client, Options};
use faaskeeper_tests::{host_url, unique};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn client() -> Client {
    Client::connect(&host_url(), Options::default())
        .await
        .expect("session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_exclusive_and_every_waiter_acquires() {
    let dir = unique("lock");
    let holders = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let acquired = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (dir, holders, max, acquired) =
            (dir.clone(), holders.clone(), max.clone(), acquired.clone());
        tasks.push(tokio::spawn(async move {
            let c = client().await;
            for _ in 0..3 {
                let guard = Lock::new(&c, &dir).acquire().await.expect("acquire");
                let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                acquired.fetch_add(1, Ordering::SeqCst);
                guard.release().await.expect("release");
            }
            c.close().await.expect("close");
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("no waiter starves")
            .expect("task");
    }
    assert_eq!(max.load(Ordering::SeqCst), 1, "never two holders");
    assert_eq!(acquired.load(Ordering::SeqCst), 15, "every waiter acquired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_passes_when_the_leader_session_ends() {
    let dir = unique("election");
    let a = client().await;
    let b = client().await;
    let leader = LeaderElection::new(&a, &dir).lead().await.expect("a leads");
    {
        let election_b = LeaderElection::new(&b, &dir);
        let waiting = election_b.lead();
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut waiting)
                .await
                .is_err(),
            "b waits"
        );
        drop(leader);
        a.close().await.expect("a's session ends");
        let guard = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("b elected")
            .expect("lead");
        guard.release().await.expect("resign");
    }
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_and_queue() {
    let c = client().await;
    let other = client().await;
    let path = unique("barrier");
    let barrier = Barrier::new(&c, &path);
    barrier.raise().await.expect("raise");
    let passed = {
        let waiting = Barrier::new(&other, &path);
        let w = waiting.wait();
        tokio::pin!(w);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut w)
                .await
                .is_err(),
            "held"
        );
        barrier.lower().await.expect("lower");
        tokio::time::timeout(Duration::from_secs(10), w)
            .await
            .is_ok()
    };
    assert!(passed, "released when lowered");

    let dir = unique("queue");
    let q = Queue::new(&c, &dir);
    for i in 0..10 {
        q.put(format!("item{i}").as_bytes()).await.expect("put");
    }
    let (qa, qb) = (Queue::new(&c, &dir), Queue::new(&other, &dir));
    let mut got = Vec::new();
    loop {
        let (x, y) = tokio::join!(qa.take(), qb.take());
        let (x, y) = (x.expect("take"), y.expect("take"));
        if x.is_none() && y.is_none() {
            break;
        }
        got.extend(x);
        got.extend(y);
    }
    got.sort();
    let mut want: Vec<Vec<u8>> = (0..10).map(|i| format!("item{i}").into_bytes()).collect();
    want.sort();
    assert_eq!(got, want, "each item taken exactly once");
    c.close().await.expect("close");
    other.close().await.expect("close");
}
