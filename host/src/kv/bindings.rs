//! Generated host bindings for `wasi:keyvalue@0.2.0-draft2` (the version Spin links), from
//! the `host-keyvalue` world in `wit/world.wit`. Only `bindgen!` lives here.

#[allow(missing_docs, clippy::all)]
mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "faaskeeper:stage/host-keyvalue",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::kv::BucketHandle,
            "wasi:keyvalue/atomics.cas": crate::kv::CasHandle,
        },
    });
}

pub use generated::wasi::keyvalue::{atomics, batch, store};
