//! Builds the test guests (`components/test-guests/*`) for `wasm32-wasip2` with a nested
//! cargo, as `components/artifacts/build.rs` builds the stages: its own target dir under
//! `OUT_DIR` (so it never waits on the outer build's lock) and none of the outer build's host
//! flags. `OUT_DIR/gen.rs` gets `<NAME>_COMPONENT` (path) and `<NAME>_BYTES` per guest.

use std::path::PathBuf;
use std::process::Command;

/// Each test guest, by folder under `components/test-guests` (its crate is `faaskeeper-<name>`).
const GUESTS: &[&str] = &["rogue"];

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

    for path in [
        "core",
        "components/guest",
        "components/test-guests",
        "wit",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        // Relative to this package: checkouts that share a target dir share this unit (its
        // hash does not include the absolute path), and each must watch its own sources.
        println!("cargo:rerun-if-changed=../../{path}");
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--target-dir")
        .arg(&target_dir);
    for guest in GUESTS {
        cmd.arg(format!("--package=faaskeeper-{guest}"));
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
        .expect("failed to run cargo for the test guests");
    assert!(
        status.success(),
        "building the test guests for wasm32-wasip2 failed"
    );

    let mut code = String::new();
    for guest in GUESTS {
        let wasm = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("faaskeeper_{}.wasm", guest.replace('-', "_")));
        assert!(wasm.exists(), "{} was not built", wasm.display());
        let upper = guest.to_uppercase().replace('-', "_");
        code.push_str(&format!(
            "/// Path of the `{guest}` test guest.\npub const {upper}_COMPONENT: &str = {p:?};\n\
             /// Bytes of the `{guest}` test guest.\npub const {upper}_BYTES: &[u8] = include_bytes!({p:?});\n",
            p = wasm.display().to_string()
        ));
    }
    std::fs::write(out_dir.join("gen.rs"), code).expect("write gen.rs");
}
