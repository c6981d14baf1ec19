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
