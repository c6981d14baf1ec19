//! Builds the stage components for `wasm32-wasip2` with a nested cargo, as wasmtime's
//! `test-programs/artifacts` does: its own target dir under `OUT_DIR` (so it never waits on
//! the outer build's lock) and none of the outer build's host flags.
//!
//! The same cargo run builds the wasmCloud key-value adapter (`components/wasmcloud-adapter`),
//! and each stage is then composed with it (`wac-graph`, as `wac plug` does) into
//! `OUT_DIR/wasmcloud/faaskeeper_<stage>.wasm`: the adapter's `wasi:keyvalue@0.2.0-draft2`
//! exports satisfy the stage's imports of them, every other import of either passes through,
//! and the stage's `wasi:http/incoming-handler` is exported. The stage is embedded unchanged.

use std::path::{Path, PathBuf};
use std::process::Command;
use wac_graph::{CompositionGraph, EncodeOptions, types::Package};

mod wasm_target;

const STAGES: &[&str] = &["writer", "distributor", "watch", "heartbeat"];
/// The crate (minus `faaskeeper-`) of the wasmCloud key-value adapter.
const ADAPTER: &str = "wasmcloud-adapter";

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    for dir in ["core", "components", "wit", "Cargo.toml", "Cargo.lock"] {
        // Relative to this package: checkouts that share a target dir share this unit (its
        // hash does not include the absolute path), and each must watch its own sources.
        println!("cargo:rerun-if-changed=../../{dir}");
    }

    wasm_target::ensure_wasm_target();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--target-dir")
        .arg(&target_dir);
    for stage in STAGES {
        cmd.arg(format!("--package=faaskeeper-{stage}"));
    }
    cmd.arg(format!("--package=faaskeeper-{ADAPTER}"));
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("failed to run cargo for the wasm components");
    assert!(
        status.success(),
        "building the stage components for wasm32-wasip2 failed"
    );

    let mut code = String::new();
    code.push_str("/// Every stage, as `(name, path to the .wasm, bytes)`.\n");
    code.push_str("pub const STAGES: &[(&str, &str, &[u8])] = &[\n");
    for stage in STAGES {
        let wasm = wasm_path(&target_dir, stage);
        code.push_str(&format!(
            "    ({stage:?}, {p:?}, include_bytes!({p:?})),\n",
            p = wasm.display().to_string()
        ));
    }
    code.push_str("];\n");
    for stage in STAGES {
        let wasm = wasm_path(&target_dir, stage);
        let upper = stage.to_uppercase();
        code.push_str(&format!(
            "/// Path of the `{stage}` component.\npub const {upper}_COMPONENT: &str = {p:?};\n\
             /// Bytes of the `{stage}` component.\npub const {upper}_BYTES: &[u8] = include_bytes!({p:?});\n",
            p = wasm.display().to_string()
        ));
    }

    let adapter = wasm_path(&target_dir, ADAPTER);
    let adapter_bytes = std::fs::read(&adapter).expect("read the adapter component");
    let wasmcloud_dir = out_dir.join("wasmcloud");
    std::fs::create_dir_all(&wasmcloud_dir).expect("create OUT_DIR/wasmcloud");
    code.push_str(&format!(
        "/// Path of the wasmCloud key-value adapter component.\n\
         pub const ADAPTER_COMPONENT: &str = {p:?};\n\
         /// Bytes of the wasmCloud key-value adapter component.\n\
         pub const ADAPTER_BYTES: &[u8] = include_bytes!({p:?});\n",
        p = adapter.display().to_string()
    ));
    code.push_str(
        "/// Every stage composed with the adapter for wasmCloud, as `(name, path, bytes)`.\n",
    );
    code.push_str("pub const WASMCLOUD_STAGES: &[(&str, &str, &[u8])] = &[\n");
    for stage in STAGES {
        let stage_bytes = std::fs::read(wasm_path(&target_dir, stage)).expect("read a stage");
        let composed = compose(&stage_bytes, &adapter_bytes)
            .unwrap_or_else(|e| panic!("composing {stage} with the adapter: {e:#}"));
        let path = wasmcloud_dir.join(format!("faaskeeper_{stage}.wasm"));
        std::fs::write(&path, composed).expect("write a composed stage");
        code.push_str(&format!(
            "    ({stage:?}, {p:?}, include_bytes!({p:?})),\n",
            p = path.display().to_string()
        ));
    }
    code.push_str("];\n");
    code.push_str(
        "/// Calls `$mac!(name)` for every stage, so a stage without a test fails to compile.\n",
    );
    code.push_str("#[macro_export]\nmacro_rules! foreach_stage {\n    ($mac:ident) => {\n");
    for stage in STAGES {
        code.push_str(&format!("        $mac!({stage});\n"));
    }
    code.push_str("    };\n}\n");
    std::fs::write(out_dir.join("gen.rs"), code).expect("write gen.rs");
}

fn wasm_path(target_dir: &Path, krate: &str) -> PathBuf {
    target_dir
        .join("wasm32-wasip2/release")
        .join(format!("faaskeeper_{}.wasm", krate.replace('-', "_")))
}

/// Plug the adapter's exports into the stage's imports of the same name and export what the
/// stage exports. Imports of both that nothing satisfies (WASI, and the adapter's
/// `wasi:keyvalue@0.2.0-draft`) become imports of the result; same-named ones are merged, so
/// the adapter imports WASI at the stages' own version.
fn compose(stage: &[u8], adapter: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let mut graph = CompositionGraph::new();
    let stage = Package::from_bytes("faaskeeper:stage", None, stage, graph.types_mut())?;
    let stage = graph.register_package(stage)?;
    let adapter = Package::from_bytes(
        "faaskeeper:wasmcloud-adapter",
        None,
        adapter,
        graph.types_mut(),
    )?;
    let adapter = graph.register_package(adapter)?;

    let names = |id: wac_graph::PackageId, exports: bool| -> Vec<String> {
        let world = &graph.types()[graph[id].ty()];
        let map = if exports {
            &world.exports
        } else {
            &world.imports
        };
        map.keys().cloned().collect()
    };
    let adapter_exports = names(adapter, true);
    let stage_imports = names(stage, false);
    let stage_exports = names(stage, true);

    let adapter_instance = graph.instantiate(adapter);
    let stage_instance = graph.instantiate(stage);
    // A stage imports only the key-value interfaces it uses (the watch stage none); every
    // stage is composed all the same, so that each wasmCloud file is built the same way.
    for name in adapter_exports.iter().filter(|n| stage_imports.contains(n)) {
        let export = graph.alias_instance_export(adapter_instance, name)?;
        graph.set_instantiation_argument(stage_instance, name, export)?;
    }
    for name in &stage_exports {
        let export = graph.alias_instance_export(stage_instance, name)?;
        graph.export(export, name)?;
    }
    Ok(graph.encode(EncodeOptions::default())?)
}
