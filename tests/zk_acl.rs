//! ACLs and authentication (issue 8), driven by the unmodified Rust `zookeeper-client` crate
//! against a real Apache ZooKeeper 3.8 and against our gateway: the transcripts must be
//! identical. Digest users alice and bob and an unauthenticated session meet a node only
//! alice may touch, a world-read-only node, creates, writes, deletes and setACLs without the
//! permission, a setACL with a stale aversion, getACL (stats and the `user:x` redaction), a
//! multi with one refused op, the `auth` scheme with and without ids, invalid ACLs, an
//! addAuth pipelined ahead of the write it authorises, and an addAuth with an unknown scheme.
//!
//! A second test pins tenant isolation: two tenants with digest-protected trees, over the
//! gateway and over the HTTP API with the Rust client of this repository.

use faaskeeper_core::acl::{Acl as FkAcl, digest, perms};
use faaskeeper_tests::zookeeper::RealZooKeeper;
use std::time::Duration;
use zookeeper_client as zk;

fn stat_line(s: &zk::Stat) -> String {
    format!(
        "version={} cversion={} aversion={} len={} children={}",
        s.version, s.cversion, s.aversion, s.data_length, s.num_children
    )
}

fn res<T>(r: Result<T, zk::Error>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("error {e:?}"),
    }
}

fn acl_line(acl: &[zk::Acl]) -> String {
    acl.iter()
        .map(|a| format!("{}:{}:{}", a.permission(), a.scheme(), a.id()))
        .collect::<Vec<_>>()
        .join(",")
}

async fn connect(addr: &str, auth: Option<&str>) -> zk::Client {
    let mut c = zk::Client::connector().with_session_timeout(Duration::from_secs(10));
    if let Some(user_password) = auth {
        c = c.with_auth("digest", user_password.as_bytes());
    }
    c.connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

fn digest_acl(perm: zk::Permission, user_password: &str) -> zk::Acl {
    zk::Acl::new(
        perm,
        zk::AuthId::new("digest", &digest(user_password.as_bytes())),
    )
}

/// Run the scenario under `root`; its transcript.
async fn scenario(addr: &str, root: &str) -> Vec<String> {
    println!("ACL scenario against {addr}");
    let mut t = Vec::new();
    let alice = connect(addr, Some("alice:pa")).await;
    let bob = connect(addr, Some("bob:pb")).await;
    let anon = connect(addr, None).await;
    let p = |s: &str| format!("{root}{s}");
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let alice_only = [digest_acl(zk::Permission::ALL, "alice:pa")];
    let alice_only_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&alice_only));
    let public = [
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
        digest_acl(zk::Permission::ALL, "alice:pa"),
    ];
    let public_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&public));

    t.push(res(alice.create(root, b"", &open).await, |_| {
        "root: ok".into()
    }));
    t.push(res(
        alice.create(&p("/a"), b"secret", &alice_only_opts).await,
        |(s, _)| format!("alice creates /a: {}", stat_line(&s)),
    ));
    t.push(res(
        alice.create(&p("/a/k"), b"", &alice_only_opts).await,
        |_| "alice creates /a/k: ok".into(),
    ));
    t.push(res(
        alice.create(&p("/pub"), b"hello", &public_opts).await,
        |_| "alice creates world-readable /pub: ok".into(),
    ));

    // Bob may see that /a exists, nothing else.
    t.push(res(bob.check_stat(&p("/a")).await, |s| {
        format!("bob exists /a: {:?}", s.map(|s| stat_line(&s)))
    }));
    t.push(res(bob.get_data(&p("/a")).await, |(d, _)| {
        format!("bob reads /a: {d:?}")
    }));
    t.push(res(bob.get_data(&p("/a/none")).await, |_| {
        "bob reads /a/none: ok".into()
    }));
    t.push(res(bob.get_children(&p("/a")).await, |(c, _)| {
        format!("bob lists /a: {c:?}")
    }));
    t.push(res(bob.get_acl(&p("/a")).await, |(a, _)| {
        format!("bob getACL /a: {}", acl_line(&a))
    }));
    t.push(res(bob.count_descendants_number(&p("/a")).await, |n| {
        format!("bob counts /a: {n}")
    }));
    t.push(res(bob.list_ephemerals(&p("/a")).await, |l| {
        format!("bob ephemerals /a: {l:?}")
    }));
    t.push(res(bob.create(&p("/a/x"), b"", &open).await, |_| {
        "bob creates /a/x: ok".into()
    }));
    t.push(res(bob.create(&p("/a/k"), b"", &open).await, |_| {
        "bob creates /a/k: ok".into()
    }));
    t.push(res(bob.create(&p("/a/x/y"), b"", &open).await, |_| {
        "bob creates /a/x/y: ok".into()
    }));
    t.push(res(bob.set_data(&p("/a"), b"x", None).await, |_| {
        "bob sets /a: ok".into()
    }));
    t.push(res(bob.set_data(&p("/a"), b"x", Some(9)).await, |_| {
        "bob sets /a at version 9: ok".into()
    }));
    t.push(res(bob.delete(&p("/a/k"), None).await, |_| {
        "bob deletes /a/k: ok".into()
    }));
    t.push(res(bob.delete(&p("/a/none"), None).await, |_| {
        "bob deletes /a/none: ok".into()
    }));
    t.push(res(
        bob.set_acl(&p("/a"), &zk::Acls::anyone_all(), None).await,
        |_| "bob setACL /a: ok".into(),
    ));
    t.push(res(
        bob.set_acl(&p("/a/none"), &zk::Acls::anyone_all(), None)
            .await,
        |_| "bob setACL /a/none: ok".into(),
    ));

    // The world-readable node: anyone reads, nobody but alice writes; getACL without ADMIN
    // hides the digest.
    t.push(res(anon.get_data(&p("/pub")).await, |(d, s)| {
        format!(
            "anon reads /pub: {:?} {}",
            String::from_utf8_lossy(&d),
            stat_line(&s)
        )
    }));
    t.push(res(anon.set_data(&p("/pub"), b"x", None).await, |_| {
        "anon sets /pub: ok".into()
    }));
    t.push(res(anon.get_acl(&p("/pub")).await, |(a, s)| {
        format!("anon getACL /pub: {} {}", acl_line(&a), stat_line(&s))
    }));
    t.push(res(alice.get_acl(&p("/pub")).await, |(a, _)| {
        format!("alice getACL /pub: {}", acl_line(&a))
    }));
    t.push(res(alice.get_acl("/zookeeper/config").await, |(a, s)| {
        format!(
            "getACL /zookeeper/config: {} {}",
            acl_line(&a),
            stat_line(&s)
        )
    }));

    // setACL: aversion checked and bumped; bob gets READ.
    let with_bob = [
        digest_acl(zk::Permission::ALL, "alice:pa"),
        digest_acl(zk::Permission::READ, "bob:pb"),
    ];
    t.push(res(
        alice.set_acl(&p("/a"), &with_bob, Some(5)).await,
        |_| "alice setACL /a at aversion 5: ok".into(),
    ));
    t.push(res(
        alice.set_acl(&p("/a"), &with_bob, Some(0)).await,
        |s| format!("alice setACL /a at aversion 0: {}", stat_line(&s)),
    ));
    t.push(res(alice.get_acl(&p("/a")).await, |(a, s)| {
        format!("alice getACL /a: {} {}", acl_line(&a), stat_line(&s))
    }));
    t.push(res(bob.get_data(&p("/a")).await, |(d, _)| {
        format!("bob reads /a now: {:?}", String::from_utf8_lossy(&d))
    }));
    t.push(res(bob.get_acl(&p("/a")).await, |(a, _)| {
        format!("bob getACL /a now: {}", acl_line(&a))
    }));
    t.push(res(bob.set_data(&p("/a"), b"x", None).await, |_| {
        "bob sets /a now: ok".into()
    }));

    // A multi with one refused op changes nothing.
    let mut m = bob.new_multi_writer();
    m.add_create(&p("/m"), b"", &open).expect("add");
    m.add_set_data(&p("/pub"), b"x", None).expect("add");
    t.push(match m.commit().await {
        Ok(r) => format!("bob multi: {} results", r.len()),
        Err(e) => format!("bob multi error {e}"),
    });
    t.push(res(bob.check_stat(&p("/m")).await, |s| {
        format!("after the refused multi, /m exists: {}", s.is_some())
    }));
    let mut m = anon.new_multi_writer();
    m.add_check_version(&p("/a"), 5).expect("add");
    t.push(match m.commit().await {
        Ok(r) => format!("anon multi check: {} results", r.len()),
        Err(e) => format!("anon multi check error {e}"),
    });

    // The `auth` scheme: needs an authenticated id, expands to it.
    let creator = zk::CreateMode::Persistent.with_acls(zk::Acls::creator_all());
    t.push(res(anon.create(&p("/q"), b"", &creator).await, |_| {
        "anon creates with auth: ok".into()
    }));
    t.push(res(alice.create(&p("/q"), b"", &creator).await, |_| {
        "alice creates with auth: ok".into()
    }));
    t.push(res(alice.get_acl(&p("/q")).await, |(a, _)| {
        format!("alice getACL /q: {}", acl_line(&a))
    }));

    // Invalid ACLs.
    for (name, acl) in [
        (
            "unknown scheme",
            zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("foo", "bar")),
        ),
        (
            "world:foo",
            zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("world", "foo")),
        ),
        (
            "digest without hash",
            zk::Acl::new(zk::Permission::ALL, zk::AuthId::new("digest", "alice")),
        ),
    ] {
        let acls = [acl];
        let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acls));
        t.push(res(alice.create(&p("/bad"), b"", &opts).await, |_| {
            format!("create with {name}: ok")
        }));
        t.push(res(alice.create(&p("/none/bad"), b"", &opts).await, |_| {
            format!("create with {name} under a missing parent: ok")
        }));
        t.push(res(alice.set_acl(&p("/pub"), &acls, None).await, |_| {
            format!("setACL with {name}: ok")
        }));
    }
    let nobody = [zk::Acl::new(zk::Permission::NONE, zk::AuthId::anyone())];
    let nobody_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&nobody));
    t.push(res(
        alice.create(&p("/sealed"), b"", &nobody_opts).await,
        |_| "create with no permissions: ok".into(),
    ));
    t.push(res(alice.get_acl(&p("/sealed")).await, |(a, _)| {
        format!("getACL of a node nobody may read: {}", acl_line(&a))
    }));

    // addAuth pipelined ahead of the write it authorises: session order decides.
    let carol = connect(addr, None).await;
    let authed = carol.auth("digest", b"alice:pa");
    let set = carol.set_data(&p("/a"), b"by carol", None);
    let (authed, set) = tokio::join!(authed, set);
    t.push(format!(
        "carol pipelines addAuth and set: {} / {}",
        res(authed, |()| "ok".into()),
        res(set, |s| stat_line(&s))
    ));
    // An unknown scheme: AuthFailed, and the session is unusable afterwards.
    let dave = connect(addr, None).await;
    t.push(res(dave.auth("foo", b"bar").await, |()| {
        "dave addAuth foo: ok".into()
    }));
    t.push(res(dave.get_data(&p("/pub")).await, |_| {
        "dave reads after AuthFailed: ok".into()
    }));

    // Clean up as alice.
    for n in ["/sealed", "/q", "/a/k", "/a", "/pub"] {
        t.push(res(alice.delete(&p(n), None).await, |()| {
            format!("delete {n}: ok")
        }));
    }
    t.push(res(alice.delete(root, None).await, |()| {
        "delete root: ok".into()
    }));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_match_zookeeper() {
    let real = RealZooKeeper::start();
    let ours = faaskeeper_tests::zk_addr();
    let expected = scenario(&real.addr, "/acl").await;
    let got = scenario(&ours, "/acl").await;
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        println!("{i:2} zookeeper: {e}\n   faaskeeper: {g}");
    }
    assert_eq!(got, expected, "transcripts differ");
}

/// Everything tenant `them` may not do under `tree` (created by the other tenant with a
/// digest ACL of its own), through the ZooKeeper protocol.
async fn zk_intruder(c: &zk::Client, tree: &str) -> Vec<zk::Error> {
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let kid = format!("{tree}/data");
    vec![
        c.get_data(tree)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.get_data(&kid)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.get_children(tree)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.get_acl(&kid)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.set_data(&kid, b"x", None)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.create(&format!("{tree}/new"), b"", &open)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.delete(&kid, None)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
        c.set_acl(tree, &zk::Acls::anyone_all(), None)
            .await
            .err()
            .unwrap_or(zk::Error::Unimplemented),
    ]
}

/// The same through the HTTP API and this repository's client.
async fn http_intruder(
    c: &faaskeeper_client::Client,
    tree: &str,
) -> Vec<Option<faaskeeper_core::ZkError>> {
    use faaskeeper_core::CreateMode;
    let kid = format!("{tree}/data");
    let code = |r: Result<(), faaskeeper_client::Error>| r.err().and_then(|e| e.code());
    vec![
        code(c.get_data(tree).await.map(|_| ())),
        code(c.get_data(&kid).await.map(|_| ())),
        code(c.get_children(tree).await.map(|_| ())),
        code(c.get_acl(&kid).await.map(|_| ())),
        code(c.set_data(&kid, b"x", -1).await.map(|_| ())),
        code(
            c.create(&format!("{tree}/new"), b"", CreateMode::Persistent)
                .await
                .map(|_| ()),
        ),
        code(c.delete(&kid, -1).await),
        code(
            c.set_acl(tree, &faaskeeper_core::acl::open_unsafe(), -1)
                .await
                .map(|_| ()),
        ),
        code(c.get_all_children_number(tree).await.map(|_| ())),
        code(c.get_data_w(&kid).await.map(|_| ())),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_cannot_touch_each_others_trees() {
    use faaskeeper_client::{Client, Options};
    use faaskeeper_core::{CreateMode, ZkError};
    let zk_addr = faaskeeper_tests::zk_addr();
    let url = faaskeeper_tests::host_url();
    let base = faaskeeper_tests::unique("tenants");
    let a_tree = format!("{base}-a");
    let b_tree = format!("{base}-b");

    // Tenant a sets up over the gateway, tenant b over the HTTP API.
    let a = connect(&zk_addr, Some("a:secret-a")).await;
    let a_acl = [digest_acl(zk::Permission::ALL, "a:secret-a")];
    let a_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&a_acl));
    a.create(&a_tree, b"tenant a", &a_opts)
        .await
        .expect("a's tree");
    a.create(&format!("{a_tree}/data"), b"a's data", &a_opts)
        .await
        .expect("a's node");
    let world_read = [
        zk::Acl::new(zk::Permission::READ, zk::AuthId::anyone()),
        digest_acl(zk::Permission::ALL, "a:secret-a"),
    ];
    let shared_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&world_read));
    a.create(&format!("{a_tree}/shared"), b"for all", &shared_opts)
        .await
        .expect("shared");

    let b = Client::connect(&url, Options::default())
        .await
        .expect("b connects");
    b.add_auth("digest", b"b:secret-b")
        .await
        .expect("b authenticates");
    let b_acl = [FkAcl::new(perms::ALL, "digest", &digest(b"b:secret-b"))];
    b.create_with_acl(&b_tree, b"tenant b", CreateMode::Persistent, &b_acl)
        .await
        .expect("b's tree");
    b.create_with_acl(
        &format!("{b_tree}/data"),
        b"b's data",
        CreateMode::Persistent,
        &b_acl,
    )
    .await
    .expect("b's node");

    // b (HTTP API) against a's tree.
    let refused = http_intruder(&b, &a_tree).await;
    assert_eq!(
        refused,
        vec![Some(ZkError::NoAuth); refused.len()],
        "b on a's tree"
    );
    // b over the gateway, with b's credentials, against a's tree.
    let b_zk = connect(&zk_addr, Some("b:secret-b")).await;
    let refused = zk_intruder(&b_zk, &a_tree).await;
    assert_eq!(
        refused,
        vec![zk::Error::NoAuth; refused.len()],
        "b (gateway) on a's tree"
    );
    // a (gateway) against b's tree, and a over the HTTP API.
    let refused = zk_intruder(&a, &b_tree).await;
    assert_eq!(
        refused,
        vec![zk::Error::NoAuth; refused.len()],
        "a on b's tree"
    );
    let a_http = Client::connect(&url, Options::default())
        .await
        .expect("a connects");
    a_http
        .add_auth("digest", b"a:secret-a")
        .await
        .expect("a authenticates");
    let refused = http_intruder(&a_http, &b_tree).await;
    assert_eq!(
        refused,
        vec![Some(ZkError::NoAuth); refused.len()],
        "a (HTTP) on b's tree"
    );
    // A wrong password is another id.
    let mallory = Client::connect(&url, Options::default())
        .await
        .expect("connects");
    mallory
        .add_auth("digest", b"a:guess")
        .await
        .expect("any password authenticates an id");
    let refused = http_intruder(&mallory, &a_tree).await;
    assert_eq!(
        refused,
        vec![Some(ZkError::NoAuth); refused.len()],
        "wrong password"
    );

    // Nothing changed, each tenant still owns its tree, and the world-readable node is
    // readable by everyone, over both front ends.
    let (data, _) = a
        .get_data(&format!("{a_tree}/data"))
        .await
        .expect("a reads its own");
    assert_eq!(data, b"a's data");
    assert_eq!(a.get_children(&a_tree).await.expect("a lists").0.len(), 2);
    let (data, _) = b
        .get_data(&format!("{b_tree}/data"))
        .await
        .expect("b reads its own");
    assert_eq!(data, b"b's data");
    let (data, _) = b
        .get_data(&format!("{a_tree}/shared"))
        .await
        .expect("world-readable");
    assert_eq!(data, b"for all");
    let (data, _) = b_zk
        .get_data(&format!("{a_tree}/shared"))
        .await
        .expect("world-readable");
    assert_eq!(data, b"for all");
    assert_eq!(
        b.set_data(&format!("{a_tree}/shared"), b"x", -1)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(ZkError::NoAuth)
    );
    // exists needs no permission, as in ZooKeeper.
    assert!(b.exists(&a_tree).await.expect("exists").is_some());
    // The raw HTTP read route refuses too, with the stat only.
    let anon = Client::connect(&url, Options::default())
        .await
        .expect("connects");
    assert_eq!(
        anon.get_data(&format!("{b_tree}/data"))
            .await
            .err()
            .and_then(|e| e.code()),
        Some(ZkError::NoAuth)
    );
    // An unknown scheme leaves the client unusable, as ZooKeeper's clients are.
    let bad = Client::connect(&url, Options::default())
        .await
        .expect("connects");
    let e = bad.add_auth("foo", b"x").await.expect_err("unknown scheme");
    assert_eq!(e.code(), Some(ZkError::AuthFailed));
    assert_eq!(
        *bad.session_state().borrow(),
        faaskeeper_client::SessionState::AuthFailed
    );
    assert_eq!(
        bad.get_data(&format!("{a_tree}/shared"))
            .await
            .err()
            .and_then(|e| e.code()),
        Some(ZkError::AuthFailed)
    );
}
