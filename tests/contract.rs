//! The platform contract (DESIGN.md): every stage component imports only standard WASI
//! interfaces at the versions Spin links, and exports `wasi:http/incoming-handler@0.2.x`.
//! A stage that grew any other import (a faaskeeper-specific host function, a newer WASI,
//! `wasi:filesystem`, sockets) would not load on Spin, so this test fails on it.

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Allowed imports as `(package/interface prefix, allowed versions)`.
fn allowed(name: &str) -> bool {
    let Some((iface, version)) = name.split_once('@') else {
        return false;
    };
    let wasi_02 = || {
        version
            .strip_prefix("0.2.")
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|patch| patch <= 6)
    };
    match iface {
        "wasi:keyvalue/store" | "wasi:keyvalue/atomics" | "wasi:keyvalue/batch" => {
            version == "0.2.0-draft2"
        }
        "wasi:config/store" => version == "0.2.0-draft-2024-09-27",
        "wasi:http/types" | "wasi:http/outgoing-handler" => wasi_02(),
        i if i.starts_with("wasi:cli/")
            || i.starts_with("wasi:clocks/")
            || i.starts_with("wasi:random/")
            || i.starts_with("wasi:io/") =>
        {
            wasi_02()
        }
        _ => false,
    }
}

fn check(name: &str, path: &str) -> Vec<String> {
    let engine = Engine::new(&Config::new()).expect("engine");
    let component = Component::from_file(&engine, path).expect("load component");
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(&engine).map(|(n, _)| n.to_string()).collect();
    println!("{name}: imports {imports:?}\n{name}: exports {exports:?}");
    assert!(
        exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2.")),
        "{name} must export wasi:http/incoming-handler@0.2.x, exports {exports:?}"
    );
    imports.into_iter().filter(|i| !allowed(i)).collect()
}

macro_rules! stage_contract_test {
    ($stage:ident) => {
        #[test]
        #[allow(non_snake_case)]
        fn $stage() {
            let (_, path, _) = faaskeeper_artifacts::STAGES
                .iter()
                .find(|(n, _, _)| *n == stringify!($stage))
                .expect("stage built");
            let bad = check(stringify!($stage), path);
            assert!(
                bad.is_empty(),
                "{} imports outside the contract: {bad:?}",
                stringify!($stage)
            );
        }
    };
}

faaskeeper_artifacts::foreach_stage!(stage_contract_test);

#[test]
fn contract_refuses_what_spin_would_not_load() {
    assert!(allowed("wasi:keyvalue/store@0.2.0-draft2"));
    assert!(allowed("wasi:http/types@0.2.6"));
    assert!(allowed("wasi:io/streams@0.2.0"));
    assert!(!allowed("wasi:http/types@0.2.7"));
    assert!(!allowed("wasi:keyvalue/store@0.2.0-draft"));
    assert!(!allowed("wasi:filesystem/types@0.2.6"));
    assert!(!allowed("wasi:sockets/tcp@0.2.6"));
    assert!(!allowed("faaskeeper:host/anything@0.1.0"));
    assert!(!allowed("wasi:http/types@0.3.0"));
}
