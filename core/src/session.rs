//! Session liveness, shared by the distributor (which keeps the index of open sessions) and
//! the heartbeat stage (which expires the ones whose clients stopped pinging). Guarantee 5:
//! ephemeral nodes live exactly as long as their session.

use crate::{SessionId, Zxid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `seq` the heartbeat stage uses for the `close_session` that expires a session: above
/// any client seq, so it is never taken for a redelivery of a client request, and equal for
/// every expiry of that session, so repeated sweeps apply it once.
pub const EXPIRE_SEQ: i64 = i64::MAX;

/// The session id of requests the service makes itself (deleting expired TTL nodes, as
/// ZooKeeper's `ContainerManager` does with session 0). No client session ever has it.
pub const SERVICE_SESSION: SessionId = 0;

/// One open session in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    /// Negotiated timeout.
    pub timeout_ms: i32,
    /// When it was opened (txn time): the first heartbeat is implied.
    pub opened_ms: i64,
    /// zxid of the open.
    pub zxid: Zxid,
}

/// The index of open sessions (`sessions/live`), written only by the distributor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSessions {
    /// By session id.
    pub sessions: BTreeMap<SessionId, LiveSession>,
}

/// Sessions whose last sign of life (`alive`, ms; the open time if they never pinged) is
/// older than their timeout at `now_ms`.
pub fn lapsed(
    live: &LiveSessions,
    alive: &BTreeMap<SessionId, i64>,
    now_ms: i64,
) -> Vec<SessionId> {
    live.sessions
        .iter()
        .filter(|(id, s)| {
            let last = alive
                .get(id)
                .copied()
                .unwrap_or(s.opened_ms)
                .max(s.opened_ms);
            now_ms.saturating_sub(last) > i64::from(s.timeout_ms)
        })
        .map(|(id, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_silent_sessions_lapse() {
        let mut live = LiveSessions::default();
        for (id, opened) in [(1, 0), (2, 0), (3, 9_000)] {
            live.sessions.insert(
                id,
                LiveSession {
                    timeout_ms: 4_000,
                    opened_ms: opened,
                    zxid: 1,
                },
            );
        }
        let alive: BTreeMap<_, _> = [(2, 7_000)].into_iter().collect();
        assert_eq!(lapsed(&live, &alive, 10_000), vec![1], "2 pinged, 3 is new");
        assert_eq!(lapsed(&live, &alive, 11_001), vec![1, 2]);
        assert!(
            lapsed(&live, &alive, 4_000).is_empty(),
            "exactly the timeout is not late"
        );
    }
}
