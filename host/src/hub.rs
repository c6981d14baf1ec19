//! Session channels of the bundled host: where the watch stage delivers each session's
//! results and watch events, and where clients long-poll for them (`docs/api.md`).
//!
//! Events are kept in arrival order, numbered per session, until the client acknowledges them
//! by polling with `after` past their number.

use faaskeeper_core::SessionId;
use faaskeeper_core::wire::{
    Delivery, DeliveryBatch, DeliveryReceipt, HUB_BATCH_PATH, SessionEvent,
};
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

/// The path of `session`'s delivery address.
fn deliver_path(session: SessionId) -> String {
    format!("/v1/sessions/{session}/deliver")
}

/// All session channels of this host.
#[derive(Default)]
pub struct SessionHub {
    channels: Mutex<HashMap<SessionId, Arc<Channel>>>,
}

impl SessionHub {
    /// The delivery address the watch stage uses for `session`.
    pub fn notify_url(session: SessionId) -> String {
        format!("http://{SESSIONS_AUTHORITY}{}", deliver_path(session))
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

    /// Take a watch-stage POST to this hub: one session's delivery at its own address
    /// (`/v1/sessions/<id>/deliver`, answered 410 if the session has no channel here), or a
    /// batch at [`HUB_BATCH_PATH`] (answered with a [`DeliveryReceipt`]). A delivery whose
    /// session is not the one its address names is refused, and a batch holding one is
    /// refused whole, before anything is queued. Returns the status and the answer.
    pub fn receive(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let refuse = |status: u16, msg: &str| {
            (
                status,
                serde_json::json!({ "error": msg }).to_string().into_bytes(),
            )
        };
        let deliveries = if path == HUB_BATCH_PATH {
            match serde_json::from_slice::<DeliveryBatch>(body) {
                Ok(batch) => batch.deliveries,
                Err(_) => return refuse(400, "malformed delivery batch"),
            }
        } else {
            match serde_json::from_slice::<Delivery>(body) {
                Ok(d) if path == deliver_path(d.session) => vec![d],
                Ok(_) => return refuse(400, "session mismatch"),
                Err(_) => return refuse(400, "malformed delivery"),
            }
        };
        if let Some(d) = deliveries
            .iter()
            .find(|d| d.notify != SessionHub::notify_url(d.session))
        {
            return refuse(
                400,
                &format!("delivery for session {} names another address", d.session),
            );
        }
        let mut receipt = DeliveryReceipt::default();
        for d in deliveries {
            let session = d.session;
            if self.deliver(d) {
                receipt.delivered += 1;
            } else {
                receipt.gone.push(session);
            }
        }
        if path != HUB_BATCH_PATH && !receipt.gone.is_empty() {
            return refuse(410, "no such session channel");
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
            fallback: None,
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
        let (status, answer) = hub.receive(
            HUB_BATCH_PATH,
            &body(vec![
                delivery(1, SessionHub::notify_url(1)),
                delivery(3, SessionHub::notify_url(3)),
                delivery(2, SessionHub::notify_url(2)),
            ]),
        );
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
    async fn one_session_at_its_own_address() {
        let hub = SessionHub::default();
        hub.register(1);
        let one = serde_json::to_vec(&delivery(1, SessionHub::notify_url(1))).expect("encode");
        assert_eq!(hub.receive("/v1/sessions/1/deliver", &one).0, 200);
        assert_eq!(hub.receive("/v1/sessions/2/deliver", &one).0, 400);
        let gone = serde_json::to_vec(&delivery(5, SessionHub::notify_url(5))).expect("encode");
        assert_eq!(hub.receive("/v1/sessions/5/deliver", &gone).0, 410);
        let got = hub.poll(1, 0, Duration::ZERO).await.expect("channel");
        assert_eq!(got.len(), 1);
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
            let (status, _) = hub.receive(HUB_BATCH_PATH, bad);
            assert_eq!(status, 400);
        }
        let got = hub.poll(1, 0, Duration::ZERO).await.expect("channel");
        assert!(got.is_empty(), "{got:?}");
    }
}
