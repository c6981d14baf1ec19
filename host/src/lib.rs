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

#[cfg(feature = "aws")]
pub mod aws;
pub mod cost;
pub mod faults;
pub mod hub;
pub mod kv;
pub mod outbound;
mod reads;
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
    /// Address of the ZooKeeper-protocol gateway (`None`: off). With tenants, the `i`-th
    /// tenant's gateway listens on this port + `i` (any free port if this one is 0).
    pub zk_listen: Option<SocketAddr>,
    /// Engine limits and each tenant's default limits.
    pub limits: Limits,
    /// The `system` and `user` buckets, e.g. on AWS (`faaskeeper_backend_aws`); `None`: the
    /// embedded store under `data_dir`. Single-tenant hosts only: tenants bring their own.
    pub stores: Option<StoreManager>,
    /// Empty: one tenant, API at the root (`/v1/...`). Otherwise one tenant each, sharing the
    /// engine and the compiled stages, each with its own buckets, session hub, loops and
    /// gateway, its API under `/t/<name>/v1/...`.
    pub tenants: Vec<TenantOptions>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            data_dir: PathBuf::from("data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8181)),
            zk_listen: Some(SocketAddr::from(([127, 0, 0, 1], 2181))),
            limits: Limits::default(),
            stores: None,
            tenants: Vec::new(),
        }
    }
}

/// One tenant of a multi-tenant host.
#[derive(Clone, Default)]
pub struct TenantOptions {
    /// Its name (1 to 32 of `a-z`, `0-9`, `-`, `_`): API prefix `/t/<name>`, data directory
    /// `<data_dir>/tenants/<name>`.
    pub name: String,
    /// Components run in place of the embedded stages for this tenant alone (compiled once
    /// more, for it); the other stages stay shared.
    pub stages: Vec<(StageName, Vec<u8>)>,
    /// Its buckets; `None`: an embedded store under `<data_dir>/tenants/<name>`.
    pub stores: Option<StoreManager>,
    /// Time limit of one invocation (default: [`Limits::time_limit`]).
    pub time_limit: Option<Duration>,
    /// Memory of one instance (default and most: [`Limits::memory_bytes`]).
    pub memory_bytes: Option<usize>,
    /// Instances at once (default: [`Limits::tenant_instances`], at most an equal share of
    /// [`Limits::instances`]).
    pub instances: Option<u32>,
}

impl TenantOptions {
    /// A tenant with the defaults.
    pub fn named(name: &str) -> TenantOptions {
        TenantOptions {
            name: name.to_string(),
            ..Default::default()
        }
    }
}

impl std::fmt::Debug for TenantOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantOptions")
            .field("name", &self.name)
            .field(
                "stages",
                &self
                    .stages
                    .iter()
                    .map(|(s, b)| format!("{} ({} bytes)", s.name(), b.len()))
                    .collect::<Vec<_>>(),
            )
            .field("stores", &self.stores)
            .field("time_limit", &self.time_limit)
            .field("memory_bytes", &self.memory_bytes)
            .field("instances", &self.instances)
            .finish()
    }
}

/// A running tenant.
pub struct RunningTenant {
    name: String,
    url: String,
    zk_addr: Option<SocketAddr>,
    runtime: Arc<Runtime>,
}

impl RunningTenant {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Base URL of its HTTP API (give it to `faaskeeper_client::Client::connect`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where its ZooKeeper-protocol gateway listens, if it is on.
    pub fn zk_addr(&self) -> Option<SocketAddr> {
        self.zk_addr
    }

    /// Its runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }
}

/// A running service; dropping it stops its tasks.
pub struct RunningHost {
    addr: SocketAddr,
    tenants: Vec<RunningTenant>,
    summary: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningHost {
    /// Where the HTTP API listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the (first) tenant's ZooKeeper-protocol gateway listens, if it is on.
    pub fn zk_addr(&self) -> Option<SocketAddr> {
        self.tenants.first().and_then(|t| t.zk_addr)
    }

    /// Base URL of the HTTP API (a multi-tenant host: of the host; see
    /// [`RunningTenant::url`]).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The (first) tenant's runtime (for tests and tools).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.tenants[0].runtime
    }

    /// Every tenant (a single-tenant host has one, [`runtime::DEFAULT_TENANT`]).
    pub fn tenants(&self) -> &[RunningTenant] {
        &self.tenants
    }

    /// A tenant by name.
    pub fn tenant(&self, name: &str) -> Option<&RunningTenant> {
        self.tenants.iter().find(|t| t.name == name)
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

/// The embedded store of one tenant under `dir`.
fn embedded_stores(dir: &std::path::Path) -> anyhow::Result<StoreManager> {
    let db_path = dir.join("faaskeeper.redb");
    // Only the transaction log is fsynced on every write; the rest is checkpointed and,
    // after a crash, rebuilt from the log before the API opens.
    let log = LogKeys {
        keys: faaskeeper_core::keys::LOG_KEYS
            .iter()
            .map(|(b, k)| (b.to_string(), k.to_string()))
            .collect(),
        checkpoint: Duration::from_millis(100),
    };
    let db = EmbeddedDb::open_with_log(
        &db_path,
        &dir.join("faaskeeper-log.wal"),
        &[SYSTEM_BUCKET, USER_BUCKET],
        log,
    )
    .with_context(|| format!("opening {}", db_path.display()))?;
    Ok(StoreManager::new()
        .with_bucket(SYSTEM_BUCKET, db.bucket(SYSTEM_BUCKET)?)
        .with_bucket(USER_BUCKET, db.bucket(USER_BUCKET)?))
}

/// Start the service: compile the stages once, then for each tenant (one unless
/// `opts.tenants` names several) open its store (embedded unless given), initialise it,
/// start its distributor and heartbeat loops and its gateway; then the HTTP API.
pub async fn start(opts: ServeOptions) -> anyhow::Result<RunningHost> {
    let multi = !opts.tenants.is_empty();
    if multi && opts.stores.is_some() {
        anyhow::bail!(
            "a multi-tenant host takes each tenant's buckets from its TenantOptions, not ServeOptions::stores"
        );
    }
    let tenants = if multi {
        opts.tenants.clone()
    } else {
        vec![TenantOptions {
            name: runtime::DEFAULT_TENANT.to_string(),
            stores: opts.stores.clone(),
            ..Default::default()
        }]
    };
    let mut limits = opts.limits.clone();
    if limits.cache_dir.is_none() {
        limits.cache_dir = Some(opts.data_dir.join("compiled"));
    }
    // Every tenant is checked before anything is created for any of them. Each gets an
    // equal share of the pool unless it says otherwise.
    let share = (limits.instances / tenants.len() as u32).min(limits.tenant_instances);
    let mut seen = std::collections::HashSet::new();
    let mut checked = Vec::new();
    for t in &tenants {
        let mut tenant = runtime::Tenant::new(&t.name, &limits)?;
        if !seen.insert(t.name.as_str()) {
            anyhow::bail!("tenant {:?} is named twice", t.name);
        }
        tenant.instances = t.instances.unwrap_or(share);
        if let Some(limit) = t.time_limit {
            tenant.time_limit = limit;
        }
        if let Some(bytes) = t.memory_bytes {
            tenant.memory_bytes = bytes;
        }
        checked.push(tenant);
    }
    // Compiling takes a while; keep it off the async workers.
    let stages = tokio::task::spawn_blocking(move || {
        runtime::HostEngine::new(limits)?.compile(&embedded_stages())
    })
    .await??;
    stages.engine().check(&checked)?;

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let mut tasks = Vec::new();
    let mut running = Vec::new();
    let mut apis = std::collections::HashMap::new();
    let mut summary = Vec::new();
    for (i, (t, tenant)) in tenants.into_iter().zip(checked).enumerate() {
        let stores = match t.stores {
            Some(stores) => stores,
            None if multi => {
                let dir = opts.data_dir.join("tenants").join(&t.name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                embedded_stores(&dir)?
            }
            None => embedded_stores(&opts.data_dir)?,
        };
        let user = stores.open(USER_BUCKET)?;
        let system = stores.open(SYSTEM_BUCKET)?;
        for line in stores.summary() {
            summary.push(if multi {
                format!("tenant {}: {line}", t.name)
            } else {
                line
            });
        }
        let tenant_stages = if t.stages.is_empty() {
            stages.clone()
        } else {
            let (base, overrides) = (stages.clone(), t.stages);
            tokio::task::spawn_blocking(move || {
                overrides
                    .iter()
                    .try_fold(base, |acc, (stage, bytes)| acc.with_stage(*stage, bytes))
            })
            .await??
        };
        let hub = Arc::new(hub::SessionHub::default());
        let runtime = Runtime::for_tenant(&tenant_stages, tenant, stores, hub)?;
        runtime.init_store().await?;
        // Replay whatever the log holds beyond the applied state before anyone can read: a
        // crash may have lost derived state that was not yet on disk (see
        // `faaskeeper_backend_embedded`, log mode).
        runtime.recover().await?;
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
        let url = if multi {
            format!("http://{addr}/t/{}", t.name)
        } else {
            format!("http://{addr}")
        };
        let api = Arc::new(server::Api {
            rt: runtime.clone(),
            user,
            system,
        });
        let zk_addr = match opts.zk_listen {
            Some(mut zk_listen) => {
                if zk_listen.port() != 0 {
                    let port = u16::try_from(usize::from(zk_listen.port()) + i)
                        .context("too many tenants for consecutive ZooKeeper ports")?;
                    zk_listen.set_port(port);
                }
                let listener = tokio::net::TcpListener::bind(zk_listen)
                    .await
                    .with_context(|| format!("binding the ZooKeeper port {zk_listen}"))?;
                let zk_addr = listener.local_addr()?;
                let gw = zk::Gateway::new(api.clone(), url.clone(), zk_addr.port());
                tasks.push(tokio::spawn(zk::serve(listener, gw)));
                Some(zk_addr)
            }
            None => None,
        };
        apis.insert(t.name.clone(), api);
        running.push(RunningTenant {
            name: t.name,
            url,
            zk_addr,
            runtime,
        });
    }
    let routes = if multi {
        server::Routes::Tenants(apis)
    } else {
        server::Routes::Single(apis.into_values().next().context("no tenant")?)
    };
    tasks.push(tokio::spawn(server::serve(listener, Arc::new(routes))));
    Ok(RunningHost {
        addr,
        tenants: running,
        summary,
        tasks,
    })
}
