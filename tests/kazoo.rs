//! kazoo, the Python ZooKeeper client, unmodified from PyPI, with its recipes (Lock,
//! Election, Barrier, Counter, Queue, Party, TreeCache): `tests/kazoo/test_kazoo.py` runs
//! against a real Apache ZooKeeper 3.8 and then against our gateway, and must pass on both.

use faaskeeper_tests::zookeeper::RealZooKeeper;
use std::process::Command;

fn run_kazoo(hosts: &str) -> (bool, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/kazoo");
    let out = Command::new("python3")
        .args(["-m", "unittest", "-v", "test_kazoo.py"])
        .current_dir(dir)
        .env("ZK_HOSTS", hosts)
        .output()
        .expect("python3 runs (kazoo is installed by .ci/run: pip install kazoo)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn kazoo_suite_passes_on_zookeeper_and_on_faaskeeper() {
    let real = RealZooKeeper::start();
    let (ok, text) = run_kazoo(&real.addr);
    assert!(
        ok,
        "the kazoo suite must pass on Apache ZooKeeper itself:\n{text}"
    );
    drop(real);
    let (ok, text) = run_kazoo(&faaskeeper_tests::zk_addr());
    println!("{text}");
    assert!(ok, "kazoo suite failed on the faaskeeper gateway:\n{text}");
}
