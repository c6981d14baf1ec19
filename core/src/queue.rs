//! Messages on the writer queue, where a platform with queues (AWS: SQS) puts client
//! requests instead of calling the writer: a write batch, or a session's ping for the
//! heartbeat stage. Both are JSON; a ping is told apart by its `ping` field.

use crate::SessionId;
use crate::wire::WriteBatch;
use serde::{Deserialize, Serialize};

/// The body of one message on the writer queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WriterMessage {
    /// Requests to append, in the session's order.
    Write(WriteBatch),
    /// The session is alive (the heartbeat stage's `/ping`).
    Ping {
        /// The session.
        ping: SessionId,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Op, Request};

    #[test]
    fn writes_and_pings_are_told_apart() {
        let w = WriterMessage::Write(WriteBatch {
            requests: vec![Request {
                session: 5,
                seq: 1,
                op: Op::CloseSession,
            }],
        });
        let text = serde_json::to_string(&w).expect("encode");
        assert_eq!(serde_json::from_str::<WriterMessage>(&text).ok(), Some(w));
        assert_eq!(
            serde_json::from_str::<WriterMessage>(r#"{"ping":5}"#).ok(),
            Some(WriterMessage::Ping { ping: 5 })
        );
        assert!(serde_json::from_str::<WriterMessage>(r#"{"requests":"x"}"#).is_err());
        assert!(serde_json::from_str::<WriterMessage>("not json").is_err());
    }
}
