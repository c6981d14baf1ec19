//! A linearizability checker for histories of one znode (Wing & Gong's search with Lowe's
//! memoisation of `(linearized set, state)`, as in Knossos and porcupine), and the ZooKeeper
//! model it checks against: create, delete with or without a version, get, set with or
//! without a version.
//!
//! Linearizability is compositional, so a history over many znodes is checked one znode at a
//! time. An operation whose outcome the client never learned (an error, a timeout, a lost
//! session) is *possibly applied*: it may take effect at any point after its call, or never;
//! it is given an open end ([`OPEN`]) and any outcome, as Knossos and porcupine do. A caller
//! that knows a later bound (FIFO order: it took effect, if at all, before a later operation
//! of the same session returned) may give it that return time instead; the search then tries
//! it both with its effect and as a no-op. A read with an unknown outcome has no effect and
//! can simply be left out.

use std::collections::HashSet;

/// The return time of an operation whose outcome is unknown.
pub const OPEN: u64 = u64::MAX;

/// An operation on one znode. `version` -1 means "any version", as in ZooKeeper.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ZkOp {
    /// `create(path, data)` (persistent).
    Create {
        /// The data written.
        data: String,
    },
    /// `delete(path, version)`.
    Delete {
        /// The expected version, or -1.
        version: i32,
    },
    /// `getData(path)` (or `exists`, with the data ignored by the caller).
    Get,
    /// `setData(path, data, version)`.
    Set {
        /// The data written.
        data: String,
        /// The expected version, or -1.
        version: i32,
    },
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ZkRet {
    /// `create` or `delete` succeeded.
    Ok,
    /// `setData` succeeded; the new version.
    Stat {
        /// The node's version after the set.
        version: i32,
    },
    /// `getData` returned this.
    Data {
        /// The data.
        data: String,
        /// The version.
        version: i32,
    },
    /// `NodeExists`.
    NodeExists,
    /// `NoNode`.
    NoNode,
    /// `BadVersion`.
    BadVersion,
    /// No answer: the operation may or may not have taken effect.
    Unknown,
}

/// One operation of a history: when it was called, when it returned ([`OPEN`] if never),
/// what it did and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it (for reports only).
    pub client: i64,
    /// Call time (any monotonic unit).
    pub call: u64,
    /// Return time, `>= call`; [`OPEN`] for an unknown outcome.
    pub ret: u64,
    /// The operation.
    pub op: ZkOp,
    /// Its outcome.
    pub out: ZkRet,
}

/// The state of one znode: absent, or its data and version.
pub type ZnodeState = Option<(String, i32)>;

/// ZooKeeper's rules for one znode: the state after `op` if answering `out` is possible from
/// `state`, `None` if it is not. An unknown outcome accepts whatever the op does.
pub fn step(state: &ZnodeState, op: &ZkOp, out: &ZkRet) -> Option<ZnodeState> {
    let unknown = *out == ZkRet::Unknown;
    let (next, answer) = match (op, state) {
        (ZkOp::Create { data }, None) => (Some((data.clone(), 0)), ZkRet::Ok),
        (ZkOp::Create { .. }, Some(_)) => (state.clone(), ZkRet::NodeExists),
        (ZkOp::Delete { .. }, None) => (None, ZkRet::NoNode),
        (ZkOp::Delete { version }, Some((_, v))) => {
            if *version == -1 || version == v {
                (None, ZkRet::Ok)
            } else {
                (state.clone(), ZkRet::BadVersion)
            }
        }
        (ZkOp::Get, None) => (None, ZkRet::NoNode),
        (ZkOp::Get, Some((d, v))) => (
            state.clone(),
            ZkRet::Data {
                data: d.clone(),
                version: *v,
            },
        ),
        (ZkOp::Set { .. }, None) => (None, ZkRet::NoNode),
        (ZkOp::Set { data, version }, Some((_, v))) => {
            if *version == -1 || version == v {
                (Some((data.clone(), v + 1)), ZkRet::Stat { version: v + 1 })
            } else {
                (state.clone(), ZkRet::BadVersion)
            }
        }
    };
    (unknown || answer == *out).then_some(next)
}

/// The verdict on one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A linearization exists.
    Linearizable,
    /// None exists. `longest` is the most operations any attempt linearized, `stuck` an
    /// operation that could not be placed after that prefix.
    Violation {
        /// Length of the longest linearizable prefix found.
        longest: usize,
        /// An operation the search could not place after it.
        stuck: Option<Operation>,
    },
    /// The search gave up after visiting `limit` states (neither verdict holds).
    GaveUp {
        /// The state budget that ran out.
        limit: usize,
    },
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// The matching entry (return of a call, call of a return).
    other: usize,
    prev: usize,
    next: usize,
}

/// Check one znode's history against [`step`] from `initial`, visiting at most `limit`
/// distinct `(linearized set, state)` pairs.
pub fn check(history: &[Operation], initial: ZnodeState, limit: usize) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Time-ordered events; at equal times calls come first (the ops overlap), which is the
    // permissive reading of a tie.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in history.iter().enumerate() {
        events.push((o.call, true, i));
        events.push((o.ret.max(o.call), false, i));
    }
    events.sort_by_key(|&(t, is_call, i)| (t, !is_call, i));
    // A doubly linked list with a sentinel head at index 0.
    let head = 0usize;
    let mut list: Vec<Entry> = Vec::with_capacity(2 * n + 1);
    list.push(Entry {
        op: usize::MAX,
        is_call: false,
        other: 0,
        prev: 0,
        next: 1,
    });
    let mut call_at = vec![0usize; n];
    let mut ret_at = vec![0usize; n];
    for (k, &(_, is_call, op)) in events.iter().enumerate() {
        let idx = k + 1;
        if is_call {
            call_at[op] = idx;
        } else {
            ret_at[op] = idx;
        }
        list.push(Entry {
            op,
            is_call,
            other: 0,
            prev: idx - 1,
            next: if k + 1 == events.len() {
                usize::MAX
            } else {
                idx + 1
            },
        });
    }
    for op in 0..n {
        list[call_at[op]].other = ret_at[op];
        list[ret_at[op]].other = call_at[op];
    }
    let lift = |list: &mut Vec<Entry>, e: usize| {
        for x in [e, list[e].other] {
            let (p, nx) = (list[x].prev, list[x].next);
            list[p].next = nx;
            if nx != usize::MAX {
                list[nx].prev = p;
            }
        }
    };
    let unlift = |list: &mut Vec<Entry>, e: usize| {
        for x in [list[e].other, e] {
            let (p, nx) = (list[x].prev, list[x].next);
            list[p].next = x;
            if nx != usize::MAX {
                list[nx].prev = x;
            }
        }
    };

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut state = initial;
    let mut seen: HashSet<(Vec<u64>, ZnodeState)> = HashSet::new();
    // Placed calls: the entry, the state before it, and which alternative placed it.
    let mut calls: Vec<(usize, ZnodeState, u8)> = Vec::new();
    let mut longest = 0usize;
    let mut stuck = None;
    let mut entry = list[head].next;
    // `Some(alt)`: try to place the call at `entry` starting with alternative `alt`
    // (0: its effect; 1, only for unknown outcomes: no effect at all).
    let mut resume_at: Option<u8> = None;
    loop {
        if entry == usize::MAX {
            // Every entry placed.
            return Verdict::Linearizable;
        }
        let e = list[entry];
        if e.is_call {
            let o = &history[e.op];
            let first = resume_at.take().unwrap_or(0);
            let last = if o.out == ZkRet::Unknown { 1 } else { 0 };
            let mut placed = false;
            for alt in first..=last {
                let next = if alt == 0 {
                    step(&state, &o.op, &o.out)
                } else {
                    Some(state.clone())
                };
                let Some(next) = next else { continue };
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if seen.insert((linearized.clone(), next.clone())) {
                    if seen.len() > limit {
                        return Verdict::GaveUp { limit };
                    }
                    calls.push((entry, std::mem::replace(&mut state, next), alt));
                    lift(&mut list, entry);
                    if calls.len() > longest {
                        longest = calls.len();
                        stuck = None;
                    }
                    entry = list[head].next;
                    placed = true;
                    break;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            if !placed {
                entry = e.next;
            }
        } else {
            // A return whose call was not placed: everything left is open-ended, or
            // something before this point must be undone.
            if history[e.op].ret == OPEN {
                // Only operations with unknown outcomes remain: they may never have happened.
                return Verdict::Linearizable;
            }
            if calls.len() == longest && stuck.is_none() {
                stuck = Some(history[e.op].clone());
            }
            let Some((call_entry, prev_state, alt)) = calls.pop() else {
                return Verdict::Violation { longest, stuck };
            };
            state = prev_state;
            let op = list[call_entry].op;
            linearized[op / 64] &= !(1 << (op % 64));
            unlift(&mut list, call_entry);
            if alt == 0 && history[op].out == ZkRet::Unknown {
                // Undo its effect, and try it as never having happened.
                entry = call_entry;
                resume_at = Some(1);
            } else {
                entry = list[call_entry].next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1_000_000;

    fn op(client: i64, call: u64, ret: u64, op: ZkOp, out: ZkRet) -> Operation {
        Operation {
            client,
            call,
            ret,
            op,
            out,
        }
    }

    fn set(data: &str, version: i32) -> ZkOp {
        ZkOp::Set {
            data: data.into(),
            version,
        }
    }

    fn data(d: &str, version: i32) -> ZkRet {
        ZkRet::Data {
            data: d.into(),
            version,
        }
    }

    fn create(d: &str) -> ZkOp {
        ZkOp::Create { data: d.into() }
    }

    fn is_violation(v: &Verdict) -> bool {
        matches!(v, Verdict::Violation { .. })
    }

    #[test]
    fn stale_read_is_rejected() {
        let start = Some(("a".to_string(), 0));
        let h = [
            op(1, 0, 10, set("b", -1), ZkRet::Stat { version: 1 }),
            // Called after the set returned, yet it sees the old value.
            op(2, 20, 30, ZkOp::Get, data("a", 0)),
        ];
        assert!(is_violation(&check(&h, start.clone(), LIMIT)));
        // Overlapping the set, the same read is fine.
        let h = [
            op(1, 0, 10, set("b", -1), ZkRet::Stat { version: 1 }),
            op(2, 5, 30, ZkOp::Get, data("a", 0)),
        ];
        assert_eq!(check(&h, start, LIMIT), Verdict::Linearizable);
    }

    #[test]
    fn lost_update_is_rejected() {
        // Two compare-and-sets from version 0 cannot both succeed.
        let start = Some(("a".to_string(), 0));
        let h = [
            op(1, 0, 10, set("b", 0), ZkRet::Stat { version: 1 }),
            op(2, 1, 11, set("c", 0), ZkRet::Stat { version: 1 }),
        ];
        assert!(is_violation(&check(&h, start.clone(), LIMIT)));
        // One of them must fail.
        let h = [
            op(1, 0, 10, set("b", 0), ZkRet::Stat { version: 1 }),
            op(2, 1, 11, set("c", 0), ZkRet::BadVersion),
            op(3, 12, 13, ZkOp::Get, data("b", 1)),
        ];
        assert_eq!(check(&h, start.clone(), LIMIT), Verdict::Linearizable);
        // An unconditional set lost under another: the read after both sees neither.
        let h = [
            op(1, 0, 10, set("b", -1), ZkRet::Stat { version: 1 }),
            op(2, 1, 11, set("c", -1), ZkRet::Stat { version: 2 }),
            op(3, 12, 13, ZkOp::Get, data("a", 0)),
        ];
        assert!(is_violation(&check(&h, start, LIMIT)));
    }

    #[test]
    fn double_successful_create_is_rejected() {
        let h = [
            op(1, 0, 10, create("x"), ZkRet::Ok),
            op(2, 2, 12, create("y"), ZkRet::Ok),
        ];
        assert!(is_violation(&check(&h, None, LIMIT)));
        // With a delete in between (concurrently), both may succeed.
        let h = [
            op(1, 0, 10, create("x"), ZkRet::Ok),
            op(3, 1, 11, ZkOp::Delete { version: 0 }, ZkRet::Ok),
            op(2, 2, 12, create("y"), ZkRet::Ok),
            op(4, 20, 21, ZkOp::Get, data("y", 0)),
        ];
        assert_eq!(check(&h, None, LIMIT), Verdict::Linearizable);
    }

    #[test]
    fn versions_and_errors_follow_zookeeper() {
        let h = [
            op(1, 0, 1, ZkOp::Get, ZkRet::NoNode),
            op(1, 2, 3, set("a", -1), ZkRet::NoNode),
            op(1, 4, 5, ZkOp::Delete { version: -1 }, ZkRet::NoNode),
            op(1, 6, 7, create("a"), ZkRet::Ok),
            op(1, 8, 9, create("b"), ZkRet::NodeExists),
            op(1, 10, 11, set("c", 5), ZkRet::BadVersion),
            op(1, 12, 13, set("c", 0), ZkRet::Stat { version: 1 }),
            op(1, 14, 15, ZkOp::Delete { version: 0 }, ZkRet::BadVersion),
            op(1, 16, 17, ZkOp::Get, data("c", 1)),
            op(1, 18, 19, ZkOp::Delete { version: 1 }, ZkRet::Ok),
            op(1, 20, 21, create("d"), ZkRet::Ok),
            op(1, 22, 23, ZkOp::Get, data("d", 0)),
        ];
        assert_eq!(check(&h, None, LIMIT), Verdict::Linearizable);
        // A set that reports the wrong new version is caught.
        let h = [
            op(1, 0, 1, create("a"), ZkRet::Ok),
            op(1, 2, 3, set("b", -1), ZkRet::Stat { version: 2 }),
        ];
        assert!(is_violation(&check(&h, None, LIMIT)));
    }

    #[test]
    fn valid_concurrent_history_is_accepted() {
        // Four clients overlap; the order create(a) < set(b) < get < cas(c) < delete works.
        let h = [
            op(1, 0, 50, create("a"), ZkRet::Ok),
            op(2, 10, 60, set("b", -1), ZkRet::Stat { version: 1 }),
            op(3, 20, 70, ZkOp::Get, data("b", 1)),
            op(4, 30, 80, set("c", 1), ZkRet::Stat { version: 2 }),
            op(1, 55, 90, ZkOp::Delete { version: 2 }, ZkRet::Ok),
            op(2, 61, 95, ZkOp::Get, ZkRet::NoNode),
        ];
        assert_eq!(check(&h, None, LIMIT), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcomes_may_or_may_not_have_happened() {
        let start = Some(("a".to_string(), 0));
        // The timed-out set explains the later read...
        let h = [
            op(1, 0, OPEN, set("b", -1), ZkRet::Unknown),
            op(2, 100, 110, ZkOp::Get, data("b", 1)),
        ];
        assert_eq!(check(&h, start.clone(), LIMIT), Verdict::Linearizable);
        // ...or never happened.
        let h = [
            op(1, 0, OPEN, set("b", -1), ZkRet::Unknown),
            op(2, 100, 110, ZkOp::Get, data("a", 0)),
        ];
        assert_eq!(check(&h, start.clone(), LIMIT), Verdict::Linearizable);
        // But it cannot take effect before it was called.
        let h = [
            op(2, 0, 10, ZkOp::Get, data("b", 1)),
            op(1, 20, OPEN, set("b", -1), ZkRet::Unknown),
        ];
        assert!(is_violation(&check(&h, start.clone(), LIMIT)));
        // Nor be undone: once seen, a later read cannot miss it.
        let h = [
            op(1, 0, OPEN, set("b", -1), ZkRet::Unknown),
            op(2, 100, 110, ZkOp::Get, data("b", 1)),
            op(2, 120, 130, ZkOp::Get, data("a", 0)),
        ];
        assert!(is_violation(&check(&h, start, LIMIT)));
    }

    #[test]
    fn bounded_unknown_outcomes_are_effect_or_nothing() {
        let start = Some(("a".to_string(), 0));
        // Unknown, bounded at 10: it either happened by then or never.
        let applied = [
            op(1, 0, 10, set("b", -1), ZkRet::Unknown),
            op(2, 20, 30, ZkOp::Get, data("b", 1)),
        ];
        assert_eq!(check(&applied, start.clone(), LIMIT), Verdict::Linearizable);
        let never = [
            op(1, 0, 10, set("b", -1), ZkRet::Unknown),
            op(2, 20, 30, ZkOp::Get, data("a", 0)),
            op(2, 40, 50, ZkOp::Get, data("a", 0)),
        ];
        assert_eq!(check(&never, start.clone(), LIMIT), Verdict::Linearizable);
        // It cannot take effect after its bound.
        let late = [
            op(1, 0, 10, set("b", -1), ZkRet::Unknown),
            op(2, 20, 30, ZkOp::Get, data("a", 0)),
            op(2, 40, 50, ZkOp::Get, data("b", 1)),
        ];
        assert!(is_violation(&check(&late, start, LIMIT)));
    }

    #[test]
    fn many_concurrent_ops_check_quickly() {
        // 8 clients × 200 ops of sets and reads in overlapping rounds: each round's set is
        // read by everyone in the next.
        let mut h = Vec::new();
        let mut version = 0;
        for round in 0..200u64 {
            let t = round * 100;
            let writer = (round % 8) as i64;
            version += 1;
            h.push(op(
                writer,
                t,
                t + 40,
                set(&format!("v{round}"), -1),
                ZkRet::Stat { version },
            ));
            for c in 0..8 {
                if c != writer {
                    h.push(op(
                        c,
                        t + 50 + c as u64,
                        t + 90,
                        ZkOp::Get,
                        data(&format!("v{round}"), version),
                    ));
                }
            }
        }
        let start = Some(("init".to_string(), 0));
        assert_eq!(check(&h, start, LIMIT), Verdict::Linearizable);
    }
}
