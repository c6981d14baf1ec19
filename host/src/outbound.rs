//! Outbound routes a platform adds to the host: authorities that a stage's outgoing request
//! may reach besides the in-process stages and session hub of [`routing`](crate::routing).
//! The AWS mode adds SQS this way (session delivery queues, the distributor's wake-up queue).

use bytes::Bytes;

/// Where some outgoing requests of the stages go instead of the built-in routes.
#[async_trait::async_trait]
pub trait Outbound: Send + Sync {
    /// Whether requests to `authority` (host name of the URL) are this route's.
    fn handles(&self, authority: &str) -> bool;

    /// Carry out a POST of `body` to `authority` (host name, with the port if the URL has
    /// one) + `path`; the status and body answered to the stage. Failures are answers too
    /// (a 4xx or 5xx status), never a trap.
    async fn send(&self, authority: &str, path: &str, body: Bytes) -> (u16, Bytes);
}
