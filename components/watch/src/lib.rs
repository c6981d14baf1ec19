//! # faaskeeper-watch
//!
//! The watch stage: delivers the distributor's per-session event lists (results and fired
//! watches, already matched and in zxid order) to each session's channel with an outgoing
//! HTTP POST. Delivery is at least once; clients drop what they have already seen
//! (Guarantee 4 is kept because the distributor calls this stage, and waits for it, before it
//! marks a batch applied). A delivery that fails without an answer is retried; if it still
//! fails, the stage answers 503 and the distributor sends the batch again later. A session
//! whose channel answers 4xx is gone and is not retried.

use faaskeeper_core::wire::DeliveryBatch;
use faaskeeper_guest::{Reply, Stage};

struct Watch;

impl Stage for Watch {
    fn handle(_path: &str, body: Vec<u8>) -> Reply {
        let batch: DeliveryBatch = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return Reply::error(400, &format!("malformed delivery batch: {e}")),
        };
        let mut delivered = 0usize;
        let mut gone = 0usize;
        let mut undelivered = Vec::new();
        for d in &batch.deliveries {
            let body = match serde_json::to_vec(d) {
                Ok(b) => b,
                Err(e) => return Reply::error(500, &e.to_string()),
            };
            match deliver(&d.notify, &body) {
                Outcome::Delivered => delivered += 1,
                Outcome::Gone(status) => {
                    // The session's channel is gone (closed client): nothing to retry.
                    gone += 1;
                    faaskeeper_guest::log(&format!(
                        "watch: session {} answered {status}",
                        d.session
                    ));
                }
                Outcome::Unreachable(e) => {
                    faaskeeper_guest::log(&format!(
                        "watch: session {} unreachable: {e}",
                        d.session
                    ));
                    undelivered.push(d.session);
                }
            }
        }
        if !undelivered.is_empty() {
            // Not handed over: the distributor keeps the batch's redo record and sends the
            // whole batch again, so no session misses a result or an event, and each session
            // still gets its events in zxid order (Guarantee 4). The sessions that did get it
            // drop the repeats.
            return Reply::error(
                503,
                &format!("sessions {undelivered:?} unreachable; {delivered} delivered"),
            );
        }
        Reply::json(&serde_json::json!({ "delivered": delivered, "failed": gone }))
    }
}

/// Attempts per delivery before the batch is given back to the distributor.
const ATTEMPTS: usize = 3;

enum Outcome {
    Delivered,
    /// The receiver answered that the session is not there (a 4xx status).
    Gone(u16),
    /// No answer, or a server error, after every attempt.
    Unreachable(String),
}

fn deliver(url: &str, body: &[u8]) -> Outcome {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match faaskeeper_guest::post(url, body) {
            Ok((status, _)) if (200..300).contains(&status) => return Outcome::Delivered,
            Ok((status, _)) if (400..500).contains(&status) => return Outcome::Gone(status),
            Ok((status, _)) => last = format!("status {status}"),
            Err(e) => last = e.to_string(),
        }
    }
    Outcome::Unreachable(last)
}

faaskeeper_guest::export_stage!(Watch);
