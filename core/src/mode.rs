use serde::{Deserialize, Serialize};

/// How a node is created (ZooKeeper's `CreateMode`, with its wire numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreateMode {
    /// Lives until deleted (0).
    Persistent,
    /// Deleted when the creating session ends (1).
    Ephemeral,
    /// Persistent, name suffixed with the parent's `cversion` as `%010d` (2).
    PersistentSequential,
    /// Ephemeral and sequential (3).
    EphemeralSequential,
    /// A container (4): a persistent node that is deleted once its last child is deleted.
    /// Its `ephemeral_owner` is [`crate::CONTAINER_EPHEMERAL_OWNER`]. ZooKeeper deletes
    /// emptied containers later in a background `ContainerManager`; here they are deleted in
    /// the txn that removed the last child (see [`crate::apply`]).
    Container,
    /// Persistent with a time to live (5): deleted by the service once it has been neither
    /// modified nor had a child for `ttl_ms`. Its stored `ephemeral_owner` is the TTL marker
    /// of [`crate::ttl::owner_marker`], reported to clients as 0.
    PersistentWithTtl {
        /// Time to live in milliseconds, `1..=`[`crate::ttl::MAX_TTL_MS`].
        ttl_ms: i64,
    },
    /// Persistent, sequential and with a time to live (6).
    PersistentSequentialWithTtl {
        /// Time to live in milliseconds, `1..=`[`crate::ttl::MAX_TTL_MS`].
        ttl_ms: i64,
    },
}

impl CreateMode {
    /// Whether the node is tied to its session.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    /// Whether the node is a container (deleted when its last child goes).
    pub fn is_container(self) -> bool {
        matches!(self, CreateMode::Container)
    }

    /// Whether the service appends a sequence number to the name.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl { .. }
        )
    }

    /// The time to live of a TTL mode.
    pub fn ttl_ms(self) -> Option<i64> {
        match self {
            CreateMode::PersistentWithTtl { ttl_ms }
            | CreateMode::PersistentSequentialWithTtl { ttl_ms } => Some(ttl_ms),
            _ => None,
        }
    }

    /// The `ephemeral_owner` a node created in this mode by `session` stores.
    pub fn ephemeral_owner(self, session: crate::SessionId) -> i64 {
        match self {
            m if m.is_ephemeral() => session,
            CreateMode::Container => crate::CONTAINER_EPHEMERAL_OWNER,
            m => m.ttl_ms().map(crate::ttl::owner_marker).unwrap_or(0),
        }
    }

    /// Refuse what ZooKeeper refuses before looking at the tree: a TTL outside
    /// `1..=`[`crate::ttl::MAX_TTL_MS`] is `BadArguments` (`EphemeralType.validateTTL`).
    pub fn validate(self) -> Result<(), crate::ZkError> {
        match self.ttl_ms() {
            Some(ttl) if !(1..=crate::ttl::MAX_TTL_MS).contains(&ttl) => {
                Err(crate::ZkError::BadArguments)
            }
            _ => Ok(()),
        }
    }

    /// ZooKeeper's wire number for the mode.
    pub fn code(self) -> i32 {
        match self {
            CreateMode::Persistent => 0,
            CreateMode::Ephemeral => 1,
            CreateMode::PersistentSequential => 2,
            CreateMode::EphemeralSequential => 3,
            CreateMode::Container => 4,
            CreateMode::PersistentWithTtl { .. } => 5,
            CreateMode::PersistentSequentialWithTtl { .. } => 6,
        }
    }

    /// The mode for a ZooKeeper wire number that needs nothing else. The TTL modes
    /// (5 `PERSISTENT_WITH_TTL`, 6 `PERSISTENT_SEQUENTIAL_WITH_TTL`) give `None`: they need a
    /// TTL, which only [`CreateMode::for_request`] has.
    pub fn from_code(code: i32) -> Option<CreateMode> {
        Some(match code {
            0 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            4 => CreateMode::Container,
            _ => return None,
        })
    }

    /// The mode of a ZooKeeper create request, as ZooKeeper 3.8's `PrepRequestProcessor`
    /// decides it with `zookeeper.extendedTypesEnabled=true` (TTL nodes on; see
    /// `docs/semantics.md`). `container_op` is `createContainer` (op 19), which makes a
    /// container whatever the flags; the flags of the other create ops give the mode, and
    /// container flags there make a plain persistent node. `ttl` is the TTL field of
    /// `createTTL` (op 21), `None` for the other ops (ZooKeeper then uses -1).
    ///
    /// - A TTL mode needs a TTL in `1..=`[`crate::ttl::MAX_TTL_MS`]; without one (another
    ///   op, or 0, negative, too large) it is `BadArguments`.
    /// - Any other mode with a TTL ≥ 0 is `BadArguments`.
    /// - Any other mode with a *negative* TTL in `createTTL` is also `BadArguments` here.
    ///   ZooKeeper 3.8.0 lets it through validation and then its server process exits
    ///   (measured: the connection closes and the server is gone); we refuse it instead.
    pub fn for_request(
        flags: i32,
        container_op: bool,
        ttl: Option<i64>,
    ) -> Result<CreateMode, crate::ZkError> {
        use crate::ZkError::BadArguments;
        if container_op {
            return Ok(CreateMode::Container);
        }
        let mode = match flags {
            4 => CreateMode::Persistent,
            5 => CreateMode::PersistentWithTtl {
                ttl_ms: ttl.unwrap_or(-1),
            },
            6 => CreateMode::PersistentSequentialWithTtl {
                ttl_ms: ttl.unwrap_or(-1),
            },
            f => CreateMode::from_code(f).ok_or(BadArguments)?,
        };
        match (mode.ttl_ms(), ttl) {
            (Some(_), _) => mode.validate().map(|()| mode),
            (None, Some(_)) => Err(BadArguments),
            (None, None) => Ok(mode),
        }
    }

    /// Build from the two flags the CLI and the client use.
    pub fn from_flags(ephemeral: bool, sequential: bool) -> CreateMode {
        match (ephemeral, sequential) {
            (false, false) => CreateMode::Persistent,
            (true, false) => CreateMode::Ephemeral,
            (false, true) => CreateMode::PersistentSequential,
            (true, true) => CreateMode::EphemeralSequential,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for m in [
            CreateMode::Persistent,
            CreateMode::Ephemeral,
            CreateMode::PersistentSequential,
            CreateMode::EphemeralSequential,
            CreateMode::Container,
        ] {
            assert_eq!(CreateMode::from_code(m.code()), Some(m));
        }
        assert_eq!(CreateMode::Container.code(), 4);
        assert!(CreateMode::Container.is_container());
        assert_eq!(
            CreateMode::for_request(4, true, None),
            Ok(CreateMode::Container)
        );
        assert_eq!(
            CreateMode::for_request(4, false, None),
            Ok(CreateMode::Persistent)
        );
        assert_eq!(
            CreateMode::for_request(3, false, None),
            Ok(CreateMode::EphemeralSequential)
        );
        assert_eq!(
            CreateMode::for_request(9, false, None),
            Err(crate::ZkError::BadArguments)
        );
        assert!(!CreateMode::Container.is_ephemeral());
        assert!(!CreateMode::Container.is_sequential());
        assert!(!CreateMode::Persistent.is_container());
        assert_eq!(CreateMode::from_code(5), None);
        assert_eq!(CreateMode::PersistentWithTtl { ttl_ms: 1 }.code(), 5);
        assert_eq!(
            CreateMode::PersistentSequentialWithTtl { ttl_ms: 1 }.code(),
            6
        );
        assert_eq!(CreateMode::from_code(6), None);
        assert_eq!(
            serde_json::to_string(&CreateMode::Container).expect("serialize"),
            "\"container\""
        );
    }

    /// Each row was measured against ZooKeeper 3.8.0 with `extendedTypesEnabled` (raw
    /// `create`/`create2`/`createTTL` frames; see `tests/zk_wire.rs` for the ones CI repeats).
    #[test]
    fn ttl_requests_as_zookeeper_decides_them() {
        use crate::ZkError::BadArguments;
        let max = crate::ttl::MAX_TTL_MS;
        let ttl = |t| CreateMode::PersistentWithTtl { ttl_ms: t };
        assert_eq!(CreateMode::for_request(5, false, Some(1000)), Ok(ttl(1000)));
        assert_eq!(CreateMode::for_request(5, false, Some(max)), Ok(ttl(max)));
        for bad in [0, -1, max + 1] {
            assert_eq!(
                CreateMode::for_request(5, false, Some(bad)),
                Err(BadArguments)
            );
        }
        // A TTL mode through `create`/`create2` has no TTL.
        assert_eq!(CreateMode::for_request(5, false, None), Err(BadArguments));
        assert_eq!(
            CreateMode::for_request(6, false, Some(7)),
            Ok(CreateMode::PersistentSequentialWithTtl { ttl_ms: 7 })
        );
        // Non-TTL modes in `createTTL`.
        assert_eq!(
            CreateMode::for_request(0, false, Some(100)),
            Err(BadArguments)
        );
        assert_eq!(
            CreateMode::for_request(0, false, Some(-1)),
            Err(BadArguments)
        );
        assert_eq!(
            CreateMode::for_request(7, false, Some(10)),
            Err(BadArguments)
        );
        assert!(!ttl(5).is_sequential() && !ttl(5).is_ephemeral());
        assert_eq!(ttl(5).ephemeral_owner(42), crate::ttl::owner_marker(5));
        assert_eq!(CreateMode::Ephemeral.ephemeral_owner(42), 42);
        assert_eq!(CreateMode::Persistent.ephemeral_owner(42), 0);
        assert_eq!(
            serde_json::to_string(&ttl(5)).expect("serialize"),
            r#"{"persistent_with_ttl":{"ttl_ms":5}}"#
        );
    }
}
