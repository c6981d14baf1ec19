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
}

impl CreateMode {
    /// Whether the node is tied to its session.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
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
        }
    }

    /// The mode for a ZooKeeper wire number, if it is one we support.
    pub fn from_code(code: i32) -> Option<CreateMode> {
        Some(match code {
            0 => CreateMode::Persistent,
            1 => CreateMode::Ephemeral,
            2 => CreateMode::PersistentSequential,
            3 => CreateMode::EphemeralSequential,
            _ => return None,
        })
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
