//! # faaskeeper-rogue
//!
//! A stage component that misbehaves on purpose, for `host/tests/sandbox.rs`: a tenant runs it
//! in place of its writer, and each path is one way a guest can try to hurt the host or
//! another tenant. It imports only what the real stages import (`faaskeeper-guest`).
//!
//! | path | what it does |
//! |---|---|
//! | `/spin` | loops forever without calling the host |
//! | `/sleep` | waits forever in a host call (a monotonic-clock pollable) |
//! | `/alloc` | allocates and touches 1 MiB after 1 MiB, without bound |
//! | `/open` | body `{"names": [...], "key": K}`: opens each bucket name and writes `K` = `pwned` in every one that opens; answers what happened per name |
//! | `/recurse?depth=N` | calls `writer.spin.internal/recurse?depth=N-1` (itself, where it replaces the writer) until 0 |
//! | `/hold?gate=K` | counts itself in `active` (user bucket), waits until key `K` exists there, counts itself out |
//! | `/ok` | answers `{"ok": true}` |
//! | `/calls` | answers how many calls this instance has served, this one included (`{"calls": n}`) |

use faaskeeper_guest::bindings::wasi::clocks::monotonic_clock;
use faaskeeper_guest::kv::{Bucket, KvError};
use faaskeeper_guest::{Reply, Stage};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};

struct Rogue;

impl Stage for Rogue {
    fn handle(path: &str, body: Vec<u8>) -> Reply {
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        match route {
            "/spin" => spin(),
            "/sleep" => {
                // One year, in nanoseconds: only the host's deadline ends this wait.
                monotonic_clock::subscribe_duration(365 * 24 * 3600 * 1_000_000_000).block();
                Reply::json(&json!({ "slept": true }))
            }
            "/alloc" => Reply::json(&json!({ "allocated": allocate_forever() })),
            "/open" => open(&body),
            "/recurse" => recurse(query),
            "/hold" => hold(query),
            "/ok" => Reply::json(&json!({ "ok": true })),
            "/calls" => {
                // Instance state: a second call on the same instance would count 2.
                static CALLS: AtomicU32 = AtomicU32::new(0);
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                Reply::json(&json!({ "calls": calls }))
            }
            _ => Reply::error(404, &format!("no rogue path {route}")),
        }
    }
}

faaskeeper_guest::export_stage!(Rogue);

/// Never returns; `black_box` keeps the loop from being optimised into a trap or away.
fn spin() -> Reply {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Grows the heap 1 MiB at a time, touching every page, until the host stops it; returns
/// only if it never is.
fn allocate_forever() -> usize {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&held);
        if held.len() == usize::MAX {
            return held.len();
        }
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    faaskeeper_core::url::query_param(query, name)
}

/// Try every bucket name; where one opens, overwrite `key` in it.
fn open(body: &[u8]) -> Reply {
    let req: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Reply::error(400, &format!("body: {e}")),
    };
    let key = req["key"].as_str().unwrap_or("rogue");
    let names: Vec<String> = req["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let results: Vec<serde_json::Value> = names
        .iter()
        .map(|name| match Bucket::open(name) {
            Ok(bucket) => {
                let wrote = bucket.set(key, b"pwned");
                json!({ "name": name, "opened": true, "wrote": wrote.is_ok() })
            }
            Err(e) => json!({ "name": name, "opened": false, "error": e.to_string() }),
        })
        .collect();
    Reply::json(&results)
}

fn recurse(query: &str) -> Reply {
    let depth: u32 = query_param(query, "depth")
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    if depth == 0 {
        return Reply::json(&json!({ "bottom": true }));
    }
    let url = format!("http://writer.spin.internal/recurse?depth={}", depth - 1);
    match faaskeeper_guest::post(&url, b"{}") {
        Ok((200, _)) => Reply::json(&json!({ "depth": depth })),
        Ok((status, body)) => Reply::error(
            502,
            &format!(
                "depth {depth}: the nested call answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        ),
        Err(e) => Reply::error(502, &format!("depth {depth}: the nested call failed: {e}")),
    }
}

fn hold(query: &str) -> Reply {
    let Some(gate) = query_param(query, "gate") else {
        return Reply::error(400, "missing ?gate=");
    };
    match hold_until(&gate) {
        Ok(active) => Reply::json(&json!({ "active_at_entry": active })),
        Err(e) => Reply::error(503, &e.to_string()),
    }
}

fn hold_until(gate: &str) -> Result<i64, KvError> {
    let user = Bucket::open(faaskeeper_core::keys::USER_BUCKET)?;
    let active = user.increment("active", 1)?;
    // The most that were ever in at once, kept by the guests themselves: a CAS loop on a key
    // that exists (the test creates it) so that the host's own count is not what is tested.
    loop {
        let (cas, peak): (_, i64) = user.cas("peak")?;
        if active <= peak {
            break;
        }
        match cas.swap(&active) {
            Ok(()) => break,
            Err(KvError::CasConflict) => continue,
            Err(e) => return Err(e),
        }
    }
    while user.get(gate)?.is_none() {
        monotonic_clock::subscribe_duration(5_000_000).block();
    }
    user.increment("active", -1)?;
    Ok(active)
}
