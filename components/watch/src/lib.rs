//! # faaskeeper-watch
//!
//! The watch stage: delivers the distributor's per-session event lists (results and fired
//! watches, already matched and in zxid order) to each session's channel with an outgoing
//! HTTP POST. Delivery is at least once; clients drop what they have already seen
//! (Guarantee 4 is kept because the distributor calls this stage, and waits for it, before it
//! marks a batch applied).

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
        let mut failed = 0usize;
        for d in &batch.deliveries {
            let body = match serde_json::to_vec(d) {
                Ok(b) => b,
                Err(e) => return Reply::error(500, &e.to_string()),
            };
            match faaskeeper_guest::post(&d.notify, &body) {
                Ok((status, _)) if (200..300).contains(&status) => delivered += 1,
                Ok((status, _)) => {
                    // The session's channel is gone (closed client): nothing to retry.
                    failed += 1;
                    faaskeeper_guest::log(&format!(
                        "watch: session {} answered {status}",
                        d.session
                    ));
                }
                Err(e) => {
                    failed += 1;
                    faaskeeper_guest::log(&format!(
                        "watch: session {} unreachable: {e}",
                        d.session
                    ));
                }
            }
        }
        Reply::json(&serde_json::json!({ "delivered": delivered, "failed": failed }))
    }
}

faaskeeper_guest::export_stage!(Watch);
