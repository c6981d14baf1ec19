//! # faaskeeper-core
//!
//! ZooKeeper semantics with no I/O, shared by the stage components, the host and the client:
//! path rules ([`path`]), [`Stat`], create modes ([`CreateMode`]), ZooKeeper's error codes
//! ([`ZkError`]), the wire types that travel between client, writer, log, distributor and
//! watch ([`wire`]), and the deterministic *apply* step ([`apply`]) that turns the current
//! state plus one transaction into a new state, a result and watch events.
//!
//! ## Example: apply a transaction to an in-memory tree
//!
//! ```
//! use faaskeeper_core::apply::{apply, MemState};
//! use faaskeeper_core::wire::{Op, OpResult, Request, Txn};
//! use faaskeeper_core::CreateMode;
//!
//! let mut state = MemState::initialized();
//! let open = Txn { zxid: 1, time_ms: 10, request: Request {
//!     session: 7, seq: 0, op: Op::OpenSession { timeout_ms: 10_000, notify: "n".into(), fallback: None } } };
//! apply(&mut state, &open).unwrap();
//! let create = Txn { zxid: 2, time_ms: 11, request: Request { session: 7, seq: 1, op: Op::Create {
//!     path: "/a".into(), data: b"hello".to_vec(), mode: CreateMode::Persistent, acl: None } } };
//! let out = apply(&mut state, &create).unwrap();
//! match out.result {
//!     OpResult::Created { path, stat } => { assert_eq!(path, "/a"); assert_eq!(stat.czxid, 2); }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
#![deny(missing_docs)]

pub mod acl;
pub mod apply;
mod error;
pub mod keys;
mod mode;
pub mod path;
pub mod queue;
pub mod session;
mod stat;
pub mod ttl;
pub mod url;
pub mod wire;

pub use error::ZkError;
pub use mode::CreateMode;
pub use stat::Stat;

/// ZooKeeper's default `jute.maxbuffer` (`0xfffff`, 1 MiB less one byte): the largest request
/// packet (xid, op code and body, as its length prefix counts them) a server reads. ZooKeeper
/// closes the connection of a client that sends a longer one; [`wire::precheck`] refuses a
/// request whose ZooKeeper packet would be longer with `BadArguments`.
pub const MAX_PACKET_LEN: usize = 0xfffff;

/// No znode payload can be longer than this: the packet limit minus the smallest request
/// around it. Requests are judged by their whole packet ([`wire::packet_len`]); this bound
/// guards the apply step.
pub const MAX_DATA_LEN: usize = MAX_PACKET_LEN;

/// Shortest session timeout granted: ZooKeeper's `minSessionTimeout` (2 × tickTime of 2 s).
pub const MIN_SESSION_TIMEOUT_MS: i32 = 4_000;
/// Longest session timeout granted: ZooKeeper's `maxSessionTimeout` (20 × tickTime).
pub const MAX_SESSION_TIMEOUT_MS: i32 = 40_000;

/// The timeout a session gets for the one it asked for, clamped as ZooKeeper does.
pub fn negotiate_timeout(requested_ms: i32) -> i32 {
    requested_ms.clamp(MIN_SESSION_TIMEOUT_MS, MAX_SESSION_TIMEOUT_MS)
}

/// The `ephemeral_owner` of a container node: ZooKeeper's
/// `EphemeralType.CONTAINER_EPHEMERAL_OWNER` (`Long.MIN_VALUE`). It is a marker, not a session.
pub const CONTAINER_EPHEMERAL_OWNER: i64 = i64::MIN;

/// Whether an `ephemeral_owner` value names a real session, i.e. the node is a plain
/// ephemeral (ZooKeeper's `EphemeralType.NORMAL`): not 0 (persistent), not the container
/// marker and not an extended-type marker (high byte `0xff`, which ZooKeeper uses for TTL
/// nodes when `extendedTypesEnabled` is on). Only such nodes refuse children and belong to
/// a session's ephemeral list.
pub fn is_session_owner(ephemeral_owner: i64) -> bool {
    const EXTENDED_MASK: u64 = 0xff00_0000_0000_0000;
    ephemeral_owner != 0
        && ephemeral_owner != CONTAINER_EPHEMERAL_OWNER
        && (ephemeral_owner as u64) & EXTENDED_MASK != EXTENDED_MASK
}

/// Session id ZooKeeper-style (a signed 64-bit number, never 0 for a real session).
pub type SessionId = i64;

/// Position in the transaction log; the total order of all writes.
pub type Zxid = i64;
