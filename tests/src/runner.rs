//! A minimal, platform-neutral embedding of the stage components: stock `wasmtime-wasi` and
//! `wasmtime-wasi-http` (p2), an in-memory key-value store, and nothing from the
//! `faaskeeper-host` crate. It stands in for "some other platform" in `tests/platforms.rs`:
//! a stage file that runs here, on the bundled host and on Spin relies on nothing but the
//! platform contract of DESIGN.md.
//!
//! - Outgoing HTTP to `http://<stage>.spin.internal/...` invokes that stage in process and
//!   waits for its answer, as Spin's service chaining does. Any other URL (a session's notify
//!   address) is recorded by the [`Collector`] and answered `200 {}`, except at
//!   [`SLOW_HOST`], which answers 503 after 1 s.
//! - Key-value comes in two flavours ([`KvFlavour`]): the `wasi:keyvalue@0.2.0-draft2`
//!   interfaces Spin links, for the stage files as they are, and only the
//!   `wasi:keyvalue@0.2.0-draft` ones wasmCloud 2.x links, for the files composed with the
//!   wasmCloud adapter. The linker of a flavour has WASI 0.2, `wasi:http` and that flavour's
//!   key-value interfaces, and nothing else, so a component that needs more fails to
//!   instantiate.
//! - Both flavours keep the data in one [`MemKv`] per runner: bucket name to ordered map. Its
//!   operations are atomic (one mutex), which is all either draft promises.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{Error as HttpError, WasiBody, WasiHttpCtx, WasiHttpCtxView};
use wasmtime_wasi_http::{WasiHttpHooks, WasiHttpView};

/// Which key-value interfaces the runner links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvFlavour {
    /// `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` (Spin's; what the stages import).
    Draft2,
    /// `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` only (wasmCloud 2.x's: no CAS,
    /// increments by `u64`).
    Draft,
}

/// `wasmtime::component::bindgen!` of the two key-value drafts; only generated code here.
#[allow(missing_docs, clippy::all)]
mod bindings {
    pub mod draft2 {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "faaskeeper:stage/host-keyvalue",
            imports: { default: trappable },
            with: {
                "wasi:keyvalue/store.bucket": crate::runner::BucketRes,
                "wasi:keyvalue/atomics.cas": crate::runner::CasRes,
            },
        });
    }
    pub mod draft {
        wasmtime::component::bindgen!({
            path: "../wit/wasmcloud",
            world: "faaskeeper:wasmcloud/host-keyvalue-draft",
            imports: { default: trappable },
            with: {
                "wasi:keyvalue/store.bucket": crate::runner::BucketRes,
            },
        });
    }
}

use bindings::draft::wasi::keyvalue0_2_0_draft as kv1;
use bindings::draft2::wasi::keyvalue as kv2;

/// One bucket's keys and values, in key order.
type Bucket = BTreeMap<String, Vec<u8>>;

/// The in-memory key-value data of one runner: bucket name to its keys, in order.
#[derive(Clone, Default)]
pub struct MemKv {
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl MemKv {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        // A panic elsewhere while holding the lock cannot leave a map half changed: every
        // operation below is a single map call.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on bucket `name` (created empty on first use).
    fn with<R>(&self, name: &str, f: impl FnOnce(&mut Bucket) -> R) -> R {
        f(self.lock().entry(name.to_string()).or_default())
    }

    /// A copy of every key and value of bucket `name`.
    pub fn snapshot(&self, name: &str) -> Bucket {
        self.lock().get(name).cloned().unwrap_or_default()
    }
}

/// The value behind a `bucket` resource (either draft).
pub struct BucketRes {
    name: String,
}

/// The value behind a draft2 `cas` resource: the key and what was read.
pub struct CasRes {
    bucket: String,
    key: String,
    read: Option<Vec<u8>>,
}

/// Most keys one `list-keys` call returns.
const LIST_PAGE: usize = 100;

/// A session-notify request a stage sent, as received.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The full URL.
    pub url: String,
    /// The body.
    pub body: Bytes,
}

/// Records every outgoing request that is not to a stage.
#[derive(Default)]
pub struct Collector {
    seen: Mutex<Vec<Notification>>,
    arrived: tokio::sync::Notify,
}

impl Collector {
    fn push(&self, n: Notification) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(n);
        self.arrived.notify_waiters();
    }

    /// Everything received so far, in arrival order.
    pub fn all(&self) -> Vec<Notification> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until `done` holds for what has arrived, or fail after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Notification]) -> bool,
    ) -> anyhow::Result<Vec<Notification>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            let all = self.all();
            if done(&all) {
                return Ok(all);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                bail!("timed out; received so far: {:?}", self.all());
            }
        }
    }
}

/// Store data of one invocation.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    kv: MemKv,
    router: Router,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.router,
        }
    }
}

struct Inner {
    engine: Engine,
    pres: HashMap<String, ProxyPre<State>>,
    kv: MemKv,
    collector: Arc<Collector>,
}

/// The stages, compiled and linked once; a fresh store per invocation.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl Runner {
    /// Compile `stages` (`(name, component bytes)`) and link them against WASI 0.2,
    /// `wasi:http` and the key-value `flavour`.
    pub fn new(stages: &[(&str, &[u8])], flavour: KvFlavour) -> anyhow::Result<Runner> {
        let engine = Engine::new(&Config::new())?;
        let mut linker = Linker::<State>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        match flavour {
            KvFlavour::Draft2 => {
                kv2::store::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
                kv2::atomics::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
                kv2::batch::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
            }
            KvFlavour::Draft => {
                kv1::store::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
                kv1::atomics::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
                kv1::batch::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)?;
            }
        }
        let mut pres = HashMap::new();
        for (name, bytes) in stages {
            let component = Component::new(&engine, bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("compiling the {name} component"))?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("linking the {name} component ({flavour:?})"))?;
            let pre = ProxyPre::new(pre)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("{name} does not export wasi:http/incoming-handler"))?;
            pres.insert(name.to_string(), pre);
        }
        Ok(Runner {
            inner: Arc::new(Inner {
                engine,
                pres,
                kv: MemKv::default(),
                collector: Arc::new(Collector::default()),
            }),
        })
    }

    /// Where non-stage requests end up.
    pub fn collector(&self) -> &Collector {
        &self.inner.collector
    }

    /// The key-value data.
    pub fn kv(&self) -> &MemKv {
        &self.inner.kv
    }

    /// POST `body` to `path` of `stage`; the status and whole response body.
    pub async fn invoke(
        &self,
        stage: &str,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<(u16, Bytes)> {
        let inner = &self.inner;
        let pre = inner
            .pres
            .get(stage)
            .with_context(|| format!("no stage {stage}"))?
            .clone();
        let state = State {
            wasi: WasiCtx::builder()
                .inherit_stderr()
                .env("FAASKEEPER_STAGE", stage)
                .build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            kv: inner.kv.clone(),
            router: Router {
                runner: self.clone(),
            },
        };
        let mut store = Store::new(&inner.engine, state);
        let request = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("http://{stage}.spin.internal{path}"))
            .header("content-type", "application/json")
            .body(
                Full::new(body)
                    .map_err(|never: std::convert::Infallible| -> HttpError { match never {} }),
            )?;
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
            Ok(Err(code)) => bail!("{stage} answered with error {code:?}"),
            Err(_) => {
                return match task.await {
                    Ok(Err(e)) => Err(anyhow::Error::from(e).context(format!("{stage} trapped"))),
                    Ok(Ok(())) => bail!("{stage} set no response"),
                    Err(e) => bail!("{stage} invocation panicked: {e}"),
                };
            }
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("{stage} response body: {e:?}"))?
            .to_bytes();
        match task.await {
            Ok(Ok(())) => Ok((status, body)),
            Ok(Err(e)) => {
                Err(anyhow::Error::from(e).context(format!("{stage} trapped after responding")))
            }
            Err(e) => bail!("{stage} invocation panicked: {e}"),
        }
    }
}

/// Outgoing HTTP of every invocation.
struct Router {
    runner: Runner,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// Requests to this host are recorded like any other, but answered 503 only after 1 s: a
/// receiver that hangs, for tests of what a stage does with one.
pub const SLOW_HOST: &str = "slow.test";

impl WasiHttpHooks for Router {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let runner = self.runner.clone();
        Box::new(async move {
            let url = request.uri().to_string();
            let host = request.uri().host().unwrap_or_default().to_string();
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "/".to_string());
            let body = request.into_body().collect().await?.to_bytes();
            let (status, bytes) = match host.strip_suffix(".spin.internal") {
                Some(stage) if runner.inner.pres.contains_key(stage) => {
                    // Boxed: a stage call inside a stage call is a recursive future.
                    let call = Box::pin(runner.invoke(stage, &path, body));
                    call.await
                        .map_err(|e| HttpError::InternalError(Some(format!("{e:#}"))))?
                }
                Some(_) => return Err(HttpError::HttpRequestDenied),
                // A receiver that hangs, then fails: recorded, answered 503 after 1 s.
                None if host == SLOW_HOST => {
                    runner.inner.collector.push(Notification { url, body });
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    (503, Bytes::from_static(b"{}"))
                }
                None => {
                    runner.inner.collector.push(Notification { url, body });
                    (200, Bytes::from_static(b"{}"))
                }
            };
            let response = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(
                    Full::new(bytes)
                        .map_err(|never: std::convert::Infallible| match never {})
                        .boxed_unsync(),
                )
                .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
            Ok((
                response,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

// ---- wasi:keyvalue@0.2.0-draft2 ----

fn bucket_name(table: &ResourceTable, b: &Resource<BucketRes>) -> wasmtime::Result<String> {
    Ok(table.get(b)?.name.clone())
}

/// Counters are 8 little-endian bytes, as in Spin's SQLite store.
fn read_counter(v: Option<&Vec<u8>>) -> Result<i64, String> {
    match v {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(i64::from_le_bytes)
            .map_err(|_| "not a counter".to_string()),
    }
}

/// One page of keys after `start`, and the cursor of the next page.
fn page(map: &Bucket, start: usize) -> (Vec<String>, Option<usize>) {
    let keys: Vec<String> = map.keys().skip(start).take(LIST_PAGE).cloned().collect();
    let next =
        (keys.len() == LIST_PAGE && start + LIST_PAGE < map.len()).then_some(start + LIST_PAGE);
    (keys, next)
}

impl kv2::store::Host for State {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketRes>, kv2::store::Error>> {
        Ok(Ok(self.table.push(BucketRes { name: identifier })?))
    }
}

impl kv2::store::HostBucket for State {
    fn get(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(Ok(self.kv.with(&name, |m| m.get(&key).cloned())))
    }

    fn set(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv.with(&name, |m| m.insert(key, value));
        Ok(Ok(()))
    }

    fn delete(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv.with(&name, |m| m.remove(&key));
        Ok(Ok(()))
    }

    fn exists(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(Ok(self.kv.with(&name, |m| m.contains_key(&key))))
    }

    fn list_keys(
        &mut self,
        b: Resource<BucketRes>,
        cursor: Option<String>,
    ) -> wasmtime::Result<Result<kv2::store::KeyResponse, kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        let start = match cursor.map(|c| c.parse::<usize>()) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => return Ok(Err(kv2::store::Error::Other("bad cursor".into()))),
        };
        let (keys, next) = self.kv.with(&name, |m| page(m, start));
        Ok(Ok(kv2::store::KeyResponse {
            keys,
            cursor: next.map(|n| n.to_string()),
        }))
    }

    fn drop(&mut self, b: Resource<BucketRes>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl kv2::atomics::Host for State {
    fn increment(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(self
            .kv
            .with(&name, |m| {
                let now = read_counter(m.get(&key))?
                    .checked_add(delta)
                    .ok_or_else(|| "overflow".to_string())?;
                m.insert(key, now.to_le_bytes().to_vec());
                Ok(now)
            })
            .map_err(kv2::store::Error::Other))
    }

    fn swap(
        &mut self,
        cas: Resource<CasRes>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv2::atomics::CasError>> {
        let c = self.table.delete(cas)?;
        let latest = self.kv.with(&c.bucket, |m| {
            let now = m.get(&c.key).cloned();
            if now == c.read {
                m.insert(c.key.clone(), value);
                None
            } else {
                Some(now)
            }
        });
        match latest {
            None => Ok(Ok(())),
            Some(read) => {
                let fresh = self.table.push(CasRes { read, ..c })?;
                Ok(Err(kv2::atomics::CasError::CasFailed(fresh)))
            }
        }
    }
}

impl kv2::atomics::HostCas for State {
    fn new(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<CasRes>, kv2::store::Error>> {
        let bucket = bucket_name(&self.table, &b)?;
        let read = self.kv.with(&bucket, |m| m.get(&key).cloned());
        Ok(Ok(self.table.push(CasRes { bucket, key, read })?))
    }

    fn current(
        &mut self,
        cas: Resource<CasRes>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv2::store::Error>> {
        Ok(Ok(self.table.get(&cas)?.read.clone()))
    }

    fn drop(&mut self, cas: Resource<CasRes>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl kv2::batch::Host for State {
    fn get_many(
        &mut self,
        b: Resource<BucketRes>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(Ok(self.kv.with(&name, |m| {
            keys.into_iter()
                .map(|k| {
                    let v = m.get(&k).cloned();
                    (k, v)
                })
                .collect()
        })))
    }

    fn set_many(
        &mut self,
        b: Resource<BucketRes>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv.with(&name, |m| m.extend(key_values));
        Ok(Ok(()))
    }

    fn delete_many(
        &mut self,
        b: Resource<BucketRes>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), kv2::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv
            .with(&name, |m| keys.iter().for_each(|k| drop(m.remove(k))));
        Ok(Ok(()))
    }
}

// ---- wasi:keyvalue@0.2.0-draft (wasmCloud's) ----

impl kv1::store::Host for State {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<BucketRes>, kv1::store::Error>> {
        Ok(Ok(self.table.push(BucketRes { name: identifier })?))
    }
}

impl kv1::store::HostBucket for State {
    fn get(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(Ok(self.kv.with(&name, |m| m.get(&key).cloned())))
    }

    fn set(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv.with(&name, |m| m.insert(key, value));
        Ok(Ok(()))
    }

    fn delete(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv.with(&name, |m| m.remove(&key));
        Ok(Ok(()))
    }

    fn exists(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(Ok(self.kv.with(&name, |m| m.contains_key(&key))))
    }

    fn list_keys(
        &mut self,
        b: Resource<BucketRes>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<kv1::store::KeyResponse, kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        let Ok(start) = usize::try_from(cursor.unwrap_or(0)) else {
            return Ok(Err(kv1::store::Error::Other("bad cursor".into())));
        };
        let (keys, next) = self.kv.with(&name, |m| page(m, start));
        Ok(Ok(kv1::store::KeyResponse {
            keys,
            cursor: next.map(|n| n as u64),
        }))
    }

    fn drop(&mut self, b: Resource<BucketRes>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl kv1::atomics::Host for State {
    fn increment(
        &mut self,
        b: Resource<BucketRes>,
        key: String,
        delta: u64,
    ) -> wasmtime::Result<Result<u64, kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(self
            .kv
            .with(&name, |m| {
                let now = match m.get(&key) {
                    None => 0,
                    Some(v) => <[u8; 8]>::try_from(v.as_slice())
                        .map(u64::from_le_bytes)
                        .map_err(|_| "not a counter".to_string())?,
                };
                let now = now
                    .checked_add(delta)
                    .ok_or_else(|| "overflow".to_string())?;
                m.insert(key, now.to_le_bytes().to_vec());
                Ok(now)
            })
            .map_err(kv1::store::Error::Other))
    }
}

impl kv1::batch::Host for State {
    fn get_many(
        &mut self,
        b: Resource<BucketRes>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<Option<(String, Vec<u8>)>>, kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        Ok(Ok(self.kv.with(&name, |m| {
            keys.into_iter()
                .map(|k| m.get(&k).cloned().map(|v| (k, v)))
                .collect()
        })))
    }

    fn set_many(
        &mut self,
        b: Resource<BucketRes>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv.with(&name, |m| m.extend(key_values));
        Ok(Ok(()))
    }

    fn delete_many(
        &mut self,
        b: Resource<BucketRes>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), kv1::store::Error>> {
        let name = bucket_name(&self.table, &b)?;
        self.kv
            .with(&name, |m| keys.iter().for_each(|k| drop(m.remove(k))));
        Ok(Ok(()))
    }
}
