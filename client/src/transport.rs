//! The client's transports: HTTP/1.1 to the bundled host's API (`docs/api.md`); a
//! [`LocalService`] in the client's own process (the host's ZooKeeper gateway); or, with the
//! `aws` feature, AWS directly ([`crate::aws`]: writes to the SQS writer queue, reads from
//! S3, results and events from the session's own SQS queue).

use crate::{Error, NodeRead};
use bytes::Bytes;
use faaskeeper_core::wire::{NodeView, SessionEvent, Submission, WriteBatch};
use faaskeeper_core::{SessionId, Stat, ZkError};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How long one long-poll waits at the server.
const POLL_WAIT_MS: u64 = 20_000;

/// The bundled host's API as a service in the client's own process: what its HTTP endpoints
/// do (`docs/api.md`), without the HTTP round trips and JSON encodings. A front end in the
/// host's process (the ZooKeeper gateway) opens its sessions on it with
/// [`crate::Client::connect_local`]. Every guarantee of [`crate::Client`] holds the same:
/// only the transport differs.
#[async_trait::async_trait]
pub trait LocalService: Send + Sync {
    /// Open a session (`POST /v1/sessions`): its id, once the writer appended its open.
    async fn open_session(&self, timeout_ms: i32) -> Result<SessionId, Error>;
    /// Hand requests of `session` to the writer (`POST /v1/sessions/{id}/requests`).
    async fn submit(&self, session: SessionId, batch: WriteBatch)
    -> Result<Vec<Submission>, Error>;
    /// Keep `session` alive (`POST /v1/sessions/{id}/heartbeat`).
    async fn heartbeat(&self, session: SessionId) -> Result<(), Error>;
    /// Give up the session's channel (`DELETE /v1/sessions/{id}`).
    async fn close(&self, session: SessionId) -> Result<(), Error>;
    /// The node at `path` as `session` may see it (`GET /v1/node`, READ checked).
    async fn read_node(&self, session: SessionId, path: &str) -> Result<NodeRead, Error>;
    /// Events of `session` numbered `after` or later, waiting up to `wait` for one
    /// (`GET /v1/sessions/{id}/events`).
    async fn poll(
        &self,
        session: SessionId,
        after: u64,
        wait: std::time::Duration,
    ) -> Result<Vec<(u64, SessionEvent)>, Error>;
}

pub(crate) struct HttpTransport {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    base: String,
}

/// How a session reaches the service.
// One per session: boxing the larger variant would save a few hundred bytes per session.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Transport {
    /// The bundled host's HTTP API.
    Http(HttpTransport),
    /// The bundled host's API in this process.
    Local(std::sync::Arc<dyn LocalService>),
    /// AWS directly.
    #[cfg(feature = "aws")]
    Aws(crate::aws::AwsTransport),
}

impl Transport {
    /// Open a session: its id.
    pub(crate) async fn open_session(&self, timeout_ms: i32) -> Result<SessionId, Error> {
        match self {
            Transport::Http(h) => {
                let opened: serde_json::Value = h
                    .post_json(
                        "/v1/sessions",
                        &serde_json::json!({ "timeout_ms": timeout_ms }),
                    )
                    .await?;
                opened
                    .get("session")
                    .and_then(|v| v.as_i64())
                    .ok_or_else(|| Error::Transport(format!("unexpected answer {opened}")))
            }
            Transport::Local(l) => l.open_session(timeout_ms).await,
            #[cfg(feature = "aws")]
            Transport::Aws(a) => a.open_session(timeout_ms).await,
        }
    }

    /// Hand requests to the writer.
    pub(crate) async fn submit(
        &self,
        session: SessionId,
        batch: WriteBatch,
    ) -> Result<Vec<Submission>, Error> {
        match self {
            Transport::Http(h) => {
                h.post_json(&format!("/v1/sessions/{session}/requests"), &batch)
                    .await
            }
            Transport::Local(l) => l.submit(session, batch).await,
            #[cfg(feature = "aws")]
            Transport::Aws(a) => a.submit(session, &batch).await,
        }
    }

    pub(crate) async fn heartbeat(&self, session: SessionId) -> Result<(), Error> {
        match self {
            Transport::Http(h) => h.heartbeat(session).await,
            Transport::Local(l) => l.heartbeat(session).await,
            #[cfg(feature = "aws")]
            Transport::Aws(a) => a.heartbeat(session).await,
        }
    }

    /// Give up the session's channel (after its close went through the pipeline).
    pub(crate) async fn close(&self, session: SessionId) -> Result<(), Error> {
        match self {
            Transport::Http(h) => h.delete(&format!("/v1/sessions/{session}")).await,
            Transport::Local(l) => l.close(session).await,
            #[cfg(feature = "aws")]
            Transport::Aws(a) => a.close(session).await,
        }
    }

    /// The node at `path` as `session` may see it. On the AWS transport the object store
    /// answers directly, so READ ACLs are not checked there (the bucket policy is the
    /// boundary; docs/reliability.md, "Auth and ACLs").
    pub(crate) async fn read_node(
        &self,
        session: SessionId,
        path: &str,
    ) -> Result<crate::NodeRead, Error> {
        match self {
            Transport::Http(h) => h.read_node(session, path).await,
            Transport::Local(l) => l.read_node(session, path).await,
            #[cfg(feature = "aws")]
            Transport::Aws(a) => Ok(a
                .read_node(path)
                .await?
                .map_or(crate::NodeRead::Missing, crate::NodeRead::Node)),
        }
    }

    pub(crate) async fn poll(
        &self,
        session: SessionId,
        after: u64,
    ) -> Result<Vec<(u64, SessionEvent)>, Error> {
        match self {
            Transport::Http(h) => h.poll(session, after).await,
            Transport::Local(l) => {
                l.poll(
                    session,
                    after,
                    std::time::Duration::from_millis(POLL_WAIT_MS),
                )
                .await
            }
            #[cfg(feature = "aws")]
            Transport::Aws(a) => a.poll(session).await,
        }
    }
}

#[derive(serde::Deserialize)]
struct Polled {
    events: Vec<PolledEvent>,
}

#[derive(serde::Deserialize)]
struct PolledEvent {
    index: u64,
    event: SessionEvent,
}

#[derive(serde::Deserialize)]
struct ApiError {
    error: String,
    #[serde(default)]
    message: String,
}

/// The code of an API error body: ZooKeeper's code in snake case (`docs/api.md`); anything
/// else (`not_found`, `no_tenant`) is a system error to the caller.
fn code_of(error: &str) -> ZkError {
    serde_json::from_value(serde_json::Value::String(error.to_string()))
        .unwrap_or(ZkError::SystemError)
}

impl HttpTransport {
    pub(crate) fn new(base: &str) -> Result<HttpTransport, Error> {
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Error::Transport(format!("unsupported server url {base}")));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(HttpTransport {
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
            base,
        })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> Result<(u16, Bytes), Error> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| Error::Transport(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| Error::Transport(format!("{}: {e}", self.base)))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }

    fn decode<T: DeserializeOwned>(status: u16, body: &[u8]) -> Result<T, Error> {
        if status == 200 {
            return serde_json::from_slice(body)
                .map_err(|e| Error::Transport(format!("undecodable answer: {e}")));
        }
        match serde_json::from_slice::<ApiError>(body) {
            Ok(e) => Err(Error::Zk {
                code: code_of(&e.error),
                message: if e.message.is_empty() {
                    e.error
                } else {
                    e.message
                },
            }),
            Err(_) => Err(Error::Transport(format!(
                "status {status}: {}",
                String::from_utf8_lossy(body)
            ))),
        }
    }

    pub(crate) async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Transport(e.to_string()))?;
        let (status, bytes) = self
            .call(http::Method::POST, path, Bytes::from(body))
            .await?;
        Self::decode(status, &bytes)
    }

    pub(crate) async fn heartbeat(&self, session: SessionId) -> Result<(), Error> {
        let path = format!("/v1/sessions/{session}/heartbeat");
        let (status, body) = self.call(http::Method::POST, &path, Bytes::new()).await?;
        Self::decode::<serde_json::Value>(status, &body).map(|_| ())
    }

    pub(crate) async fn delete(&self, path: &str) -> Result<(), Error> {
        self.call(http::Method::DELETE, path, Bytes::new())
            .await
            .map(|_| ())
    }

    pub(crate) async fn read_node(
        &self,
        session: SessionId,
        path: &str,
    ) -> Result<NodeRead, Error> {
        #[derive(serde::Deserialize)]
        struct Refused {
            stat: Stat,
        }
        let uri = format!(
            "/v1/node?path={}&session={session}",
            faaskeeper_core::url::encode(path)
        );
        let (status, body) = self.call(http::Method::GET, &uri, Bytes::new()).await?;
        match status {
            404 => Ok(NodeRead::Missing),
            403 => match serde_json::from_slice::<Refused>(&body) {
                Ok(r) => Ok(NodeRead::NoAuth(r.stat)),
                Err(_) => Self::decode::<NodeView>(status, &body).map(NodeRead::Node),
            },
            _ => Self::decode(status, &body).map(NodeRead::Node),
        }
    }

    pub(crate) async fn poll(
        &self,
        session: SessionId,
        after: u64,
    ) -> Result<Vec<(u64, SessionEvent)>, Error> {
        let uri = format!("/v1/sessions/{session}/events?after={after}&wait_ms={POLL_WAIT_MS}");
        let (status, body) = self.call(http::Method::GET, &uri, Bytes::new()).await?;
        let polled: Polled = Self::decode(status, &body)?;
        Ok(polled
            .events
            .into_iter()
            .map(|e| (e.index, e.event))
            .collect())
    }
}
