//! The `apply_program` target: the bytes are read as a program of ZooKeeper requests from a
//! few sessions on a small tree, which [`faaskeeper_core::apply::apply`] runs against the
//! in-memory model. Bad requests are expected (invalid paths, wrong versions, closed
//! sessions); what must hold after every txn is that the tree is consistent, that a
//! redelivered txn changes nothing, and that a failed multi changes no node.

use faaskeeper_core::acl::Acl;
use faaskeeper_core::apply::{MemState, apply};
use faaskeeper_core::session::SERVICE_SESSION;
use faaskeeper_core::wire::{MultiOp, Op, OpResult, Request, Txn, WatchKind};
use faaskeeper_core::{CreateMode, SessionId, is_session_owner, path};

/// Paths the program names; a few are invalid on purpose.
const PATHS: &[&str] = &[
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "/b",
    "/a/b0000000000",
    "/a/b0000000001",
    "/zookeeper",
    "/zookeeper/quota",
    "/a/",
    "//a",
    "/a/./b",
    "a",
    "",
];

/// Sessions the program uses (ids as the host hands them out, never the service's 0).
const SESSIONS: [SessionId; 3] = [0x101, 0x102, 0x103];

/// Most requests one input runs, so that a long input cannot make a run slow.
const MAX_STEPS: usize = 256;

struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        Some(from[usize::from(self.byte()?) % from.len()])
    }

    fn path(&mut self) -> Option<String> {
        self.pick(PATHS).map(str::to_string)
    }

    /// -1 (any) half the time, else a small version.
    fn version(&mut self) -> Option<i32> {
        let b = self.byte()?;
        Some(if b & 0x80 == 0 {
            -1
        } else {
            i32::from(b & 0x7)
        })
    }

    fn data(&mut self) -> Option<Vec<u8>> {
        let len = usize::from(self.byte()? % 8);
        let end = (self.at + len).min(self.data.len());
        let out = self.data[self.at..end].to_vec();
        self.at = end;
        Some(out)
    }

    fn mode(&mut self) -> Option<CreateMode> {
        let b = self.byte()?;
        Some(match b % 8 {
            0 | 7 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            4 => CreateMode::Container,
            5 => CreateMode::PersistentWithTtl {
                ttl_ms: i64::from(b >> 3) - 1,
            },
            _ => CreateMode::PersistentSequentialWithTtl {
                ttl_ms: i64::from(b >> 3) * 1000,
            },
        })
    }

    /// An ACL for a create or setACL: none, open, one user's digest, `auth`, world-read,
    /// or an invalid list.
    fn acl(&mut self) -> Option<Option<Vec<Acl>>> {
        let b = self.byte()?;
        let perms = i32::from(b >> 3) & 0x1f;
        Some(match b % 6 {
            0 => None,
            1 => Some(faaskeeper_core::acl::open_unsafe()),
            2 => Some(vec![Acl::new(
                perms,
                "digest",
                &faaskeeper_core::acl::digest(b"alice:pa"),
            )]),
            3 => Some(vec![Acl::new(perms, "auth", "")]),
            4 => Some(faaskeeper_core::acl::read_unsafe()),
            _ => Some(vec![]),
        })
    }

    fn multi_op(&mut self) -> Option<MultiOp> {
        Some(match self.byte()? % 4 {
            0 => MultiOp::Create {
                path: self.path()?,
                data: self.data()?,
                mode: self.mode()?,
                acl: self.acl()?,
            },
            1 => MultiOp::Delete {
                path: self.path()?,
                version: self.version()?,
            },
            2 => MultiOp::SetData {
                path: self.path()?,
                data: self.data()?,
                version: self.version()?,
            },
            _ => MultiOp::Check {
                path: self.path()?,
                version: self.version()?,
            },
        })
    }

    fn op(&mut self) -> Option<Op> {
        Some(match self.byte()? % 19 {
            0..=2 => Op::Create {
                path: self.path()?,
                data: self.data()?,
                mode: self.mode()?,
                acl: self.acl()?,
            },
            3 | 4 => Op::SetData {
                path: self.path()?,
                data: self.data()?,
                version: self.version()?,
            },
            5 | 6 => Op::Delete {
                path: self.path()?,
                version: self.version()?,
            },
            7 => Op::GetData {
                path: self.path()?,
                watch: self.byte()? & 1 == 1,
            },
            8 => Op::Exists {
                path: self.path()?,
                watch: self.byte()? & 1 == 1,
            },
            9 => Op::GetChildren {
                path: self.path()?,
                watch: self.byte()? & 1 == 1,
            },
            10 => {
                let n = self.byte()? % 4;
                let mut ops = Vec::new();
                for _ in 0..n {
                    ops.push(self.multi_op()?);
                }
                Op::Multi { ops }
            }
            11 => Op::AddWatch {
                path: self.path()?,
                recursive: self.byte()? & 1 == 1,
            },
            12 => Op::RemoveWatches {
                path: self.path()?,
                kind: self.pick(&[
                    WatchKind::Any,
                    WatchKind::Data,
                    WatchKind::Children,
                    WatchKind::Persistent,
                    WatchKind::PersistentRecursive,
                ])?,
                check_only: self.byte()? & 1 == 1,
            },
            13 => Op::GetAllChildrenNumber { path: self.path()? },
            14 => Op::CloseSession,
            15 => Op::DeleteExpired { path: self.path()? },
            16 => Op::SetAcl {
                path: self.path()?,
                acl: self.acl()?.unwrap_or_default(),
                version: self.version()?,
            },
            17 => Op::GetAcl { path: self.path()? },
            _ => Op::AddAuth {
                scheme: self.pick(&["digest", "ip", "foo"])?.to_string(),
                auth: self.pick(&[&b"alice:pa"[..], b"bob:pb"])?.to_vec(),
            },
        })
    }
}

/// See the module docs.
pub fn apply_program(data: &[u8]) {
    let mut state = MemState::initialized();
    let mut zxid = 0;
    let mut seqs = [0i64; SESSIONS.len()];
    let mut time_ms = 1_000_000;
    let mut run = |state: &mut MemState, session: SessionId, seq: i64, op: Op, time_ms: i64| {
        zxid += 1;
        let txn = Txn {
            zxid,
            time_ms,
            request: Request { session, seq, op },
        };
        let before = state.clone();
        let applied = apply(state, &txn).unwrap_or_else(|never| match never {});
        check_tree(state);
        if matches!(applied.result, OpResult::MultiFailed { .. }) {
            assert_eq!(state.nodes, before.nodes, "a failed multi changed nodes");
        }
        // At-least-once delivery: the same txn again must change nothing and answer the same.
        let after = state.clone();
        let again = apply(state, &txn).unwrap_or_else(|never| match never {});
        assert_eq!(state.nodes, after.nodes, "a redelivered txn changed nodes");
        assert_eq!(
            state.sessions, after.sessions,
            "a redelivered txn changed sessions"
        );
        if session != SERVICE_SESSION {
            assert_eq!(
                again.result, applied.result,
                "a redelivery answered differently"
            );
        }
    };
    for (i, &session) in SESSIONS.iter().enumerate() {
        let op = Op::OpenSession {
            timeout_ms: 10_000,
            notify: format!("http://sessions.internal/{session}"),
            fallback: None,
        };
        run(&mut state, session, 0, op, time_ms);
        seqs[i] = 0;
    }
    let mut bytes = Bytes { data, at: 0 };
    for _ in 0..MAX_STEPS {
        let Some(who) = bytes.byte() else { break };
        let Some(op) = bytes.op() else { break };
        // Time moves forward by up to ~4 s a step, so TTL nodes can expire.
        time_ms += i64::from(who >> 2) * 16;
        if matches!(op, Op::DeleteExpired { .. }) {
            run(&mut state, SERVICE_SESSION, 0, op, time_ms);
            continue;
        }
        let i = usize::from(who) % SESSIONS.len();
        seqs[i] += 1;
        run(&mut state, SESSIONS[i], seqs[i], op, time_ms);
    }
}

/// The invariants of the tree and the sessions, after any txn.
fn check_tree(state: &MemState) {
    for (p, node) in &state.nodes {
        assert_eq!(
            node.stat.num_children as usize,
            node.children.len(),
            "{p}: numChildren"
        );
        assert_eq!(
            node.stat.data_length as usize,
            node.data.len(),
            "{p}: dataLength"
        );
        assert!(node.stat.version >= 0, "{p}: version");
        for child in &node.children {
            let child_path = path::join(p, child);
            assert!(
                state.nodes.contains_key(&child_path),
                "{p} lists child {child} that does not exist"
            );
        }
        if p != "/" {
            assert!(path::validate(p).is_ok(), "stored invalid path {p:?}");
            let parent = path::parent(p).expect("a non-root path has a parent");
            let parent_node = state
                .nodes
                .get(parent)
                .unwrap_or_else(|| panic!("{p} exists without its parent"));
            assert!(
                parent_node.children.contains(path::name(p)),
                "{parent} does not list {p}"
            );
            assert!(
                node.stat.czxid <= node.stat.mzxid && node.stat.czxid <= node.stat.pzxid,
                "{p}: zxids out of order: {:?}",
                node.stat
            );
        }
        let owner = node.stat.ephemeral_owner;
        if is_session_owner(owner) {
            assert!(node.children.is_empty(), "ephemeral {p} has children");
            let session = state
                .sessions
                .get(&owner)
                .unwrap_or_else(|| panic!("ephemeral {p} of unknown session {owner:#x}"));
            assert!(!session.closed, "ephemeral {p} outlived its session");
            assert!(
                session.ephemerals.contains(p),
                "session {owner:#x} does not list its ephemeral {p}"
            );
        }
    }
    for (id, session) in &state.sessions {
        if session.closed {
            assert!(
                session.ephemerals.is_empty(),
                "closed session {id:#x} keeps ephemerals"
            );
        }
        for p in &session.ephemerals {
            let node = state
                .nodes
                .get(p)
                .unwrap_or_else(|| panic!("session {id:#x} lists missing ephemeral {p}"));
            assert_eq!(node.stat.ephemeral_owner, *id, "{p}: owner");
        }
    }
}
