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
            CreateMode::PersistentSequential | CreateMode::EphemeralSequential
        )
    }

    /// ZooKeeper's wire number for the mode.
    pub fn code(self) -> i32 {
        match self {
            CreateMode::Persistent => 0,
            CreateMode::Ephemeral => 1,
            CreateMode::PersistentSequential => 2,
            CreateMode::EphemeralSequential => 3,
            CreateMode::Container => 4,
        }
    }

    /// The mode for a ZooKeeper wire number, if it is one we support. The TTL modes
    /// (5 `PERSISTENT_WITH_TTL`, 6 `PERSISTENT_SEQUENTIAL_WITH_TTL`) give `None`: ZooKeeper 3.8
    /// answers them `Unimplemented` unless `zookeeper.extendedTypesEnabled` is set, and we
    /// behave as its default configuration (Guarantee 6).
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

    /// The mode of a ZooKeeper create request, as ZooKeeper 3.8's server decides it:
    /// `createContainer` (op 19) makes a container; the flags of the other create ops give
    /// the mode, container flags there make a plain persistent node; TTL flags (5, 6) are
    /// `Unimplemented` (ZooKeeper's answer without `extendedTypesEnabled`, its default).
    pub fn for_request(flags: i32, container_op: bool) -> Result<CreateMode, crate::ZkError> {
        if container_op {
            return Ok(CreateMode::Container);
        }
        match (CreateMode::from_code(flags), flags) {
            (Some(CreateMode::Container), _) => Ok(CreateMode::Persistent),
            (Some(mode), _) => Ok(mode),
            (None, 5 | 6) => Err(crate::ZkError::Unimplemented),
            (None, _) => Err(crate::ZkError::BadArguments),
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
    fn codes_round_trip_and_ttl_stays_unsupported() {
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
        assert_eq!(CreateMode::for_request(4, true), Ok(CreateMode::Container));
        assert_eq!(
            CreateMode::for_request(4, false),
            Ok(CreateMode::Persistent)
        );
        assert_eq!(
            CreateMode::for_request(3, false),
            Ok(CreateMode::EphemeralSequential)
        );
        assert_eq!(
            CreateMode::for_request(5, false),
            Err(crate::ZkError::Unimplemented)
        );
        assert_eq!(
            CreateMode::for_request(9, false),
            Err(crate::ZkError::BadArguments)
        );
        assert!(!CreateMode::Container.is_ephemeral());
        assert!(!CreateMode::Container.is_sequential());
        assert!(!CreateMode::Persistent.is_container());
        assert_eq!(CreateMode::from_code(5), None);
        assert_eq!(CreateMode::from_code(6), None);
        assert_eq!(
            serde_json::to_string(&CreateMode::Container).expect("serialize"),
            "\"container\""
        );
    }
}
