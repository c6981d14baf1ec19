//! The gateway at the byte level, next to a real Apache ZooKeeper 3.8: reply headers (xid,
//! zxid, err), notification frames, the empty body of an error reply, unknown op codes,
//! malformed and oversize frames, and session re-attach. Each check runs against both
//! servers and compares what a client can observe.

use faaskeeper_tests::zookeeper::RealZooKeeper;
use faaskeeper_zk_proto::{
    Acl, ConnectRequest, ConnectResponse, FrameDecoder, Request, RequestHeader,
    decode_reply_header, decode_watch_event, encode_request, frame, op,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

struct Conn {
    s: TcpStream,
    dec: FrameDecoder,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Conn {
            s,
            dec: FrameDecoder::new(),
        }
    }

    fn send(&mut self, payload: &[u8]) {
        self.s.write_all(&frame(payload)).expect("send");
    }

    /// Send a frame the server may refuse by closing the connection while it is still being
    /// written (an oversize one): a failed write is that close, which `recv` then reports.
    fn send_refusable(&mut self, payload: &[u8]) {
        let _ = self.s.write_all(&frame(payload));
    }

    /// The next frame, or `None` when the server closed the connection.
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(f) = self.dec.next_frame().expect("valid frame from server") {
                return Some(f);
            }
            match self.s.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.push(&buf[..n]),
            }
        }
    }

    fn handshake(addr: &str, session_id: i64, passwd: Vec<u8>) -> (Conn, ConnectResponse) {
        let mut c = Conn::open(addr);
        let req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 10_000,
            session_id,
            passwd,
            read_only: false,
        };
        c.send(&req.encode());
        let resp = ConnectResponse::decode(&c.recv().expect("connect response")).expect("decode");
        (c, resp)
    }

    fn call(&mut self, xid: i32, opcode: i32, req: &Request) -> (i32, i64, i32, usize) {
        self.send(&encode_request(&RequestHeader { xid, op: opcode }, req));
        let payload = self.recv().expect("reply");
        let h = decode_reply_header(&payload).expect("reply header");
        (h.xid, h.zxid, h.err, payload.len() - 16)
    }
}

fn create(path: &str, flags: i32) -> Request {
    Request::Create {
        path: path.to_string(),
        data: b"d".to_vec(),
        acl: vec![Acl::open_unsafe()],
        flags,
        ttl: None,
    }
}

/// The observable transcript of one session's worth of raw requests.
fn wire_transcript(addr: &str) -> Vec<String> {
    let mut t = Vec::new();
    let (mut a, resp) = Conn::handshake(addr, 0, vec![0; 16]);
    t.push(format!(
        "connect: timeout={} session_nonzero={} passwd_len={}",
        resp.timeout_ms,
        resp.session_id != 0,
        resp.passwd.len()
    ));
    let (xid, zxid, err, body) = a.call(1, op::CREATE, &create("/wire", 0));
    t.push(format!(
        "create: xid={xid} zxid_pos={} err={err} body={body}",
        zxid > 0
    ));
    let (xid, _, err, _) = a.call(
        2,
        op::GET_DATA,
        &Request::GetData {
            path: "/wire".into(),
            watch: true,
        },
    );
    t.push(format!("getData watch: xid={xid} err={err}"));
    let (xid, _, err, body) = a.call(
        3,
        op::EXISTS,
        &Request::Exists {
            path: "/nope".into(),
            watch: false,
        },
    );
    t.push(format!("exists missing: xid={xid} err={err} body={body}"));
    let (xid, _, err, body) = a.call(4, op::CREATE, &create("/wire", 0));
    t.push(format!("create again: xid={xid} err={err} body={body}"));

    let (mut b, _) = Conn::handshake(addr, 0, vec![0; 16]);
    let (_, _, err, _) = b.call(
        1,
        op::SET_DATA,
        &Request::SetData {
            path: "/wire".into(),
            data: b"x".to_vec(),
            version: -1,
        },
    );
    t.push(format!("other setData: err={err}"));
    let note = a.recv().expect("notification");
    let (h, ev) = decode_watch_event(&note).expect("watch event");
    t.push(format!(
        "notification: xid={} zxid={} err={} type={} state={} path={}",
        h.xid, h.zxid, h.err, ev.event_type, ev.state, ev.path
    ));
    let (xid, _, err, body) = a.call(-2, op::PING, &Request::Ping);
    t.push(format!("ping: xid={xid} err={err} body={body}"));

    // Session re-attach keeps the session (and its ephemerals); a wrong password does not.
    let (_, _, err, _) = a.call(5, op::CREATE, &create("/wire/e", 1));
    t.push(format!("create ephemeral: err={err}"));
    drop(a);
    let (mut again, resp2) = Conn::handshake(addr, resp.session_id, resp.passwd.clone());
    t.push(format!(
        "reattach: same_session={} timeout={}",
        resp2.session_id == resp.session_id,
        resp2.timeout_ms
    ));
    let (_, _, err, _) = again.call(
        6,
        op::EXISTS,
        &Request::Exists {
            path: "/wire/e".into(),
            watch: false,
        },
    );
    t.push(format!("ephemeral after reattach: err={err}"));
    let (_, bad) = Conn::handshake(addr, resp.session_id, vec![7; 16]);
    t.push(format!(
        "wrong passwd: timeout={} session={}",
        bad.timeout_ms, bad.session_id
    ));

    // An unknown op code: ZooKeeper 3.8 answers Unimplemented and closes the connection, and
    // its client sometimes sees only the close (the answer is lost to the reset), so both
    // count as the same outcome.
    again.send(&encode_request(
        &RequestHeader { xid: 7, op: 999 },
        &Request::Ping,
    ));
    let answer = again
        .recv()
        .map(|p| decode_reply_header(&p).expect("header"));
    match answer {
        Some(h) if (h.xid, h.err) != (7, -6) => {
            t.push(format!("unknown op: xid={} err={}", h.xid, h.err))
        }
        Some(_) => t.push(format!(
            "unknown op: Unimplemented or no answer, then closed: {}",
            again.recv().is_none()
        )),
        None => t.push("unknown op: Unimplemented or no answer, then closed: true".into()),
    }
    // The session survives its connection being dropped for bad input.
    let (mut c, r) = Conn::handshake(addr, resp.session_id, resp.passwd.clone());
    t.push(format!(
        "session alive after bad op: {}",
        r.session_id == resp.session_id
    ));
    for (xid, path) in [(1, "/wire/e"), (2, "/wire")] {
        let (_, _, err, _) = c.call(
            xid,
            op::DELETE,
            &Request::Delete {
                path: path.into(),
                version: -1,
            },
        );
        t.push(format!("cleanup {path}: err={err}"));
    }
    t
}

/// Bad bytes close the offending connection only.
fn bad_input_transcript(addr: &str) -> Vec<String> {
    let mut t = Vec::new();
    let (mut good, _) = Conn::handshake(addr, 0, vec![0; 16]);
    // An oversize length prefix right at connect.
    let mut c = Conn::open(addr);
    c.s.write_all(&0x7fff_fff0u32.to_be_bytes()).expect("write");
    t.push(format!("oversize frame closes: {}", c.recv().is_none()));
    // A truncated request body after a good handshake. ZooKeeper neither answers nor closes
    // (the read times out), so wait less than `good`'s session timeout: idle for a whole
    // one, `good` may be expired meanwhile (ZooKeeper's expiry is rounded to its tick).
    let (mut c, _) = Conn::handshake(addr, 0, vec![0; 16]);
    c.s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    c.send(&[0, 0, 0, 9, 0, 0, 0, op::CREATE as u8, 0xff]);
    match c.recv() {
        None => t.push("malformed request: closed".into()),
        Some(p) => {
            let h = decode_reply_header(&p).expect("header");
            t.push(format!(
                "malformed request: xid={} err={} body={}",
                h.xid,
                h.err,
                p.len() - 16
            ));
            t.push(format!("then closed: {}", c.recv().is_none()));
        }
    }
    // Garbage instead of a connect request.
    let mut c = Conn::open(addr);
    c.s.write_all(&[0, 0, 0, 3, 1, 2, 3]).expect("write");
    t.push(format!("garbage handshake closes: {}", c.recv().is_none()));
    let (xid, _, err, _) = good.call(
        1,
        op::EXISTS,
        &Request::Exists {
            path: "/".into(),
            watch: false,
        },
    );
    t.push(format!("other session unaffected: xid={xid} err={err}"));
    t
}

/// `jute.maxbuffer` to the byte and the TTL create rules. ZooKeeper reads a request packet of
/// at most 0xfffff bytes (xid, op code and body) and closes the connection of a client that
/// sends a longer one; nothing of that request is applied.
fn limits_transcript(addr: &str) -> Vec<String> {
    let mut t = Vec::new();
    let (mut a, _) = Conn::handshake(addr, 0, vec![0; 16]);
    let (_, _, err, _) = a.call(1, op::CREATE, &create("/lim", 0));
    t.push(format!("create /lim: err={err}"));
    // setData("/lim"): 8 (header) + 4+4 (path) + 4+n (data) + 4 (version) = 24 + n.
    let set = |n: usize, byte: u8| Request::SetData {
        path: "/lim".into(),
        data: vec![byte; n],
        version: -1,
    };
    let largest = 0xfffff - 24;
    let (_, _, err, body) = a.call(2, op::SET_DATA, &set(largest, b'x'));
    t.push(format!("setData {largest} bytes: err={err} body={body}"));
    a.send_refusable(&encode_request(
        &RequestHeader {
            xid: 3,
            op: op::SET_DATA,
        },
        &set(largest + 1, b'y'),
    ));
    t.push(format!(
        "setData one byte more: closed={}",
        a.recv().is_none()
    ));
    let (mut b, _) = Conn::handshake(addr, 0, vec![0; 16]);
    b.send(&encode_request(
        &RequestHeader {
            xid: 1,
            op: op::GET_DATA,
        },
        &Request::GetData {
            path: "/lim".into(),
            watch: false,
        },
    ));
    let reply = b.recv().expect("getData reply");
    t.push(format!(
        "data after: len={} unchanged={}",
        reply.len(),
        reply
            .get(20..20 + largest)
            .is_some_and(|d| d.iter().all(|&c| c == b'x'))
    ));
    // create("/lim2"): 8 + 4+5 (path) + 4+n (data) + 27 (open ACL) + 4 (flags) = 52 + n.
    let create_n = |n: usize| Request::Create {
        path: "/lim2".into(),
        data: vec![b'z'; n],
        acl: vec![Acl::open_unsafe()],
        flags: 0,
        ttl: None,
    };
    let (_, _, err, _) = b.call(2, op::CREATE, &create_n(0xfffff - 52));
    t.push(format!("create at the limit: err={err}"));
    let (_, _, err, _) = b.call(
        3,
        op::DELETE,
        &Request::Delete {
            path: "/lim2".into(),
            version: -1,
        },
    );
    t.push(format!("delete it: err={err}"));
    b.send_refusable(&encode_request(
        &RequestHeader {
            xid: 4,
            op: op::CREATE,
        },
        &create_n(0xfffff - 51),
    ));
    t.push(format!(
        "create one byte over: closed={}",
        b.recv().is_none()
    ));
    let (mut c, _) = Conn::handshake(addr, 0, vec![0; 16]);
    let (_, _, err, body) = c.call(
        1,
        op::EXISTS,
        &Request::Exists {
            path: "/lim2".into(),
            watch: false,
        },
    );
    t.push(format!(
        "over-limit create left nothing: err={err} body={body}"
    ));
    // TTL creates (`createTTL` = 21 carries the TTL; `create`/`create2` cannot).
    let ttl_create = |path: &str, flags: i32, ttl: Option<i64>| Request::Create {
        path: path.to_string(),
        data: Vec::new(),
        acl: vec![Acl::open_unsafe()],
        flags,
        ttl,
    };
    let max = 0xff_ffff_ffff_i64;
    for (i, (name, opcode, flags, ttl)) in [
        ("ttl 1000", op::CREATE_TTL, 5, Some(1000)),
        ("ttl max", op::CREATE_TTL, 5, Some(max)),
        ("ttl max+1", op::CREATE_TTL, 5, Some(max + 1)),
        ("ttl 0", op::CREATE_TTL, 5, Some(0)),
        ("ttl -1", op::CREATE_TTL, 5, Some(-1)),
        ("sequential ttl", op::CREATE_TTL, 6, Some(1000)),
        ("persistent mode with ttl", op::CREATE_TTL, 0, Some(100)),
        ("container mode with ttl", op::CREATE_TTL, 4, Some(100)),
        ("unknown mode with ttl", op::CREATE_TTL, 7, Some(100)),
        ("ttl mode via create", op::CREATE, 5, None),
        ("ttl mode via create2", op::CREATE2, 6, None),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/ttl{i}");
        let (_, _, err, body) = c.call(10 + i as i32, opcode, &ttl_create(&path, flags, ttl));
        t.push(format!("{name}: err={err} body={body}"));
    }
    t
}

#[test]
fn wire_level_behaviour_matches_zookeeper() {
    let real = RealZooKeeper::start();
    let ours = faaskeeper_tests::zk_addr();
    for (name, f) in [
        ("wire", wire_transcript as fn(&str) -> Vec<String>),
        ("bad input", bad_input_transcript),
        ("limits", limits_transcript),
    ] {
        let expected = f(&real.addr);
        let got = f(&ours);
        for (e, g) in expected.iter().zip(&got) {
            println!("{name}\n  zookeeper:  {e}\n  faaskeeper: {g}");
        }
        assert_eq!(got, expected, "{name}: transcripts differ");
    }
}
