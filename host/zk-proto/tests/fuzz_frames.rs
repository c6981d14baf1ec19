//! Property tests: arbitrary bytes, split arbitrarily, must never make the decoders
//! panic, loop forever or hold unbounded memory; and well-formed input must survive
//! encoding and decoding unchanged.

use faaskeeper_zk_proto::{
    Acl, ConnectRequest, FrameDecoder, MAX_FRAME, MultiOp, Request, RequestHeader, decode_reply,
    decode_request, decode_watch_event, encode_request, frame, op,
};
use proptest::prelude::*;
use proptest::strategy::Union;

/// Length prefixes chosen to sit on and around every boundary the decoder checks.
fn claimed_len() -> impl Strategy<Value = Vec<u8>> {
    let max = i32::try_from(MAX_FRAME).unwrap_or(i32::MAX);
    prop_oneof![
        Just(0),
        Just(1),
        Just(max),
        Just(max + 1),
        Just(i32::MAX),
        Just(-1),
        Just(i32::MIN),
        0..64i32,
        any::<i32>(),
    ]
    .prop_map(|n| n.to_be_bytes().to_vec())
}

/// A chunk as a socket might deliver it: noise, a length prefix, or a short valid frame.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        claimed_len(),
        // Large chunks are filler: generating 4 KiB of independent random bytes per
        // chunk would make the test slow without finding more.
        (any::<u8>(), 0..4096usize).prop_map(|(b, n)| vec![b; n]),
        prop::collection::vec(any::<u8>(), 0..48).prop_map(|p| frame(&p)),
    ]
}

/// Runs every decoder over `payload`; only the absence of panics matters.
fn decode_everything(payload: &[u8]) {
    let _ = decode_request(payload);
    let _ = ConnectRequest::decode(payload);
    let _ = decode_watch_event(payload);
    for op in [
        op::GET_DATA,
        op::GET_ACL,
        op::MULTI,
        op::WHO_AM_I,
        op::CREATE2,
    ] {
        let _ = decode_reply(op, payload);
    }
}

/// Pushes the chunks, draining after each, and checks the memory bound throughout.
/// Returns the frames, and the error if the stream went bad.
fn feed(chunks: &[Vec<u8>]) -> (Vec<Vec<u8>>, Option<faaskeeper_zk_proto::ProtoError>) {
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut d = FrameDecoder::new();
    let mut frames = Vec::new();
    for c in chunks {
        d.push(c);
        assert!(
            d.buffered() <= MAX_FRAME + 4 + c.len(),
            "buffered {} after a {}-byte chunk",
            d.buffered(),
            c.len()
        );
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    frames.push(f);
                    // Each frame consumes at least its 4-byte prefix, so this bounds the loop.
                    assert!(frames.len() * 4 <= total);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(d.pending() < MAX_FRAME + 4);
    }
    (frames, None)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z0-9]{0,6}(/[a-z0-9]{1,6}){0,2}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..32)
}

fn strings() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn acls() -> impl Strategy<Value = Vec<Acl>> {
    prop::collection::vec(
        (any::<i32>(), text(), text()).prop_map(|(perms, scheme, id)| Acl { perms, scheme, id }),
        0..3,
    )
}

fn create_op() -> impl Strategy<Value = i32> {
    prop::sample::select(vec![
        op::CREATE,
        op::CREATE2,
        op::CREATE_CONTAINER,
        op::CREATE_TTL,
    ])
}

fn write_op() -> BoxedStrategy<MultiOp> {
    prop_oneof![
        (
            create_op(),
            text(),
            bytes(),
            acls(),
            any::<i32>(),
            any::<i64>()
        )
            .prop_map(|(op, path, data, acl, flags, ttl)| MultiOp::Create {
                op,
                path,
                data,
                acl,
                flags,
                ttl: (op == op::CREATE_TTL).then_some(ttl),
            }),
        (text(), any::<i32>()).prop_map(|(path, version)| MultiOp::Delete { path, version }),
        (text(), bytes(), any::<i32>()).prop_map(|(path, data, version)| MultiOp::SetData {
            path,
            data,
            version
        }),
        (text(), any::<i32>()).prop_map(|(path, version)| MultiOp::Check { path, version }),
    ]
    .boxed()
}

fn read_op() -> BoxedStrategy<MultiOp> {
    prop_oneof![
        (text(), any::<bool>()).prop_map(|(path, watch)| MultiOp::GetChildren { path, watch }),
        (text(), any::<bool>()).prop_map(|(path, watch)| MultiOp::GetData { path, watch }),
    ]
    .boxed()
}

/// Any request together with an op code that fits it.
fn request() -> impl Strategy<Value = (RequestHeader, Request)> {
    let path_bool = |op: i32, f: fn(String, bool) -> Request| {
        (text(), any::<bool>())
            .prop_map(move |(p, b)| (op, f(p, b)))
            .boxed()
    };
    let path_int = |op: i32, f: fn(String, i32) -> Request| {
        (text(), any::<i32>())
            .prop_map(move |(p, n)| (op, f(p, n)))
            .boxed()
    };
    let path_only =
        |op: i32, f: fn(String) -> Request| text().prop_map(move |p| (op, f(p))).boxed();
    let empty = |op: i32, r: Request| Just((op, r)).boxed();
    let arms: Vec<BoxedStrategy<(i32, Request)>> = vec![
        (
            create_op(),
            text(),
            bytes(),
            acls(),
            any::<i32>(),
            any::<i64>(),
        )
            .prop_map(|(op, path, data, acl, flags, ttl)| {
                let ttl = (op == op::CREATE_TTL).then_some(ttl);
                (
                    op,
                    Request::Create {
                        path,
                        data,
                        acl,
                        flags,
                        ttl,
                    },
                )
            })
            .boxed(),
        path_int(op::DELETE, |path, version| Request::Delete {
            path,
            version,
        }),
        path_bool(op::EXISTS, |path, watch| Request::Exists { path, watch }),
        path_bool(op::GET_DATA, |path, watch| Request::GetData { path, watch }),
        (text(), bytes(), any::<i32>())
            .prop_map(|(path, data, version)| {
                (
                    op::SET_DATA,
                    Request::SetData {
                        path,
                        data,
                        version,
                    },
                )
            })
            .boxed(),
        path_only(op::GET_ACL, |path| Request::GetAcl { path }),
        (text(), acls(), any::<i32>())
            .prop_map(|(path, acl, version)| (op::SET_ACL, Request::SetAcl { path, acl, version }))
            .boxed(),
        path_bool(op::GET_CHILDREN, |path, watch| Request::GetChildren {
            path,
            watch,
        }),
        path_bool(op::GET_CHILDREN2, |path, watch| Request::GetChildren {
            path,
            watch,
        }),
        path_only(op::SYNC, |path| Request::Sync { path }),
        empty(op::PING, Request::Ping),
        path_int(op::CHECK, |path, version| Request::Check { path, version }),
        prop::collection::vec(write_op(), 0..4)
            .prop_map(|ops| (op::MULTI, Request::Multi(ops)))
            .boxed(),
        prop::collection::vec(read_op(), 0..4)
            .prop_map(|ops| (op::MULTI_READ, Request::MultiRead(ops)))
            .boxed(),
        path_int(op::REMOVE_WATCHES, |path, watch_type| {
            Request::RemoveWatches { path, watch_type }
        }),
        path_int(op::CHECK_WATCHES, |path, watch_type| {
            Request::CheckWatches { path, watch_type }
        }),
        (any::<i32>(), text(), bytes())
            .prop_map(|(auth_type, scheme, auth)| {
                (
                    op::AUTH,
                    Request::Auth {
                        auth_type,
                        scheme,
                        auth,
                    },
                )
            })
            .boxed(),
        (
            any::<bool>(),
            any::<i64>(),
            (strings(), strings(), strings()),
            (strings(), strings()),
        )
            .prop_map(|(v2, relative_zxid, (data, exist, child), (p, pr))| {
                let (persistent, persistent_recursive) = if v2 {
                    (p, pr)
                } else {
                    (Vec::new(), Vec::new())
                };
                let op = if v2 {
                    op::SET_WATCHES2
                } else {
                    op::SET_WATCHES
                };
                let req = Request::SetWatches {
                    relative_zxid,
                    data,
                    exist,
                    child,
                    persistent,
                    persistent_recursive,
                };
                (op, req)
            })
            .boxed(),
        path_only(op::GET_EPHEMERALS, |prefix| Request::GetEphemerals {
            prefix,
        }),
        path_only(op::GET_ALL_CHILDREN_NUMBER, |path| {
            Request::GetAllChildrenNumber { path }
        }),
        path_int(op::ADD_WATCH, |path, mode| Request::AddWatch { path, mode }),
        empty(op::WHO_AM_I, Request::WhoAmI),
        empty(op::CLOSE_SESSION, Request::CloseSession),
    ];
    (any::<i32>(), Union::new(arms)).prop_map(|(xid, (op, req))| (RequestHeader { xid, op }, req))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_chunks_are_harmless(chunks in prop::collection::vec(chunk(), 0..32)) {
        let (frames, _) = feed(&chunks);
        for f in &frames {
            prop_assert!(f.len() <= MAX_FRAME);
            decode_everything(f);
        }
    }

    #[test]
    fn random_payloads_are_harmless(
        payload in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        decode_everything(&payload);
    }

    #[test]
    fn known_ops_with_hostile_bodies_are_harmless(
        xid in any::<i32>(),
        op in prop::sample::select(vec![
            op::CREATE, op::DELETE, op::EXISTS, op::GET_DATA, op::SET_DATA, op::GET_ACL,
            op::SET_ACL, op::GET_CHILDREN, op::SYNC, op::PING, op::GET_CHILDREN2, op::CHECK,
            op::MULTI, op::CREATE2, op::CHECK_WATCHES, op::REMOVE_WATCHES,
            op::CREATE_CONTAINER, op::CREATE_TTL, op::MULTI_READ, op::AUTH, op::SET_WATCHES,
            op::GET_EPHEMERALS, op::GET_ALL_CHILDREN_NUMBER, op::SET_WATCHES2, op::ADD_WATCH,
            op::WHO_AM_I, op::CLOSE_SESSION,
        ]),
        // Bodies built from fields, so that lengths and counts are often plausible
        // enough to get deep into the decoders.
        fields in prop::collection::vec(prop_oneof![
            claimed_len(),
            any::<u8>().prop_map(|b| vec![b]),
            text().prop_map(|s| {
                let mut v = u32::try_from(s.len()).unwrap_or(0).to_be_bytes().to_vec();
                v.extend_from_slice(s.as_bytes());
                v
            }),
            // A multi header (type, done, err).
            (0..23i32, any::<bool>()).prop_map(|(t, done)| {
                let mut v = t.to_be_bytes().to_vec();
                v.push(u8::from(done));
                v.extend_from_slice(&(-1i32).to_be_bytes());
                v
            }),
        ], 0..24),
    ) {
        let mut payload = xid.to_be_bytes().to_vec();
        payload.extend_from_slice(&op.to_be_bytes());
        payload.extend(fields.concat());
        if let Ok((header, req)) = decode_request(&payload) {
            prop_assert_eq!(header, RequestHeader { xid, op });
            // Whatever decodes re-encodes to something that decodes the same.
            let again = encode_request(&header, &req);
            prop_assert_eq!(decode_request(&again), Ok((header, req)));
        }
    }

    #[test]
    fn valid_streams_split_anywhere(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let chunks: Vec<Vec<u8>> = points
            .windows(2)
            .filter_map(|w| stream.get(w[0]..w[1]).map(<[u8]>::to_vec))
            .collect();
        let (frames, err) = feed(&chunks);
        prop_assert_eq!(err, None);
        prop_assert_eq!(frames, payloads);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn requests_round_trip((header, req) in request()) {
        let bytes = encode_request(&header, &req);
        prop_assert_eq!(decode_request(&bytes), Ok((header, req)));
    }

    #[test]
    fn connect_requests_round_trip(
        protocol_version in any::<i32>(),
        last_zxid_seen in any::<i64>(),
        timeout_ms in any::<i32>(),
        session_id in any::<i64>(),
        passwd in bytes(),
        read_only in any::<bool>(),
    ) {
        let req = ConnectRequest {
            protocol_version, last_zxid_seen, timeout_ms, session_id, passwd, read_only,
        };
        prop_assert_eq!(ConnectRequest::decode(&req.encode()), Ok(req));
    }
}

/// The memory bound holds at the largest legal frame, fed in socket-sized chunks.
#[test]
fn largest_frame_in_chunks_stays_bounded() {
    let payload: Vec<u8> = (0..MAX_FRAME).map(|i| (i % 251) as u8).collect();
    let mut stream = frame(&payload);
    stream.extend(frame(b"next"));
    let chunks: Vec<Vec<u8>> = stream.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let (frames, err) = feed(&chunks);
    assert_eq!(err, None);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames.first(), Some(&payload));
}

/// One byte past the limit is refused as soon as the prefix is complete.
#[test]
fn oversized_frame_is_refused_before_buffering() {
    let mut d = FrameDecoder::new();
    let len = u32::try_from(MAX_FRAME + 1).unwrap();
    d.push(&len.to_be_bytes());
    d.push(&vec![0; 4096]);
    assert_eq!(d.buffered(), 0);
    assert!(d.next_frame().is_err());
}
