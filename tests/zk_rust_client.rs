//! The same scenario, driven by the unmodified Rust `zookeeper-client` crate, against a real
//! Apache ZooKeeper 3.8 and against our ZooKeeper-protocol gateway; the two transcripts must
//! be identical. Values that legitimately differ (session ids, zxid and time values) are
//! recorded by their relations instead (e.g. `mzxid > czxid`), as in the differential tests.

use faaskeeper_tests::zookeeper::{RealZooKeeper, four_letter_word};
use std::time::Duration;
use zookeeper_client as zk;

fn stat_line(s: &zk::Stat) -> String {
    format!(
        "version={} cversion={} aversion={} len={} children={} ephemeral={} created_eq_modified={} pzxid_ge_czxid={}",
        s.version,
        s.cversion,
        s.aversion,
        s.data_length,
        s.num_children,
        s.ephemeral_owner != 0,
        s.czxid == s.mzxid,
        s.pzxid >= s.czxid
    )
}

fn res<T>(r: Result<T, zk::Error>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("error {e:?}"),
    }
}

async fn connect(addr: &str) -> zk::Client {
    zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Run the scenario under `root` and return its transcript (paths relative to `root`).
async fn scenario(addr: &str, root: &str) -> Vec<String> {
    println!("scenario against {addr}");
    let mut t = Vec::new();
    let c = connect(addr).await;
    let other = connect(addr).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let eph = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    let seq = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::anyone_all());
    let rel = |p: &str| p.strip_prefix(root).unwrap_or(p).to_string();
    let p = |s: &str| format!("{root}{s}");

    t.push(res(c.create(root, b"root", &open).await, |(s, _)| {
        format!("create root: {}", stat_line(&s))
    }));
    t.push(res(c.create(root, b"again", &open).await, |_| {
        "create root again: ok".into()
    }));
    t.push(res(c.create(&p("/a/b"), b"", &open).await, |_| {
        "create /a/b: ok".into()
    }));
    t.push(res(c.get_data(root).await, |(d, s)| {
        format!(
            "get root: {:?} {}",
            String::from_utf8_lossy(&d),
            stat_line(&s)
        )
    }));
    t.push(res(c.set_data(root, b"v1", Some(0)).await, |s| {
        format!("set v0: {}", stat_line(&s))
    }));
    t.push(res(c.set_data(root, b"v2", Some(0)).await, |s| {
        format!("set stale v0: {}", stat_line(&s))
    }));
    t.push(res(c.set_data(&p("/none"), b"", None).await, |_| {
        "set missing: ok".into()
    }));
    t.push(res(c.create(&p("/e"), b"x", &eph).await, |(s, _)| {
        format!("create ephemeral: {}", stat_line(&s))
    }));
    t.push(res(c.create(&p("/e/c"), b"", &open).await, |_| {
        "child of ephemeral: ok".into()
    }));
    for _ in 0..2 {
        t.push(res(c.create(&p("/s-"), b"", &seq).await, |(_, n)| {
            format!("sequential: {n}")
        }));
    }
    t.push(res(c.list_children(root).await, |mut v| {
        v.sort();
        format!(
            "children: {}",
            v.iter().map(|x| rel(x)).collect::<Vec<_>>().join(",")
        )
    }));
    t.push(res(c.get_children(root).await, |(_, s)| {
        format!("children stat: {}", stat_line(&s))
    }));
    t.push(res(c.check_stat(&p("/missing")).await, |s| {
        format!("stat missing: {:?}", s.map(|s| s.version))
    }));
    t.push(res(c.get_acl(root).await, |(acl, _)| {
        format!("acl: {acl:?}")
    }));
    t.push(res(c.sync(root).await, |()| "sync: ok".into()));

    // Watches: data, exists, children — each fires once, for the right change.
    let (_, _, w) = c.get_and_watch_data(root).await.expect("watch data");
    other
        .set_data(root, b"changed", None)
        .await
        .expect("other set");
    let ev = tokio::time::timeout(Duration::from_secs(10), w.changed())
        .await
        .expect("data event");
    t.push(format!("data watch: {:?} {}", ev.event_type, rel(&ev.path)));
    let (stat, w) = c
        .check_and_watch_stat(&p("/later"))
        .await
        .expect("watch exists");
    t.push(format!("exists watch stat: {:?}", stat.map(|s| s.version)));
    other
        .create(&p("/later"), b"", &open)
        .await
        .expect("other create");
    let ev = tokio::time::timeout(Duration::from_secs(10), w.changed())
        .await
        .expect("exists event");
    t.push(format!(
        "exists watch: {:?} {}",
        ev.event_type,
        rel(&ev.path)
    ));
    let (_, w) = c
        .list_and_watch_children(root)
        .await
        .expect("watch children");
    other
        .delete(&p("/later"), None)
        .await
        .expect("other delete");
    let ev = tokio::time::timeout(Duration::from_secs(10), w.changed())
        .await
        .expect("child event");
    t.push(format!(
        "child watch: {:?} {}",
        ev.event_type,
        rel(&ev.path)
    ));

    // Containers, ephemerals listing, descendant counts.
    let container = zk::CreateMode::Container.with_acls(zk::Acls::anyone_all());
    t.push(res(
        c.create(&p("/ctr"), b"", &container).await,
        |(s, _)| format!("create container: {}", stat_line(&s)),
    ));
    t.push(res(c.create(&p("/ctr/kid"), b"", &open).await, |_| {
        "child of container: ok".into()
    }));
    t.push(res(c.list_ephemerals(root).await, |mut v| {
        v.sort();
        format!(
            "ephemerals: {}",
            v.iter().map(|x| rel(x)).collect::<Vec<_>>().join(",")
        )
    }));
    t.push(res(c.count_descendants_number(root).await, |n| {
        format!("descendants: {n}")
    }));
    t.push(res(c.count_descendants_number(&p("/nope")).await, |n| {
        format!("descendants of missing: {n}")
    }));

    // multi: all-or-nothing, results per op.
    let mut m = c.new_multi_writer();
    m.add_create(&p("/m1"), b"a", &open).expect("add");
    m.add_set_data(&p("/m1"), b"b", Some(0)).expect("add");
    m.add_check_version(&p("/m1"), 1).expect("add");
    t.push(match m.commit().await {
        Ok(r) => format!("multi: {} results", r.len()),
        Err(e) => format!("multi error {e:?}"),
    });
    let mut m = c.new_multi_writer();
    m.add_delete(&p("/m1"), None).expect("add");
    m.add_check_version(&p("/m1"), 7).expect("add");
    t.push(match m.commit().await {
        Ok(r) => format!("failing multi: {} results", r.len()),
        Err(e) => format!("failing multi error {e}"),
    });
    t.push(res(c.check_stat(&p("/m1")).await, |s| {
        format!("after failed multi: {:?}", s.map(|s| s.version))
    }));

    // Persistent watches stay; recursive ones see descendants.
    let mut pw = c
        .watch(&p("/pw"), zk::AddWatchMode::Persistent)
        .await
        .expect("persistent watch");
    // (A persistent and a recursive watch on the same path replace each other in 3.8.0,
    // ZOOKEEPER-4466; keep them on separate paths.)
    let mut rw = c
        .watch(&p("/rw"), zk::AddWatchMode::PersistentRecursive)
        .await
        .expect("recursive watch");
    for node in ["/pw", "/rw"] {
        other.create(&p(node), b"", &open).await.expect("create");
        other.set_data(&p(node), b"x", None).await.expect("set");
        other
            .create(&p(&format!("{node}/kid")), b"", &open)
            .await
            .expect("create kid");
    }
    for i in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), pw.changed())
            .await
            .expect("persistent event");
        t.push(format!(
            "persistent {i}: {:?} {}",
            ev.event_type,
            rel(&ev.path)
        ));
    }
    for i in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), rw.changed())
            .await
            .expect("recursive event");
        t.push(format!(
            "recursive {i}: {:?} {}",
            ev.event_type,
            rel(&ev.path)
        ));
    }
    drop(pw);
    drop(rw);
    for node in ["/pw", "/rw"] {
        other
            .delete(&p(&format!("{node}/kid")), None)
            .await
            .expect("cleanup kid");
        other.delete(&p(node), None).await.expect("cleanup");
    }

    t.push(res(c.delete(root, Some(9)).await, |()| {
        "delete bad version: ok".into()
    }));
    t.push(res(c.delete(root, None).await, |()| {
        "delete non-empty: ok".into()
    }));
    // Closing a session removes its ephemerals for everyone.
    drop(c);
    let mut gone = false;
    for _ in 0..100 {
        if other.check_stat(&p("/e")).await.expect("stat").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.push(format!("ephemeral gone after close: {gone}"));
    let mut children = other.list_children(root).await.expect("children");
    children.sort();
    for ch in children {
        // A container goes once its last child went (ZooKeeper removes it later, we at
        // once): both are fine here.
        let _ = other.delete(&format!("{root}/{ch}/kid"), None).await;
        match other.delete(&format!("{root}/{ch}"), None).await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => panic!("cleanup {ch}: {e}"),
        }
    }
    t.push(res(other.delete(root, None).await, |()| {
        "delete root: ok".into()
    }));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_sees_the_same_zookeeper() {
    let real = RealZooKeeper::start();
    let ours = faaskeeper_tests::zk_addr();
    let expected = scenario(&real.addr, "/rust-client").await;
    let got = scenario(&ours, "/rust-client").await;
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        println!("{i:2} zookeeper: {e}\n   faaskeeper: {g}");
    }
    assert_eq!(got, expected, "transcripts differ");
}

#[test]
fn four_letter_words() {
    let ours = faaskeeper_tests::zk_addr();
    assert_eq!(four_letter_word(&ours, "ruok").expect("ruok"), "imok");
    for word in ["srvr", "stat"] {
        let a = four_letter_word(&ours, word).expect(word);
        assert!(a.starts_with("Zookeeper version: "), "{word}: {a}");
        assert!(a.contains("Mode: standalone"), "{word}: {a}");
    }
    assert!(
        four_letter_word(&ours, "mntr")
            .expect("mntr")
            .contains("zk_server_state\tstandalone")
    );
    assert!(
        four_letter_word(&ours, "conf")
            .expect("conf")
            .contains("clientPort=")
    );
}

/// Wait for a one-shot watch, at most `secs` seconds; its event or the wait's failure.
async fn event(w: zk::OneshotWatcher, secs: u64) -> String {
    match tokio::time::timeout(Duration::from_secs(secs), w.changed()).await {
        Ok(e) => format!("{:?}", e.event_type),
        Err(_) => format!("no event within {secs} s"),
    }
}

/// TTL nodes (`createTTL`), which ZooKeeper serves with `zookeeper.extendedTypesEnabled`
/// (the harness starts it so, with a 1 s `ContainerManager` period). Expiry happens on a
/// timer in both servers, so the transcript records outcomes, never times.
async fn ttl_scenario(addr: &str, root: &str) -> Vec<String> {
    let mut t = Vec::new();
    let c = connect(addr).await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let ttl = |ms| {
        zk::CreateMode::Persistent
            .with_acls(zk::Acls::anyone_all())
            .with_ttl(Duration::from_millis(ms))
    };
    let ttl_seq = zk::CreateMode::PersistentSequential
        .with_acls(zk::Acls::anyone_all())
        .with_ttl(Duration::from_millis(3_600_000));
    let p = |s: &str| format!("{root}{s}");
    t.push(res(c.create(root, b"", &open).await, |_| "root: ok".into()));
    // `b` first, then `a`: whenever `a` has expired, so has `b`.
    t.push(res(c.create(&p("/b"), b"", &ttl(1500)).await, |(s, _)| {
        format!("create ttl b: {}", stat_line(&s))
    }));
    t.push(res(c.create(&p("/b/child"), b"", &open).await, |_| {
        "child of ttl node: ok".into()
    }));
    t.push(res(c.create(&p("/a"), b"x", &ttl(1500)).await, |(s, _)| {
        format!("create ttl a: {}", stat_line(&s))
    }));
    t.push(res(c.create(&p("/s-"), b"", &ttl_seq).await, |(s, seq)| {
        format!("create ttl sequential: suffix={seq} {}", stat_line(&s))
    }));
    t.push(res(c.get_data(&p("/a")).await, |(d, s)| {
        format!(
            "get ttl a: {:?} {}",
            String::from_utf8_lossy(&d),
            stat_line(&s)
        )
    }));
    let (_, w) = c.check_and_watch_stat(&p("/a")).await.expect("watch a");
    t.push(format!("a expires: {}", event(w, 60).await));
    t.push(res(c.check_stat(&p("/b")).await, |s| {
        format!("b, expired but with a child: exists={}", s.is_some())
    }));
    let (_, w) = c.check_and_watch_stat(&p("/b")).await.expect("watch b");
    t.push(res(c.delete(&p("/b/child"), None).await, |_| {
        "delete b's child: ok".into()
    }));
    t.push(format!("b goes once childless: {}", event(w, 60).await));
    t.push(res(c.list_children(root).await, |mut l| {
        l.sort();
        format!("left: {l:?}")
    }));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_nodes_expire_as_in_zookeeper() {
    let real = RealZooKeeper::start();
    let ours = faaskeeper_tests::zk_addr();
    let (expected, got) = tokio::join!(
        ttl_scenario(&real.addr, "/ttl-nodes"),
        ttl_scenario(&ours, "/ttl-nodes")
    );
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        println!("{i:2} zookeeper: {e}\n   faaskeeper: {g}");
    }
    assert_eq!(got, expected, "transcripts differ");
}
