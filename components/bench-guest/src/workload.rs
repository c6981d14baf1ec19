//! The benchmark mix, applied with [`faaskeeper_core::apply::apply`] over a [`MemState`].
//!
//! Txns are built one at a time right before they are applied (as the distributor decodes
//! them one at a time), so a batch holds one 1 KiB payload at once whatever its length.

use faaskeeper_core::CreateMode;
use faaskeeper_core::apply::{MemState, apply};
use faaskeeper_core::wire::{Op, OpResult, Request, Txn};

/// Payload size of every create and set.
pub const DATA_LEN: usize = 1024;
/// Persistent nodes created up front and set over and over by the mix.
pub const POOL: usize = 16;
/// Txns of the mix per created-and-deleted node.
pub const CYCLE: usize = 8;

const WRITER: i64 = 1;
const WATCHER: i64 = 2;
const SETUP: usize = 3 + POOL;

/// What a batch produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Events handed to sessions (results and watch notifications).
    pub events: u32,
    /// Watch notifications among them.
    pub watches: u32,
    /// Results that were ZooKeeper errors (the mix expects none).
    pub errors: u32,
}

impl Totals {
    /// One number for the component to return: equal totals give equal checksums.
    pub fn checksum(self) -> u64 {
        u64::from(self.events) | (u64::from(self.watches) << 24) | (u64::from(self.errors) << 48)
    }
}

/// Apply the first `n` txns of the mix to a fresh tree (ZooKeeper's initial nodes).
///
/// The mix: open two sessions, create `/bench` and [`POOL`] nodes of [`DATA_LEN`] bytes,
/// then repeat [`CYCLE`] txns — create a node, a data watch on it from the other session,
/// set its data (the watch fires), read it, `exists` on a pool node, set and read that pool
/// node, delete the new node — until `n` txns are applied.
pub fn apply_batch(n: u32) -> Totals {
    let mut state = MemState::initialized();
    let mut totals = Totals::default();
    let mut seqs = [0i64; 2];
    for i in 0..n as usize {
        let (session, op) = op(i);
        let seq = &mut seqs[(session - 1) as usize];
        let zxid = i as i64 + 1;
        let txn = Txn {
            zxid,
            time_ms: 1_700_000_000_000 + zxid,
            request: Request {
                session,
                seq: *seq,
                op,
            },
        };
        *seq += 1;
        let applied = match apply(&mut state, &txn) {
            Ok(applied) => applied,
            Err(never) => match never {},
        };
        if matches!(applied.result, OpResult::Error { .. }) {
            totals.errors += 1;
        }
        for delivery in &applied.deliveries {
            totals.events += delivery.events.len() as u32;
            totals.watches += delivery
                .events
                .iter()
                .filter(|e| matches!(e, faaskeeper_core::wire::SessionEvent::Watch { .. }))
                .count() as u32;
        }
    }
    totals
}

/// The `i`-th op of the mix and the session issuing it.
fn op(i: usize) -> (i64, Op) {
    let open = |notify: &str| Op::OpenSession {
        timeout_ms: 10_000,
        notify: notify.to_string(),
        fallback: None,
    };
    match i {
        0 => return (WRITER, open("writer")),
        1 => return (WATCHER, open("watcher")),
        2 => {
            return (
                WRITER,
                Op::Create {
                    path: "/bench".to_string(),
                    data: Vec::new(),
                    mode: CreateMode::Persistent,
                    acl: None,
                },
            );
        }
        i if i < SETUP => {
            return (
                WRITER,
                Op::Create {
                    path: pool_path(i - 3),
                    data: payload(i),
                    mode: CreateMode::Persistent,
                    acl: None,
                },
            );
        }
        _ => {}
    }
    let j = (i - SETUP) / CYCLE;
    let node = format!("/bench/c{j}");
    let pool = pool_path(j % POOL);
    match (i - SETUP) % CYCLE {
        0 => (
            WRITER,
            Op::Create {
                path: node,
                data: payload(i),
                mode: CreateMode::Persistent,
                acl: None,
            },
        ),
        1 => (
            WATCHER,
            Op::GetData {
                path: node,
                watch: true,
            },
        ),
        2 => (
            WRITER,
            Op::SetData {
                path: node,
                data: payload(i),
                version: -1,
            },
        ),
        3 => (
            WATCHER,
            Op::GetData {
                path: node,
                watch: false,
            },
        ),
        4 => (
            WRITER,
            Op::Exists {
                path: pool,
                watch: false,
            },
        ),
        5 => (
            WRITER,
            Op::SetData {
                path: pool,
                data: payload(i),
                version: -1,
            },
        ),
        6 => (
            WATCHER,
            Op::GetData {
                path: pool,
                watch: false,
            },
        ),
        _ => (
            WRITER,
            Op::Delete {
                path: node,
                version: -1,
            },
        ),
    }
}

fn pool_path(k: usize) -> String {
    format!("/bench/p{k}")
}

/// A fresh 1 KiB payload. A fill, not a computed pattern: natively a byte loop is
/// vectorised and in wasm (no `simd128`) it is not, which would time the generator instead of
/// apply. A payload really arrives as a copy out of the decoded request, as fast in both.
fn payload(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; DATA_LEN]
}

#[cfg(test)]
mod tests {
    //! Pins the mix: every txn succeeds and each cycle fires exactly one watch.
    use super::*;

    #[test]
    fn mix_has_no_errors_and_fires_one_watch_per_cycle() {
        let n = (SETUP + 10 * CYCLE) as u32;
        let totals = apply_batch(n);
        assert_eq!(totals.errors, 0, "{totals:?}");
        assert_eq!(totals.watches, 10);
        assert_eq!(totals.events, n + 10);
    }
}
