//! `zkCli.sh` from the Debian `zookeeper` package, unmodified, in a scripted session: the
//! same commands against a real Apache ZooKeeper 3.8 and against our gateway must print the
//! same thing (times and zxids, which legitimately differ, are masked).

use faaskeeper_tests::zookeeper::RealZooKeeper;
use std::io::Write;
use std::process::{Command, Stdio};

const ZKCLI: &str = "/usr/share/zookeeper/bin/zkCli.sh";

const SCRIPT: &str = "\
create /zkcli hello
get /zkcli
set /zkcli world
get -s /zkcli
create -s /zkcli/q- x
create -s /zkcli/q- y
create -e /zkcli/e z
ls /zkcli
ls -s /zkcli
set /zkcli again -v 0
delete /zkcli
stat /nope
create /zkcli/q-0000000000 dup
getAcl /zkcli
delete /zkcli/q-0000000000
deleteall /zkcli
stat /zkcli
quit
";

/// Run the script; return stdout and stderr lines that are the commands' output.
fn run(addr: &str) -> Vec<String> {
    let mut child = Command::new(ZKCLI)
        .args(["-server", addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("zkCli.sh runs (apt-get install zookeeper, done by .ci/run)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(SCRIPT.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("zkCli output");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        // JVM, logging and connection chatter is not the commands' output.
        .filter(|l| {
            !l.starts_with("SLF4J")
                && !l.starts_with("log4j")
                && !l.starts_with("Connecting to")
                && !l.starts_with("Welcome to")
                && !l.starts_with("JLine")
                && !l.starts_with("WATCHER")
                && !l.starts_with("WatchedEvent")
                && !l.trim_start().starts_with("at ")
        })
        .map(|l| {
            // Mask values that differ between any two servers.
            for key in ["cZxid", "mZxid", "pZxid", "ctime", "mtime"] {
                if l.starts_with(&format!("{key} = ")) {
                    return format!("{key} = <masked>");
                }
            }
            l.to_string()
        })
        .collect()
}

/// [`run`], again if zkCli began the script before its connection was up: it then answers
/// `ConnectionLoss` without reaching the server (seen here against the reference one; the script
/// ends by deleting everything it made, so a rerun starts clean).
fn run_connected(addr: &str) -> Vec<String> {
    let mut out = run(addr);
    for _ in 0..3 {
        if !out.iter().any(|l| l.contains("ConnectionLoss")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
        out = run(addr);
    }
    out
}

#[test]
fn zkcli_session_matches_zookeeper() {
    let real = RealZooKeeper::start();
    let expected = run_connected(&real.addr);
    drop(real);
    let got = run_connected(&faaskeeper_tests::zk_addr());
    println!(
        "zookeeper:\n{}\n\nfaaskeeper:\n{}",
        expected.join("\n"),
        got.join("\n")
    );
    assert!(
        expected.iter().any(|l| l == "world"),
        "script ran on ZooKeeper: {expected:?}"
    );
    assert_eq!(got, expected);
}
