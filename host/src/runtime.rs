//! The wasmtime side of the host: one [`Engine`] with the pooling allocator, each stage
//! compiled and pre-instantiated once ([`ProxyPre`]), and a fresh [`Store`] per invocation.

use crate::hub::SessionHub;
use crate::kv::{KvCtx, KvCtxView, KvView};
use crate::routing::StageRouter;
use anyhow::{Context, bail};
use bytes::Bytes;
use faaskeeper_core::wire::{Delivery, Request, Submission, WriteBatch};
use faaskeeper_storage::StoreManager;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The stages this host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageName {
    /// Appends requests to the log.
    Writer,
    /// Applies the log.
    Distributor,
    /// Delivers results and watch events.
    Watch,
    /// Takes session pings and expires silent sessions.
    Heartbeat,
}

impl StageName {
    /// Every stage.
    pub const ALL: [StageName; 4] = [
        StageName::Writer,
        StageName::Distributor,
        StageName::Watch,
        StageName::Heartbeat,
    ];

    /// The stage's name, as in `<name>.spin.internal`.
    pub fn name(self) -> &'static str {
        match self {
            StageName::Writer => "writer",
            StageName::Distributor => "distributor",
            StageName::Watch => "watch",
            StageName::Heartbeat => "heartbeat",
        }
    }

    /// Parse a stage name.
    pub fn from_name(name: &str) -> Option<StageName> {
        StageName::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Store data of one invocation.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    kv: KvCtx,
    router: StageRouter,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.router,
        }
    }
}

impl KvView for HostState {
    fn kv(&mut self) -> KvCtxView<'_> {
        KvCtxView {
            ctx: &self.kv,
            table: &mut self.table,
        }
    }
}

/// Limits of the instance pool.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Component instances alive at once (all stages).
    pub instances: u32,
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Writer invocations running at once (client-facing back-pressure).
    pub concurrent_writes: usize,
    /// Where compiled stages are cached between runs (`None`: compile every start).
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instances: 256,
            memory_bytes: 512 << 20,
            concurrent_writes: 64,
            cache_dir: None,
        }
    }
}

/// Compiled stages plus everything an invocation needs.
pub struct Runtime {
    engine: Engine,
    pres: HashMap<StageName, ProxyPre<HostState>>,
    kv: KvCtx,
    hub: Arc<SessionHub>,
    distributor_wake: Notify,
    /// The wake-up body naming this host as the distributor's lease owner: the host runs one
    /// distributor at a time, so the lease is kept between runs (see the distributor's docs).
    distributor_owner: Bytes,
    writes: Semaphore,
    combiner: tokio::sync::mpsc::UnboundedSender<PendingWrite>,
    combined: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<PendingWrite>>>,
}

/// One caller's requests waiting for the write combiner.
struct PendingWrite {
    requests: Vec<Request>,
    reply: tokio::sync::oneshot::Sender<anyhow::Result<Vec<Submission>>>,
}

/// Most requests the combiner folds into one writer invocation.
const MAX_COMBINED: usize = 1024;

impl Runtime {
    /// Compile the stages (`(name, wasm bytes)`) and link them against WASI, `wasi:http` and
    /// our key-value implementation.
    pub fn new(
        stages: &[(StageName, &[u8])],
        stores: StoreManager,
        hub: Arc<SessionHub>,
        limits: Limits,
    ) -> anyhow::Result<Arc<Runtime>> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.instances)
            .total_core_instances(limits.instances * 4)
            .total_memories(limits.instances * 2)
            .total_tables(limits.instances * 4)
            .total_stacks(limits.instances)
            .max_memory_size(limits.memory_bytes)
            // A reused slot is reset by rewriting only the pages the last guest dirtied (Linux
            // 6.7+ `PAGEMAP_SCAN`; older kernels fall back), and its first MiB stays mapped
            // instead of going through `madvise`: this halves the cost of an invocation
            // (measured by `benches/benches/runtime.rs`, `invoke/*_tuned`).
            .pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 20);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = &limits.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::kv::add_to_linker(&mut linker)?;
        let mut pres = HashMap::new();
        for (name, bytes) in stages {
            let component = Component::new(&engine, bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("compiling the {} component", name.name()))?;
            let pre = ProxyPre::new(linker.instantiate_pre(&component)?)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("pre-instantiating the {} component", name.name()))?;
            pres.insert(*name, pre);
        }
        let (combiner, combined) = tokio::sync::mpsc::unbounded_channel();
        Ok(Arc::new(Runtime {
            engine,
            pres,
            kv: KvCtx::new(stores),
            hub,
            distributor_wake: Notify::new(),
            distributor_owner: Bytes::from(
                serde_json::json!({ "owner": format!("host-{}-{:x}", std::process::id(), rand_id()) })
                    .to_string(),
            ),
            writes: Semaphore::new(limits.concurrent_writes),
            combiner,
            combined: std::sync::Mutex::new(Some(combined)),
        }))
    }

    fn new_state(self: &Arc<Self>, stage: StageName) -> HostState {
        let wasi = wasmtime_wasi::WasiCtx::builder()
            .inherit_stderr()
            .env("FAASKEEPER_STAGE", stage.name())
            .build();
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            kv: self.kv.clone(),
            router: StageRouter { rt: self.clone() },
        }
    }

    /// Invoke `stage` with a POST of `body` to `path`; returns the status and whole body.
    pub async fn invoke(
        self: &Arc<Self>,
        stage: StageName,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let started = std::time::Instant::now();
        let pre = self
            .pres
            .get(&stage)
            .with_context(|| format!("stage {} is not loaded", stage.name()))?
            .clone();
        let mut store = Store::new(&self.engine, self.new_state(stage));
        let request = hyper::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{}.spin.internal{path}", stage.name()))
            .header("content-type", "application/json")
            .body(Full::new(body).map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            ))?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(
            wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
            request,
        )?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        let response = match receiver.await {
            Ok(Ok(response)) => response,
            Ok(Err(code)) => bail!("{} answered with error {code:?}", stage.name()),
            Err(_) => {
                // The guest returned or trapped without setting a response.
                return match task.await {
                    Ok(Err(e)) => {
                        Err(anyhow::Error::from(e).context(format!("{} trapped", stage.name())))
                    }
                    Ok(Ok(())) => bail!("{} set no response", stage.name()),
                    Err(e) => bail!("{} invocation panicked: {e}", stage.name()),
                };
            }
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{} response body: {e:?}", stage.name()))?
            .to_bytes();
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("{} trapped after responding", stage.name())));
            }
            Err(e) => bail!("{} invocation panicked: {e}", stage.name()),
        }
        tracing::debug!(
            stage = stage.name(),
            path,
            status,
            micros = started.elapsed().as_micros() as u64,
            "invocation"
        );
        Ok((status, body))
    }

    /// Invoke the writer directly with a raw body, at most `Limits::concurrent_writes` at
    /// once (stage-to-stage calls; clients go through [`Runtime::write_batch`]).
    pub async fn write(self: &Arc<Self>, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let _permit = self.writes.acquire().await?;
        self.invoke(StageName::Writer, "/", body).await
    }

    /// Append a session's requests through the write combiner: requests that arrive while a
    /// writer invocation runs are appended together by the next one, so concurrent sessions
    /// share one log append (one compare-and-swap of the head, one fsync) instead of racing
    /// for the head. Returns one submission per request, in order.
    pub async fn write_batch(&self, requests: Vec<Request>) -> anyhow::Result<Vec<Submission>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.combiner
            .send(PendingWrite { requests, reply })
            .map_err(|_| anyhow::anyhow!("the write combiner stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the write combiner dropped the request"))?
    }

    /// The write combiner: one writer invocation at a time, each taking every request that
    /// is waiting (up to [`MAX_COMBINED`]).
    pub async fn run_write_combiner(self: Arc<Self>) {
        let Some(mut rx) = self.combined.lock().ok().and_then(|mut r| r.take()) else {
            tracing::error!("the write combiner was started twice");
            return;
        };
        while let Some(first) = rx.recv().await {
            let mut n = first.requests.len();
            let mut group = vec![first];
            while n < MAX_COMBINED {
                match rx.try_recv() {
                    Ok(w) => {
                        n += w.requests.len();
                        group.push(w);
                    }
                    Err(_) => break,
                }
            }
            // The requests move into the batch; each caller keeps its count to split the answer.
            let mut requests = Vec::with_capacity(n);
            let mut callers = Vec::with_capacity(group.len());
            for w in group {
                callers.push((w.requests.len(), w.reply));
                requests.extend(w.requests);
            }
            let result = self.append(&WriteBatch { requests }).await;
            match result {
                Ok(mut subs) => {
                    for (len, reply) in callers.into_iter().rev() {
                        let mine = subs.split_off(subs.len() - len);
                        let _ = reply.send(Ok(mine));
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    for (_, reply) in callers {
                        let _ = reply.send(Err(anyhow::anyhow!("{msg}")));
                    }
                }
            }
        }
    }

    async fn append(self: &Arc<Self>, batch: &WriteBatch) -> anyhow::Result<Vec<Submission>> {
        let (status, body) = self
            .invoke(
                StageName::Writer,
                "/",
                Bytes::from(serde_json::to_vec(batch)?),
            )
            .await?;
        if status != 200 {
            bail!(
                "writer answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let subs: Vec<Submission> = serde_json::from_slice(&body).context("writer's answer")?;
        if subs.len() != batch.requests.len() {
            bail!(
                "writer answered {} submissions for {} requests",
                subs.len(),
                batch.requests.len()
            );
        }
        Ok(subs)
    }

    /// Apply everything in the log now (taking over any lease a killed process left).
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        match self
            .invoke(
                StageName::Distributor,
                "/recover",
                self.distributor_owner.clone(),
            )
            .await?
        {
            (200, _) => Ok(()),
            (status, body) => bail!(
                "recovery: distributor answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Ask for a distributor run. Runs are serialised by [`Runtime::run_distributor_loop`]; a
    /// request during a run schedules exactly one more, so no appended txn waits for the next
    /// write to be applied.
    pub fn kick_distributor(&self) {
        self.distributor_wake.notify_one();
    }

    /// The background loop that runs the distributor when kicked, and every `period` anyway
    /// (which also finishes a batch a crash left half done).
    ///
    /// The first run takes over any lease a killed process left: this host owns its store
    /// file exclusively, so no other distributor can be alive.
    pub async fn run_distributor_loop(self: Arc<Self>, period: Duration) {
        let mut path = "/recover";
        loop {
            match self
                .invoke(StageName::Distributor, path, self.distributor_owner.clone())
                .await
            {
                Ok((200, _)) => path = "/",
                Ok((status, body)) => {
                    tracing::warn!(status, body = %String::from_utf8_lossy(&body), "distributor run failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "distributor invocation failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            let _ = tokio::time::timeout(period, self.distributor_wake.notified()).await;
        }
    }

    /// Sweep for lapsed sessions every `period` (the heartbeat stage's `/check`).
    pub async fn run_heartbeat_loop(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            match self
                .invoke(StageName::Heartbeat, "/check", Bytes::from_static(b"{}"))
                .await
            {
                Ok((200, _)) => {}
                Ok((status, body)) => {
                    tracing::warn!(status, body = %String::from_utf8_lossy(&body), "heartbeat sweep failed")
                }
                Err(e) => tracing::error!(error = format!("{e:#}"), "heartbeat invocation failed"),
            }
        }
    }

    /// Record a ping of `session` (the heartbeat stage's `/ping`).
    pub async fn ping(self: &Arc<Self>, session: i64) -> anyhow::Result<(u16, Bytes)> {
        let body = serde_json::to_vec(&serde_json::json!({ "session": session }))?;
        self.invoke(StageName::Heartbeat, "/ping", Bytes::from(body))
            .await
    }

    /// Create the protocol's keys and ZooKeeper's initial tree (idempotent).
    pub async fn init_store(self: &Arc<Self>) -> anyhow::Result<()> {
        let (status, body) = self
            .invoke(StageName::Distributor, "/init", Bytes::from_static(b"{}"))
            .await?;
        if status != 200 {
            bail!(
                "store initialisation failed: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// The session channels.
    pub fn hub(&self) -> &Arc<SessionHub> {
        &self.hub
    }

    /// Deliver a watch-stage POST to `/v1/sessions/<id>/deliver`.
    pub(crate) fn deliver_to_session(&self, path: &str, body: &[u8]) -> (u16, Bytes) {
        let Ok(delivery) = serde_json::from_slice::<Delivery>(body) else {
            return (
                400,
                Bytes::from_static(b"{\"error\":\"malformed delivery\"}"),
            );
        };
        let expected = format!("/v1/sessions/{}/deliver", delivery.session);
        if path != expected {
            return (400, Bytes::from_static(b"{\"error\":\"session mismatch\"}"));
        }
        if self.hub.deliver(delivery) {
            (200, Bytes::from_static(b"{}"))
        } else {
            (
                410,
                Bytes::from_static(b"{\"error\":\"no such session channel\"}"),
            )
        }
    }
}

/// A number unlikely to repeat across processes (time and address entropy; not for secrets).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
