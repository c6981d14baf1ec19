//! The HTTP API clients use (`docs/api.md`): writes go to the writer stage, reads come straight
//! from the user bucket (no function on the read path), results and events come from the
//! session's channel by long-polling.
//!
//! A single-tenant host serves its API at the root (`/v1/...`); a multi-tenant host serves
//! each tenant's under `/t/<tenant>/v1/...` ([`Routes`]), and nothing at the root but
//! `/v1/health`.

use crate::hub::SessionHub;
use crate::runtime::Runtime;
use bytes::Bytes;
use faaskeeper_client::{Error as ClientError, LocalService, NodeRead};
use faaskeeper_core::acl::ReadAnswer;
use faaskeeper_core::wire::{Op, Request, SessionEvent, Submission, WriteBatch};
use faaskeeper_core::{SessionId, ZkError, Zxid, path, url};
use faaskeeper_storage::Store;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body accepted: a batch of writes at the data limit, base64'd.
const MAX_BODY: usize = 64 << 20;
/// Longest a poll may wait.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Where a request goes: the one tenant of a single-tenant host, or a tenant by prefix.
pub enum Routes {
    /// A single-tenant host: the API at the root.
    Single(Arc<Api>),
    /// A multi-tenant host: each tenant's API under `/t/<tenant>`.
    Tenants(std::collections::HashMap<String, Arc<Api>>),
}

/// Shared state of one tenant's API.
pub struct Api {
    pub(crate) rt: Arc<Runtime>,
    pub(crate) user: Arc<dyn Store>,
    /// Session records, for the READ check of nodes whose ACL is not open.
    pub(crate) system: Arc<dyn Store>,
}

type Resp = hyper::Response<Full<Bytes>>;

fn reply(status: StatusCode, body: serde_json::Value) -> Resp {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Resp {
    reply(
        status,
        json!({ "error": code, "message": message.to_string() }),
    )
}

/// Accept connections forever.
pub async fn serve(listener: TcpListener, routes: Arc<Routes>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let routes = routes.clone();
                async move { Ok::<_, std::convert::Infallible>(routes.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

fn new_session_id() -> SessionId {
    use std::hash::{BuildHasher, RandomState};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Positive and non-zero, like ZooKeeper's session ids.
    ((RandomState::new().hash_one((n, t)) >> 1) | 1) as i64
}

impl Routes {
    async fn handle(&self, req: hyper::Request<Incoming>) -> Resp {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, "bad_request", e),
        };
        match self {
            Routes::Single(api) => api.handle(&method, &path, &query, body).await,
            Routes::Tenants(tenants) => {
                if method == Method::GET && path == "/v1/health" {
                    return reply(StatusCode::OK, json!({ "status": "ok" }));
                }
                let Some(rest) = path.strip_prefix("/t/") else {
                    return error(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        "this host serves tenants under /t/<tenant>/",
                    );
                };
                let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
                match tenants.get(name) {
                    Some(api) => api.handle(&method, &format!("/{rest}"), &query, body).await,
                    None => error(
                        StatusCode::NOT_FOUND,
                        "no_tenant",
                        format!("no tenant {name:?} on this host"),
                    ),
                }
            }
        }
    }
}

/// Why the API refused a request: the HTTP status, and the ZooKeeper code clients see (in
/// a JSON body as `{"error": code, "message": ...}`, or as the error of a
/// [`LocalService`] call).
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: ZkError,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: ZkError, message: impl std::fmt::Display) -> Refusal {
        Refusal {
            status,
            code,
            message: message.to_string(),
        }
    }

    fn expired(id: SessionId) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            ZkError::SessionExpired,
            format!("no session {id}"),
        )
    }

    fn unavailable(message: impl std::fmt::Display) -> Refusal {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ZkError::SystemError,
            message,
        )
    }

    fn reply(self) -> Resp {
        reply(
            self.status,
            json!({ "error": self.code, "message": self.message }),
        )
    }
}

impl From<Refusal> for ClientError {
    fn from(r: Refusal) -> ClientError {
        ClientError::Zk {
            code: r.code,
            message: r.message,
        }
    }
}

impl Api {
    async fn handle(&self, method: &Method, path: &str, query: &str, body: Bytes) -> Resp {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let answer = match (method, segments.as_slice()) {
            (&Method::GET, ["v1", "health"]) => Ok(json!({ "status": "ok" })),
            (&Method::GET, ["v1", "node"]) => return self.http_read_node(query).await,
            (&Method::POST, ["v1", "sessions"]) => self.http_open_session(&body).await,
            (m, ["v1", "sessions", id, rest @ ..]) => {
                let Ok(id) = id.parse::<SessionId>() else {
                    return Refusal::new(
                        StatusCode::BAD_REQUEST,
                        ZkError::BadArguments,
                        "session id is not a number",
                    )
                    .reply();
                };
                match (m, rest) {
                    (&Method::POST, ["requests"]) => self.http_submit(id, &body).await,
                    (&Method::GET, ["events"]) => self.http_poll(id, query).await,
                    (&Method::POST, ["heartbeat"]) => self.keep_alive(id).await.map(|()| json!({})),
                    (&Method::DELETE, []) => {
                        self.rt.hub().remove(id);
                        Ok(json!({}))
                    }
                    _ => return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
                }
            }
            _ => return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        };
        match answer {
            Ok(body) => reply(StatusCode::OK, body),
            Err(r) => r.reply(),
        }
    }

    async fn http_read_node(&self, query: &str) -> Resp {
        let Some(p) = url::query_param(query, "path") else {
            return Refusal::new(
                StatusCode::BAD_REQUEST,
                ZkError::BadArguments,
                "missing or malformed ?path=",
            )
            .reply();
        };
        let session = match url::query_param(query, "session") {
            None => None,
            Some(s) => match s.parse::<SessionId>() {
                Ok(id) => Some(id),
                Err(_) => {
                    return Refusal::new(
                        StatusCode::BAD_REQUEST,
                        ZkError::BadArguments,
                        "session is not a number",
                    )
                    .reply();
                }
            },
        };
        match self.node(session, &p).await {
            Ok(Some(ReadAnswer::Serve(bytes))) => {
                let mut r = hyper::Response::new(Full::new(Bytes::from(bytes)));
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
            // ZooKeeper shows the stat to anyone (`exists`), so the refusal carries it.
            Ok(Some(ReadAnswer::NoAuth(stat))) => reply(
                StatusCode::FORBIDDEN,
                json!({ "error": "no_auth", "message": p, "stat": stat }),
            ),
            Ok(None) => Refusal::new(StatusCode::NOT_FOUND, ZkError::NoNode, p).reply(),
            Err(r) => r.reply(),
        }
    }

    async fn http_open_session(&self, body: &[u8]) -> Result<serde_json::Value, Refusal> {
        #[derive(serde::Deserialize)]
        struct Open {
            #[serde(default = "default_timeout")]
            timeout_ms: i32,
        }
        fn default_timeout() -> i32 {
            10_000
        }
        let open: Open = if body.is_empty() {
            Open {
                timeout_ms: default_timeout(),
            }
        } else {
            serde_json::from_slice(body)
                .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, ZkError::BadArguments, e))?
        };
        let (id, zxid) = self.open(open.timeout_ms).await?;
        Ok(json!({ "session": id, "zxid": zxid }))
    }

    async fn http_submit(&self, id: SessionId, body: &[u8]) -> Result<serde_json::Value, Refusal> {
        let batch: WriteBatch = serde_json::from_slice(body)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, ZkError::MarshallingError, e))?;
        self.submit_batch(id, batch).await.map(|subs| json!(subs))
    }

    async fn http_poll(&self, id: SessionId, query: &str) -> Result<serde_json::Value, Refusal> {
        let after = url::query_param(query, "after")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let wait = url::query_param(query, "wait_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(MAX_WAIT);
        let events: Vec<_> = self
            .events(id, after, wait)
            .await?
            .into_iter()
            .map(|(index, event)| json!({ "index": index, "event": event }))
            .collect();
        Ok(json!({ "events": events }))
    }

    /// The node object at `p` as `session` may see it; `None`: no node.
    async fn node(
        &self,
        session: Option<SessionId>,
        p: &str,
    ) -> Result<Option<ReadAnswer>, Refusal> {
        path::validate(p)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, ZkError::BadArguments, e))?;
        crate::reads::read_node(&*self.user, &*self.system, session, p)
            .await
            .map_err(Refusal::unavailable)
    }

    /// Open a session: its id and the zxid of its open.
    async fn open(&self, timeout_ms: i32) -> Result<(SessionId, Zxid), Refusal> {
        let id = new_session_id();
        self.rt.hub().register(id);
        let batch = WriteBatch {
            requests: vec![Request {
                session: id,
                seq: 0,
                op: Op::OpenSession {
                    timeout_ms,
                    notify: SessionHub::notify_url(id),
                    fallback: None,
                },
            }],
        };
        let refused = match self.submit_batch(id, batch).await {
            Ok(subs) => match subs.into_iter().next() {
                Some(Submission::Appended { zxid, .. }) => return Ok((id, zxid)),
                Some(Submission::Rejected { error, message, .. }) => {
                    Refusal::new(StatusCode::BAD_REQUEST, error, message)
                }
                None => Refusal::unavailable("writer answered nothing"),
            },
            Err(r) => r,
        };
        self.rt.hub().remove(id);
        Err(refused)
    }

    /// Hand a batch of session `id`'s requests to the writer.
    async fn submit_batch(
        &self,
        id: SessionId,
        batch: WriteBatch,
    ) -> Result<Vec<Submission>, Refusal> {
        if !self.rt.hub().contains(id) {
            return Err(Refusal::expired(id));
        }
        if batch.requests.iter().any(|r| r.session != id) {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ZkError::BadArguments,
                "request for another session",
            ));
        }
        self.rt.write_batch(batch.requests).await.map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "writer invocation failed");
            Refusal::unavailable(format!("{e:#}"))
        })
    }

    async fn keep_alive(&self, id: SessionId) -> Result<(), Refusal> {
        if !self.rt.hub().contains(id) {
            return Err(Refusal::expired(id));
        }
        match self.rt.ping(id).await {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(Refusal::unavailable(format!(
                "heartbeat stage answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))),
            Err(e) => Err(Refusal::unavailable(format!("{e:#}"))),
        }
    }

    async fn events(
        &self,
        id: SessionId,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<(u64, SessionEvent)>, Refusal> {
        self.rt
            .hub()
            .poll(id, after, wait.min(MAX_WAIT))
            .await
            .ok_or_else(|| Refusal::expired(id))
    }
}

/// The API without HTTP, for front ends in this process (the ZooKeeper gateway).
#[async_trait::async_trait]
impl LocalService for Api {
    async fn open_session(&self, timeout_ms: i32) -> Result<SessionId, ClientError> {
        Ok(self.open(timeout_ms).await?.0)
    }

    async fn submit(
        &self,
        session: SessionId,
        batch: WriteBatch,
    ) -> Result<Vec<Submission>, ClientError> {
        Ok(self.submit_batch(session, batch).await?)
    }

    async fn heartbeat(&self, session: SessionId) -> Result<(), ClientError> {
        Ok(self.keep_alive(session).await?)
    }

    async fn close(&self, session: SessionId) -> Result<(), ClientError> {
        self.rt.hub().remove(session);
        Ok(())
    }

    async fn read_node(&self, session: SessionId, path: &str) -> Result<NodeRead, ClientError> {
        match self.node(Some(session), path).await? {
            Some(ReadAnswer::Serve(bytes)) => serde_json::from_slice(&bytes)
                .map(NodeRead::Node)
                .map_err(|e| ClientError::Transport(format!("node object of {path}: {e}"))),
            Some(ReadAnswer::NoAuth(stat)) => Ok(NodeRead::NoAuth(stat)),
            None => Ok(NodeRead::Missing),
        }
    }

    async fn poll(
        &self,
        session: SessionId,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<(u64, SessionEvent)>, ClientError> {
        Ok(self.events(session, after, wait).await?)
    }
}
