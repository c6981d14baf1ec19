//! TTL nodes (`CreateMode::PersistentWithTtl`): persistent nodes the service deletes once they
//! have gone `ttl` milliseconds without a change and without children, as ZooKeeper's
//! `ContainerManager` does with `zookeeper.extendedTypesEnabled=true`.
//!
//! The pieces: the distributor keeps the index of TTL nodes ([`TtlIndex`], key
//! [`crate::keys::TTL_NODES`]); the heartbeat stage sweeps it on its timer and, for each node
//! [`expired`] by then, appends an [`crate::wire::Op::DeleteExpired`] under
//! [`crate::session::SERVICE_SESSION`]; apply checks [`expired`] again at the txn's time, so a
//! node changed or given a child after the sweep looked at it stays.

use crate::Stat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The largest TTL: ZooKeeper's `EphemeralType.TTL` keeps it in the low 40 bits of the owner
/// field (`0xFF_FFFF_FFFF` ms, about 34 years).
pub const MAX_TTL_MS: i64 = 0xff_ffff_ffff;

/// The high byte that marks an extended type in `ephemeral_owner`; TTL is extended type 0.
const EXTENDED_MASK: u64 = 0xff00_0000_0000_0000;
/// The bits between the marker and the value (the extended type number; 0 for TTL).
const TYPE_MASK: u64 = 0x00ff_ff00_0000_0000;

/// The `ephemeral_owner` stored for a TTL node (`EphemeralType.TTL.toEphemeralOwner`).
pub fn owner_marker(ttl_ms: i64) -> i64 {
    (EXTENDED_MASK | (ttl_ms as u64 & MAX_TTL_MS as u64)) as i64
}

/// The TTL of a node from its stored `ephemeral_owner`, if it is a TTL node.
pub fn of_owner(ephemeral_owner: i64) -> Option<i64> {
    let owner = ephemeral_owner as u64;
    (owner & EXTENDED_MASK == EXTENDED_MASK && owner & TYPE_MASK == 0)
        .then_some((owner & MAX_TTL_MS as u64) as i64)
}

/// ZooKeeper's `ContainerManager` rule for a TTL node: no children, and longer than its TTL
/// since it was last modified (`now - mtime > ttl`). `stat` is the stored one (with the owner
/// marker), `num_children` the node's.
pub fn expired(stat: &Stat, now_ms: i64) -> bool {
    match of_owner(stat.ephemeral_owner) {
        Some(ttl) if ttl > 0 => stat.num_children == 0 && now_ms.saturating_sub(stat.mtime) > ttl,
        _ => false,
    }
}

/// The paths of all TTL nodes, kept by the distributor for the heartbeat's sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtlIndex {
    /// Paths, sorted.
    pub paths: BTreeSet<String>,
    /// The store keeps node records in the user bucket (its objects hold the whole record,
    /// `NodeRecord::from_object`), not in the system bucket: where the sweep reads them.
    /// Written by the distributor, which knows the store's layout; absent in indexes of
    /// stores in the system layout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nodes_in_user: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_and_is_not_a_session() {
        for ttl in [1, 1000, MAX_TTL_MS] {
            let owner = owner_marker(ttl);
            assert_eq!(of_owner(owner), Some(ttl));
            assert!(!crate::is_session_owner(owner));
        }
        assert_eq!(of_owner(0), None);
        assert_eq!(of_owner(42), None);
        assert_eq!(of_owner(crate::CONTAINER_EPHEMERAL_OWNER), None);
        // ZooKeeper's value for a 5 ms TTL.
        assert_eq!(owner_marker(5), 0xff00_0000_0000_0005_u64 as i64);
    }

    #[test]
    fn expiry_needs_age_beyond_the_ttl_and_no_children() {
        let stat = Stat {
            mtime: 1_000,
            ephemeral_owner: owner_marker(500),
            ..Stat::default()
        };
        assert!(!expired(&stat, 1_500), "exactly the TTL is not yet expired");
        assert!(expired(&stat, 1_501));
        let parent = Stat {
            num_children: 1,
            ..stat
        };
        assert!(!expired(&parent, 10_000));
        let plain = Stat {
            ephemeral_owner: 0,
            ..stat
        };
        assert!(!expired(&plain, 10_000));
    }
}
