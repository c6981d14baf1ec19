//! Key layout in the `system` and `user` buckets, in one place so that every stage, the host
//! and the tests agree on it. See `docs/architecture.md` for what each key holds.

/// Bucket holding the log, the distributor's state and node records.
pub const SYSTEM_BUCKET: &str = "system";
/// Bucket holding the user-visible node objects, read by clients directly.
pub const USER_BUCKET: &str = "user";

/// The log head `{zxid, id}`; created at init, afterwards only changed by CAS.
pub const LOG_HEAD: &str = "log/head";

/// The keys from which everything else can be rebuilt, as `(bucket, key prefix)`: the log
/// head (which makes the txn entries before it reachable) and the sessions' heartbeats. Every
/// other key is derived by replaying the log (the distributor's records, the node objects,
/// watches, sessions, indexes). A backend that keeps all writes in one order may fsync only
/// writes to these keys (the embedded one does); see `docs/architecture.md`, "Durability".
pub const DURABLE_KEYS: &[(&str, &str)] = &[(SYSTEM_BUCKET, LOG_HEAD), (SYSTEM_BUCKET, "alive/")];
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
    format!("txn/{id}")
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
