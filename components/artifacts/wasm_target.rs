//! Shared by the build scripts that build components (`components/artifacts/build.rs`,
//! `benches/build.rs`, by `#[path]`): make sure the `wasm32-wasip2` standard library is
//! installed before the nested cargo needs it.
//!
//! `rust-toolchain.toml` names the target, and rustup adds it when it installs the toolchain.
//! A machine that already had the pinned toolchain without the target (an image with Rust
//! preinstalled) is not brought up to date by rustup, so the first build would fail with
//! "can't find crate for `core`". This adds it the way rustup would, under a file lock:
//! the two build scripts may run at once.

use std::path::PathBuf;
use std::process::Command;

pub const WASM_TARGET: &str = "wasm32-wasip2";

/// Where the target's standard library lives for the compiler cargo uses (`None`: no answer).
fn target_libdir() -> Option<PathBuf> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

fn installed() -> bool {
    target_libdir()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .is_some_and(|mut entries| {
            entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        })
}

/// Install the target with rustup if the compiler lacks it; panics with what to do if that
/// is not possible.
pub fn ensure_wasm_target() {
    if installed() {
        return;
    }
    let lock_path = std::env::temp_dir().join("faaskeeper-wasm-target.lock");
    let lock = std::fs::File::create(&lock_path).and_then(|f| f.lock().map(|()| f));
    // Another build script may have installed it while this one waited for the lock.
    if !installed() {
        let mut cmd = Command::new("rustup");
        cmd.args(["target", "add", WASM_TARGET]);
        // Set by rustup's proxies: the toolchain this build runs with (the pinned one).
        if let Some(toolchain) = std::env::var_os("RUSTUP_TOOLCHAIN") {
            cmd.arg("--toolchain").arg(toolchain);
        }
        let added = cmd.status().is_ok_and(|s| s.success());
        assert!(
            added && installed(),
            "the {WASM_TARGET} target is not installed and `rustup target add {WASM_TARGET}` \
             did not install it; install it for the toolchain in rust-toolchain.toml"
        );
    }
    drop(lock);
}
