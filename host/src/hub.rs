//! Session channels of the bundled host: where the watch stage delivers each session's
//! results and watch events, and where clients long-poll for them (`docs/api.md`).
//!
//! Events are kept in arrival order, numbered per session, until the client acknowledges them
//! by polling with `after` past their number.

use faaskeeper_core::SessionId;
use faaskeeper_core::wire::{Delivery, DeliveryBatch, DeliveryReceipt, SessionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Authority under which the watch stage reaches session channels in the bundled host.
pub const SESSIONS_AUTHORITY: &str = "sessions.faaskeeper.internal";
/// Events a session may leave unacknowledged before its channel is dropped.
const MAX_QUEUED: usize = 100_000;

#[derive(Default)]
struct Channel {
    queue: Mutex<ChannelState>,
    notify: Notify,
}

#[derive(Default)]
struct ChannelState {
    next: u64,
    events: VecDeque<(u64, SessionEvent)>,
}

/// All session channels of this host.
#[derive(Default)]
pub struct SessionHub {
    channels: Mutex<HashMap<SessionId, Arc<Channel>>>,
}

impl SessionHub {
    /// The delivery address the watch stage uses for `session`.
    pub fn notify_url(session: SessionId) -> String {
        format!("http://{SESSIONS_AUTHORITY}/v1/sessions/{session}/deliver")
    }

    fn channel(&self, session: SessionId) -> Option<Arc<Channel>> {
        self.channels
            .lock()
            .ok()
            .and_then(|m| m.get(&session).cloned())
    }

    /// Open a channel for a new session.
    pub fn register(&self, session: SessionId) {
        if let Ok(mut m) = self.channels.lock() {
            m.entry(session).or_default();
        }
    }

    /// Drop a session's channel.
    pub fn remove(&self, session: SessionId) {
        if let Ok(mut m) = self.channels.lock()
            && let Some(c) = m.remove(&session)
        {
            c.notify.notify_waiters();
        }
    }

    /// Whether the session has a channel here.
    pub fn contains(&self, session: SessionId) -> bool {
        self.channel(session).is_some()
    }

    /// Queue a delivery; `false` if the session has no channel.
    pub fn deliver(&self, d: Delivery) -> bool {
        let Some(c) = self.channel(d.session) else {
            return false;
        };
        let overflow = {
            let Ok(mut q) = c.queue.lock() else {
                return false;
            };
            for e in d.events {
                let n = q.next;
                q.next += 1;
                q.events.push_back((n, e));
            }
            q.events.len() > MAX_QUEUED
        };
        if overflow {
            tracing::warn!(
                session = d.session,
                "session stopped polling; channel dropped"
            );
            self.remove(d.session);
            return false;
        }
        c.notify.notify_waiters();
        true
    }

    /// Queue a batch of deliveries (the watch stage's POST to
    /// [`HUB_BATCH_PATH`](faaskeeper_core::wire::HUB_BATCH_PATH)): the status and answer. A
    /// batch in which any delivery names an address other than its session's channel here is
    /// refused whole, before anything is queued.
    pub fn deliver_batch(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let refuse = |msg: &str| {
            (
                400,
                serde_json::json!({ "error": msg }).to_string().into_bytes(),
            )
        };
        let Ok(batch) = serde_json::from_slice::<DeliveryBatch>(body) else {
            return refuse("malformed delivery batch");
        };
        if let Some(d) = batch
            .deliveries
            .iter()
            .find(|d| d.notify != SessionHub::notify_url(d.session))
        {
            return refuse(&format!(
                "delivery for session {} names another address",
                d.session
            ));
        }
        let mut receipt = DeliveryReceipt::default();
        for d in batch.deliveries {
            let session = d.session;
            if self.deliver(d) {
                receipt.delivered += 1;
            } else {
                receipt.gone.push(session);
            }
        }
        match serde_json::to_vec(&receipt) {
            Ok(bytes) => (200, bytes),
            Err(e) => (500, e.to_string().into_bytes()),
        }
    }

    /// Events numbered `after` or later; waits up to `wait` for one. `None`: no such session.
    pub async fn poll(
        &self,
        session: SessionId,
        after: u64,
        wait: Duration,
    ) -> Option<Vec<(u64, SessionEvent)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let c = self.channel(session)?;
            let notified = c.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut q = c.queue.lock().ok()?;
                while q.events.front().is_some_and(|(n, _)| *n < after) {
                    q.events.pop_front();
                }
                if !q.events.is_empty() {
                    return Some(q.events.iter().cloned().collect());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Some(Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faaskeeper_core::wire::{OpResult, SessionEvent};

    fn delivery(session: SessionId, notify: String) -> Delivery {
        Delivery {
            session,
            notify,
            events: vec![SessionEvent::Result {
                seq: 1,
                zxid: 7,
                result: OpResult::SessionClosed,
            }],
        }
    }

    fn body(deliveries: Vec<Delivery>) -> Vec<u8> {
        serde_json::to_vec(&DeliveryBatch { deliveries }).expect("encode")
    }

    #[tokio::test]
    async fn a_batch_reaches_every_open_channel_and_names_the_gone() {
        let hub = SessionHub::default();
        hub.register(1);
        hub.register(2);
        let (status, answer) = hub.deliver_batch(&body(vec![
            delivery(1, SessionHub::notify_url(1)),
            delivery(3, SessionHub::notify_url(3)),
            delivery(2, SessionHub::notify_url(2)),
        ]));
        assert_eq!(status, 200);
        let receipt: DeliveryReceipt = serde_json::from_slice(&answer).expect("receipt");
        assert_eq!(
            receipt,
            DeliveryReceipt {
                delivered: 2,
                gone: vec![3]
            }
        );
        for s in [1, 2] {
            let got = hub.poll(s, 0, Duration::ZERO).await.expect("channel");
            assert_eq!(got.len(), 1, "session {s}");
        }
    }

    #[tokio::test]
    async fn a_bad_batch_queues_nothing() {
        let hub = SessionHub::default();
        hub.register(1);
        let mismatched = body(vec![
            delivery(1, SessionHub::notify_url(1)),
            delivery(1, SessionHub::notify_url(2)),
        ]);
        for bad in [
            mismatched.as_slice(),
            b"{\"deliveries\":7}",
            b"\xff\x00garbage",
        ] {
            let (status, _) = hub.deliver_batch(bad);
            assert_eq!(status, 400);
        }
        let got = hub.poll(1, 0, Duration::ZERO).await.expect("channel");
        assert!(got.is_empty(), "{got:?}");
    }
}
