//! The wasmtime side of the host: one [`HostEngine`] (a wasmtime [`Engine`] with the pooling
//! allocator and epoch interruption), each stage compiled and pre-instantiated once into
//! [`Stages`] ([`ProxyPre`]), and per tenant a [`Runtime`] that invokes them with a fresh
//! [`Store`] per invocation, under the tenant's limits ([`crate::sandbox`]).
//!
//! Several tenants share one engine and one compiled copy of the stages; each has its own
//! buckets ([`StoreManager`]), session hub, loops and instance slots. A stage can open only
//! the buckets of the runtime that invokes it, so no bucket name reaches another tenant's data.

use crate::faults::{FaultPlan, InvocationFaults};
use crate::hub::SessionHub;
use crate::kv::{KvCtx, KvCtxView, KvView};
use crate::routing::StageRouter;
use crate::sandbox::{GuestLimiter, InvocationError, LimitHit, Slots};
use anyhow::{Context, bail};
use bytes::Bytes;
use faaskeeper_core::wire::{Request, Submission, WriteBatch};
use faaskeeper_storage::StoreManager;
use futures::FutureExt;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The stages this host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    limiter: GuestLimiter,
    /// Set by the epoch callback when it stopped the guest at its deadline.
    time_hit: bool,
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

/// Limits of the engine (shared by every tenant) and the defaults of each tenant's.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Component instances alive at once (all tenants): the pooling allocator's capacity.
    pub instances: u32,
    /// Linear memory per instance: the pool's slot size and each invocation's memory limit
    /// (a guest growing a memory past it is stopped with [`InvocationError::MemoryLimit`]).
    pub memory_bytes: usize,
    /// Writer invocations running at once (client-facing back-pressure).
    pub concurrent_writes: usize,
    /// Where compiled stages are cached between runs (`None`: compile every start).
    pub cache_dir: Option<std::path::PathBuf>,
    /// Wall-clock time one invocation may take, including what it waits for (stores, the
    /// stages it calls); past it the guest is stopped with [`InvocationError::TimeLimit`].
    /// Generous by default: a distributor run may apply a long backlog after a restart.
    pub time_limit: Duration,
    /// Instances one tenant may run at once, split over the call depths; reaching the bound
    /// makes further invocations wait. Reserved from [`Limits::instances`] when the tenant is
    /// created, so one tenant can never exhaust the pool for another.
    pub tenant_instances: u32,
    /// Levels of stages calling stages in process, counting the host's own call: 4 lets the
    /// host call a stage that calls a stage that calls a stage that calls a stage.
    pub call_depth: u32,
    /// Whether Cranelift inlines small guest functions into their callers. Each call it
    /// removes also removes a function entry's stack and epoch checks: the apply logic runs
    /// ≈ 9 % faster (wasm ÷ native 1.91× → 1.74×, `benches/benches/runtime.rs`), and
    /// compiling the stages takes ≈ 3.5× as long (≈ 5.5 s instead of 1.5 s on 2 cores; once
    /// per `cache_dir`).
    pub inlining: bool,
    /// Test-only fault injection ([`crate::faults`]); `None` in production.
    pub faults: Option<Arc<FaultPlan>>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            instances: 256,
            memory_bytes: 512 << 20,
            concurrent_writes: 64,
            cache_dir: None,
            time_limit: Duration::from_secs(30),
            tenant_instances: 64,
            call_depth: 4,
            inlining: true,
            faults: None,
        }
    }
}

/// Why a tenant cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// The name is not usable in paths and URLs.
    #[error("invalid tenant name {0:?}: use 1 to 32 characters of a-z, 0-9, '-' and '_'")]
    InvalidName(String),
    /// The engine's pool has too few instances left for the tenant's quota.
    #[error(
        "tenant {tenant} needs {wanted} instance slots but the engine has {left} of {capacity} left"
    )]
    NoCapacity {
        /// The tenant.
        tenant: String,
        /// Its quota.
        wanted: u32,
        /// Slots not reserved by other tenants.
        left: u32,
        /// The pool's capacity.
        capacity: u32,
    },
    /// The quota cannot give every call depth a slot.
    #[error("tenant {tenant}: {instances} instance slots cannot cover {depth} call levels")]
    TooFewInstances {
        /// The tenant.
        tenant: String,
        /// Its quota.
        instances: u32,
        /// Call levels.
        depth: u32,
    },
    /// The memory limit is above the pool's slot size.
    #[error("tenant {tenant}: a memory limit of {wanted} bytes is above the engine's {max}")]
    MemoryAbovePool {
        /// The tenant.
        tenant: String,
        /// Its limit.
        wanted: usize,
        /// The pool's per-instance memory.
        max: usize,
    },
}

/// The name of the only tenant of a single-tenant host.
pub const DEFAULT_TENANT: &str = "default";

/// One tenant's identity and limits.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Names it in errors, logs, its data directory and its API prefix (`/t/<name>`).
    pub name: String,
    /// Wall-clock time one invocation may take.
    pub time_limit: Duration,
    /// Linear memory one instance may have (at most [`Limits::memory_bytes`]).
    pub memory_bytes: usize,
    /// Instances it may run at once (at least one per call level).
    pub instances: u32,
}

impl Tenant {
    /// A tenant named `name` with the engine's default limits.
    pub fn new(name: &str, limits: &Limits) -> Result<Tenant, TenantError> {
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(TenantError::InvalidName(name.to_string()));
        }
        Ok(Tenant {
            name: name.to_string(),
            time_limit: limits.time_limit,
            memory_bytes: limits.memory_bytes,
            instances: limits.tenant_instances.min(limits.instances),
        })
    }
}

/// The wasmtime engine every tenant of a host shares: one pooling allocator, one epoch
/// ticker, one linker.
pub struct HostEngine {
    engine: Engine,
    linker: Linker<HostState>,
    limits: Limits,
    /// Instance slots promised to tenants.
    reserved: std::sync::Mutex<u32>,
    /// Instances made ahead of their invocations, in the pool's [`WARM_INSTANCES`] beyond
    /// the tenants' slots.
    warm: Arc<AtomicU32>,
}

/// Pool slots kept beyond [`Limits::instances`] for instances made ahead of their
/// invocation ([`Runtime`] keeps one per stage and call depth, while there is room): a
/// fresh instance per invocation still, but instantiated off the caller's path.
pub const WARM_INSTANCES: u32 = 8;

impl HostEngine {
    /// Build the engine and link WASI, `wasi:http` and our key-value implementation.
    pub fn new(limits: Limits) -> anyhow::Result<Arc<HostEngine>> {
        let mut pool = PoolingAllocationConfig::default();
        let pooled = limits.instances + WARM_INSTANCES;
        pool.total_component_instances(pooled)
            .total_core_instances(pooled * 4)
            .total_memories(pooled * 2)
            .total_tables(pooled * 4)
            .total_stacks(pooled)
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
        // Time limits: every store gets a deadline in epochs (see `crate::sandbox`).
        config.epoch_interruption(true);
        if limits.inlining {
            config.compiler_inlining(wasmtime::Inlining::Yes);
        }
        // Name guest functions in `perf` profiles (`/tmp/perf-<pid>.map`); docs/benchmarks.md.
        if std::env::var_os("FAASKEEPER_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = &limits.cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache)?));
        }
        let engine = Engine::new(&config)?;
        crate::sandbox::start_epoch_ticker(&engine).context("starting the epoch ticker")?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::kv::add_to_linker(&mut linker)?;
        Ok(Arc::new(HostEngine {
            engine,
            linker,
            limits,
            reserved: std::sync::Mutex::new(0),
            warm: Arc::new(AtomicU32::new(0)),
        }))
    }

    /// The engine's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Compile and pre-instantiate the stages (`(name, wasm bytes)`).
    pub fn compile(self: &Arc<Self>, stages: &[(StageName, &[u8])]) -> anyhow::Result<Stages> {
        let mut out = Stages {
            engine: self.clone(),
            pres: HashMap::new(),
        };
        for (name, bytes) in stages {
            out.pres.insert(*name, self.pre(*name, bytes)?);
        }
        Ok(out)
    }

    fn pre(&self, name: StageName, bytes: &[u8]) -> anyhow::Result<ProxyPre<HostState>> {
        let component = Component::new(&self.engine, bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("compiling the {} component", name.name()))?;
        ProxyPre::new(self.linker.instantiate_pre(&component)?)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("pre-instantiating the {} component", name.name()))
    }

    /// Whether `tenants` could all be run on this engine now (their limits against the
    /// engine's, their slots against what other tenants have not reserved), without
    /// reserving anything.
    pub fn check(&self, tenants: &[Tenant]) -> Result<(), TenantError> {
        let mut left = self.unreserved();
        for tenant in tenants {
            self.check_one(tenant, left)?;
            left -= tenant.instances;
        }
        Ok(())
    }

    fn unreserved(&self) -> u32 {
        let reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        self.limits.instances.saturating_sub(*reserved)
    }

    fn check_one(&self, tenant: &Tenant, left: u32) -> Result<(), TenantError> {
        if tenant.memory_bytes > self.limits.memory_bytes {
            return Err(TenantError::MemoryAbovePool {
                tenant: tenant.name.clone(),
                wanted: tenant.memory_bytes,
                max: self.limits.memory_bytes,
            });
        }
        let depth = self.limits.call_depth.max(1);
        if tenant.instances < depth {
            return Err(TenantError::TooFewInstances {
                tenant: tenant.name.clone(),
                instances: tenant.instances,
                depth,
            });
        }
        if tenant.instances > left {
            return Err(TenantError::NoCapacity {
                tenant: tenant.name.clone(),
                wanted: tenant.instances,
                left,
                capacity: self.limits.instances,
            });
        }
        Ok(())
    }

    fn reserve(&self, tenant: &Tenant) -> Result<(), TenantError> {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let left = self.limits.instances.saturating_sub(*reserved);
        self.check_one(tenant, left)?;
        *reserved += tenant.instances;
        Ok(())
    }

    fn release(&self, instances: u32) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        *reserved = reserved.saturating_sub(instances);
    }

    /// One of the pool's [`WARM_INSTANCES`] slots, if one is free.
    fn warm_slot(&self) -> Option<WarmSlot> {
        self.warm
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < WARM_INSTANCES).then_some(n + 1)
            })
            .ok()?;
        Some(WarmSlot(self.warm.clone()))
    }
}

/// A pool slot held by an instance made ahead; given back when dropped.
struct WarmSlot(Arc<AtomicU32>);

impl Drop for WarmSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An instance made ahead of its invocation, with the store it lives in.
struct Warm {
    store: Store<HostState>,
    proxy: Proxy,
    _slot: WarmSlot,
}

/// The made-ahead instance of one stage at one call depth.
enum Ahead {
    /// Being instantiated now.
    Making,
    Ready(Warm),
}

/// Compiled, pre-instantiated stages; cloning shares them (tenants running the same
/// components share one compiled copy).
#[derive(Clone)]
pub struct Stages {
    engine: Arc<HostEngine>,
    pres: HashMap<StageName, ProxyPre<HostState>>,
}

impl Stages {
    /// The engine they were compiled for.
    pub fn engine(&self) -> &Arc<HostEngine> {
        &self.engine
    }

    /// These stages with `stage` replaced by the component `bytes` (compiled now; the others
    /// stay shared).
    pub fn with_stage(&self, stage: StageName, bytes: &[u8]) -> anyhow::Result<Stages> {
        let mut out = self.clone();
        out.pres.insert(stage, self.engine.pre(stage, bytes)?);
        Ok(out)
    }
}

/// One tenant: its stages, buckets, session hub and limits, plus everything an invocation
/// needs.
pub struct Runtime {
    tenant: Tenant,
    stages: Stages,
    slots: Slots,
    kv: KvCtx,
    hub: Arc<SessionHub>,
    distributor_wake: Notify,
    /// The name this host gives itself as the distributor's lease owner: the host runs one
    /// distributor at a time, so the lease is kept between runs (see the distributor's docs).
    distributor_owner: String,
    /// The `memo` of the distributor's last answer, sent back with the next wake-up: the
    /// nodes it knows as the user bucket holds them, which it takes again only if the
    /// progress record shows that nothing ran in between (see the distributor's `known`).
    distributor_memo: std::sync::Mutex<Option<Box<serde_json::value::RawValue>>>,
    writes: Semaphore,
    combiner: tokio::sync::mpsc::UnboundedSender<PendingWrite>,
    combined: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<PendingWrite>>>,
    outbound: std::sync::OnceLock<Arc<dyn crate::outbound::Outbound>>,
    faults: Option<Arc<FaultPlan>>,
    /// The system bucket's billed write size, told to the stages as [`WRITE_UNIT_ENV`].
    write_unit: Option<String>,
    /// The user bucket bills every write: told to the stages as [`NODES_IN_USER_ENV`].
    nodes_in_user: bool,
    /// Instances made ahead, by stage and call depth (none under a fault plan).
    ahead: Mutex<HashMap<(StageName, u32), Ahead>>,
}

/// The environment variable that tells a stage the system bucket bills writes by this many
/// bytes (`Store::write_unit`); unset where writes are not billed by size. Other platforms
/// set it the same way (Spin: `environment` in spin.toml) when their store is DynamoDB.
pub const WRITE_UNIT_ENV: &str = "FAASKEEPER_WRITE_UNIT";

/// The environment variable (`1`) that tells the distributor's `init` to make a store that
/// keeps node records in the user bucket only: set where the user bucket bills every write
/// (`Store::bills_writes`: S3 or DynamoDB user storage), so that a system copy of each node
/// would be billed for every change again. A store keeps the layout it was made with.
pub const NODES_IN_USER_ENV: &str = "FAASKEEPER_NODES_IN_USER";

/// Stop the guest in `store` at `deadline`: checked at every epoch tick, where it otherwise
/// yields to the executor.
fn arm_deadline(store: &mut Store<HostState>, deadline: tokio::time::Instant) {
    let deadline = deadline.into_std();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut ctx| {
        if std::time::Instant::now() >= deadline {
            ctx.data_mut().time_hit = true;
            Err(wasmtime::Error::new(LimitHit::Time))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stages.engine.release(self.tenant.instances);
    }
}

/// One caller's requests waiting for the write combiner.
struct PendingWrite {
    requests: Vec<Request>,
    reply: tokio::sync::oneshot::Sender<anyhow::Result<Vec<Submission>>>,
}

/// Most requests the combiner folds into one writer invocation.
const MAX_COMBINED: usize = 1024;

/// Most distributor runs [`Runtime::recover`] makes before the host starts serving.
const RECOVERY_RUNS: usize = 6;

/// Whether a distributor's answer says that it stopped with txns left in the log (its
/// `"more"`: a run starts no batch after a while, to end within the limit on one
/// invocation), so that it should be woken again at once.
pub fn more_to_distribute(answer: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct More {
        #[serde(default)]
        more: bool,
    }
    serde_json::from_slice::<More>(answer).is_ok_and(|m| m.more)
}

impl Runtime {
    /// A single-tenant host: build an engine, compile the stages (`(name, wasm bytes)`) and
    /// run them for [`DEFAULT_TENANT`] over `stores`.
    pub fn new(
        stages: &[(StageName, &[u8])],
        stores: StoreManager,
        hub: Arc<SessionHub>,
        limits: Limits,
    ) -> anyhow::Result<Arc<Runtime>> {
        let tenant = Tenant::new(DEFAULT_TENANT, &limits)?;
        let stages = HostEngine::new(limits)?.compile(stages)?;
        Ok(Runtime::for_tenant(&stages, tenant, stores, hub)?)
    }

    /// Run `stages` for `tenant` over its own buckets and session hub, reserving its
    /// instance slots from the engine.
    pub fn for_tenant(
        stages: &Stages,
        tenant: Tenant,
        stores: StoreManager,
        hub: Arc<SessionHub>,
    ) -> Result<Arc<Runtime>, TenantError> {
        let limits = stages.engine.limits();
        let depth = limits.call_depth.max(1);
        stages.engine.reserve(&tenant)?;
        let (combiner, combined) = tokio::sync::mpsc::unbounded_channel();
        let write_unit = stores
            .open(faaskeeper_core::keys::SYSTEM_BUCKET)
            .ok()
            .and_then(|s| s.write_unit())
            .map(|n| n.to_string());
        let nodes_in_user = stores
            .open(faaskeeper_core::keys::USER_BUCKET)
            .ok()
            .is_some_and(|s| s.bills_writes());
        Ok(Arc::new(Runtime {
            write_unit,
            nodes_in_user,
            slots: Slots::new(tenant.instances, depth),
            tenant,
            stages: stages.clone(),
            kv: KvCtx::new(stores),
            hub,
            distributor_wake: Notify::new(),
            distributor_owner: format!("host-{}-{:x}", std::process::id(), rand_id()),
            distributor_memo: std::sync::Mutex::new(None),
            writes: Semaphore::new(limits.concurrent_writes),
            combiner,
            combined: std::sync::Mutex::new(Some(combined)),
            outbound: std::sync::OnceLock::new(),
            faults: limits.faults.clone(),
            ahead: Mutex::new(HashMap::new()),
        }))
    }

    /// The tenant this runtime serves.
    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Instances of this tenant running now.
    pub fn instances_in_use(&self) -> u32 {
        self.slots.in_use()
    }

    /// Instances made ahead of their invocations and waiting for one (not running: see
    /// [`Runtime::instances_in_use`]).
    pub fn instances_made_ahead(&self) -> usize {
        self.ahead()
            .values()
            .filter(|a| matches!(a, Ahead::Ready(_)))
            .count()
    }

    /// Instance slots per call depth (index 0: the host's own calls).
    pub fn slots_per_depth(&self) -> &[u32] {
        self.slots.sizes()
    }

    /// The fault plan, if a test set one.
    pub fn faults(&self) -> Option<&Arc<FaultPlan>> {
        self.faults.as_ref()
    }

    fn new_store(
        self: &Arc<Self>,
        stage: StageName,
        depth: u32,
        faults: Option<Arc<InvocationFaults>>,
    ) -> Store<HostState> {
        let mut store = Store::new(
            &self.stages.engine.engine,
            self.new_state(stage, depth, faults),
        );
        store.limiter(|s| &mut s.limiter);
        store
    }

    fn ahead(&self) -> MutexGuard<'_, HashMap<(StageName, u32), Ahead>> {
        self.ahead.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance made ahead for `stage` at `depth`, if one is ready.
    fn take_ahead(&self, stage: StageName, depth: u32) -> Option<Warm> {
        let mut ahead = self.ahead();
        if !matches!(ahead.get(&(stage, depth)), Some(Ahead::Ready(_))) {
            return None;
        }
        match ahead.remove(&(stage, depth)) {
            Some(Ahead::Ready(warm)) => Some(warm),
            _ => None,
        }
    }

    /// Instantiate `stage` for its next invocation at `depth`, in the background, unless one
    /// is made or being made already or the pool has no slot to spare. Each invocation still
    /// gets an instance of its own; this only takes instantiating off its path.
    fn make_ahead(self: &Arc<Self>, stage: StageName, depth: u32) {
        {
            let mut ahead = self.ahead();
            if ahead.contains_key(&(stage, depth)) {
                return;
            }
            ahead.insert((stage, depth), Ahead::Making);
        }
        let (Some(pre), Some(slot)) = (
            self.stages.pres.get(&stage).cloned(),
            self.stages.engine.warm_slot(),
        ) else {
            self.ahead().remove(&(stage, depth));
            return;
        };
        let rt = self.clone();
        tokio::spawn(async move {
            let mut store = rt.new_store(stage, depth, None);
            // Instantiating runs guest code (its initialisers): bounded like an invocation.
            let deadline = tokio::time::Instant::now() + rt.tenant.time_limit;
            arm_deadline(&mut store, deadline);
            let made = tokio::time::timeout_at(deadline, pre.instantiate_async(&mut store)).await;
            let mut ahead = rt.ahead();
            match made {
                Ok(Ok(proxy)) => {
                    ahead.insert(
                        (stage, depth),
                        Ahead::Ready(Warm {
                            store,
                            proxy,
                            _slot: slot,
                        }),
                    );
                }
                _ => {
                    tracing::debug!(stage = stage.name(), "instantiating ahead failed");
                    ahead.remove(&(stage, depth));
                }
            }
        });
    }

    fn new_state(
        self: &Arc<Self>,
        stage: StageName,
        depth: u32,
        faults: Option<Arc<InvocationFaults>>,
    ) -> HostState {
        let mut wasi = wasmtime_wasi::WasiCtx::builder();
        wasi.inherit_stderr().env("FAASKEEPER_STAGE", stage.name());
        if let Some(unit) = &self.write_unit {
            wasi.env(WRITE_UNIT_ENV, unit);
        }
        if self.nodes_in_user {
            wasi.env(NODES_IN_USER_ENV, "1");
        }
        let wasi = wasi.build();
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            kv: self.kv.with_faults(faults.clone()),
            router: StageRouter {
                rt: Arc::downgrade(self),
                depth,
                faults,
            },
            limiter: GuestLimiter::new(self.tenant.memory_bytes),
            time_hit: false,
        }
    }

    /// The error of a stopped invocation, named after the limit that stopped it.
    fn limit_error(&self, stage: StageName, hit: LimitHit) -> anyhow::Error {
        let (stage, tenant) = (stage.name(), self.tenant.name.clone());
        anyhow::Error::new(match hit {
            LimitHit::Time => InvocationError::TimeLimit {
                stage,
                tenant,
                limit_ms: self.tenant.time_limit.as_millis() as u64,
            },
            LimitHit::Memory { requested } => InvocationError::MemoryLimit {
                stage,
                tenant,
                limit_bytes: self.tenant.memory_bytes,
                requested_bytes: requested,
            },
        })
    }

    /// The error of an invocation that failed (`when`: "" or " after responding").
    fn failure(&self, stage: StageName, failure: Failure, when: &str) -> anyhow::Error {
        match failure {
            Failure::Limit(hit) => self.limit_error(stage, hit),
            Failure::Trap(e) => anyhow::Error::from(e).context(format!(
                "the {} stage of tenant {} trapped{when}",
                stage.name(),
                self.tenant.name
            )),
            Failure::Panic(e) => anyhow::anyhow!(
                "the {} stage of tenant {} panicked{when}: {e}",
                stage.name(),
                self.tenant.name
            ),
        }
    }

    /// Invoke `stage` with a POST of `body` to `path`; returns the status and whole body.
    ///
    /// Waits for one of the tenant's instance slots; fails with an [`InvocationError`] if the
    /// guest exceeds a limit (the host and other invocations are unaffected).
    pub async fn invoke(
        self: &Arc<Self>,
        stage: StageName,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        self.invoke_at(stage, path, body, 0).await
    }

    /// [`Runtime::invoke`] at call depth `depth` (0: the host's own call; a stage called by a
    /// stage at depth `d` runs at `d + 1`).
    pub(crate) async fn invoke_at(
        self: &Arc<Self>,
        stage: StageName,
        path: &str,
        body: Bytes,
        depth: u32,
    ) -> anyhow::Result<(u16, Bytes)> {
        let started = std::time::Instant::now();
        let pre = self
            .stages
            .pres
            .get(&stage)
            .with_context(|| format!("stage {} is not loaded", stage.name()))?
            .clone();
        let Some(slot) = self.slots.acquire(depth).await else {
            return Err(anyhow::Error::new(InvocationError::CallDepth {
                stage: stage.name(),
                tenant: self.tenant.name.clone(),
                depth,
                limit: self.slots.depth_limit(),
            }));
        };
        // The clock starts once the instance has its slot: waiting for one is not the guest's.
        let deadline = tokio::time::Instant::now() + self.tenant.time_limit;
        let faults = self
            .faults
            .as_ref()
            .map(|plan| Arc::new(InvocationFaults::new(plan.clone(), stage)));
        // Under a fault plan each instance is made with its invocation's faults, so none ahead.
        let ahead = faults.is_none().then(|| {
            let ready = self.take_ahead(stage, depth);
            self.make_ahead(stage, depth);
            ready
        });
        let (mut store, proxy) = match ahead.flatten() {
            Some(Warm { store, proxy, .. }) => (store, Some(proxy)),
            None => (self.new_store(stage, depth, faults.clone()), None),
        };
        arm_deadline(&mut store, deadline);
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
        // The guest runs on the caller's task, beside the reading of its answer (no task of
        // its own: a spawn is a hop between threads per invocation, three per write). So it
        // stops when the invocation is dropped (e.g. its caller was stopped), and a nested
        // stage never outlives the stage that called it.
        let guest = async move {
            let _slot = slot;
            // A guest waiting in a host call (a clock, a nested stage) never reaches an epoch
            // check: the same deadline stops it from outside.
            let run = tokio::time::timeout_at(deadline, async {
                let proxy = match proxy {
                    Some(proxy) => proxy,
                    None => pre.instantiate_async(&mut store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            let state = store.data();
            let outcome = match run {
                Ok(Ok(())) => Ok(()),
                Err(_elapsed) => Err(Failure::Limit(LimitHit::Time)),
                Ok(Err(_)) if state.time_hit => Err(Failure::Limit(LimitHit::Time)),
                Ok(Err(e)) => match state.limiter.memory_hit {
                    Some(requested) => Err(Failure::Limit(LimitHit::Memory { requested })),
                    None => Err(Failure::Trap(e)),
                },
            };
            // Dropping the store drops a response the guest never set, and ends a body it
            // never finished: the answer below stops waiting.
            drop(store);
            outcome
        };
        // A panic in a host function fails this invocation only, not the caller's loop.
        let guest = async move {
            match std::panic::AssertUnwindSafe(guest).catch_unwind().await {
                Ok(outcome) => outcome,
                Err(p) => Err(Failure::Panic(panic_message(p.as_ref()))),
            }
        };
        let answer = async {
            let response = match receiver.await {
                Ok(Ok(response)) => response,
                Ok(Err(code)) => return Answer::ErrorCode(format!("{code:?}")),
                Err(_) => return Answer::None,
            };
            let status = response.status().as_u16();
            match response.into_body().collect().await {
                Ok(body) => Answer::Body(status, body.to_bytes()),
                Err(e) => Answer::BrokenBody(format!("{e:?}")),
            }
        };
        let (outcome, answer) = tokio::join!(guest, answer);
        let (status, body) = match (answer, outcome) {
            (Answer::ErrorCode(code), _) => bail!(
                "the {} stage of tenant {} answered with error {code}",
                stage.name(),
                self.tenant.name
            ),
            // The guest returned or was stopped without setting a response.
            (Answer::None, Err(f)) => return Err(self.failure(stage, f, "")),
            (Answer::None, Ok(())) => bail!("{} set no response", stage.name()),
            // A guest stopped while writing its body: report why it was stopped.
            (Answer::BrokenBody(_), Err(f)) => {
                return Err(self.failure(stage, f, " while responding"));
            }
            (Answer::BrokenBody(e), Ok(())) => bail!("{} response body: {e}", stage.name()),
            (Answer::Body(..), Err(f)) => return Err(self.failure(stage, f, " after responding")),
            (Answer::Body(status, body), Ok(())) => (status, body),
        };
        if let Some(f) = &faults {
            f.check_doomed()?;
        }
        tracing::debug!(
            stage = stage.name(),
            tenant = self.tenant.name,
            depth,
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
            let result = self.append(WriteBatch { requests }).await;
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

    async fn append(self: &Arc<Self>, batch: WriteBatch) -> anyhow::Result<Vec<Submission>> {
        let requests = batch.requests.len();
        // The payloads go as they are, not as base64 in JSON (`wire::encode_write_batch`).
        let body = faaskeeper_core::wire::encode_write_batch(batch)?;
        let (status, body) = self
            .invoke(StageName::Writer, "/", Bytes::from(body))
            .await?;
        if status != 200 {
            bail!(
                "writer answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let subs: Vec<Submission> = serde_json::from_slice(&body).context("writer's answer")?;
        if subs.len() != requests {
            bail!(
                "writer answered {} submissions for {requests} requests",
                subs.len()
            );
        }
        Ok(subs)
    }

    /// Apply what is in the log now (taking over any lease a killed process left): up to
    /// [`RECOVERY_RUNS`] runs, each of which stops after a while; whatever other writers keep
    /// appending meanwhile is left to the distributor loop.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        let mut path = "/recover";
        for _ in 0..RECOVERY_RUNS {
            match self.run_distributor(path, true).await? {
                (200, body) if more_to_distribute(&body) => path = "/",
                (200, _) => return Ok(()),
                (status, body) => bail!(
                    "recovery: distributor answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            }
        }
        Ok(())
    }

    /// One distributor run at `path` (`/`, or `/recover` to take over a lease a killed process
    /// left); `owned`: as this host's lease owner, which keeps the lease between runs (only
    /// for a host that runs one distributor at a time). Carries the memo from run to run.
    pub async fn run_distributor(
        self: &Arc<Self>,
        path: &str,
        owned: bool,
    ) -> anyhow::Result<(u16, Bytes)> {
        #[derive(serde::Serialize)]
        struct Wake<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            owner: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            memo: Option<&'a serde_json::value::RawValue>,
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            memo: Option<Box<serde_json::value::RawValue>>,
        }
        let body = {
            let memo = self.memo();
            serde_json::to_vec(&Wake {
                owner: owned.then_some(self.distributor_owner.as_str()),
                memo: memo.as_deref(),
            })?
        };
        let answer = self
            .invoke(StageName::Distributor, path, Bytes::from(body))
            .await;
        let mut memo = self.memo();
        match &answer {
            // A run that did not get the lease answers without one: the last one stays.
            Ok((200, body)) => {
                if let Ok(Answer { memo: Some(m) }) = serde_json::from_slice(body) {
                    *memo = Some(m);
                }
            }
            _ => *memo = None,
        }
        answer
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Option<Box<serde_json::value::RawValue>>> {
        self.distributor_memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            match self.run_distributor(path, true).await {
                Ok((200, body)) => {
                    path = "/";
                    if more_to_distribute(&body) {
                        continue;
                    }
                }
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

    /// Add outbound routes (e.g. SQS on AWS); only the first call takes effect (`false`
    /// after that).
    pub fn set_outbound(&self, outbound: Arc<dyn crate::outbound::Outbound>) -> bool {
        self.outbound.set(outbound).is_ok()
    }

    /// The outbound routes added with [`Runtime::set_outbound`].
    pub(crate) fn outbound(&self) -> Option<&Arc<dyn crate::outbound::Outbound>> {
        self.outbound.get()
    }

    /// The session channels.
    pub fn hub(&self) -> &Arc<SessionHub> {
        &self.hub
    }
}

/// How an invocation's task ended badly.
enum Failure {
    /// A limit stopped it.
    Limit(LimitHit),
    /// The guest trapped.
    Trap(wasmtime::Error),
    /// The task panicked.
    Panic(String),
}

/// The message a panic carried.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a host function panicked".to_string())
}

/// What an invocation answered.
enum Answer {
    /// A status and the whole body.
    Body(u16, Bytes),
    /// The guest set an error code instead of a response.
    ErrorCode(String),
    /// The body broke off.
    BrokenBody(String),
    /// No response was set.
    None,
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
