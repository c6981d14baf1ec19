//! The ZooKeeper wire-protocol gateway: unmodified ZooKeeper clients (kazoo, zkCli, Curator,
//! the Rust `zookeeper-client`) talk to the serverless pipeline.
//!
//! The gateway is a *client of the pipeline*: every ZooKeeper session is a
//! [`faaskeeper_client::Client`] session on this host's API, called in process
//! ([`faaskeeper_client::LocalService`]: no HTTP hop), every request becomes a
//! pipeline op, and every answer is what `faaskeeper-core` decided. The gateway only
//! translates frames (`faaskeeper-zk-proto`) and keeps the per-connection state ZooKeeper's
//! protocol needs (xids, session re-attach, pings, the four-letter words).

mod conn;
mod ops;
mod words;

use faaskeeper_client::{Client, LocalService};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A ZooKeeper session as the gateway keeps it across connections.
pub(crate) struct GwSession {
    pub(crate) client: Client,
    pub(crate) passwd: Vec<u8>,
    pub(crate) timeout_ms: i32,
    /// Whether the session ever left a watch: only then must direct reads wait for events
    /// (Guarantee 4), which costs a sync through the pipeline.
    pub(crate) has_watches: std::sync::atomic::AtomicBool,
    /// Where this session's frames go now: the live connection's writer, if any.
    pub(crate) out: Mutex<Option<(u64, mpsc::UnboundedSender<Vec<u8>>)>>,
}

/// Counters for the four-letter words.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) received: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) connections: AtomicU64,
}

/// The gateway: its sessions and the pipeline's API.
pub struct Gateway {
    pub(crate) api: Arc<dyn LocalService>,
    /// Where the same API is served over HTTP (reported by `conf`).
    pub(crate) api_url: String,
    pub(crate) port: u16,
    pub(crate) sessions: Mutex<HashMap<i64, Arc<GwSession>>>,
    pub(crate) stats: Stats,
    pub(crate) started: Instant,
    pub(crate) next_conn: AtomicU64,
}

impl Gateway {
    /// A gateway that opens pipeline sessions on `api` and reports `port` and `api_url` (the
    /// same API over HTTP) in `conf`.
    pub fn new(api: Arc<dyn LocalService>, api_url: String, port: u16) -> Arc<Gateway> {
        Arc::new(Gateway {
            api,
            api_url,
            port,
            sessions: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            started: Instant::now(),
            next_conn: AtomicU64::new(1),
        })
    }

    pub(crate) fn session(&self, id: i64) -> Option<Arc<GwSession>> {
        self.sessions.lock().ok()?.get(&id).cloned()
    }

    pub(crate) fn session_count(&self) -> usize {
        self.sessions.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub(crate) fn forget(&self, id: i64) {
        if let Ok(mut m) = self.sessions.lock() {
            m.remove(&id);
        }
    }
}

/// Accept ZooKeeper connections forever.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "zk accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        gw.stats.connections.fetch_add(1, Ordering::Relaxed);
        let gw = gw.clone();
        tokio::spawn(async move {
            if let Err(e) = conn::handle(gw, stream).await {
                tracing::debug!(%peer, error = %e, "zk connection closed");
            }
        });
    }
}
