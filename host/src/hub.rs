//! Session channels of the bundled host: where the watch stage delivers each session's
//! results and watch events, and where clients long-poll for them (`docs/api.md`).
//!
//! Events are kept in arrival order, numbered per session, until the client acknowledges them
//! by polling with `after` past their number.

use faaskeeper_core::SessionId;
use faaskeeper_core::wire::{Delivery, SessionEvent};
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
