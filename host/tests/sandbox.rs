//! Sandboxing for multi-tenant hosting (issue 8; `docs/reliability.md`, "Sandboxing and
//! multi-tenancy"): tenants share one engine and the compiled stages, but a tenant's guest
//! that loops forever, waits forever, allocates without bound, recurses, or names another
//! tenant's buckets is stopped with a clear error, touches nothing of the other tenant, and
//! the other tenant keeps being served while it happens.
//!
//! Tenant `a` runs the real stages; tenant `b` runs `components/test-guests/rogue` in place
//! of its writer (its other stages are the real ones), invoked directly through its runtime.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use faaskeeper_client::{Client, Options};
use faaskeeper_core::CreateMode;
use faaskeeper_host::runtime::{Limits, StageName};
use faaskeeper_host::sandbox::InvocationError;
use faaskeeper_host::{RunningHost, ServeOptions, TenantOptions};
use faaskeeper_storage::{MemStore, Store, StoreManager};
use std::sync::Arc;
use std::time::Duration;

const B_TIME_LIMIT: Duration = Duration::from_millis(1500);
const B_MEMORY: usize = 64 << 20;

/// Compiled components are cached across the tests of this file (and runs).
fn limits() -> Limits {
    Limits {
        cache_dir: Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-cache")),
        ..Default::default()
    }
}

fn rogue_tenant(name: &str) -> TenantOptions {
    TenantOptions {
        stages: vec![(
            StageName::Writer,
            faaskeeper_test_guests::ROGUE_BYTES.to_vec(),
        )],
        time_limit: Some(B_TIME_LIMIT),
        memory_bytes: Some(B_MEMORY),
        ..TenantOptions::named(name)
    }
}

async fn start(dir: &std::path::Path, tenants: Vec<TenantOptions>) -> RunningHost {
    faaskeeper_host::start(ServeOptions {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        zk_listen: None,
        limits: limits(),
        tenants,
        ..Default::default()
    })
    .await
    .expect("host starts")
}

/// Tenant `a`'s client work: creates, reads back and updates `n` nodes under `prefix`,
/// checking every answer.
async fn client_work(client: &Client, prefix: &str, n: usize) {
    client
        .create(prefix, b"", CreateMode::Persistent)
        .await
        .unwrap();
    for i in 0..n {
        let path = format!("{prefix}/n{i}");
        let data = format!("value {i}");
        assert_eq!(
            client
                .create(&path, data.as_bytes(), CreateMode::Persistent)
                .await
                .unwrap(),
            path
        );
        let (got, stat) = client.get_data(&path).await.unwrap();
        assert_eq!(got, data.as_bytes());
        assert_eq!(stat.version, 0);
        let stat = client.set_data(&path, b"changed", 0).await.unwrap();
        assert_eq!(stat.version, 1);
    }
    let mut children = client.get_children(prefix).await.unwrap();
    children.sort();
    let mut expected: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    expected.sort();
    assert_eq!(children, expected);
}

/// Wait until `b` has an instance running (its runaway invocation is in).
async fn until_running(host: &RunningHost, tenant: &str) {
    let rt = host.tenant(tenant).unwrap().runtime().clone();
    while rt.instances_in_use() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_guests_are_stopped_while_another_tenant_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        vec![TenantOptions::named("a"), rogue_tenant("b")],
    )
    .await;
    let a = Client::connect(host.tenant("a").unwrap().url(), Options::default())
        .await
        .unwrap();
    let b = host.tenant("b").unwrap().runtime().clone();

    for (case, path) in [("spin", "/spin"), ("sleep", "/sleep"), ("alloc", "/alloc")] {
        let runaway = {
            let b = b.clone();
            tokio::spawn(async move {
                b.invoke(StageName::Writer, path, Bytes::from_static(b"{}"))
                    .await
            })
        };
        until_running(&host, "b").await;
        // Tenant a works while b's guest runs away, and its answers are all correct.
        client_work(&a, &format!("/{case}"), 10).await;
        let err = runaway
            .await
            .unwrap()
            .expect_err("a runaway guest is stopped");
        let stopped = err
            .downcast_ref::<InvocationError>()
            .unwrap_or_else(|| panic!("{case}: not a sandbox error: {err:#}"));
        let message = stopped.to_string();
        match case {
            "alloc" => {
                assert!(
                    matches!(stopped, InvocationError::MemoryLimit { stage: "writer", tenant, limit_bytes, .. }
                        if tenant == "b" && *limit_bytes == B_MEMORY),
                    "{case}: {message}"
                );
                assert!(
                    message.starts_with(&format!(
                        "the writer stage of tenant b exceeded its memory limit of {B_MEMORY} bytes"
                    )),
                    "{message}"
                );
            }
            _ => {
                assert!(
                    matches!(stopped, InvocationError::TimeLimit { stage: "writer", tenant, limit_ms: 1500 }
                        if tenant == "b"),
                    "{case}: {message}"
                );
                assert_eq!(
                    message,
                    "the writer stage of tenant b exceeded its time limit of 1500 ms"
                );
            }
        }
        // Its instance is gone, and b itself still serves. (b's own background runs, the
        // distributor's and the heartbeat's, may have been waiting for the slot the runaway
        // held and take it at once: they end within moments, a leaked instance never does.)
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while b.instances_in_use() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            b.instances_in_use(),
            0,
            "{case}: the stopped instance is gone"
        );
        let (status, body) = b
            .invoke(StageName::Writer, "/ok", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(
            (status, &body[..]),
            (200, &br#"{"ok":true}"#[..]),
            "{case}: tenant b serves after its guest was stopped"
        );
    }

    // After all of it, tenant a's data is what it wrote.
    for case in ["spin", "sleep", "alloc"] {
        for i in 0..10 {
            let (data, stat) = a.get_data(&format!("/{case}/n{i}")).await.unwrap();
            assert_eq!((data.as_slice(), stat.version), (&b"changed"[..], 1));
        }
    }
    client_work(&a, "/after", 3).await;
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_open_another_tenants_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(
        dir.path(),
        vec![TenantOptions::named("a"), rogue_tenant("b")],
    )
    .await;
    let a = Client::connect(host.tenant("a").unwrap().url(), Options::default())
        .await
        .unwrap();
    a.create("/secret", b"a's data", CreateMode::Persistent)
        .await
        .unwrap();
    let (_, before) = a.get_data("/secret").await.unwrap();

    let foreign = [
        "a/system",
        "a/user",
        "../a/system",
        "../a/user",
        "a:system",
        "a:user",
        "/t/a/user",
        "tenants/a/user",
        "tenants/a/faaskeeper.redb",
        "a",
        "system/../../a/user",
        "USER",
        "user ",
        "",
        "default/user",
    ];
    let mut names: Vec<&str> = foreign.to_vec();
    // Its own bucket opens: the guest can write, so a refusal above is the host's doing.
    names.push("user");
    let body = serde_json::json!({ "names": names, "key": "/secret" }).to_string();
    let (status, answer) = host
        .tenant("b")
        .unwrap()
        .runtime()
        .invoke(StageName::Writer, "/open", Bytes::from(body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&answer).unwrap();
    assert_eq!(results.len(), names.len());
    for (name, result) in foreign.iter().zip(&results) {
        assert_eq!(result["name"], *name);
        assert_eq!(result["opened"], false, "{name:?} must not open: {result}");
        assert_eq!(
            result["error"], "store error: no such store",
            "{name:?}: {result}"
        );
    }
    let own = results.last().unwrap();
    assert_eq!(
        (&own["opened"], &own["wrote"]),
        (&true.into(), &true.into())
    );

    // Tenant a's node is untouched: same data, same stat.
    let (data, after) = a.get_data("/secret").await.unwrap();
    assert_eq!(data, b"a's data");
    assert_eq!(after, before);
    a.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_calling_stages_are_bounded_by_call_depth() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), vec![rogue_tenant("b")]).await;
    let b = host.tenant("b").unwrap().runtime().clone();
    // The host's call plus three nested ones: four levels, the default limit.
    let (status, body) = b
        .invoke(StageName::Writer, "/recurse?depth=3", Bytes::new())
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // One more is refused at the fifth level, and the refusal travels up as the answer.
    let (status, body) = b
        .invoke(StageName::Writer, "/recurse?depth=4", Bytes::new())
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains(
            "the writer stage of tenant b was called at depth 4, beyond the call depth limit of 4"
        ),
        "{body}"
    );
    assert_eq!(b.instances_in_use(), 0);
}

/// A tenant whose writer is the rogue guest, with 8 instance slots (2 per call depth) and a
/// user bucket the test can read.
fn bounded_tenant(user: Arc<MemStore>) -> TenantOptions {
    TenantOptions {
        stages: vec![(
            StageName::Writer,
            faaskeeper_test_guests::ROGUE_BYTES.to_vec(),
        )],
        stores: Some(
            StoreManager::new()
                .with_bucket("system", Arc::new(MemStore::new()))
                .with_bucket("user", user),
        ),
        instances: Some(8),
        ..TenantOptions::named("c")
    }
}

async fn counter(store: &MemStore, key: &str) -> i64 {
    match store.get(key).await.unwrap() {
        Some(v) => faaskeeper_storage::decode_counter(&v).unwrap(),
        None => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_the_instance_bound_waits_and_nesting_never_deadlocks() {
    let dir = tempfile::tempdir().unwrap();
    let user = Arc::new(MemStore::new());
    let host = start(dir.path(), vec![bounded_tenant(user.clone())]).await;
    let c = host.tenant("c").unwrap().runtime().clone();
    assert_eq!(c.slots_per_depth(), &[2, 2, 2, 2]);
    user.set("peak", b"0".to_vec()).await.unwrap();

    // Six guests that each stay until the gate opens; two slots at depth 0.
    let held: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.invoke(StageName::Writer, "/hold?gate=open", Bytes::new())
                    .await
            })
        })
        .collect();
    // The guests count themselves in; two get in...
    while counter(&user, "active").await < 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // ...and the others wait for a slot instead of failing: none of them has finished.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(counter(&user, "active").await, 2);
    assert_eq!(c.instances_in_use(), 2);
    assert!(held.iter().all(|h| !h.is_finished()));
    // Open the gate: every one of them runs, two at a time, and succeeds.
    user.set("open", b"1".to_vec()).await.unwrap();
    for h in held {
        let (status, body) = h.await.unwrap().expect("a waiting invocation runs later");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let peak: i64 = serde_json::from_slice(&user.get("peak").await.unwrap().unwrap()).unwrap();
    assert_eq!(peak, 2, "the guests never saw more than the bound at once");
    assert_eq!(counter(&user, "active").await, 0);

    // Nesting under a full bound: six chains of four levels with two slots per level. Every
    // parent holds its slot while it waits for its child's; with one pool for all levels
    // this would deadlock once the parents hold every slot.
    let chains: Vec<_> = (0..6)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.invoke(StageName::Writer, "/recurse?depth=3", Bytes::new())
                    .await
            })
        })
        .collect();
    for h in chains {
        let (status, body) = h.await.unwrap().expect("every chain completes");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(c.instances_in_use(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tenant_set_ups_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let start = |tenants: Vec<TenantOptions>| {
        faaskeeper_host::start(ServeOptions {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            zk_listen: None,
            limits: limits(),
            tenants,
            ..Default::default()
        })
    };
    for name in ["../a", "a/b", "A", "", "a:b"] {
        let err = start(vec![TenantOptions::named(name)])
            .await
            .err()
            .expect("refused");
        assert!(
            format!("{err:#}").contains(&format!("invalid tenant name {name:?}")),
            "{err:#}"
        );
    }
    let err = start(vec![TenantOptions::named("a"), TenantOptions::named("a")])
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:#}").contains("named twice"), "{err:#}");
    let err = start(vec![TenantOptions {
        instances: Some(1000),
        ..TenantOptions::named("big")
    }])
    .await
    .err()
    .expect("refused");
    assert!(
        format!("{err:#}")
            .contains("tenant big needs 1000 instance slots but the engine has 256 of 256 left"),
        "{err:#}"
    );
    // Refused before anything was created.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Every invocation gets an instance of its own, also when the host instantiated it ahead of
/// the call (off the caller's path): no guest state survives from one call to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invocation_gets_an_instance_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let host = start(dir.path(), vec![rogue_tenant("b")]).await;
    let b = host.tenant("b").unwrap().runtime().clone();
    let calls = |body: &[u8]| -> u64 {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json answer");
        v["calls"].as_u64().expect("a count")
    };
    for round in 0..10 {
        let (status, body) = b
            .invoke(StageName::Writer, "/calls", Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(calls(&body), 1, "call {round} ran on a used instance");
        // The next call takes the instance made ahead for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while b.instances_made_ahead() == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(b.instances_made_ahead() >= 1, "an instance is made ahead");
    }
    // Calls at once: one takes the instance made ahead, the others instantiate their own.
    let at_once: Vec<_> = (0..6)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.invoke(StageName::Writer, "/calls", Bytes::new()).await })
        })
        .collect();
    for h in at_once {
        let (status, body) = h.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(calls(&body), 1, "a concurrent call ran on a used instance");
    }
}
