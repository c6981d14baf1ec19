//! What WebAssembly costs (issue 7, target 2): per-invocation overhead ≤ 20 µs, wasm ÷ native
//! for the apply logic ≤ 1.5×.
//!
//! `cargo bench -p faaskeeper-bench --bench runtime` runs, with criterion:
//! - `apply/native`, `apply/wasm`, `apply/wasm_talc`: [`workload::apply_batch`] of [`TXNS`]
//!   txns (the mix of `components/bench-guest`), natively and inside the component on an
//!   instance made once (so execution only), the component built with Rust's default wasm
//!   allocator (dlmalloc) and with the stages' allocator (`components/alloc`: size classes
//!   in front of talc; the `talc` build of the bench guest); `apply/wasm_epochs` and
//!   `apply/wasm_talc_epochs`: the same with the sandbox's epoch checks, the latter being
//!   what the host runs;
//! - `invoke/instantiate_call_drop`: what the host pays per invocation — a fresh `Store` (with
//!   the `WasiCtx` the host builds), `InstancePre::instantiate_async` from the pooling
//!   allocator, a call of the empty export `noop`, drop — with the async API, as the host
//!   calls stages; `_sync`: the same with the sync API; `_tuned`: on a pool that resets the
//!   pages a guest dirtied in place ([`Pool::Tuned`]);
//! - `invoke/reuse_instance` (`_sync`): `noop` called again and again on one instance.
//!
//! Then the wasm ÷ native ratio again, from interleaved rounds ([`paired_ratios`]), and
//! [`INSTANCES`] instances kept alive, idle (after `noop`) and active (after one
//! `apply-batch`), for their memory: linear memory as the pool hands it out (bytes passed
//! through the store's `ResourceLimiter`) and the RSS delta (`/proc/self/statm`). Everything
//! is printed and written to `benches/results/runtime.json`.
//!
//! [`Pool::Host`] is the engine `host/src/runtime.rs` builds (`Limits::default()`). With
//! `FAASKEEPER_BENCH_PERFMAP=1` set, JIT code is named for `perf` (profile one benchmark with
//! `--profile-time 5 apply/wasm` after `--bench`).

use criterion::{Criterion, Throughput};
use faaskeeper_bench_guest::workload;
use serde_json::json;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, InstancePre, Lift, Linker, Lower,
    ResourceTable, TypedFunc,
};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter,
    Store,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

include!(concat!(env!("OUT_DIR"), "/bench_guest.rs"));

/// Txns per `apply-batch` call.
const TXNS: u32 = 1000;
/// Rounds of [`paired_ratios`].
const PAIRED_ROUNDS: usize = 100;
/// `apply-batch` calls back to back per side in a round, so caches are warm as in criterion.
const PAIRED_BATCHES: usize = 5;
/// Instances kept alive at once for the memory report.
const INSTANCES: usize = 100;

/// Store data: what the host's `HostState` holds that this guest can use (WASI), plus a
/// limiter that counts linear memory.
struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCounter,
}

impl Ctx {
    fn new() -> Ctx {
        // As `Runtime::new_state` builds it for a stage.
        let wasi = WasiCtx::builder()
            .inherit_stderr()
            .env("FAASKEEPER_STAGE", "bench")
            .build();
        Ctx {
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCounter::default(),
        }
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Bytes of linear memory the store's instances hold: wasmtime asks the limiter when a
/// memory is created (from 0) and every time it grows.
#[derive(Default)]
struct MemoryCounter {
    bytes: usize,
}

impl ResourceLimiter for MemoryCounter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.bytes += desired - current;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

fn new_store(engine: &Engine, epochs: bool) -> Store<Ctx> {
    let mut store = Store::new(engine, Ctx::new());
    store.limiter(|ctx| &mut ctx.memory);
    if epochs {
        // As the host's sandbox: checked at every tick; the host yields to its executor there
        // (or stops the guest past its deadline), which a sync call cannot, so here the
        // guest goes on. The cost measured is the checks the compiled code makes.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(wasmtime::UpdateDeadline::Continue(1)));
    }
    store
}

/// How the engine's pool is set up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// As the host sets it: `Runtime::new` with `Limits::default()` (256 instances, 512 MiB of
    /// linear memory each, no compilation cache, Cranelift's inliner on), nothing else
    /// changed from `Config::new()`.
    Host,
    /// The host's, plus [`KEEP_RESIDENT`] bytes of each memory and table slot reset in place:
    /// `PAGEMAP_SCAN` (Linux ≥ 6.7) finds the pages the guest dirtied and only those are
    /// copied back from the image, instead of `madvise` on free and page faults on reuse.
    Tuned,
    /// The host's, plus epoch interruption with a ticker thread bumping the epoch every 10 ms,
    /// as `host/src/sandbox.rs` runs every stage (its time limit).
    Epochs,
}

/// Dirty bytes per slot reset with `memcpy` rather than `madvise` in [`Pool::Tuned`].
const KEEP_RESIDENT: usize = 1 << 20;

fn engine(pool_kind: Pool) -> Engine {
    let instances = 256;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memory_size(512 << 20);
    if pool_kind == Pool::Tuned {
        pool.pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
    }
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config.epoch_interruption(pool_kind == Pool::Epochs);
    // Cranelift's inliner on, as `HostEngine::new` compiles the stages;
    // `FAASKEEPER_BENCH_INLINING=0` measures without it.
    config.compiler_inlining(
        if std::env::var("FAASKEEPER_BENCH_INLINING").as_deref() == Ok("0") {
            wasmtime::Inlining::No
        } else {
            wasmtime::Inlining::Yes
        },
    );
    if std::env::var_os("FAASKEEPER_BENCH_PERFMAP").is_some() {
        // For `perf record` (with criterion's `--profile-time`): names for the JIT code.
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).expect("engine");
    if pool_kind == Pool::Epochs {
        let ticking = engine.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(10));
                ticking.increment_epoch();
            }
        });
    }
    engine
}

/// The bench guest compiled once and pre-instantiated against WASI with both APIs.
struct Guest {
    engine: Engine,
    epochs: bool,
    pre_async: InstancePre<Ctx>,
    pre_sync: InstancePre<Ctx>,
    noop: ComponentExportIndex,
    apply_batch: ComponentExportIndex,
}

impl Guest {
    fn new(pool: Pool, wasm: &str) -> Guest {
        let engine = engine(pool);
        let component = Component::from_file(&engine, wasm).expect("compile");
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("link WASI (async)");
        let pre_async = linker.instantiate_pre(&component).expect("pre (async)");
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("link WASI (sync)");
        let pre_sync = linker.instantiate_pre(&component).expect("pre (sync)");
        let export = |name| {
            component
                .get_export_index(None, name)
                .unwrap_or_else(|| panic!("the guest exports {name}"))
        };
        Guest {
            noop: export("noop"),
            apply_batch: export("apply-batch"),
            epochs: pool == Pool::Epochs,
            engine,
            pre_async,
            pre_sync,
        }
    }

    /// One invocation as the host makes it: new store, instantiate, call, drop.
    async fn invoke_async(&self) -> u32 {
        let mut store = new_store(&self.engine, self.epochs);
        let instance = self
            .pre_async
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let noop = instance
            .get_typed_func::<(), (u32,)>(&mut store, &self.noop)
            .expect("noop");
        noop.call_async(&mut store, ()).await.expect("call").0
    }

    fn invoke_sync(&self) -> u32 {
        let mut store = new_store(&self.engine, self.epochs);
        let instance = self.pre_sync.instantiate(&mut store).expect("instantiate");
        let noop = instance
            .get_typed_func::<(), (u32,)>(&mut store, &self.noop)
            .expect("noop");
        noop.call(&mut store, ()).expect("call").0
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An instance of `guest` kept alive in its own store, with the typed function `export`.
fn live<P, R>(
    rt: &tokio::runtime::Runtime,
    guest: &Guest,
    export: &ComponentExportIndex,
) -> (Store<Ctx>, TypedFunc<P, R>)
where
    P: ComponentNamedList + Lower,
    R: ComponentNamedList + Lift,
{
    let mut store = new_store(&guest.engine, guest.epochs);
    let instance = rt
        .block_on(guest.pre_async.instantiate_async(&mut store))
        .expect("instantiate");
    let func = instance
        .get_typed_func::<P, R>(&mut store, export)
        .expect("typed export");
    (store, func)
}

/// `apply/native`, then `apply/<name>` for each wasm build of the guest.
fn bench_apply(c: &mut Criterion, wasm: &[(&str, &Guest)]) {
    let native = workload::apply_batch(TXNS);
    assert_eq!(native.errors, 0, "the mix applies cleanly: {native:?}");
    let rt = runtime();
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(u64::from(TXNS)));
    group.bench_function("native", |b| {
        b.iter(|| workload::apply_batch(black_box(TXNS)))
    });
    for (name, guest) in wasm {
        let (mut store, apply) = live::<(u32,), (u64,)>(&rt, guest, &guest.apply_batch);
        let (sum,) = rt
            .block_on(apply.call_async(&mut store, (TXNS,)))
            .expect("apply-batch");
        assert_eq!(
            sum,
            native.checksum(),
            "{name} applies the mix as native does"
        );
        group.bench_function(*name, |b| {
            b.iter(|| {
                rt.block_on(apply.call_async(&mut store, (black_box(TXNS),)))
                    .expect("apply-batch")
            })
        });
    }
    group.finish();
}

/// `invoke/*` on `host` (the host's pool) and `invoke/*_tuned` on `tuned`.
fn bench_invoke(c: &mut Criterion, host: &Guest, tuned: &Guest, epochs: &Guest) {
    let rt = runtime();
    let mut group = c.benchmark_group("invoke");
    for (suffix, guest) in [("", host), ("_tuned", tuned), ("_epochs", epochs)] {
        group.bench_function(format!("instantiate_call_drop{suffix}"), |b| {
            b.iter(|| rt.block_on(guest.invoke_async()))
        });
        group.bench_function(format!("instantiate_call_drop_sync{suffix}"), |b| {
            b.iter(|| guest.invoke_sync())
        });
    }

    let (mut store, noop) = live::<(), (u32,)>(&rt, host, &host.noop);
    group.bench_function("reuse_instance", |b| {
        b.iter(|| rt.block_on(noop.call_async(&mut store, ())).expect("call"))
    });
    let mut store = new_store(&host.engine, host.epochs);
    let instance = host.pre_sync.instantiate(&mut store).expect("instantiate");
    let noop = instance
        .get_typed_func::<(), (u32,)>(&mut store, &host.noop)
        .expect("noop");
    group.bench_function("reuse_instance_sync", |b| {
        b.iter(|| noop.call(&mut store, ()).expect("call"))
    });
    group.finish();
}

/// Memory of [`INSTANCES`] live instances, per instance.
#[derive(Debug, Default)]
struct MemoryReport {
    idle_linear: usize,
    active_linear: usize,
    idle_rss: usize,
    active_rss: usize,
}

fn measure_memory(guest: &Guest) -> MemoryReport {
    let rt = runtime();
    // Warm the pool's slots and the allocator so the first instance pays nothing extra.
    rt.block_on(guest.invoke_async());
    let before = rss_bytes();
    let mut live = Vec::with_capacity(INSTANCES);
    for _ in 0..INSTANCES {
        let mut store = new_store(&guest.engine, guest.epochs);
        let instance = rt
            .block_on(guest.pre_async.instantiate_async(&mut store))
            .expect("instantiate");
        let noop = instance
            .get_typed_func::<(), (u32,)>(&mut store, &guest.noop)
            .expect("noop");
        rt.block_on(noop.call_async(&mut store, ())).expect("call");
        live.push((store, instance));
    }
    let idle = rss_bytes();
    let idle_linear = live
        .iter()
        .map(|(s, _)| s.data().memory.bytes)
        .sum::<usize>();
    for (store, instance) in &mut live {
        let apply = instance
            .get_typed_func::<(u32,), (u64,)>(&mut *store, &guest.apply_batch)
            .expect("apply-batch");
        rt.block_on(apply.call_async(&mut *store, (TXNS,)))
            .expect("apply-batch");
    }
    let active = rss_bytes();
    let active_linear = live
        .iter()
        .map(|(s, _)| s.data().memory.bytes)
        .sum::<usize>();
    drop(live);
    MemoryReport {
        idle_linear: idle_linear / INSTANCES,
        active_linear: active_linear / INSTANCES,
        idle_rss: idle.saturating_sub(before) / INSTANCES,
        active_rss: active.saturating_sub(before) / INSTANCES,
    }
}

/// wasm ÷ native for `apply-batch`, robust to a machine shared with other work: native and
/// each wasm build run [`PAIRED_BATCHES`] batches each, one after the other, in
/// [`PAIRED_ROUNDS`] rounds, and the median of the
/// per-round ratios is kept (load that comes and goes hits both sides of a round alike,
/// unlike criterion's benchmarks, which run one after the other).
fn paired_ratios(wasm: &[&Guest]) -> Vec<f64> {
    let rt = runtime();
    let mut live: Vec<_> = wasm
        .iter()
        .map(|guest| live::<(u32,), (u64,)>(&rt, guest, &guest.apply_batch))
        .collect();
    let mut ratios = vec![Vec::with_capacity(PAIRED_ROUNDS); wasm.len()];
    for _ in 0..PAIRED_ROUNDS {
        let start = Instant::now();
        for _ in 0..PAIRED_BATCHES {
            black_box(workload::apply_batch(black_box(TXNS)));
        }
        let native = start.elapsed().as_secs_f64();
        for ((store, apply), ratios) in live.iter_mut().zip(&mut ratios) {
            let start = Instant::now();
            for _ in 0..PAIRED_BATCHES {
                rt.block_on(apply.call_async(&mut *store, (black_box(TXNS),)))
                    .expect("apply-batch");
            }
            ratios.push(start.elapsed().as_secs_f64() / native);
        }
    }
    ratios
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

/// Resident set size of this process (`/proc/self/statm`, second field, in pages).
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// The median (ns) criterion measured for `group/name` in this run, if it ran.
fn median_ns(dir: &Path, group: &str, name: &str, since: SystemTime) -> Option<f64> {
    let path = dir.join(group).join(name).join("new/estimates.json");
    let fresh = std::fs::metadata(&path).ok()?.modified().ok()? >= since;
    if !fresh {
        return None;
    }
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn main() {
    let started = SystemTime::now();
    let dir = criterion_dir();
    let guest = Guest::new(Pool::Host, BENCH_GUEST_COMPONENT);
    let talc = Guest::new(Pool::Host, BENCH_GUEST_TALC_COMPONENT);
    let tuned = Guest::new(Pool::Tuned, BENCH_GUEST_COMPONENT);
    let epochs = Guest::new(Pool::Epochs, BENCH_GUEST_COMPONENT);
    // What the host runs: the stages' allocator (size classes over talc), and the sandbox's
    // epoch checks.
    let shipped = Guest::new(Pool::Epochs, BENCH_GUEST_TALC_COMPONENT);
    let mut c = Criterion::default()
        .output_directory(&dir)
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench_apply(
        &mut c,
        &[
            ("wasm", &guest),
            ("wasm_talc", &talc),
            ("wasm_epochs", &epochs),
            ("wasm_talc_epochs", &shipped),
        ],
    );
    bench_invoke(&mut c, &guest, &tuned, &epochs);
    c.final_summary();

    let paired = paired_ratios(&[&guest, &talc, &epochs, &shipped]);
    let [ratio, ratio_talc, ratio_epochs, ratio_talc_epochs] = paired[..] else {
        unreachable!("one ratio per guest")
    };
    println!(
        "apply wasm ÷ native, median of {PAIRED_ROUNDS} interleaved rounds: {ratio:.2}× \
         (dlmalloc), {ratio_talc:.2}× (stages' allocator), {ratio_epochs:.2}× (dlmalloc, epoch interruption), \
         {ratio_talc_epochs:.2}× (stages' allocator, epoch interruption: as the host runs the stages)"
    );

    let memory = measure_memory(&guest);
    println!(
        "memory per instance ({INSTANCES} live): idle {} B linear memory, {} B RSS; \
         active (after apply-batch({TXNS})) {} B linear memory, {} B RSS",
        memory.idle_linear, memory.idle_rss, memory.active_linear, memory.active_rss
    );

    // Every benchmark must have run in this process, or the JSON would mix runs.
    let names = [
        ("invoke", "instantiate_call_drop"),
        ("invoke", "instantiate_call_drop_sync"),
        ("invoke", "instantiate_call_drop_tuned"),
        ("invoke", "instantiate_call_drop_sync_tuned"),
        ("invoke", "instantiate_call_drop_epochs"),
        ("invoke", "reuse_instance"),
        ("invoke", "reuse_instance_sync"),
        ("apply", "native"),
        ("apply", "wasm"),
        ("apply", "wasm_talc"),
        ("apply", "wasm_epochs"),
        ("apply", "wasm_talc_epochs"),
    ];
    let Some(us) = names
        .iter()
        .map(|(group, name)| median_ns(&dir, group, name, started).map(|ns| ns / 1e3))
        .collect::<Option<Vec<f64>>>()
    else {
        println!("not every benchmark ran (filtered?): benches/results/runtime.json left as is");
        return;
    };
    let [
        invoke,
        invoke_sync,
        invoke_tuned,
        invoke_sync_tuned,
        invoke_epochs,
        reuse,
        reuse_sync,
        native,
        wasm,
        wasm_talc,
        wasm_epochs,
        wasm_talc_epochs,
    ] = us[..]
    else {
        unreachable!("one median per name")
    };
    let per_txn = |us: f64| us / f64::from(TXNS);
    let results = json!({
        "invoke_us": invoke,
        "reuse_us": reuse,
        "apply_native_us_per_txn": per_txn(native),
        "apply_wasm_us_per_txn": per_txn(wasm),
        "ratio": ratio,
        "idle_instance_bytes": memory.idle_linear,
        "active_instance_bytes": memory.active_linear,
        "invoke_sync_us": invoke_sync,
        "invoke_tuned_us": invoke_tuned,
        "invoke_sync_tuned_us": invoke_sync_tuned,
        "reuse_sync_us": reuse_sync,
        "apply_wasm_talc_us_per_txn": per_txn(wasm_talc),
        "ratio_talc": ratio_talc,
        "invoke_epochs_us": invoke_epochs,
        "apply_wasm_epochs_us_per_txn": per_txn(wasm_epochs),
        "ratio_epochs": ratio_epochs,
        "apply_wasm_talc_epochs_us_per_txn": per_txn(wasm_talc_epochs),
        "ratio_talc_epochs": ratio_talc_epochs,
        "ratio_criterion": wasm / native,
        "ratio_talc_criterion": wasm_talc / native,
        "idle_instance_rss_bytes": memory.idle_rss,
        "active_instance_rss_bytes": memory.active_rss,
        "notes": {
            "estimate": "criterion median of this run, µs",
            "api": "invoke_us, reuse_us: wasmtime async API, as the host calls stages; *_sync_*: sync API",
            "engine": "host/src/runtime.rs Config (pooling allocator, Limits::default()); \
                       *_tuned_*: plus pagemap_scan and 1 MiB linear_memory_keep_resident/table_keep_resident; \
                       *_epochs*: plus epoch interruption ticking every 10 ms, as the host's sandbox runs stages",
            "apply": format!("{TXNS} txns of the bench-guest mix per call, wasm on a live instance; \
                              ratio: median of {PAIRED_ROUNDS} interleaved native/wasm rounds (ratio_criterion: of the criterion medians, \
                              which ran minutes apart); dlmalloc is Rust's default, *_talc: the stages' allocator (size classes over talc); \
                              ratio_talc_epochs is the configuration the host runs"),
            "instance_bytes": format!("linear memory per instance (ResourceLimiter), {INSTANCES} live; \
                                       *_rss_bytes: process RSS delta per instance"),
        },
    });
    println!(
        "invoke {invoke:.2} µs (sync {invoke_sync:.2}; tuned pool {invoke_tuned:.2}, sync \
         {invoke_sync_tuned:.2}; epoch interruption {invoke_epochs:.2}), reuse {reuse:.3} µs (sync {reuse_sync:.3}); apply native {:.3} \
         µs/txn, wasm {:.3} µs/txn ({:.2}×), wasm with the stages' allocator {:.3} µs/txn ({:.2}×)",
        per_txn(native),
        per_txn(wasm),
        wasm / native,
        per_txn(wasm_talc),
        wasm_talc / native,
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/runtime.json");
    let text = serde_json::to_string_pretty(&results).expect("json");
    std::fs::create_dir_all(out.parent().expect("results dir")).expect("create results dir");
    std::fs::write(&out, text + "\n").expect("write runtime.json");
    println!("wrote {}", out.display());
}
