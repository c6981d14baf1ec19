use serde::{Deserialize, Serialize};

/// ZooKeeper 3.8 result codes (`KeeperException.Code`) a client can observe.
///
/// These are *values*: a `NoNode` answer is a correct outcome, not a failure of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ZkError {
    /// A server-side error not covered by another code (-1).
    #[error("system error")]
    SystemError,
    /// Reported for the ops after the failing one of a failed multi (-2).
    #[error("runtime inconsistency")]
    RuntimeInconsistency,
    /// The service could not be reached or did not answer (-4).
    #[error("connection loss")]
    ConnectionLoss,
    /// The request could not be decoded (-5).
    #[error("marshalling error")]
    MarshallingError,
    /// The operation is not implemented (-6).
    #[error("unimplemented")]
    Unimplemented,
    /// The operation timed out (-7).
    #[error("operation timeout")]
    OperationTimeout,
    /// Invalid arguments: bad path, oversize data, bad mode (-8).
    #[error("bad arguments")]
    BadArguments,
    /// The node (or its parent, for create) does not exist (-101).
    #[error("no node")]
    NoNode,
    /// Not authorised (-102).
    #[error("not authenticated")]
    NoAuth,
    /// The expected version does not match the node's version (-103).
    #[error("bad version")]
    BadVersion,
    /// Ephemeral nodes may not have children (-108).
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    /// The node already exists (-110).
    #[error("node exists")]
    NodeExists,
    /// The ACL is empty, names an unknown scheme, holds a malformed id, or uses `auth`
    /// without authenticated ids (-114).
    #[error("invalid ACL")]
    InvalidAcl,
    /// `addAuth` with an unknown scheme (-115); ZooKeeper then closes the connection.
    #[error("authentication failed")]
    AuthFailed,
    /// The node has children (-111).
    #[error("directory not empty")]
    NotEmpty,
    /// The session is closed or has expired (-112).
    #[error("session expired")]
    SessionExpired,
    /// No watch of that kind is registered (-121).
    #[error("no watcher")]
    NoWatcher,
}

impl ZkError {
    /// The numeric code ZooKeeper sends on the wire.
    pub fn code(self) -> i32 {
        match self {
            ZkError::SystemError => -1,
            ZkError::RuntimeInconsistency => -2,
            ZkError::ConnectionLoss => -4,
            ZkError::MarshallingError => -5,
            ZkError::Unimplemented => -6,
            ZkError::OperationTimeout => -7,
            ZkError::BadArguments => -8,
            ZkError::NoNode => -101,
            ZkError::NoAuth => -102,
            ZkError::BadVersion => -103,
            ZkError::NoChildrenForEphemerals => -108,
            ZkError::NodeExists => -110,
            ZkError::NotEmpty => -111,
            ZkError::InvalidAcl => -114,
            ZkError::AuthFailed => -115,
            ZkError::SessionExpired => -112,
            ZkError::NoWatcher => -121,
        }
    }

    /// The inverse of [`ZkError::code`].
    pub fn from_code(code: i32) -> Option<ZkError> {
        Some(match code {
            -1 => ZkError::SystemError,
            -2 => ZkError::RuntimeInconsistency,
            -4 => ZkError::ConnectionLoss,
            -5 => ZkError::MarshallingError,
            -6 => ZkError::Unimplemented,
            -7 => ZkError::OperationTimeout,
            -8 => ZkError::BadArguments,
            -101 => ZkError::NoNode,
            -102 => ZkError::NoAuth,
            -103 => ZkError::BadVersion,
            -108 => ZkError::NoChildrenForEphemerals,
            -110 => ZkError::NodeExists,
            -111 => ZkError::NotEmpty,
            -114 => ZkError::InvalidAcl,
            -115 => ZkError::AuthFailed,
            -112 => ZkError::SessionExpired,
            -121 => ZkError::NoWatcher,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for e in [
            ZkError::SystemError,
            ZkError::BadArguments,
            ZkError::NoNode,
            ZkError::BadVersion,
            ZkError::NoChildrenForEphemerals,
            ZkError::NodeExists,
            ZkError::NotEmpty,
            ZkError::SessionExpired,
            ZkError::NoAuth,
            ZkError::InvalidAcl,
            ZkError::AuthFailed,
        ] {
            assert_eq!(ZkError::from_code(e.code()), Some(e));
        }
        assert_eq!(ZkError::from_code(12345), None);
    }
}
