//! One TCP connection: the four-letter words, the connect handshake (new session or
//! re-attach), then requests answered in order while watch events are interleaved by the
//! session's writer channel.

use super::{Gateway, GwSession, ops, words};
use faaskeeper_client::{Client, Options};
use faaskeeper_zk_proto::{ConnectRequest, ConnectResponse, FrameDecoder, four_letter_word, frame};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long a fresh connection may take to send its connect request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_passwd() -> Vec<u8> {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::time::Instant::now());
    let b = RandomState::new().hash_one(a);
    [a.to_be_bytes(), b.to_be_bytes()].concat()
}

/// What ZooKeeper answers to a connect for a session it does not know: timeout 0,
/// session 0, a zero password. Clients treat it as session expiry.
fn expired_response() -> ConnectResponse {
    ConnectResponse {
        protocol_version: 0,
        timeout_ms: 0,
        session_id: 0,
        passwd: vec![0; 16],
        read_only: false,
    }
}

async fn establish(
    gw: &Arc<Gateway>,
    req: &ConnectRequest,
) -> Option<(Arc<GwSession>, ConnectResponse)> {
    if req.session_id != 0 {
        let s = gw.session(req.session_id)?;
        if s.passwd != req.passwd || s.client.is_expired() {
            return None;
        }
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: s.timeout_ms,
            session_id: req.session_id,
            passwd: s.passwd.clone(),
            read_only: false,
        };
        return Some((s, resp));
    }
    // The gateway relays the ZooKeeper client's own pings; a client that goes silent (or
    // away) lets its session lapse, and the heartbeat stage expires it.
    let options = Options {
        session_timeout_ms: req.timeout_ms,
        auto_heartbeat: false,
        ..Options::default()
    };
    let client = match Client::connect_local(gw.api.clone(), options).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "zk gateway could not open a pipeline session");
            return None;
        }
    };
    let id = client.session_id();
    let timeout_ms = client.session_timeout_ms();
    let session = Arc::new(GwSession {
        client,
        passwd: random_passwd(),
        timeout_ms,
        has_watches: std::sync::atomic::AtomicBool::new(false),
        out: std::sync::Mutex::new(None),
    });
    // Events go to whichever connection the session has now; the callback runs before any
    // later result is handed out, which keeps ZooKeeper's event-before-data order.
    let weak: Weak<GwSession> = Arc::downgrade(&session);
    session.client.on_watch_event(Box::new(move |ev| {
        if let Some(s) = weak.upgrade()
            && let Some((_, tx)) = lock(&s.out).as_ref()
        {
            let _ = tx.send(ops::watch_frame(ev));
        }
    }));
    let gw_weak = Arc::downgrade(gw);
    session.client.on_expired(Box::new(move || {
        if let Some(gw) = gw_weak.upgrade() {
            gw.forget(id);
        }
    }));
    if let Ok(mut m) = gw.sessions.lock() {
        m.insert(id, session.clone());
    }
    let resp = ConnectResponse {
        protocol_version: 0,
        timeout_ms,
        session_id: id,
        passwd: session.passwd.clone(),
        read_only: false,
    };
    Some((session, resp))
}

/// After a connection ends the session stays for a re-attach; if none comes, its pings stop
/// and the heartbeat stage expires it (its ephemerals go, as with ZooKeeper's expiry).
fn detach(session: &Arc<GwSession>, conn_id: u64) {
    let mut out = lock(&session.out);
    if matches!(out.as_ref(), Some((id, _)) if *id == conn_id) {
        *out = None;
    }
}

/// Relay liveness to the heartbeat stage: any frame from the client counts, as in
/// ZooKeeper, but at most every third of the timeout.
async fn ping_if_due(session: &GwSession, last: &mut std::time::Instant) {
    let every = Duration::from_millis((session.timeout_ms.max(300) / 3) as u64);
    if last.elapsed() >= every {
        *last = std::time::Instant::now();
        if let Err(e) = session.client.heartbeat().await {
            tracing::debug!(error = %e, "heartbeat relay failed");
        }
    }
}

pub(crate) async fn handle(gw: Arc<Gateway>, stream: TcpStream) -> anyhow::Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    let mut first = [0u8; 4];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, rd.read_exact(&mut first)).await??;
    if let Some(word) = four_letter_word(&first) {
        let text = words::answer(&gw, word);
        wr.write_all(text.as_bytes()).await?;
        wr.shutdown().await?;
        return Ok(());
    }
    let mut decoder = FrameDecoder::for_requests();
    decoder.push(&first);
    let mut buf = vec![0u8; 64 * 1024];
    let payload = loop {
        if let Some(f) = decoder.next_frame()? {
            break f;
        }
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, rd.read(&mut buf)).await??;
        if n == 0 {
            return Ok(());
        }
        decoder.push(&buf[..n]);
    };
    let connect = ConnectRequest::decode(&payload)?;

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let stats_gw = gw.clone();
    let writer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if wr.write_all(&frame(&p)).await.is_err() {
                break;
            }
            stats_gw.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        let _ = wr.shutdown().await;
    });

    let Some((session, resp)) = establish(&gw, &connect).await else {
        let _ = tx.send(expired_response().encode());
        drop(tx);
        let _ = writer.await;
        return Ok(());
    };
    let conn_id = gw.next_conn.fetch_add(1, Ordering::Relaxed);
    {
        // Hand the session to this connection before answering, so that no event is lost.
        let mut out = lock(&session.out);
        let _ = tx.send(resp.encode());
        *out = Some((conn_id, tx.clone()));
    }

    // ZooKeeper closes a connection that stays silent for the session timeout; clients ping
    // at a third of it.
    let idle = Duration::from_millis(session.timeout_ms.max(1) as u64);
    // Ping at once on (re-)attach: a session that was silent a while should not lapse now.
    let mut last_ping = std::time::Instant::now()
        .checked_sub(Duration::from_secs(3600))
        .unwrap_or_else(std::time::Instant::now);
    ping_if_due(&session, &mut last_ping).await;
    let outcome: anyhow::Result<()> = 'conn: loop {
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => break 'conn Err(e.into()),
            };
            gw.stats.received.fetch_add(1, Ordering::Relaxed);
            ping_if_due(&session, &mut last_ping).await;
            match ops::handle(&gw, &session, &payload).await {
                ops::Reply::Send(p) => {
                    let _ = tx.send(p);
                }
                ops::Reply::SendAndClose(p) => {
                    let _ = tx.send(p);
                    break 'conn Ok(());
                }
                ops::Reply::Close => break 'conn Ok(()),
            }
        }
        let n = match tokio::time::timeout(idle, rd.read(&mut buf)).await {
            Err(_) => break Ok(()),
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => break Err(e.into()),
        };
        decoder.push(&buf[..n]);
    };
    detach(&session, conn_id);
    drop(tx);
    let _ = writer.await;
    outcome
}
