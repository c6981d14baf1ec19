//! # faaskeeper-zk-proto
//!
//! ZooKeeper 3.8's client wire protocol, as pure functions over bytes: the jute record
//! encoding ([`Reader`], [`Writer`]), length-prefixed framing ([`FrameDecoder`],
//! [`frame`]), the session handshake ([`ConnectRequest`], [`ConnectResponse`]) and the
//! four-letter admin words, every client request ([`decode_request`],
//! [`encode_request`]) and every reply and watch notification ([`encode_reply`],
//! [`encode_watch_event`], [`decode_reply`]). There is no I/O here, so a gateway can
//! drive it from any runtime and tests can drive it from byte vectors.
//!
//! A connection starts either with a raw four-letter word ([`four_letter_word`]) or
//! with a framed [`ConnectRequest`], which has no request header; every later frame is
//! a [`RequestHeader`] and a body, answered by a [`ReplyHeader`] and a body.
//!
//! Decoding never panics and never allocates more than the input could fill: every
//! length is checked against the bytes present first.
//!
//! ## Example: a request round trip
//!
//! ```
//! use faaskeeper_zk_proto::{
//!     decode_request, encode_request, frame, op, Acl, FrameDecoder, Request, RequestHeader,
//! };
//!
//! let header = RequestHeader { xid: 1, op: op::CREATE };
//! let request = Request::Create {
//!     path: "/app".into(),
//!     data: b"hello".to_vec(),
//!     acl: vec![Acl::open_unsafe()],
//!     flags: 0,
//!     ttl: None,
//! };
//! let wire = frame(&encode_request(&header, &request));
//!
//! let mut decoder = FrameDecoder::new();
//! decoder.push(&wire);
//! let payload = decoder.next_frame().unwrap().expect("a whole frame");
//! assert_eq!(decode_request(&payload).unwrap(), (header, request));
//! ```
#![deny(missing_docs)]

mod connect;
mod consts;
mod error;
mod frame;
mod jute;
mod request;
mod response;

pub use connect::{ConnectRequest, ConnectResponse, four_letter_word};
pub use consts::{
    AUTH_XID, PING_XID, SET_WATCHES_XID, WATCH_XID, ZkCreateMode, add_watch_mode, create_mode,
    event_type, keeper_state, op, perms, watcher_type,
};
pub use error::{ProtoError, Result};
pub use frame::{FrameDecoder, MAX_FRAME, MAX_REQUEST_FRAME, frame, try_frame};
pub use jute::{Reader, Writer};
pub use request::{
    Acl, MultiOp, Request, RequestHeader, decode_header, decode_request, decode_request_body,
    encode_request,
};
pub use response::{
    MultiResult, ReplyHeader, Response, WatcherEvent, decode_reply, decode_reply_header,
    decode_watch_event, encode_reply, encode_watch_event,
};
