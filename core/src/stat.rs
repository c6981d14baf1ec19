use serde::{Deserialize, Serialize};

/// A znode's metadata, field for field ZooKeeper's `Stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last data change.
    pub mzxid: i64,
    /// Creation time, milliseconds since the Unix epoch.
    pub ctime: i64,
    /// Last data change time, milliseconds since the Unix epoch.
    pub mtime: i64,
    /// Number of data changes.
    pub version: i32,
    /// Number of changes to the children.
    pub cversion: i32,
    /// Number of ACL changes.
    pub aversion: i32,
    /// Owning session of an ephemeral node, 0 otherwise.
    pub ephemeral_owner: i64,
    /// Length of the data.
    pub data_length: i32,
    /// Number of children.
    pub num_children: i32,
    /// zxid of the last change to the children.
    pub pzxid: i64,
}

impl Stat {
    /// The newest change this stat reflects (create, data or children): a reader holding it
    /// has observed every txn up to this zxid that touched the node.
    pub fn newest_zxid(&self) -> i64 {
        self.czxid.max(self.mzxid).max(self.pzxid)
    }
}
