//! Stage routing: the one place that decides where a component's outgoing HTTP request goes.
//!
//! Components call each other by Spin's service-chaining names
//! (`http://<stage>.spin.internal/`), so the same `.wasm` chains on Spin and here. This host
//! turns those requests into in-process invocations ([`WasiHttpHooks::send_request`]) and
//! delivers session notifications to its [`SessionHub`](crate::hub::SessionHub). Routes a
//! platform adds ([`Outbound`](crate::outbound::Outbound), e.g. SQS on AWS) come first. Anything
//! else is refused: stages have no business on the open network in this host.

use crate::faults::{InvocationFaults, MessageFault};
use crate::hub::SESSIONS_AUTHORITY;
use crate::runtime::{Runtime, StageName};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::{Arc, Weak};
use wasmtime_wasi_http::{Error as HttpError, WasiBody, WasiHttpHooks};

/// Where an outgoing request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Another stage, in process.
    Stage(StageName),
    /// A session channel of this host.
    Sessions,
}

/// Route by host name; `None` for anything that is not ours.
pub fn route(host: &str) -> Option<Route> {
    if host == SESSIONS_AUTHORITY {
        return Some(Route::Sessions);
    }
    let stage = host.strip_suffix(".spin.internal")?;
    StageName::from_name(stage).map(Route::Stage)
}

/// The [`WasiHttpHooks`] of every stage invocation.
pub struct StageRouter {
    /// Weak: an instance made ahead keeps its router inside the runtime that made it.
    pub(crate) rt: Weak<Runtime>,
    /// Call depth of the invocation this router belongs to; the stages it calls run one
    /// deeper (see [`crate::sandbox`]).
    pub(crate) depth: u32,
    /// A test's fault plan for this invocation ([`crate::faults`]).
    pub(crate) faults: Option<Arc<InvocationFaults>>,
}

/// Hand one message to its target; a stage runs at call depth `depth`.
async fn deliver(
    rt: &Arc<Runtime>,
    target: Route,
    path: &str,
    body: Bytes,
    depth: u32,
) -> Result<(u16, Bytes), HttpError> {
    Ok(match target {
        // The distributor runs asynchronously and coalesced: one run at a time, and a
        // wake-up during a run schedules exactly one more (see Runtime::kick).
        Route::Stage(StageName::Distributor) => {
            rt.kick_distributor();
            (202, Bytes::from_static(b"{\"scheduled\":true}"))
        }
        Route::Stage(stage) => rt
            .invoke_at(stage, path, body, depth)
            .await
            .map_err(|e| HttpError::InternalError(Some(format!("{e:#}"))))?,
        Route::Sessions => {
            let (status, answer) = rt.hub().receive(path, &body);
            (status, Bytes::from(answer))
        }
    })
}

/// [`deliver`] through a test's fault plan: the message may be dropped, delayed, held until
/// another overtakes it, duplicated, or delivered with its answer lost.
async fn deliver_with_faults(
    rt: &Arc<Runtime>,
    faults: &InvocationFaults,
    target: Route,
    path: &str,
    body: Bytes,
    depth: u32,
) -> Result<(u16, Bytes), HttpError> {
    let plan = faults.plan();
    let answer = match plan.message_fault(target) {
        None => deliver(rt, target, path, body, depth).await,
        Some(MessageFault::Drop) => return Err(HttpError::ConnectionRefused),
        Some(MessageFault::LoseReply) => {
            let _ = deliver(rt, target, path, body, depth).await;
            plan.delivered();
            return Err(HttpError::ConnectionReadTimeout);
        }
        Some(MessageFault::Duplicate) => {
            let _ = deliver(rt, target, path, body.clone(), depth).await;
            deliver(rt, target, path, body, depth).await
        }
        Some(MessageFault::Delay(d)) => {
            tokio::time::sleep(d).await;
            deliver(rt, target, path, body, depth).await
        }
        Some(MessageFault::Reorder(max)) => {
            plan.hold_for_overtake(max).await;
            deliver(rt, target, path, body, depth).await
        }
    };
    plan.delivered();
    faults.after_outgoing();
    answer
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

fn response(status: u16, body: Bytes) -> Result<http::Response<WasiBody>, HttpError> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(body)
                .map_err(|never: std::convert::Infallible| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| HttpError::InternalError(Some(e.to_string())))
}

impl WasiHttpHooks for StageRouter {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let rt = self.rt.upgrade();
        let depth = self.depth + 1;
        let faults = self.faults.clone();
        Box::new(async move {
            let Some(rt) = rt else {
                return Err(HttpError::InternalError(Some(
                    "the host has stopped".into(),
                )));
            };
            let host = request.uri().host().unwrap_or_default().to_string();
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "/".to_string());
            if let Some(out) = rt.outbound().filter(|o| o.handles(&host)).cloned() {
                // With its port: a client's own listener is an address, not just a name.
                let authority = request
                    .uri()
                    .authority()
                    .map_or_else(|| host.clone(), |a| a.to_string());
                let body = request.into_body().collect().await?.to_bytes();
                let (status, bytes) = out.send(&authority, &path, body).await;
                return Ok((
                    response(status, bytes)?,
                    Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
                ));
            }
            let Some(target) = route(&host) else {
                tracing::warn!(host, "stage tried to reach an unknown host");
                return Err(HttpError::HttpRequestDenied);
            };
            let body = request.into_body().collect().await?.to_bytes();
            let (status, bytes) = match &faults {
                None => deliver(&rt, target, &path, body, depth).await?,
                Some(f) => deliver_with_faults(&rt, f, target, &path, body, depth).await?,
            };
            Ok((
                response(status, bytes)?,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_our_names() {
        assert_eq!(
            route("distributor.spin.internal"),
            Some(Route::Stage(StageName::Distributor))
        );
        assert_eq!(
            route("watch.spin.internal"),
            Some(Route::Stage(StageName::Watch))
        );
        assert_eq!(route(SESSIONS_AUTHORITY), Some(Route::Sessions));
        assert_eq!(route("evil.spin.internal"), None);
        assert_eq!(route("example.com"), None);
    }
}
