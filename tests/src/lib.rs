//! Shared set-up of the end-to-end suites: one real host (embedded store in a temp dir, the
//! real `.wasm` stages) per test binary, kept on its own runtime thread so that every
//! `#[tokio::test]` can talk to it.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

pub mod runner;
pub use faaskeeper_bench::zookeeper;

struct Shared {
    url: String,
    zk: String,
    _dir: tempfile::TempDir,
}

static HOST: OnceLock<Shared> = OnceLock::new();

fn shared() -> &'static Shared {
    HOST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let host = faaskeeper_host::start(faaskeeper_host::ServeOptions {
                    data_dir,
                    listen: "127.0.0.1:0".parse().expect("addr"),
                    zk_listen: Some("127.0.0.1:0".parse().expect("addr")),
                    ..Default::default()
                })
                .await
                .expect("host starts");
                let zk = host.zk_addr().expect("gateway on").to_string();
                tx.send((host.url(), zk)).expect("send url");
                // Serve until the test process exits.
                std::future::pending::<()>().await;
                drop(host);
            });
        });
        let (url, zk) = rx.recv().expect("host url");
        Shared { url, zk, _dir: dir }
    })
}

/// Base URL of the shared host's HTTP API, starting it on first use.
pub fn host_url() -> String {
    shared().url.clone()
}

/// `host:port` of the shared host's ZooKeeper-protocol gateway.
pub fn zk_addr() -> String {
    shared().zk.clone()
}

/// A fresh unique path prefix so tests sharing the host do not collide.
pub fn unique(name: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("/{name}-{}-{n}", std::process::id())
}
