//! Key layout in the `system` and `user` buckets, in one place so that every stage, the host
//! and the tests agree on it. See `docs/architecture.md` for what each key holds.

/// Bucket holding the log, the distributor's state and node records.
pub const SYSTEM_BUCKET: &str = "system";
/// Bucket holding the user-visible node objects, read by clients directly.
pub const USER_BUCKET: &str = "user";

/// The log head `{zxid, id}`; created at init, afterwards only changed by CAS.
pub const LOG_HEAD: &str = "log/head";

/// Prefix of the txn entries ([`txn`]).
pub const TXN_PREFIX: &str = "txn/";

/// The transaction log, as `(bucket, key prefix)`: its head and its entries. Everything else
/// is derived by replaying the log (the distributor's records and redo record, node objects,
/// watches, sessions, indexes), so a backend may persist the rest lazily as long as it never
/// loses a log entry whose effects are not yet on disk (the embedded backend's log mode; see
/// `docs/architecture.md`, "Durability").
pub const LOG_KEYS: &[(&str, &str)] = &[(SYSTEM_BUCKET, LOG_HEAD), (SYSTEM_BUCKET, TXN_PREFIX)];
/// The distributor's lease `{owner, expires_ms, fence}`; created at init, CAS only.
pub const DIST_LEASE: &str = "dist/lease";
/// The last zxid whose effects are fully applied and notified.
pub const DIST_APPLIED: &str = "dist/applied";
/// The distributor's redo record for the batch in progress (absent when idle).
pub const DIST_PENDING: &str = "dist/pending";

/// The index of open sessions (`session::LiveSessions`), written by the distributor.
pub const LIVE_SESSIONS: &str = "sessions/live";

/// The index of TTL nodes (`ttl::TtlIndex`), written by the distributor, swept by the
/// heartbeat stage.
pub const TTL_NODES: &str = "ttl/nodes";

/// A session's last heartbeat (ms since the epoch), written by the heartbeat stage.
pub fn alive(id: i64) -> String {
    format!("alive/{id}")
}

/// A txn record appended by a writer, under the writer's own unique id.
pub fn txn(id: &str) -> String {
    format!("{TXN_PREFIX}{id}")
}

/// Index from zxid to txn id, written by the distributor once a txn is in the chain.
pub fn log_index(zxid: i64) -> String {
    format!("log/{zxid:020}")
}

/// The system record of a node (data, stat, children).
pub fn node(path: &str) -> String {
    format!("node{path}")
}

/// The watches registered on a path.
pub fn watches(path: &str) -> String {
    format!("watch{path}")
}

/// A session's record.
pub fn session(id: i64) -> String {
    format!("session/{id}")
}

/// The user-bucket key of a node: the path itself.
pub fn user_node(path: &str) -> String {
    path.to_string()
}
