//! Builds the stage components for `wasm32-wasip2` with a nested cargo, as wasmtime's
//! `test-programs/artifacts` does: its own target dir under `OUT_DIR` (so it never waits on
//! the outer build's lock) and none of the outer build's host flags.

use std::path::{Path, PathBuf};
use std::process::Command;

const STAGES: &[&str] = &["writer", "distributor", "watch", "heartbeat"];

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
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

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

fn wasm_path(target_dir: &Path, stage: &str) -> PathBuf {
    target_dir
        .join("wasm32-wasip2/release")
        .join(format!("faaskeeper_{stage}.wasm"))
}
