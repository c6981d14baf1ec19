//! The README's CLI session against a running `faaskeeper serve`.

mod support;

use std::process::Command;
use support::Server;

fn fk(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faaskeeper"))
        .arg("--server")
        .arg(url)
        .args(args)
        .output()
        .expect("run faaskeeper");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn readme_cli_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path());
    let url = server.url.clone();
    let (ok, out, err) = fk(&url, &["create", "/a", "hello"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Created /a");
    let (ok, out, _) = fk(&url, &["get", "/a"]);
    assert!(ok);
    assert_eq!(out.trim(), "hello");
    let (ok, out, err) = fk(&url, &["set", "/a", "x", "-v", "0"]);
    assert!(ok, "{err}");
    assert!(out.contains("dataVersion = 1"), "{out}");
    let (ok, _, err) = fk(&url, &["set", "/a", "y", "-v", "0"]);
    assert!(!ok);
    assert!(err.contains("BadVersion"), "{err}");
    let (ok, out, _) = fk(&url, &["ls", "/"]);
    assert!(ok);
    assert_eq!(out.trim(), "[a, zookeeper]");
    let (ok, out, _) = fk(&url, &["create", "-s", "/a/n-", ""]);
    assert!(ok);
    assert_eq!(out.trim(), "Created /a/n-0000000000");
    let (ok, _, err) = fk(&url, &["delete", "/a"]);
    assert!(!ok);
    assert!(err.contains("NotEmpty"), "{err}");
    assert!(fk(&url, &["delete", "/a/n-0000000000"]).0);
    let (ok, _, err) = fk(&url, &["delete", "/a"]);
    assert!(ok, "{err}");
    let (ok, _, err) = fk(&url, &["get", "/a"]);
    assert!(!ok);
    assert!(err.contains("NoNode"), "{err}");
    let (ok, _, err) = fk(&url, &["get", "bad//path"]);
    assert!(!ok);
    assert!(err.contains("BadArguments"), "{err}");
    // `watch` blocks until the next change.
    let watcher = Command::new(env!("CARGO_BIN_EXE_faaskeeper"))
        .args(["--server", &url, "watch", "/w"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(fk(&url, &["create", "/w", "v"]).0);
    let out = watcher.wait_with_output().expect("watch output");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("NodeCreated") && out.contains("path:/w"),
        "{out}"
    );
    drop(server);
}

/// `serve --tenant a --tenant b`: each tenant's API under `/t/<name>`, each with its own data.
#[test]
fn serve_with_tenants_keeps_their_data_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with(dir.path(), &["--tenant", "a", "--tenant", "b"]);
    let url_of = |name: &str| {
        let prefix = format!("tenant {name} at ");
        server
            .banner
            .iter()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no line for tenant {name} in {:?}", server.banner))
            .to_string()
    };
    let (a, b) = (url_of("a"), url_of("b"));
    assert_eq!(a, format!("{}/t/a", server.url));
    assert_eq!(b, format!("{}/t/b", server.url));
    let (ok, _, err) = fk(&a, &["create", "/only-a", "x"]);
    assert!(ok, "{err}");
    let (ok, out, _) = fk(&a, &["get", "/only-a"]);
    assert!(ok);
    assert_eq!(out.trim(), "x");
    let (ok, _, err) = fk(&b, &["get", "/only-a"]);
    assert!(!ok);
    assert!(err.contains("NoNode"), "{err}");
    let (ok, out, _) = fk(&b, &["ls", "/"]);
    assert!(ok);
    assert_eq!(out.trim(), "[zookeeper]");
    // Its own store files.
    assert!(dir.path().join("tenants/a/faaskeeper.redb").exists());
    assert!(dir.path().join("tenants/b/faaskeeper.redb").exists());
    // No tenant of that name, and no API at the root.
    let (ok, _, err) = fk(&format!("{}/t/c", server.url), &["ls", "/"]);
    assert!(!ok);
    assert!(err.contains("no tenant"), "{err}");
    let (ok, _, _) = fk(&server.url, &["ls", "/"]);
    assert!(!ok);
    drop(server);
}
