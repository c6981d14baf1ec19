//! # faaskeeper-fuzz-harness
//!
//! What each fuzz target checks, one function per decoder that outside bytes reach. The
//! cargo-fuzz crate in `fuzz/` calls these from its targets under libFuzzer; the tests of this
//! crate call them on stable Rust over the committed corpus and over generated inputs, so CI
//! runs the same checks without a nightly toolchain.
//!
//! A target returns normally for any input it handles correctly (including a clean
//! rejection) and panics when a property breaks: that panic is the finding.
//!
//! | target | bytes from | checks |
//! |---|---|---|
//! | [`write_batch`] | HTTP API request bodies, the writer stage's body | decode never panics; what decodes re-encodes to itself; `precheck` and `packet_len` never panic |
//! | [`stage_payloads`] | stage-to-stage bodies and every record read back from a store | the same, for each payload and record type |
//! | [`apply_program`] | a program of ZooKeeper ops derived from the bytes | apply never panics; the tree stays consistent; redelivery changes nothing; a failed multi changes no node |
//! | [`zk_request`] | a ZooKeeper client's socket | framing and request decoding never panic; what decodes re-encodes to itself |
//! | [`paths`] | paths and query strings | validation and URL decoding never panic and agree with each other |

mod apply_program;

pub use apply_program::apply_program;

use faaskeeper_core::apply::{NodeRecord, SessionRecord, WatchRecord};
use faaskeeper_core::wire::{
    Delivery, DeliveryBatch, LogEntry, LogHead, Submission, Txn, WriteBatch, packet_len, precheck,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A fuzz target: returns for inputs handled correctly, panics on a finding.
pub type Target = fn(&[u8]);

/// Every fuzz target, by the name its corpus folder and cargo-fuzz target carry.
pub const TARGETS: &[(&str, Target)] = &[
    ("write_batch", write_batch),
    ("stage_payloads", stage_payloads),
    ("apply_program", apply_program),
    ("zk_request", zk_request),
    ("paths", paths),
];

/// Decode `data` as `T`; if it decodes, its JSON must decode to an equal value (no field is
/// lost or invented between the host, the stages and the store).
fn round_trip<T>(data: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&json).expect("an encoded value decodes");
    assert_eq!(again, value, "JSON round trip changed the value");
    Some(value)
}

/// The body of `POST /v1/sessions/<id>/requests` and of the writer stage.
pub fn write_batch(data: &[u8]) {
    if let Some(batch) = round_trip::<WriteBatch>(data) {
        for request in &batch.requests {
            // Whatever precheck says, the packet length is defined for every op.
            let _ = precheck(&request.op);
            let _ = packet_len(&request.op);
        }
    }
    // The same bytes as the body of the binary layout the bundled host sends.
    framed::<WriteBatch>(faaskeeper_core::wire::WRITE_BATCH_MAGIC, data);
}

/// `data` as it is and after `magic` ([`faaskeeper_core::wire::decode_framed`]): decoding
/// never panics, and what decodes encodes to bytes that decode to the same.
fn framed<T: faaskeeper_core::wire::Framed + Clone + PartialEq + std::fmt::Debug>(
    magic: &[u8; 4],
    data: &[u8],
) {
    use faaskeeper_core::wire::{decode_framed, encode_framed};
    let mut binary = magic.to_vec();
    binary.extend_from_slice(data);
    for bytes in [data, &binary] {
        if let Ok(value) = decode_framed::<T>(magic, bytes) {
            let again = encode_framed(magic, value.clone()).expect("a decoded value encodes");
            assert_eq!(decode_framed::<T>(magic, &again).as_ref(), Ok(&value));
        }
    }
}

/// Stage-to-stage bodies and the records stages read back from a store (a store may hold
/// bytes written by an older or broken version; a stage must refuse them, not crash).
pub fn stage_payloads(data: &[u8]) {
    round_trip::<DeliveryBatch>(data);
    round_trip::<Delivery>(data);
    round_trip::<Vec<Submission>>(data);
    round_trip::<Txn>(data);
    round_trip::<LogEntry>(data);
    framed::<LogEntry>(faaskeeper_core::wire::LOG_RECORD_MAGIC, data);
    framed::<NodeRecord>(faaskeeper_core::wire::NODE_RECORD_MAGIC, data);
    round_trip::<LogHead>(data);
    round_trip::<NodeRecord>(data);
    round_trip::<SessionRecord>(data);
    round_trip::<WatchRecord>(data);
}

/// Bytes from a ZooKeeper client: frames, the connect handshake and request bodies.
pub fn zk_request(data: &[u8]) {
    use faaskeeper_zk_proto::{ConnectRequest, FrameDecoder, decode_request, encode_request};

    // The first byte splits the rest into the chunks a socket might deliver.
    let (split, rest) = data.split_first().map_or((1, data), |(b, r)| (*b, r));
    let mut frames = FrameDecoder::for_requests();
    for chunk in rest.chunks(usize::from(split.max(1))) {
        frames.push(chunk);
        while let Ok(Some(frame)) = frames.next_frame() {
            let _ = ConnectRequest::decode(&frame);
            request_round_trip(&frame);
        }
        if frames.is_failed() {
            break;
        }
    }
    // The same bytes as an unframed payload.
    request_round_trip(rest);

    fn request_round_trip(payload: &[u8]) {
        if let Ok((header, request)) = decode_request(payload) {
            let bytes = encode_request(&header, &request);
            let (h2, r2) = decode_request(&bytes).expect("an encoded request decodes");
            assert_eq!(
                (h2, r2),
                (header, request),
                "jute round trip changed the request"
            );
        }
    }
}

/// Paths and `?path=` query strings.
pub fn paths(data: &[u8]) {
    use faaskeeper_core::path;
    use faaskeeper_core::url;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if path::validate(text).is_ok() {
        assert!(text.starts_with('/'), "a valid path is absolute");
        if let Some(parent) = path::parent(text) {
            assert!(
                path::validate(parent).is_ok(),
                "the parent of a valid path is valid"
            );
            assert_eq!(
                path::join(parent, path::name(text)),
                text,
                "parent + name rebuilds the path"
            );
            assert!(path::is_within(text, parent));
        }
        // A valid path is also a valid prefix for a sequential node.
        assert!(path::validate_create(text, true).is_ok());
    }
    let encoded = url::encode(text);
    assert_eq!(
        url::decode(&encoded).as_deref(),
        Some(text),
        "URL decoding undoes encoding"
    );
    let _ = url::decode(text);
    let _ = url::query_param(text, "path");
    if let Some(value) = url::query_param(&format!("path={encoded}"), "path") {
        assert_eq!(value, text, "a query parameter round-trips");
    }
}
