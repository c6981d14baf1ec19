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
use faaskeeper_core::acl::ReadAnswer;
use faaskeeper_core::wire::{Op, Request, Submission, WriteBatch};
use faaskeeper_core::{SessionId, path, url};
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

impl Api {
    async fn handle(&self, method: &Method, path: &str, query: &str, body: Bytes) -> Resp {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            (&Method::GET, ["v1", "health"]) => reply(StatusCode::OK, json!({ "status": "ok" })),
            (&Method::GET, ["v1", "node"]) => self.read_node(query).await,
            (&Method::POST, ["v1", "sessions"]) => self.open_session(&body).await,
            (m, ["v1", "sessions", id, rest @ ..]) => {
                let Ok(id) = id.parse::<SessionId>() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_arguments",
                        "session id is not a number",
                    );
                };
                match (m, rest) {
                    (&Method::POST, ["requests"]) => self.submit(id, body).await,
                    (&Method::GET, ["events"]) => self.poll(id, query).await,
                    (&Method::POST, ["heartbeat"]) => self.heartbeat(id).await,
                    (&Method::DELETE, []) => {
                        self.rt.hub().remove(id);
                        reply(StatusCode::OK, json!({}))
                    }
                    _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }

    async fn read_node(&self, query: &str) -> Resp {
        let Some(p) = url::query_param(query, "path") else {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_arguments",
                "missing or malformed ?path=",
            );
        };
        if let Err(e) = path::validate(&p) {
            return error(StatusCode::BAD_REQUEST, "bad_arguments", e);
        }
        let session = match url::query_param(query, "session") {
            None => None,
            Some(s) => match s.parse::<SessionId>() {
                Ok(id) => Some(id),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_arguments",
                        "session is not a number",
                    );
                }
            },
        };
        match crate::reads::read_node(&*self.user, &*self.system, session, &p).await {
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
            Ok(None) => error(StatusCode::NOT_FOUND, "no_node", p),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "system_error", e),
        }
    }

    async fn open_session(&self, body: &[u8]) -> Resp {
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
            match serde_json::from_slice(body) {
                Ok(o) => o,
                Err(e) => return error(StatusCode::BAD_REQUEST, "bad_arguments", e),
            }
        };
        let id = new_session_id();
        self.rt.hub().register(id);
        let batch = WriteBatch {
            requests: vec![Request {
                session: id,
                seq: 0,
                op: Op::OpenSession {
                    timeout_ms: open.timeout_ms,
                    notify: SessionHub::notify_url(id),
                },
            }],
        };
        let resp = self
            .submit(
                id,
                Bytes::from(serde_json::to_vec(&batch).unwrap_or_default()),
            )
            .await;
        if resp.status() != StatusCode::OK {
            self.rt.hub().remove(id);
            return resp;
        }
        let subs: Vec<Submission> = match resp.into_body().collect().await {
            Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or_default(),
            Err(never) => match never {},
        };
        match subs.first() {
            Some(Submission::Appended { zxid, .. }) => {
                reply(StatusCode::OK, json!({ "session": id, "zxid": zxid }))
            }
            Some(Submission::Rejected {
                error: e, message, ..
            }) => {
                self.rt.hub().remove(id);
                error(StatusCode::BAD_REQUEST, &format!("{e:?}"), message)
            }
            None => {
                self.rt.hub().remove(id);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "system_error",
                    "writer answered nothing",
                )
            }
        }
    }

    async fn submit(&self, id: SessionId, body: Bytes) -> Resp {
        if !self.rt.hub().contains(id) {
            return error(
                StatusCode::NOT_FOUND,
                "session_expired",
                format!("no session {id}"),
            );
        }
        let batch: WriteBatch = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, "marshalling_error", e),
        };
        if batch.requests.iter().any(|r| r.session != id) {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_arguments",
                "request for another session",
            );
        }
        match self.rt.write_batch(batch.requests).await {
            Ok(subs) => reply(StatusCode::OK, json!(subs)),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "writer invocation failed");
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "system_error",
                    format!("{e:#}"),
                )
            }
        }
    }

    async fn heartbeat(&self, id: SessionId) -> Resp {
        if !self.rt.hub().contains(id) {
            return error(
                StatusCode::NOT_FOUND,
                "session_expired",
                format!("no session {id}"),
            );
        }
        match self.rt.ping(id).await {
            Ok((200, _)) => reply(StatusCode::OK, json!({})),
            Ok((status, body)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "system_error",
                format!(
                    "heartbeat stage answered {status}: {}",
                    String::from_utf8_lossy(&body)
                ),
            ),
            Err(e) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "system_error",
                format!("{e:#}"),
            ),
        }
    }

    async fn poll(&self, id: SessionId, query: &str) -> Resp {
        let after = url::query_param(query, "after")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let wait = url::query_param(query, "wait_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(MAX_WAIT)
            .min(MAX_WAIT);
        match self.rt.hub().poll(id, after, wait).await {
            Some(events) => {
                let events: Vec<_> = events
                    .into_iter()
                    .map(|(index, event)| json!({ "index": index, "event": event }))
                    .collect();
                reply(StatusCode::OK, json!({ "events": events }))
            }
            None => error(
                StatusCode::NOT_FOUND,
                "session_expired",
                format!("no session {id}"),
            ),
        }
    }
}
