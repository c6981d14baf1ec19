//! The in-memory backend passes the conformance suite (it must have the semantics of the
//! durable ones, unlike `wasmtime-wasi-keyvalue`'s double).
use faaskeeper_storage::{MemStore, Store, conformance};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mem_store_conforms() {
    conformance::run_all(|| async { Arc::new(MemStore::new()) as Arc<dyn Store> }).await;
}
