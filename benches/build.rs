//! Builds the runtime benchmark's guest (`components/bench-guest`) for `wasm32-wasip2` with a
//! nested cargo, as `components/artifacts/build.rs` builds the stages: its own target dir
//! under `OUT_DIR` (so it never waits on the outer build's lock) and none of the outer
//! build's host flags. It is built twice, with Rust's default wasm allocator and with the
//! guest's `talc` feature, and `OUT_DIR/bench_guest.rs` gets `BENCH_GUEST_COMPONENT` and
//! `BENCH_GUEST_TALC_COMPONENT`, the paths of the two `.wasm`, for `benches/runtime.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../components/artifacts/wasm_target.rs"]
mod wasm_target;

const GUEST: &str = "faaskeeper-bench-guest";

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .join("..")
        .canonicalize()
        .expect("workspace root");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    for path in [
        "core",
        "components/bench-guest",
        "components/alloc",
        "components/artifacts/wasm_target.rs",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        // Relative to this package: checkouts that share a target dir share this unit (its
        // hash does not include the absolute path), and each must watch its own sources.
        println!("cargo:rerun-if-changed=../{path}");
    }

    wasm_target::ensure_wasm_target();
    let mut code = String::new();
    for (constant, features, file) in [
        ("BENCH_GUEST_COMPONENT", None, "bench_guest.wasm"),
        (
            "BENCH_GUEST_TALC_COMPONENT",
            Some("talc"),
            "bench_guest_talc.wasm",
        ),
    ] {
        // One target dir for both: the second build reuses every dependency of the first.
        let built = build(&root, &out_dir.join("wasm"), features);
        let wasm = out_dir.join(file);
        std::fs::copy(&built, &wasm).expect("copy the bench guest out of its target dir");
        code.push_str(&format!(
            "/// Path of the `{GUEST}` component (world `faaskeeper:bench/bench`), features \
             {features:?}.\npub const {constant}: &str = {p:?};\n",
            p = wasm.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("bench_guest.rs"), code).expect("write bench_guest.rs");
}

/// `cargo build --release --target wasm32-wasip2` of the guest; returns the `.wasm`.
fn build(root: &Path, target_dir: &Path, features: Option<&str>) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--target-dir")
        .arg(target_dir)
        .arg(format!("--package={GUEST}"));
    if let Some(features) = features {
        cmd.arg(format!("--features={features}"));
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
        .expect("failed to run cargo for the bench guest");
    assert!(
        status.success(),
        "building {GUEST} (features {features:?}) for wasm32-wasip2 failed"
    );
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", GUEST.replace('-', "_")));
    assert!(wasm.exists(), "{} was not built", wasm.display());
    wasm
}
