//! # faaskeeper-host
//!
//! The bundled wasmtime host: it runs the stage components (writer, distributor, watch) from
//! `faaskeeper-artifacts`, gives them `wasi:keyvalue@0.2.0-draft2` buckets on a durable
//! embedded store ([`kv`]), routes their service-chaining calls in process ([`routing`]), and
//! serves clients over HTTP on 127.0.0.1 ([`server`], `docs/api.md`).
//!
//! ## Example: start the embedded service and talk to it
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let host = faaskeeper_host::start(faaskeeper_host::ServeOptions {
//!     data_dir: "./data".into(),
//!     listen: "127.0.0.1:0".parse()?,
//!     ..Default::default()
//! })
//! .await?;
//! let client = faaskeeper_client::Client::connect(&host.url(), Default::default()).await?;
//! client.create("/a", b"hello", faaskeeper_core::CreateMode::Persistent).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod hub;
pub mod kv;
pub mod routing;
pub mod runtime;
pub mod sandbox;
pub mod server;
pub mod zk;

use anyhow::Context;
use faaskeeper_backend_embedded::{EmbeddedDb, LogKeys};
use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
use faaskeeper_storage::StoreManager;
use runtime::{Limits, Runtime, StageName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Directory of the embedded store file.
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Address of the ZooKeeper-protocol gateway (`None`: off).
    pub zk_listen: Option<SocketAddr>,
    /// Instance pool limits.
    pub limits: Limits,
    /// The `system` and `user` buckets, e.g. on AWS (`faaskeeper_backend_aws`); `None`: the
    /// embedded store under `data_dir`.
    pub stores: Option<StoreManager>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            data_dir: PathBuf::from("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            zk_listen: Some(SocketAddr::from(([127, 0, 0, 1], 2181))),
            limits: Limits::default(),
            stores: None,
        }
    }
}

/// A running service; dropping it stops its tasks.
pub struct RunningHost {
    addr: SocketAddr,
    zk_addr: Option<SocketAddr>,
    runtime: Arc<Runtime>,
    summary: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningHost {
    /// Where the HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the ZooKeeper-protocol gateway listens, if it is on.
    pub fn zk_addr(&self) -> Option<SocketAddr> {
        self.zk_addr
    }

    /// Base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The runtime (for tests and tools).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// One line per configured bucket.
    pub fn summary(&self) -> &[String] {
        &self.summary
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The stage components embedded in this binary.
pub fn embedded_stages() -> Vec<(StageName, &'static [u8])> {
    vec![
        (StageName::Writer, faaskeeper_artifacts::WRITER_BYTES),
        (
            StageName::Distributor,
            faaskeeper_artifacts::DISTRIBUTOR_BYTES,
        ),
        (StageName::Watch, faaskeeper_artifacts::WATCH_BYTES),
        (StageName::Heartbeat, faaskeeper_artifacts::HEARTBEAT_BYTES),
    ]
}

/// Reads node objects from the user bucket as `GET /v1/node` does, without the HTTP hop.
fn direct_reader(user: Arc<dyn faaskeeper_storage::Store>) -> faaskeeper_client::DirectReader {
    faaskeeper_client::DirectReader(Arc::new(move |path: String| {
        let user = user.clone();
        Box::pin(async move {
            match user.get(&faaskeeper_core::keys::user_node(&path)).await {
                Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| format!("node object of {path}: {e}")),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }))
}

/// Start the service: open the store (embedded unless `opts.stores` gives one), compile the
/// stages, initialise the store, start the distributor loop and the HTTP API.
pub async fn start(opts: ServeOptions) -> anyhow::Result<RunningHost> {
    let stores = match opts.stores.clone() {
        Some(stores) => stores,
        None => {
            let db_path = opts.data_dir.join("faaskeeper.redb");
            // Only the transaction log is fsynced on every write; the rest is checkpointed
            // and, after a crash, rebuilt from the log before the API opens.
            let log = LogKeys {
                keys: faaskeeper_core::keys::LOG_KEYS
                    .iter()
                    .map(|(b, k)| (b.to_string(), k.to_string()))
                    .collect(),
                checkpoint: Duration::from_millis(100),
            };
            let db = EmbeddedDb::open_with_log(
                &db_path,
                &opts.data_dir.join("faaskeeper-log.redb"),
                &[SYSTEM_BUCKET, USER_BUCKET],
                log,
            )
            .with_context(|| format!("opening {}", db_path.display()))?;
            StoreManager::new()
                .with_bucket(SYSTEM_BUCKET, db.bucket(SYSTEM_BUCKET)?)
                .with_bucket(USER_BUCKET, db.bucket(USER_BUCKET)?)
        }
    };
    let user = stores.open(USER_BUCKET)?;
    let summary = stores.summary();
    let hub = Arc::new(hub::SessionHub::default());
    let stages = embedded_stages();
    let mut limits = opts.limits.clone();
    if limits.cache_dir.is_none() {
        limits.cache_dir = Some(opts.data_dir.join("compiled"));
    }
    // Compiling takes a while; keep it off the async workers.
    let runtime =
        tokio::task::spawn_blocking(move || Runtime::new(&stages, stores, hub, limits)).await??;
    runtime.init_store().await?;
    // Replay whatever the log holds beyond the applied state before anyone can read: a crash
    // may have lost derived state that was not yet on disk (see `faaskeeper_backend_embedded`, log mode).
    runtime.recover().await?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(runtime.clone().run_write_combiner()));
    tasks.push(tokio::spawn(
        runtime
            .clone()
            .run_distributor_loop(Duration::from_millis(500)),
    ));
    runtime.kick_distributor();
    tasks.push(tokio::spawn(
        runtime
            .clone()
            .run_heartbeat_loop(Duration::from_millis(500)),
    ));
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let api = Arc::new(server::Api {
        rt: runtime.clone(),
        user: user.clone(),
    });
    tasks.push(tokio::spawn(server::serve(listener, api)));
    let zk_addr = match opts.zk_listen {
        Some(zk_listen) => {
            let listener = tokio::net::TcpListener::bind(zk_listen)
                .await
                .with_context(|| format!("binding the ZooKeeper port {zk_listen}"))?;
            let zk_addr = listener.local_addr()?;
            let gw = zk::Gateway::new(
                format!("http://{addr}"),
                zk_addr.port(),
                Some(direct_reader(user.clone())),
            );
            tasks.push(tokio::spawn(zk::serve(listener, gw)));
            Some(zk_addr)
        }
        None => None,
    };
    Ok(RunningHost {
        addr,
        zk_addr,
        runtime,
        summary,
        tasks,
    })
}
