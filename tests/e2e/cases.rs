// The end-to-end cases, shared by `e2e.rs` (embedded store) and `e2e_aws.rs` (DynamoDB + S3
// on moto): each includes this file after bringing its own `host_url()` into scope.

use faaskeeper_client::{Client, Error, EventType, Options};
use faaskeeper_core::wire::{Op, packet_len};
use faaskeeper_core::{CreateMode, MAX_PACKET_LEN, ZkError};
use faaskeeper_tests::unique;
use std::time::Duration;

async fn client() -> Client {
    Client::connect(&host_url(), Options::default())
        .await
        .expect("session opens")
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ZkError {
    match r {
        Err(e) => e.code().expect("a code"),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test]
async fn create_get_set_delete_round_trip() {
    let c = client().await;
    let p = unique("crud");
    let (path, stat) = c
        .create2(&p, b"hello", CreateMode::Persistent)
        .await
        .expect("create");
    assert_eq!(path, p);
    assert_eq!(
        (stat.version, stat.data_length, stat.num_children),
        (0, 5, 0)
    );
    assert_eq!(stat.czxid, stat.mzxid);
    let (data, s) = c.get_data(&p).await.expect("get");
    assert_eq!(data, b"hello");
    assert_eq!(s, stat);
    let s2 = c
        .set_data(&p, b"x", 0)
        .await
        .expect("set with right version");
    assert_eq!((s2.version, s2.data_length), (1, 1));
    assert!(s2.mzxid > stat.mzxid);
    assert_eq!(s2.czxid, stat.czxid);
    assert_eq!(
        c.get_data(&p).await.expect("get").0,
        b"x",
        "read-your-writes"
    );
    assert_eq!(c.exists(&p).await.expect("exists"), Some(s2));
    c.create(&format!("{p}/child"), b"", CreateMode::Persistent)
        .await
        .expect("child");
    let (children, parent) = c.get_children2(&p).await.expect("children");
    assert_eq!(children, vec!["child".to_string()]);
    assert_eq!((parent.num_children, parent.cversion), (1, 1));
    assert_eq!(parent.mzxid, s2.mzxid, "child create leaves parent mzxid");
    c.delete(&format!("{p}/child"), -1)
        .await
        .expect("delete child");
    c.delete(&p, 1).await.expect("delete with right version");
    assert_eq!(c.exists(&p).await.expect("exists"), None);
    assert_eq!(code(c.get_data(&p).await), ZkError::NoNode);
    let root = c.get_children("/").await.expect("root");
    assert!(root.contains(&"zookeeper".to_string()));
    c.close().await.expect("close");
}

#[tokio::test]
async fn zookeeper_error_codes() {
    let c = client().await;
    let p = unique("errors");
    c.create(&p, b"", CreateMode::Persistent)
        .await
        .expect("create");
    assert_eq!(
        code(c.create(&p, b"", CreateMode::Persistent).await),
        ZkError::NodeExists
    );
    assert_eq!(
        code(
            c.create(&format!("{p}/a/b"), b"", CreateMode::Persistent)
                .await
        ),
        ZkError::NoNode
    );
    assert_eq!(
        code(c.set_data(&format!("{p}/nope"), b"", -1).await),
        ZkError::NoNode
    );
    assert_eq!(
        code(c.delete(&format!("{p}/nope"), -1).await),
        ZkError::NoNode
    );
    assert_eq!(code(c.set_data(&p, b"v", 7).await), ZkError::BadVersion);
    c.create(&format!("{p}/kid"), b"", CreateMode::Persistent)
        .await
        .expect("kid");
    assert_eq!(code(c.delete(&p, 3).await), ZkError::BadVersion);
    assert_eq!(code(c.delete(&p, -1).await), ZkError::NotEmpty);
    let e = format!("{p}/eph");
    c.create(&e, b"", CreateMode::Ephemeral)
        .await
        .expect("ephemeral");
    assert_eq!(
        code(
            c.create(&format!("{e}/x"), b"", CreateMode::Persistent)
                .await
        ),
        ZkError::NoChildrenForEphemerals
    );
    assert_eq!(
        c.get_data(&p).await.expect("unchanged").1.version,
        0,
        "failed ops change nothing"
    );
    c.close().await.expect("close");
}

#[tokio::test]
async fn invalid_paths_are_refused_and_store_nothing() {
    let c = client().await;
    for bad in [
        "",
        "a",
        "/a/",
        "//",
        "/a//b",
        "/.",
        "/a/..",
        "/x\u{0}y",
        "/x\u{1}",
        "/\u{1F600}",
    ] {
        let e = c
            .create(bad, b"", CreateMode::Persistent)
            .await
            .expect_err(bad);
        assert_eq!(e.code(), Some(ZkError::BadArguments), "{bad:?}: {e}");
        assert_eq!(
            code(c.get_data(bad).await),
            ZkError::BadArguments,
            "{bad:?}"
        );
        assert_eq!(
            code(c.set_data(bad, b"", -1).await),
            ZkError::BadArguments,
            "{bad:?}"
        );
        assert_eq!(
            code(c.delete(bad, -1).await),
            ZkError::BadArguments,
            "{bad:?}"
        );
    }
    assert_eq!(code(c.delete("/", -1).await), ZkError::BadArguments);
    // Other tests share the host, so look for the refused names rather than compare listings.
    for child in c.get_children("/").await.expect("root") {
        assert!(
            !child.is_empty()
                && child != "."
                && child != ".."
                && !child.chars().any(|ch| !(' '..='\u{ffff}').contains(&ch)),
            "refused path left {child:?} behind"
        );
    }
    c.close().await.expect("close");
}

/// The limit is ZooKeeper's `jute.maxbuffer` on the whole request packet, to the byte
/// (`tests/zk_wire.rs` measures the same edge on a real ZooKeeper over the wire).
#[tokio::test]
async fn requests_over_jute_maxbuffer_are_refused_and_nothing_stored() {
    let c = client().await;
    let p = unique("big");
    let overhead = |op: Op| packet_len(&op);
    let create_room = MAX_PACKET_LEN
        - overhead(Op::Create {
            path: p.clone(),
            data: Vec::new(),
            mode: CreateMode::Persistent,
            acl: None,
        });
    let set_room = MAX_PACKET_LEN
        - overhead(Op::SetData {
            path: p.clone(),
            data: Vec::new(),
            version: -1,
        });
    assert!(create_room < 1024 * 1024 && set_room > create_room);
    let e = c
        .create(&p, &vec![b'x'; create_room + 1], CreateMode::Persistent)
        .await
        .expect_err("too big");
    assert_eq!(e.code(), Some(ZkError::BadArguments));
    assert!(
        e.to_string().contains("jute.maxbuffer"),
        "clear message: {e}"
    );
    assert_eq!(c.exists(&p).await.expect("exists"), None, "nothing stored");
    c.create(&p, &vec![b'y'; create_room], CreateMode::Persistent)
        .await
        .expect("a packet of exactly jute.maxbuffer is fine");
    assert_eq!(
        code(c.set_data(&p, &vec![b'x'; set_room + 1], -1).await),
        ZkError::BadArguments
    );
    let (data, stat) = c.get_data(&p).await.expect("get");
    assert_eq!(
        (data.len(), stat.version),
        (create_room, 0),
        "unchanged by the refused set"
    );
    c.set_data(&p, &vec![b'z'; set_room], -1)
        .await
        .expect("set at the limit");
    c.close().await.expect("close");
}

#[tokio::test]
async fn ttl_nodes_go_once_unchanged_and_childless_for_their_ttl() {
    let c = client().await;
    let p = unique("ttl");
    let ttl = CreateMode::PersistentWithTtl { ttl_ms: 300 };
    let stat = c.create2(&p, b"t", ttl).await.expect("create TTL node").1;
    assert_eq!(stat.ephemeral_owner, 0, "clients see 0, as in ZooKeeper");
    let child = format!("{p}/child");
    c.create(&child, b"", CreateMode::Persistent)
        .await
        .expect("a TTL node takes children");
    for bad in [0, -1, faaskeeper_core::ttl::MAX_TTL_MS + 1] {
        let r = c
            .create(
                &format!("{p}-bad"),
                b"",
                CreateMode::PersistentWithTtl { ttl_ms: bad },
            )
            .await;
        assert_eq!(code(r), ZkError::BadArguments, "TTL {bad}");
    }
    // Well past the TTL, the child keeps it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        c.exists(&p).await.expect("exists").is_some(),
        "kept by its child"
    );
    let (_, watch) = c.exists_w(&p).await.expect("watch");
    c.delete(&child, -1).await.expect("delete child");
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.wait())
        .await
        .expect("deleted within 30 s")
        .expect("event");
    assert_eq!(
        (ev.kind, ev.path.as_str()),
        (EventType::NodeDeleted, p.as_str())
    );
    assert_eq!(c.exists(&p).await.expect("exists"), None);
    c.close().await.expect("close");
}

#[tokio::test]
async fn sequential_names_use_parent_cversion() {
    let c = client().await;
    let p = unique("seq");
    c.create(&p, b"", CreateMode::Persistent)
        .await
        .expect("parent");
    c.create(&format!("{p}/plain"), b"", CreateMode::Persistent)
        .await
        .expect("plain");
    let a = c
        .create(&format!("{p}/n-"), b"", CreateMode::PersistentSequential)
        .await
        .expect("a");
    let b = c
        .create(&format!("{p}/n-"), b"", CreateMode::EphemeralSequential)
        .await
        .expect("b");
    let d = c
        .create(&format!("{p}/"), b"", CreateMode::PersistentSequential)
        .await
        .expect("bare");
    assert_eq!(a, format!("{p}/n-0000000001"));
    assert_eq!(b, format!("{p}/n-0000000002"));
    assert_eq!(d, format!("{p}/0000000003"));
    c.close().await.expect("close");
}

#[tokio::test]
async fn ephemerals_vanish_when_their_session_closes() {
    let owner = client().await;
    let other = client().await;
    let p = unique("eph");
    other
        .create(&p, b"", CreateMode::Persistent)
        .await
        .expect("parent");
    let e1 = owner
        .create(&format!("{p}/e1"), b"", CreateMode::Ephemeral)
        .await
        .expect("e1");
    let e2 = owner
        .create(&format!("{p}/e-"), b"", CreateMode::EphemeralSequential)
        .await
        .expect("e2");
    let stat = other.exists(&e1).await.expect("exists").expect("present");
    assert_eq!(stat.ephemeral_owner, owner.session_id());
    let (_, _, watch) = other.get_children_w(&p).await.expect("child watch");
    owner.close().await.expect("close");
    assert_eq!(other.exists(&e1).await.expect("exists"), None);
    assert_eq!(other.exists(&e2).await.expect("exists"), None);
    assert!(other.get_children(&p).await.expect("children").is_empty());
    let ev = tokio::time::timeout(Duration::from_secs(10), watch.wait())
        .await
        .expect("event in time")
        .expect("event");
    assert_eq!(
        (ev.kind, ev.path.as_str()),
        (EventType::NodeChildrenChanged, p.as_str())
    );
    other.close().await.expect("close");
}

#[tokio::test]
async fn closed_session_is_expired() {
    let c = client().await;
    let url = host_url();
    let c2 = Client::connect(&url, Options::default())
        .await
        .expect("second");
    c.close().await.expect("close");
    // The other session is unaffected.
    let p = unique("alive");
    c2.create(&p, b"", CreateMode::Persistent)
        .await
        .expect("still works");
    c2.close().await.expect("close");
}

#[tokio::test]
async fn one_shot_watches_fire_exactly_once() {
    let watcher = client().await;
    let writer = client().await;
    let p = unique("watch");
    // exists watch on a missing node fires NodeCreated.
    let (stat, created) = watcher.exists_w(&p).await.expect("exists watch");
    assert_eq!(stat, None);
    writer
        .create(&p, b"1", CreateMode::Persistent)
        .await
        .expect("create");
    let ev = created.wait().await.expect("created event");
    assert_eq!(
        (ev.kind, ev.path.as_str()),
        (EventType::NodeCreated, p.as_str())
    );
    // data watch fires NodeDataChanged once; the second change fires nothing.
    let (_, _, changed) = watcher.get_data_w(&p).await.expect("data watch");
    writer.set_data(&p, b"2", -1).await.expect("set");
    let ev = changed.wait().await.expect("changed event");
    assert_eq!(ev.kind, EventType::NodeDataChanged);
    let (_, _, again) = watcher.get_children_w(&p).await.expect("child watch");
    writer.set_data(&p, b"3", -1).await.expect("set again");
    writer
        .create(&format!("{p}/c"), b"", CreateMode::Persistent)
        .await
        .expect("child");
    let ev = again.wait().await.expect("child event");
    assert_eq!(
        (ev.kind, ev.path.as_str()),
        (EventType::NodeChildrenChanged, p.as_str())
    );
    // Delete fires data and child watches of the node, one event each local watcher.
    let (_, _, dw) = watcher.get_data_w(&format!("{p}/c")).await.expect("dw");
    let (_, _, cw) = watcher.get_children_w(&format!("{p}/c")).await.expect("cw");
    writer.delete(&format!("{p}/c"), -1).await.expect("delete");
    assert_eq!(dw.wait().await.expect("dw").kind, EventType::NodeDeleted);
    assert_eq!(cw.wait().await.expect("cw").kind, EventType::NodeDeleted);
    // A watch on a path that fails to read is not left behind.
    assert_eq!(
        code(watcher.get_data_w(&format!("{p}/none")).await),
        ZkError::NoNode
    );
    watcher.close().await.expect("close");
    writer.close().await.expect("close");
}

#[tokio::test]
async fn pipelined_requests_keep_fifo_order() {
    let c = client().await;
    let p = unique("fifo");
    c.create(&p, b"", CreateMode::Persistent)
        .await
        .expect("parent");
    let prefix = format!("{p}/n-");
    let futures: Vec<_> = (0..20)
        .map(|i| {
            let data = i.to_string().into_bytes();
            let c = &c;
            let prefix = prefix.clone();
            async move {
                (
                    i,
                    c.create(&prefix, &data, CreateMode::PersistentSequential)
                        .await,
                )
            }
        })
        .collect();
    let results = futures_join_all(futures).await;
    for (i, r) in results {
        let path = r.expect("create");
        assert_eq!(
            path,
            format!("{prefix}{i:010}"),
            "request {i} took effect in issue order"
        );
        assert_eq!(
            c.get_data(&path).await.expect("get").0,
            i.to_string().into_bytes()
        );
    }
    c.close().await.expect("close");
}

#[tokio::test]
async fn concurrent_sessions_all_apply() {
    let p = unique("many");
    let setup = client().await;
    setup
        .create(&p, b"", CreateMode::Persistent)
        .await
        .expect("parent");
    let mut tasks = Vec::new();
    for s in 0..4 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let c = Client::connect(&host_url(), Options::default())
                .await
                .expect("session");
            for i in 0..15 {
                c.create(&format!("{p}/s{s}-{i}"), b"", CreateMode::Persistent)
                    .await
                    .expect("create");
            }
            c.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (children, stat) = setup.get_children2(&p).await.expect("children");
    assert_eq!(children.len(), 60);
    assert_eq!((stat.num_children, stat.cversion), (60, 60));
    setup.close().await.expect("close");
}

/// Poll futures concurrently in creation order (no extra dependency needed).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}

#[tokio::test]
async fn garbage_on_the_api_changes_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = host_url();
    let addr = url.trim_start_matches("http://").to_string();
    // Raw garbage bytes on the socket: the connection is refused, the server lives on.
    let mut s = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    s.write_all(&[0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n'])
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    // Malformed JSON and wrong shapes get 4xx with a clear error.
    let c = client().await;
    let sid = c.session_id();
    for (path, body) in [
        (format!("/v1/sessions/{sid}/requests"), "{not json".to_string()),
        (format!("/v1/sessions/{sid}/requests"), r#"{"requests":[{"session":1,"seq":1,"op":{"op":"close_session"}}]}"#.to_string()),
        (format!("/v1/sessions/{sid}/requests"), r#"{"requests":[{"session":SID,"seq":5,"op":{"op":"create","path":"/g","data":"!!","mode":"persistent"}}]}"#.replace("SID", &sid.to_string())),
        ("/v1/sessions".to_string(), r#"{"timeout_ms":"soon"}"#.to_string()),
        ("/v1/sessions/notanumber/requests".to_string(), "{}".to_string()),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 4"), "{path} {body}: {resp}");
        assert!(resp.contains("\"error\""), "clear error: {resp}");
    }
    assert_eq!(
        c.exists("/g").await.expect("exists"),
        None,
        "nothing was applied"
    );
    // The session is still usable after all that.
    let p = unique("after-garbage");
    c.create(&p, b"", CreateMode::Persistent)
        .await
        .expect("still works");
    c.close().await.expect("close");
}

#[tokio::test]
async fn multi_and_containers() {
    use faaskeeper_core::wire::{MultiOp, OpResult};
    let c = client().await;
    let p = unique("multi");
    let results = c
        .multi(vec![
            MultiOp::Create {
                path: p.clone(),
                data: b"a".to_vec(),
                mode: CreateMode::Container,
                acl: None,
            },
            MultiOp::Create {
                path: format!("{p}/kid"),
                data: vec![],
                mode: CreateMode::Persistent,
                acl: None,
            },
            MultiOp::SetData {
                path: p.clone(),
                data: b"b".to_vec(),
                version: 0,
            },
            MultiOp::Check {
                path: p.clone(),
                version: 1,
            },
        ])
        .await
        .expect("multi applies");
    assert_eq!(results.len(), 4);
    assert!(matches!(results[3], OpResult::Checked));
    let e = c
        .multi(vec![
            MultiOp::Delete {
                path: format!("{p}/kid"),
                version: -1,
            },
            MultiOp::Check {
                path: p.clone(),
                version: 0,
            },
        ])
        .await
        .expect_err("check fails");
    assert_eq!(e.code(), Some(ZkError::BadVersion));
    assert!(
        c.exists(&format!("{p}/kid"))
            .await
            .expect("exists")
            .is_some(),
        "nothing applied"
    );
    // A container goes with its last child.
    c.delete(&format!("{p}/kid"), -1).await.expect("delete kid");
    assert_eq!(c.exists(&p).await.expect("exists"), None);
    c.close().await.expect("close");
}

#[tokio::test]
async fn notifications_arrive_before_newer_data() {
    // Guarantee 4: a session never reads data newer than a watch event it has not received.
    let a = client().await;
    let b = client().await;
    let p = unique("ordered");
    a.create(&p, b"old", CreateMode::Persistent)
        .await
        .expect("create");
    for round in 0..5 {
        let (_, _, watch) = a.get_data_w(&p).await.expect("watch");
        let value = format!("new{round}");
        b.set_data(&p, value.as_bytes(), -1).await.expect("set");
        // Spin until the direct read sees the change; by then the event must be there.
        loop {
            let (data, _) = a.get_data(&p).await.expect("read");
            if data == value.as_bytes() {
                break;
            }
        }
        let ev = tokio::time::timeout(Duration::from_millis(0), watch.wait())
            .await
            .expect("event delivered before the newer data was returned")
            .expect("event");
        assert_eq!(ev.kind, EventType::NodeDataChanged);
    }
    a.sync("/").await.expect("sync");
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test]
async fn silent_sessions_expire_through_the_heartbeat_stage() {
    // Guarantee 5: a session that stops pinging for its timeout is expired by the heartbeat
    // component; its ephemerals vanish through the pipeline with their watch events, and its
    // requests then fail with SessionExpired.
    let silent = Client::connect(
        &host_url(),
        Options {
            session_timeout_ms: 1_000, // negotiated up to ZooKeeper's minimum, 4 s
            auto_heartbeat: false,
            ..Options::default()
        },
    )
    .await
    .expect("session");
    assert_eq!(
        silent.session_timeout_ms(),
        faaskeeper_core::MIN_SESSION_TIMEOUT_MS
    );
    let mut state = silent.session_state();
    assert_eq!(*state.borrow(), faaskeeper_client::SessionState::Connected);
    let watcher = client().await;
    let p = unique("expiry");
    watcher
        .create(&p, b"", CreateMode::Persistent)
        .await
        .expect("parent");
    let eph = silent
        .create(&format!("{p}/e"), b"", CreateMode::Ephemeral)
        .await
        .expect("eph");
    let (_, watch) = watcher.exists_w(&eph).await.expect("watch");
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.wait())
        .await
        .expect("expired within timeout + sweep")
        .expect("event");
    assert_eq!(
        (ev.kind, ev.path.as_str()),
        (EventType::NodeDeleted, eph.as_str())
    );
    assert_eq!(watcher.exists(&eph).await.expect("exists"), None);
    for _ in 0..100 {
        if silent.is_expired() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(silent.is_expired(), "the silent client learns it expired");
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == faaskeeper_client::SessionState::Expired),
    )
    .await
    .expect("expired state in time")
    .expect("state channel");
    assert_eq!(
        code(
            silent
                .create(&format!("{p}/x"), b"", CreateMode::Persistent)
                .await
        ),
        ZkError::SessionExpired
    );
    // A pinging session outlives several timeouts.
    let alive = client().await;
    let keep = alive
        .create(&format!("{p}/keep"), b"", CreateMode::Ephemeral)
        .await
        .expect("keep");
    tokio::time::sleep(Duration::from_millis(9_000)).await;
    assert!(
        watcher.exists(&keep).await.expect("exists").is_some(),
        "a pinging session lives on"
    );
    alive.close().await.expect("close");
    watcher.close().await.expect("close");
}

#[tokio::test]
async fn persistent_watches_ephemerals_and_counts() {
    let c = client().await;
    let other = client().await;
    let p = unique("persist");
    let mut rw = c.add_watch(&p, true).await.expect("recursive watch");
    other
        .create(&p, b"", CreateMode::Persistent)
        .await
        .expect("create");
    other
        .create(&format!("{p}/a"), b"", CreateMode::Persistent)
        .await
        .expect("kid");
    other
        .set_data(&format!("{p}/a"), b"x", -1)
        .await
        .expect("set kid");
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), rw.next())
            .await
            .expect("event in time")
            .expect("event");
        got.push((ev.kind, ev.path));
    }
    assert_eq!(
        got,
        vec![
            (EventType::NodeCreated, p.clone()),
            (EventType::NodeCreated, format!("{p}/a")),
            (EventType::NodeDataChanged, format!("{p}/a")),
        ],
        "recursive watches see descendants but not children-changed"
    );
    c.remove_watches(&p, faaskeeper_core::wire::WatchKind::Any)
        .await
        .expect("remove");
    assert_eq!(
        code(
            c.remove_watches(&p, faaskeeper_core::wire::WatchKind::Any)
                .await
        ),
        ZkError::NoWatcher
    );
    c.create(&format!("{p}/e1"), b"", CreateMode::Ephemeral)
        .await
        .expect("e1");
    c.create(&format!("{p}/a/e2"), b"", CreateMode::Ephemeral)
        .await
        .expect("e2");
    assert_eq!(
        c.get_ephemerals(&p).await.expect("ephemerals"),
        vec![format!("{p}/a/e2"), format!("{p}/e1")]
    );
    assert_eq!(c.get_all_children_number(&p).await.expect("count"), 3);
    c.close().await.expect("close");
    other.close().await.expect("close");
}
