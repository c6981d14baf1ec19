//! ZooKeeper's numeric constants: op codes, special xids, watch event types, session
//! states, watch kinds, ACL permissions and create modes.

/// Op codes (`ZooDefs.OpCode`), the `type` field of a request header.
pub mod op {
    /// Server-pushed watch notification (never sent by clients).
    pub const NOTIFICATION: i32 = 0;
    /// `create`, answered with the created path.
    pub const CREATE: i32 = 1;
    /// `delete`.
    pub const DELETE: i32 = 2;
    /// `exists`.
    pub const EXISTS: i32 = 3;
    /// `getData`.
    pub const GET_DATA: i32 = 4;
    /// `setData`.
    pub const SET_DATA: i32 = 5;
    /// `getACL`.
    pub const GET_ACL: i32 = 6;
    /// `setACL`.
    pub const SET_ACL: i32 = 7;
    /// `getChildren`.
    pub const GET_CHILDREN: i32 = 8;
    /// `sync`.
    pub const SYNC: i32 = 9;
    /// `ping`, sent with [`PING_XID`](crate::PING_XID).
    pub const PING: i32 = 11;
    /// `getChildren2`: children plus the parent's stat.
    pub const GET_CHILDREN2: i32 = 12;
    /// `check` (version check, only inside `multi`).
    pub const CHECK: i32 = 13;
    /// `multi`: an atomic batch of writes.
    pub const MULTI: i32 = 14;
    /// `create2`, answered with path and stat.
    pub const CREATE2: i32 = 15;
    /// `reconfig` (not decoded by this crate).
    pub const RECONFIG: i32 = 16;
    /// `checkWatches`.
    pub const CHECK_WATCHES: i32 = 17;
    /// `removeWatches`.
    pub const REMOVE_WATCHES: i32 = 18;
    /// `createContainer`.
    pub const CREATE_CONTAINER: i32 = 19;
    /// `deleteContainer` (server internal, not decoded).
    pub const DELETE_CONTAINER: i32 = 20;
    /// `createTTL`.
    pub const CREATE_TTL: i32 = 21;
    /// `multiRead`: a batch of reads.
    pub const MULTI_READ: i32 = 22;
    /// `auth`, sent with [`AUTH_XID`](crate::AUTH_XID).
    pub const AUTH: i32 = 100;
    /// `setWatches`, sent with [`SET_WATCHES_XID`](crate::SET_WATCHES_XID) on reconnect.
    pub const SET_WATCHES: i32 = 101;
    /// `sasl` (not decoded by this crate).
    pub const SASL: i32 = 102;
    /// `getEphemerals`.
    pub const GET_EPHEMERALS: i32 = 103;
    /// `getAllChildrenNumber`.
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    /// `setWatches2`: `setWatches` plus persistent watches.
    pub const SET_WATCHES2: i32 = 105;
    /// `addWatch` (persistent watches).
    pub const ADD_WATCH: i32 = 106;
    /// `whoAmI`.
    pub const WHO_AM_I: i32 = 107;
    /// `createSession` (server internal).
    pub const CREATE_SESSION: i32 = -10;
    /// `closeSession`.
    pub const CLOSE_SESSION: i32 = -11;
    /// Error marker, used as the type of failed entries in multi results.
    pub const ERROR: i32 = -1;
}

/// xid of server-pushed watch notifications.
pub const WATCH_XID: i32 = -1;
/// xid of pings (requests and replies).
pub const PING_XID: i32 = -2;
/// xid of `auth` packets and their replies.
pub const AUTH_XID: i32 = -4;
/// xid of `setWatches`/`setWatches2` and their replies.
pub const SET_WATCHES_XID: i32 = -8;

/// Watch event types (`Watcher.Event.EventType`).
pub mod event_type {
    /// State change only, no node involved.
    pub const NONE: i32 = -1;
    /// A watched node was created.
    pub const NODE_CREATED: i32 = 1;
    /// A watched node was deleted.
    pub const NODE_DELETED: i32 = 2;
    /// A watched node's data changed.
    pub const NODE_DATA_CHANGED: i32 = 3;
    /// A watched node's children changed.
    pub const NODE_CHILDREN_CHANGED: i32 = 4;
    /// A data watch was removed.
    pub const DATA_WATCH_REMOVED: i32 = 5;
    /// A child watch was removed.
    pub const CHILD_WATCH_REMOVED: i32 = 6;
    /// A persistent watch was removed.
    pub const PERSISTENT_WATCH_REMOVED: i32 = 7;
}

/// Session states (`Watcher.Event.KeeperState`) carried by watch events.
pub mod keeper_state {
    /// Disconnected from the server.
    pub const DISCONNECTED: i32 = 0;
    /// Connected; the state of every ordinary notification.
    pub const SYNC_CONNECTED: i32 = 3;
    /// Authentication failed.
    pub const AUTH_FAILED: i32 = 4;
    /// Connected to a read-only server.
    pub const CONNECTED_READ_ONLY: i32 = 5;
    /// SASL authentication succeeded.
    pub const SASL_AUTHENTICATED: i32 = 6;
    /// The session expired.
    pub const EXPIRED: i32 = -112;
    /// The client closed the session.
    pub const CLOSED: i32 = 7;
}

/// Watch kinds of `removeWatches`/`checkWatches` (`Watcher.WatcherType`).
pub mod watcher_type {
    /// Child watches.
    pub const CHILDREN: i32 = 1;
    /// Data (and exists) watches.
    pub const DATA: i32 = 2;
    /// Any watch.
    pub const ANY: i32 = 3;
}

/// Modes of `addWatch` (`AddWatchMode`).
pub mod add_watch_mode {
    /// Fires on the node itself, stays set.
    pub const PERSISTENT: i32 = 0;
    /// Fires on the node and all descendants, stays set.
    pub const PERSISTENT_RECURSIVE: i32 = 1;
}

/// ACL permission bits (`ZooDefs.Perms`), as core judges them.
pub use faaskeeper_core::acl::perms;

/// A create request's `flags` (ZooKeeper's `CreateMode`, all seven wire values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZkCreateMode {
    /// 0.
    Persistent,
    /// 1: deleted when the session ends.
    Ephemeral,
    /// 2: name gets a sequence suffix.
    PersistentSequential,
    /// 3.
    EphemeralSequential,
    /// 4: deleted by the server once its last child goes.
    Container,
    /// 5: deleted once unmodified and childless for the TTL.
    PersistentWithTtl,
    /// 6.
    PersistentSequentialWithTtl,
}

impl ZkCreateMode {
    /// The wire value.
    pub fn flags(self) -> i32 {
        match self {
            ZkCreateMode::Persistent => 0,
            ZkCreateMode::Ephemeral => 1,
            ZkCreateMode::PersistentSequential => 2,
            ZkCreateMode::EphemeralSequential => 3,
            ZkCreateMode::Container => 4,
            ZkCreateMode::PersistentWithTtl => 5,
            ZkCreateMode::PersistentSequentialWithTtl => 6,
        }
    }

    /// Whether the node is tied to its session.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            ZkCreateMode::Ephemeral | ZkCreateMode::EphemeralSequential
        )
    }

    /// Whether the server appends a sequence number to the name.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            ZkCreateMode::PersistentSequential
                | ZkCreateMode::EphemeralSequential
                | ZkCreateMode::PersistentSequentialWithTtl
        )
    }

    /// Whether the mode needs a TTL (only valid with `createTTL`).
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            ZkCreateMode::PersistentWithTtl | ZkCreateMode::PersistentSequentialWithTtl
        )
    }

    /// Whether the node is a container.
    pub fn is_container(self) -> bool {
        self == ZkCreateMode::Container
    }
}

/// The create mode of a request's `flags`, `None` for values ZooKeeper rejects.
pub fn create_mode(flags: i32) -> Option<ZkCreateMode> {
    Some(match flags {
        0 => ZkCreateMode::Persistent,
        1 => ZkCreateMode::Ephemeral,
        2 => ZkCreateMode::PersistentSequential,
        3 => ZkCreateMode::EphemeralSequential,
        4 => ZkCreateMode::Container,
        5 => ZkCreateMode::PersistentWithTtl,
        6 => ZkCreateMode::PersistentSequentialWithTtl,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_modes_round_trip() {
        for flags in 0..7 {
            let mode = create_mode(flags).unwrap();
            assert_eq!(mode.flags(), flags);
        }
        assert_eq!(create_mode(7), None);
        assert_eq!(create_mode(-1), None);
        assert!(ZkCreateMode::EphemeralSequential.is_ephemeral());
        assert!(ZkCreateMode::EphemeralSequential.is_sequential());
        assert!(ZkCreateMode::PersistentSequentialWithTtl.is_ttl());
        assert!(ZkCreateMode::PersistentSequentialWithTtl.is_sequential());
        assert!(!ZkCreateMode::Container.is_ttl());
        assert!(ZkCreateMode::Container.is_container());
    }
}
