//! The host on AWS: the stages' queues on SQS (`docs/aws.md`).
//!
//! - [`SqsOutbound`] turns the watch stage's POSTs to `http://queues.faaskeeper.internal/<queue>`
//!   into SQS sends to that session's FIFO queue (one message group per session, so its
//!   events stay in zxid order, Guarantee 4), and, where the distributor runs elsewhere (a
//!   Lambda function), the writer's wake-up of `distributor.spin.internal` into a message on
//!   the distributor queue.
//! - [`WriterQueue`] takes messages of the writer queue ([`WriterMessage`]: write batches and
//!   pings), appends the batches through the writer stage, and tells which messages failed.
//!   The long-running poller ([`WriterQueue::run_poller`], `faaskeeper serve --backend aws`)
//!   and the Lambda handler ([`lambda`], run by the `bootstrap` binary of `host/lambda`) both
//!   use it. A message is deleted only after the writer's append succeeded, or if it can
//!   never succeed (its body does not decode); a redelivered one is harmless, because the
//!   distributor answers a `(session, seq)` it has seen with the stored result instead of
//!   applying it again.
//! - [`event_source`] does what Lambda's SQS event source mapping does, to run the Lambda
//!   handler in this process (`faaskeeper cost --measure --lambda`).

pub mod event_source;
pub mod lambda;

use crate::outbound::Outbound;
use crate::runtime::{Runtime, StageName};
use bytes::Bytes;
use faaskeeper_backend_aws::{NOTIFY_AUTHORITY, QueueError, Queues, Received};
use faaskeeper_core::SessionId;
use faaskeeper_core::queue::WriterMessage;
use faaskeeper_core::wire::{Delivery, OpResult, Request, SessionEvent, Submission};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Stage authority of the distributor, as the writer calls it.
const DISTRIBUTOR_AUTHORITY: &str = "distributor.spin.internal";

/// SQS routes of the stages.
pub struct SqsOutbound {
    queues: Queues,
    /// Send the writer's distributor wake-ups to the distributor queue (Lambda) instead of
    /// running the distributor in this process (the poller).
    distributor_by_queue: bool,
    /// Deliver to clients' own listeners too ([`SqsOutbound::with_direct_results`]).
    direct_results: bool,
}

impl SqsOutbound {
    /// Routes over `queues`; `distributor_by_queue` as in the Lambda functions.
    pub fn new(queues: Queues, distributor_by_queue: bool) -> SqsOutbound {
        SqsOutbound {
            queues,
            distributor_by_queue,
            direct_results: false,
        }
    }

    /// Also carry the watch stage's POSTs to a client's own listener: an address
    /// `http://<ip>:<port>/v1/sessions/<id>/<secret>/deliver` that a session opened with
    /// (its queue named as the fallback). A result then costs no SQS request; the listener
    /// must be reachable from here. Only IP addresses (not link-local ones, where cloud
    /// metadata services answer) and only a session's own deliveries at its own path are
    /// sent, nothing else on the network.
    pub fn with_direct_results(mut self, on: bool) -> SqsOutbound {
        self.direct_results = on;
        self
    }
}

/// How long a POST to a client's listener may take to connect, and to be answered: a
/// listener that is down or unreachable costs the batch about this once, after which the
/// session's deliveries go to its queue.
/// 1.5 s: long enough for one retry of a lost connection request (Linux retries after 1 s).
const DIRECT_CONNECT: Duration = Duration::from_millis(1_500);
const DIRECT_ANSWER: Duration = Duration::from_millis(2_500);
/// Most of a listener's answer read (only its status counts).
const DIRECT_ANSWER_MAX: usize = 64 * 1024;

/// Whether `host` (a URL's host) is an IP literal: the only kind of address of a client's
/// listener this host delivers to.
fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
}

/// The socket address of a client's listener named by `authority` (`ip:port`, `[ip6]:port`,
/// or an IP alone: port 80); `None` for anything else, including link-local, unspecified,
/// multicast and broadcast addresses.
fn listener_address(authority: &str) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, SocketAddr};
    let addr = match authority.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => SocketAddr::new(
            authority
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()?,
            80,
        ),
    };
    let refused_v4 = |ip: std::net::Ipv4Addr| {
        ip.is_link_local() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast()
    };
    let refused = match addr.ip() {
        IpAddr::V4(ip) => refused_v4(ip),
        // An IPv4 address written as IPv6 is judged as what it is.
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => refused_v4(v4),
            None => {
                ip.is_unicast_link_local()
                    || ip.is_unspecified()
                    || ip.is_multicast()
                    // fd00:ec2::/32: the EC2 instance metadata service's IPv6 address.
                    || ip.segments()[..2] == [0xfd00, 0x0ec2]
            }
        },
    };
    (!refused).then_some(addr)
}

/// Whether `path` is the listener path (`wire::listener_path`) of the session `body` is a
/// delivery for.
fn direct_path_fits(path: &str, body: &[u8]) -> bool {
    serde_json::from_slice::<Delivery>(body)
        .is_ok_and(|d| faaskeeper_core::wire::is_listener_path(path, d.session))
}

/// POST `body` to a client's listener at `authority` + `path`; failures are 5xx answers,
/// so that the watch stage retries and then falls back to the session's queue.
async fn post_direct(authority: &str, path: &str, body: Bytes) -> (u16, Bytes) {
    use http_body_util::{BodyExt, Full, Limited};
    let Some(addr) = listener_address(authority) else {
        return answer(400, "not an address of a client's listener");
    };
    let exchange = async {
        let stream = tokio::time::timeout(DIRECT_CONNECT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let request = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), DIRECT_ANSWER_MAX)
            .collect()
            .await
            .map_err(|e| format!("answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    match tokio::time::timeout(DIRECT_ANSWER, exchange).await {
        Ok(Ok(answered)) => answered,
        Ok(Err(e)) => answer(502, &format!("client listener {authority}: {e}")),
        Err(_) => answer(504, &format!("client listener {authority}: no answer")),
    }
}

fn answer(status: u16, message: &str) -> (u16, Bytes) {
    (
        status,
        Bytes::from(serde_json::json!({ "error": message }).to_string()),
    )
}

/// sha256 of `body` in hex: the FIFO deduplication id of a delivery, so that a redelivered
/// batch is dropped by SQS within five minutes (and by the client after that).
fn dedup_id(body: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[async_trait::async_trait]
impl Outbound for SqsOutbound {
    fn handles(&self, host: &str) -> bool {
        host == NOTIFY_AUTHORITY
            || (self.distributor_by_queue && host == DISTRIBUTOR_AUTHORITY)
            || (self.direct_results && is_ip_literal(host))
    }

    async fn send(&self, authority: &str, path: &str, body: Bytes) -> (u16, Bytes) {
        if authority != NOTIFY_AUTHORITY && authority != DISTRIBUTOR_AUTHORITY {
            if !direct_path_fits(path, &body) {
                return answer(400, "not a session's delivery at its listener's path");
            }
            return post_direct(authority, path, body).await;
        }
        if authority == DISTRIBUTOR_AUTHORITY {
            let queue = self.queues.names().distributor();
            return match self.queues.send(&queue, b"{}", None, None).await {
                Ok(()) => (202, Bytes::from_static(b"{\"scheduled\":true}")),
                Err(e) => answer(503, &e.to_string()),
            };
        }
        let queue = path.trim_start_matches('/');
        let Some(session) = self.queues.names().session_of(queue) else {
            return answer(400, "not a session queue of this deployment");
        };
        match serde_json::from_slice::<Delivery>(&body) {
            Ok(d) if d.session == session => {}
            Ok(_) => return answer(400, "session mismatch"),
            Err(_) => return answer(400, "malformed delivery"),
        }
        let group = session.to_string();
        match self
            .queues
            .send(queue, &body, Some(&group), Some(&dedup_id(&body)))
            .await
        {
            Ok(()) => (200, Bytes::from_static(b"{}")),
            // The client closed its session and deleted its queue.
            Err(QueueError::NoSuchQueue(_)) => answer(410, "no such session queue"),
            Err(e) => answer(503, &e.to_string()),
        }
    }
}

/// One message of the writer queue, as SQS or a Lambda event hands it over.
#[derive(Debug, Clone)]
pub struct QueueRecord {
    /// SQS's message id (Lambda's `messageId`, the id a partial batch failure names).
    pub id: String,
    /// The body, or why it could not be read (a spilled body S3 did not give back).
    pub body: Result<Vec<u8>, QueueError>,
    /// The message group (the session) on a FIFO queue.
    pub group: Option<String>,
}

impl From<&Received> for QueueRecord {
    fn from(r: &Received) -> Self {
        QueueRecord {
            id: r.message_id.clone(),
            body: r.body.clone(),
            group: r.group.clone(),
        }
    }
}

/// The writer queue's consumer: runs the writer (and the heartbeat's `/ping`) on its messages.
pub struct WriterQueue {
    rt: Arc<Runtime>,
    queues: Queues,
}

impl WriterQueue {
    /// A consumer running the stages of `rt`, answering rejections on `queues`.
    pub fn new(rt: Arc<Runtime>, queues: Queues) -> WriterQueue {
        WriterQueue { rt, queues }
    }

    /// Handle one batch of messages, in order; returns the ids of those that failed and must
    /// be delivered again. A message whose body could not be read fails, and so does every
    /// later message of its group in this batch (a FIFO group must not skip ahead of a
    /// message that will come back). A message that does not decode never will: it is
    /// dropped with a warning, not failed, so that it does not hold up its group. All appends
    /// of the batch are one writer invocation.
    pub async fn process(&self, records: &[QueueRecord]) -> Vec<String> {
        self.process_counted(records).await.0
    }

    /// [`WriterQueue::process`], also telling how many messages held write batches (the
    /// others are pings, or did not decode).
    pub async fn process_counted(&self, records: &[QueueRecord]) -> (Vec<String>, usize) {
        let mut failed = Vec::new();
        let mut failed_groups: HashSet<Option<String>> = HashSet::new();
        let mut writes: Vec<(usize, Vec<Request>)> = Vec::new();
        let mut pings: Vec<(usize, SessionId)> = Vec::new();
        for (i, r) in records.iter().enumerate() {
            let grouped = r.group.is_some();
            if grouped && failed_groups.contains(&r.group) {
                failed.push(r.id.clone());
                continue;
            }
            let body = match &r.body {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(id = r.id, error = %e, "writer message body unreadable");
                    failed.push(r.id.clone());
                    if grouped {
                        failed_groups.insert(r.group.clone());
                    }
                    continue;
                }
            };
            match serde_json::from_slice::<WriterMessage>(body) {
                Ok(WriterMessage::Write(batch)) => writes.push((i, batch.requests)),
                Ok(WriterMessage::Ping { ping }) => pings.push((i, ping)),
                Err(e) => {
                    tracing::warn!(id = r.id, error = %e, "undecodable writer message dropped");
                }
            }
        }
        if !writes.is_empty() {
            let requests: Vec<Request> = writes.iter().flat_map(|(_, r)| r.clone()).collect();
            match self.rt.write_batch(requests.clone()).await {
                Ok(subs) => {
                    // A message whose rejection did not reach its session comes back: the
                    // writer refuses it again and the rejection is sent again (the appended
                    // requests of the message are not appended twice: the writer drops a
                    // (session, seq) it has seen).
                    let unsent = self.answer_rejections(&requests, &subs).await;
                    let mut first = 0;
                    for (i, reqs) in &writes {
                        let last = first + reqs.len();
                        if unsent.iter().any(|u| (first..last).contains(u)) {
                            failed.push(records[*i].id.clone());
                        }
                        first = last;
                    }
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "writer invocation failed");
                    failed.extend(writes.iter().map(|(i, _)| records[*i].id.clone()));
                }
            }
        }
        for (i, session) in pings {
            match self.rt.ping(session).await {
                Ok((200, _)) => {}
                Ok((status, _)) => {
                    tracing::warn!(session, status, "ping refused");
                    failed.push(records[i].id.clone());
                }
                Err(e) => {
                    tracing::warn!(session, error = format!("{e:#}"), "ping failed");
                    failed.push(records[i].id.clone());
                }
            }
        }
        (failed, writes.len())
    }

    /// A refused request never enters the log, so the distributor will not answer it: tell
    /// its session here.
    ///
    /// Returns the positions in `requests` of the rejections that could not be sent to a
    /// session queue that exists.
    async fn answer_rejections(&self, requests: &[Request], subs: &[Submission]) -> Vec<usize> {
        let mut unsent = Vec::new();
        for (at, (req, sub)) in requests.iter().zip(subs).enumerate() {
            let Submission::Rejected {
                seq,
                error,
                message,
            } = sub
            else {
                continue;
            };
            let names = self.queues.names();
            let delivery = Delivery {
                session: req.session,
                notify: names.notify_url(req.session),
                fallback: None,
                events: vec![SessionEvent::Result {
                    seq: *seq,
                    zxid: 0,
                    result: OpResult::Error {
                        error: *error,
                        message: message.clone(),
                    },
                }],
            };
            let Ok(body) = serde_json::to_vec(&delivery) else {
                unsent.push(at);
                continue;
            };
            let group = req.session.to_string();
            match self
                .queues
                .send(
                    &names.session(req.session),
                    &body,
                    Some(&group),
                    Some(&dedup_id(&body)),
                )
                .await
            {
                Ok(_) => {}
                // The session closed: nobody waits for the answer.
                Err(QueueError::NoSuchQueue(_)) => {}
                Err(e) => {
                    tracing::warn!(session = req.session, error = %e, "rejection not delivered");
                    unsent.push(at);
                }
            }
        }
        unsent
    }

    /// Consume the writer queue forever: long polls of up to 10 messages; the messages that
    /// were handled are deleted, the others come back after the visibility timeout (and go
    /// to the dead-letter queue after `MAX_RECEIVES` tries).
    pub async fn run_poller(self: Arc<Self>) {
        let queue = self.queues.names().writer();
        loop {
            let received = match self.queues.receive(&queue, 10, 20).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "writer queue not reachable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if received.is_empty() {
                continue;
            }
            let records: Vec<QueueRecord> = received.iter().map(QueueRecord::from).collect();
            let failed: HashSet<String> = self.process(&records).await.into_iter().collect();
            let done: Vec<Received> = received
                .into_iter()
                .filter(|r| !failed.contains(&r.message_id))
                .collect();
            if let Err(e) = self.queues.delete(&queue, &done).await {
                tracing::warn!(error = %e, "handled messages not deleted (they will be redelivered)");
            }
        }
    }
}

/// Serve the writer queue from this host (`faaskeeper serve --backend aws`): session
/// deliveries go to SQS (and, with `direct_results`, to clients' own listeners, see
/// [`SqsOutbound::with_direct_results`]), the distributor runs in this process, and `pollers`
/// tasks consume the writer queue (the write combiner folds their batches into shared
/// appends).
pub fn start_pollers(
    rt: &Arc<Runtime>,
    queues: &Queues,
    pollers: usize,
    direct_results: bool,
) -> Vec<tokio::task::JoinHandle<()>> {
    rt.set_outbound(Arc::new(
        SqsOutbound::new(queues.clone(), false).with_direct_results(direct_results),
    ));
    let consumer = Arc::new(WriterQueue::new(rt.clone(), queues.clone()));
    (0..pollers.max(1))
        .map(|_| tokio::spawn(consumer.clone().run_poller()))
        .collect()
}

/// How long one Lambda invocation of the distributor keeps starting runs while the log has
/// more: a run may take the stage's limit (30 s) beyond it, and the template gives the
/// function 60 s.
const DISTRIBUTOR_INVOCATION_RUNS_FOR: Duration = Duration::from_secs(20);

/// Distributor runs without a stable owner (each run takes the lease and releases it when it
/// stops), as a Lambda function does, while the log has more and for at most
/// [`DISTRIBUTOR_INVOCATION_RUNS_FOR`]; whether txns are still left (then the caller must
/// see that another invocation follows), or an error if a run failed.
pub async fn run_distributor_once(rt: &Arc<Runtime>) -> anyhow::Result<bool> {
    let started = std::time::Instant::now();
    loop {
        match rt.run_distributor("/", false).await? {
            (200, body) => {
                let more = crate::runtime::more_to_distribute(&body);
                if !more || started.elapsed() >= DISTRIBUTOR_INVOCATION_RUNS_FOR {
                    return Ok(more);
                }
            }
            (status, body) => anyhow::bail!(
                "distributor answered {status}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

/// One sweep of the heartbeat stage (expire silent sessions).
pub async fn run_heartbeat_once(rt: &Arc<Runtime>) -> anyhow::Result<()> {
    match rt
        .invoke(StageName::Heartbeat, "/check", Bytes::from_static(b"{}"))
        .await?
    {
        (200, _) => Ok(()),
        (status, body) => anyhow::bail!(
            "heartbeat answered {status}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_results_reach_only_a_sessions_deliveries_at_its_path() {
        for ip in ["127.0.0.1", "10.1.2.3", "[::1]", "::1"] {
            assert!(is_ip_literal(ip), "{ip}");
        }
        for name in ["example.com", "localhost", "queues.faaskeeper.internal", ""] {
            assert!(!is_ip_literal(name), "{name}");
        }
        let addr = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        assert_eq!(listener_address("10.0.0.7:4000"), addr("10.0.0.7:4000"));
        assert_eq!(listener_address("10.0.0.7"), addr("10.0.0.7:80"));
        assert_eq!(listener_address("[::1]:9"), addr("[::1]:9"));
        for refused in [
            "169.254.169.254",
            "169.254.169.254:80",
            "[fe80::1]:80",
            "[::ffff:169.254.169.254]:80",
            "[fd00:ec2::254]:80",
            "0.0.0.0:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "user@10.0.0.7:80",
            "example.com:80",
        ] {
            assert_eq!(listener_address(refused), None, "{refused}");
        }
        let delivery = |session: SessionId| {
            serde_json::to_vec(&Delivery {
                session,
                notify: String::new(),
                fallback: None,
                events: Vec::new(),
            })
            .unwrap()
        };
        let secret = "0123456789abcdef0123456789abcdef";
        let own = format!("/v1/sessions/7/{secret}/deliver");
        assert!(direct_path_fits(&own, &delivery(7)));
        // Another session's path, another path, or not a delivery: refused.
        for path in [
            format!("/v1/sessions/8/{secret}/deliver"),
            format!("{own}?x=1"),
            format!("/v1/sessions/7/{secret}/x/deliver"),
            "/v1/sessions/7/short/deliver".to_string(),
            "/v1/sessions/7/deliver".to_string(),
            format!("/admin?{own}"),
            "/v1/deliveries".to_string(),
        ] {
            assert!(!direct_path_fits(&path, &delivery(7)), "{path}");
        }
        assert!(!direct_path_fits(&own, b"garbage"));
    }
}
