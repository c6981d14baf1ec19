//! The deployment files for other platforms point at the same bytes the bundled host runs
//! (issue 6): `spin.toml` names `dist/faaskeeper_<stage>.wasm` for every stage, `faaskeeper
//! components export` (what `cargo dist` runs) writes exactly the embedded bytes there, and every
//! Spin component gets the buckets and the service-chaining permission the stages use. The
//! wasmCloud manifests are checked as text (no YAML parser is in the dependency tree).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn spin_manifest() -> toml::Table {
    let path = repo_root().join("spin.toml");
    let text = std::fs::read_to_string(&path).expect("read spin.toml");
    text.parse::<toml::Table>().expect("spin.toml is TOML")
}

fn strings(value: Option<&toml::Value>) -> Vec<String> {
    value
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn spin_manifest_has_every_stage_with_its_dist_file() {
    let manifest = spin_manifest();
    assert_eq!(
        manifest
            .get("spin_manifest_version")
            .and_then(|v| v.as_integer()),
        Some(2)
    );
    let components = manifest
        .get("component")
        .and_then(|c| c.as_table())
        .expect("spin.toml has [component.*]");
    let triggers = manifest
        .get("trigger")
        .and_then(|t| t.get("http"))
        .and_then(|h| h.as_array())
        .expect("spin.toml has [[trigger.http]]");
    for (stage, _, _) in faaskeeper_artifacts::STAGES {
        let c = components
            .get(*stage)
            .and_then(|c| c.as_table())
            .unwrap_or_else(|| panic!("spin.toml has no [component.{stage}]"));
        assert_eq!(
            c.get("source").and_then(|s| s.as_str()),
            Some(format!("dist/faaskeeper_{stage}.wasm").as_str()),
            "[component.{stage}] source"
        );
        let stores = strings(c.get("key_value_stores"));
        for bucket in ["system", "user"] {
            assert!(
                stores.iter().any(|s| s == bucket),
                "[component.{stage}] key_value_stores {stores:?} lacks {bucket:?}"
            );
        }
        let hosts = strings(c.get("allowed_outbound_hosts"));
        assert!(
            hosts.iter().any(|h| h == "http://*.spin.internal"),
            "[component.{stage}] allowed_outbound_hosts {hosts:?} lacks http://*.spin.internal"
        );
        assert_eq!(
            c.get("build")
                .and_then(|b| b.get("command"))
                .and_then(|s| s.as_str()),
            Some("cargo dist"),
            "[component.{stage}.build] command"
        );
        assert!(
            triggers
                .iter()
                .any(|t| t.get("component").and_then(|c| c.as_str()) == Some(*stage)),
            "no [[trigger.http]] for {stage}"
        );
    }
    // The routes the stages dispatch on (they see the full request path).
    let route_of = |route: &str| {
        triggers
            .iter()
            .find(|t| t.get("route").and_then(|r| r.as_str()) == Some(route))
            .and_then(|t| t.get("component"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
    };
    for (route, stage) in [
        ("/writer", "writer"),
        ("/node", "writer"),
        ("/init", "distributor"),
        ("/wake", "distributor"),
        ("/ping", "heartbeat"),
        ("/check", "heartbeat"),
    ] {
        assert_eq!(route_of(route).as_deref(), Some(stage), "route {route}");
    }
    // The bucket labels must be defined by the runtime config example.
    let runtime = std::fs::read_to_string(repo_root().join("runtime-config.toml"))
        .expect("read runtime-config.toml")
        .parse::<toml::Table>()
        .expect("runtime-config.toml is TOML");
    for bucket in ["system", "user"] {
        let store = runtime
            .get("key_value_store")
            .and_then(|s| s.get(bucket))
            .unwrap_or_else(|| panic!("runtime-config.toml lacks [key_value_store.{bucket}]"));
        assert_eq!(store.get("type").and_then(|t| t.as_str()), Some("spin"));
    }
}

#[test]
fn exported_files_are_the_bytes_the_host_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_faaskeeper"))
        .args(["components", "export"])
        .arg(dir.path())
        .output()
        .expect("run faaskeeper components export");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "export failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = faaskeeper_artifacts::STAGES
        .iter()
        .map(|(stage, _, bytes)| {
            (
                stage.to_string(),
                format!("faaskeeper_{stage}.wasm"),
                *bytes,
            )
        });
    let wasmcloud = faaskeeper_artifacts::WASMCLOUD_STAGES
        .iter()
        .map(|(stage, _, bytes)| {
            (
                format!("{stage}.wasmcloud"),
                format!("faaskeeper_{stage}.wasmcloud.wasm"),
                *bytes,
            )
        });
    for (stage, file_name, bytes) in plain.chain(wasmcloud) {
        let stage = stage.as_str();
        let file = dir.path().join(file_name);
        let written = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let want = sha256_hex(bytes);
        assert_eq!(sha256_hex(&written), want, "{stage}: exported bytes differ");
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(stage))
            .unwrap_or_else(|| panic!("no line for {stage} in {stdout}"));
        assert!(
            line.contains(&format!("sha256:{want}")) && line.contains(&bytes.len().to_string()),
            "{stage}: printed {line:?}"
        );
    }
}

#[test]
fn wasmcloud_manifests_name_every_stage() {
    let root = repo_root().join("deploy/wasmcloud");
    let workloads =
        std::fs::read_to_string(root.join("workloads.yaml")).expect("read workloads.yaml");
    assert!(workloads.contains("apiVersion: runtime.wasmcloud.dev/v1alpha1"));
    assert!(!workloads.contains('\t'), "YAML must not contain tabs");
    for (stage, _, _) in faaskeeper_artifacts::STAGES {
        assert!(
            workloads.contains(&format!("name: faaskeeper-{stage}\n")),
            "workloads.yaml has no WorkloadDeployment for {stage}"
        );
        assert!(
            workloads.contains(&format!("host: {stage}.spin.internal\n")),
            "workloads.yaml: {stage} is not routed as {stage}.spin.internal"
        );
        let dev = std::fs::read_to_string(root.join(format!("dev/{stage}/.wash/config.yaml")))
            .unwrap_or_else(|e| panic!("wash dev config of {stage}: {e}"));
        assert!(
            dev.contains(&format!("dist/faaskeeper_{stage}.wasmcloud.wasm")),
            "wash dev config of {stage} does not run the composed file"
        );
    }
    assert_eq!(
        workloads.matches("version: 0.2.0-draft\n").count(),
        faaskeeper_artifacts::STAGES.len(),
        "every workload links wasi:keyvalue@0.2.0-draft"
    );
}
