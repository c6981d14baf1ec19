//! Server replies: a header (xid, zxid, err) followed, on success, by the op's record;
//! and watch notifications, which are replies with xid -1.

use faaskeeper_core::Stat;

use crate::consts::{WATCH_XID, op};
use crate::error::{ProtoError, Result};
use crate::jute::{Reader, Writer};
use crate::request::{Acl, MultiHeader, read_multi_header, write_multi_header};

/// The header in front of every reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyHeader {
    /// The request's xid, or a special xid (pings, auth, set watches, notifications).
    pub xid: i32,
    /// The last zxid the server has applied; clients track it for reconnects.
    pub zxid: i64,
    /// 0 or a ZooKeeper error code (`KeeperException.Code`).
    pub err: i32,
}

/// A reply body. Which one a request gets depends on its op code; see
/// [`decode_reply`] for the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// No body: delete, ping, auth, setWatches, checkWatches, removeWatches, addWatch,
    /// closeSession, check, and every failed request except multi.
    Empty,
    /// `create`.
    Create {
        /// The created path (with the sequence suffix, if any).
        path: String,
    },
    /// `create2`, `createContainer`, `createTTL`.
    Create2 {
        /// The created path.
        path: String,
        /// The new node's stat.
        stat: Stat,
    },
    /// `exists`, `setData`, `setACL`.
    Stat(Stat),
    /// `getData`.
    GetData {
        /// The node's data.
        data: Vec<u8>,
        /// The node's stat.
        stat: Stat,
    },
    /// `getChildren`.
    GetChildren {
        /// Child names (not paths).
        children: Vec<String>,
    },
    /// `getChildren2`.
    GetChildren2 {
        /// Child names (not paths).
        children: Vec<String>,
        /// The parent's stat.
        stat: Stat,
    },
    /// `getACL`.
    GetAcl {
        /// The node's ACL.
        acl: Vec<Acl>,
        /// The node's stat.
        stat: Stat,
    },
    /// `sync`.
    Sync {
        /// The synced path, echoed.
        path: String,
    },
    /// `getEphemerals`.
    GetEphemerals {
        /// Paths of the session's matching ephemeral nodes.
        paths: Vec<String>,
    },
    /// `getAllChildrenNumber`.
    GetAllChildrenNumber {
        /// Number of descendants.
        total: i32,
    },
    /// `whoAmI`.
    WhoAmI {
        /// The session's identities as (auth scheme, user).
        ids: Vec<(String, String)>,
    },
    /// `multi` and `multiRead`, one result per operation.
    Multi(Vec<MultiResult>),
}

/// The result of one operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// `create` (type 1).
    Create {
        /// The created path.
        path: String,
    },
    /// `create2`; ZooKeeper also uses it for `createContainer` and `createTTL` (type 15).
    Create2 {
        /// The created path.
        path: String,
        /// The new node's stat.
        stat: Stat,
    },
    /// `delete` (type 2, no body).
    Delete,
    /// `setData` (type 5).
    SetData {
        /// The node's new stat.
        stat: Stat,
    },
    /// `check` (type 13, no body).
    Check,
    /// `getData` in multiRead (type 4).
    GetData {
        /// The node's data.
        data: Vec<u8>,
        /// The node's stat.
        stat: Stat,
    },
    /// `getChildren` in multiRead (type 8).
    GetChildren {
        /// Child names.
        children: Vec<String>,
    },
    /// A failed (or, in a failed multi, rolled back) operation (type -1). In a failed
    /// `multi`, ZooKeeper reports the culprit's code, 0 for the operations before it
    /// and `RuntimeInconsistency` (-2) for those after.
    Error {
        /// The error code.
        err: i32,
    },
}

impl MultiResult {
    /// The type written in this result's multi header.
    pub fn op_code(&self) -> i32 {
        match self {
            MultiResult::Create { .. } => op::CREATE,
            MultiResult::Create2 { .. } => op::CREATE2,
            MultiResult::Delete => op::DELETE,
            MultiResult::SetData { .. } => op::SET_DATA,
            MultiResult::Check => op::CHECK,
            MultiResult::GetData { .. } => op::GET_DATA,
            MultiResult::GetChildren { .. } => op::GET_CHILDREN,
            MultiResult::Error { .. } => op::ERROR,
        }
    }
}

/// The body of a watch notification (`WatcherEvent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherEvent {
    /// See [`event_type`](crate::event_type).
    pub event_type: i32,
    /// See [`keeper_state`](crate::keeper_state).
    pub state: i32,
    /// The node's path.
    pub path: String,
}

fn write_header(w: &mut Writer, h: &ReplyHeader) {
    w.write_i32(h.xid);
    w.write_i64(h.zxid);
    w.write_i32(h.err);
}

/// Encodes a reply payload (header then body, without length prefix).
///
/// ZooKeeper clients read a body only when `err` is 0, so for a nonzero `err` the body
/// is left out, except for [`Response::Multi`], whose per-operation results are sent
/// regardless.
pub fn encode_reply(header: &ReplyHeader, body: &Response) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    write_header(&mut w, header);
    if header.err != 0 && !matches!(body, Response::Multi(_)) {
        return w.into_inner();
    }
    match body {
        Response::Empty => {}
        Response::Create { path } | Response::Sync { path } => w.write_string(path),
        Response::Create2 { path, stat } => {
            w.write_string(path);
            w.write_stat(stat);
        }
        Response::Stat(stat) => w.write_stat(stat),
        Response::GetData { data, stat } => {
            w.write_buffer(data);
            w.write_stat(stat);
        }
        Response::GetChildren { children } => w.write_vec_string(children),
        Response::GetChildren2 { children, stat } => {
            w.write_vec_string(children);
            w.write_stat(stat);
        }
        Response::GetAcl { acl, stat } => {
            w.write_vec_acl(acl);
            w.write_stat(stat);
        }
        Response::GetEphemerals { paths } => w.write_vec_string(paths),
        Response::GetAllChildrenNumber { total } => w.write_i32(*total),
        Response::WhoAmI { ids } => {
            w.write_i32(i32::try_from(ids.len()).unwrap_or(i32::MAX));
            for (scheme, user) in ids {
                w.write_string(scheme);
                w.write_string(user);
            }
        }
        Response::Multi(results) => write_multi_results(&mut w, results),
    }
    w.into_inner()
}

fn write_multi_results(w: &mut Writer, results: &[MultiResult]) {
    for res in results {
        let err = match res {
            MultiResult::Error { err } => *err,
            _ => 0,
        };
        write_multi_header(w, res.op_code(), false, err);
        match res {
            MultiResult::Create { path } => w.write_string(path),
            MultiResult::Create2 { path, stat } => {
                w.write_string(path);
                w.write_stat(stat);
            }
            MultiResult::Delete | MultiResult::Check => {}
            MultiResult::SetData { stat } => w.write_stat(stat),
            MultiResult::GetData { data, stat } => {
                w.write_buffer(data);
                w.write_stat(stat);
            }
            MultiResult::GetChildren { children } => w.write_vec_string(children),
            MultiResult::Error { err } => w.write_i32(*err),
        }
    }
    write_multi_header(w, -1, true, -1);
}

/// Encodes a watch notification payload: a reply header with xid -1 and err 0, then the
/// event.
pub fn encode_watch_event(event_type: i32, state: i32, path: &str, zxid: i64) -> Vec<u8> {
    let mut w = Writer::with_capacity(32 + path.len());
    write_header(
        &mut w,
        &ReplyHeader {
            xid: WATCH_XID,
            zxid,
            err: 0,
        },
    );
    w.write_i32(event_type);
    w.write_i32(state);
    w.write_string(path);
    w.into_inner()
}

fn read_header(r: &mut Reader<'_>) -> Result<ReplyHeader> {
    Ok(ReplyHeader {
        xid: r.read_i32()?,
        zxid: r.read_i64()?,
        err: r.read_i32()?,
    })
}

/// Decodes just the reply header (16 bytes), e.g. to tell notifications (xid -1) apart.
pub fn decode_reply_header(payload: &[u8]) -> Result<ReplyHeader> {
    read_header(&mut Reader::new(payload))
}

/// Decodes a watch notification.
pub fn decode_watch_event(payload: &[u8]) -> Result<(ReplyHeader, WatcherEvent)> {
    let mut r = Reader::new(payload);
    let header = read_header(&mut r)?;
    let event = WatcherEvent {
        event_type: r.read_i32()?,
        state: r.read_i32()?,
        path: r.read_ustring()?,
    };
    Ok((header, event))
}

/// Decodes a reply to a request with op code `op`, which the caller knows from the
/// xid it sent. The body must fill the payload exactly.
///
/// `create` gives [`Response::Create`]; `create2`, `createContainer`, `createTTL` give
/// `Create2`; `exists`, `setData`, `setACL` give `Stat`; `getChildren` gives
/// `GetChildren` and `getChildren2` `GetChildren2`; `multi` and `multiRead` give
/// `Multi`; ops without a result body (and every failed op but the batches) give
/// `Empty`.
pub fn decode_reply(op: i32, payload: &[u8]) -> Result<(ReplyHeader, Response)> {
    let mut r = Reader::new(payload);
    let r = &mut r;
    let header = read_header(r)?;
    let is_batch = op == op::MULTI || op == op::MULTI_READ;
    if header.err != 0 && !is_batch {
        r.finish()?;
        return Ok((header, Response::Empty));
    }
    let body = match op {
        op::CREATE => Response::Create {
            path: r.read_ustring()?,
        },
        op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => Response::Create2 {
            path: r.read_ustring()?,
            stat: r.read_stat()?,
        },
        op::EXISTS | op::SET_DATA | op::SET_ACL => Response::Stat(r.read_stat()?),
        op::GET_DATA => Response::GetData {
            data: r.read_buffer()?.unwrap_or_default(),
            stat: r.read_stat()?,
        },
        op::GET_CHILDREN => Response::GetChildren {
            children: r.read_vec_string()?,
        },
        op::GET_CHILDREN2 => Response::GetChildren2 {
            children: r.read_vec_string()?,
            stat: r.read_stat()?,
        },
        op::GET_ACL => Response::GetAcl {
            acl: r.read_vec_acl()?,
            stat: r.read_stat()?,
        },
        op::SYNC => Response::Sync {
            path: r.read_ustring()?,
        },
        op::GET_EPHEMERALS => Response::GetEphemerals {
            paths: r.read_vec_string()?,
        },
        op::GET_ALL_CHILDREN_NUMBER => Response::GetAllChildrenNumber {
            total: r.read_i32()?,
        },
        op::WHO_AM_I => Response::WhoAmI {
            ids: r.read_vec(8, |r| Ok((r.read_ustring()?, r.read_ustring()?)))?,
        },
        op::MULTI | op::MULTI_READ => Response::Multi(read_multi_results(r)?),
        _ => Response::Empty,
    };
    r.finish()?;
    Ok((header, body))
}

fn read_multi_results(r: &mut Reader<'_>) -> Result<Vec<MultiResult>> {
    let mut out = Vec::new();
    // Each iteration consumes at least a 9-byte header, so the loop ends with the input.
    loop {
        let MultiHeader { op, done } = read_multi_header(r)?;
        if done {
            return Ok(out);
        }
        out.push(match op {
            op::CREATE => MultiResult::Create {
                path: r.read_ustring()?,
            },
            op::CREATE2 => MultiResult::Create2 {
                path: r.read_ustring()?,
                stat: r.read_stat()?,
            },
            op::DELETE => MultiResult::Delete,
            op::SET_DATA => MultiResult::SetData {
                stat: r.read_stat()?,
            },
            op::CHECK => MultiResult::Check,
            op::GET_DATA => MultiResult::GetData {
                data: r.read_buffer()?.unwrap_or_default(),
                stat: r.read_stat()?,
            },
            op::GET_CHILDREN => MultiResult::GetChildren {
                children: r.read_vec_string()?,
            },
            op::ERROR => MultiResult::Error { err: r.read_i32()? },
            other => {
                return Err(ProtoError::Invalid(format!(
                    "op code {other} in multi results"
                )));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{event_type, keeper_state};

    fn stat(seed: i64) -> Stat {
        Stat {
            czxid: seed,
            mzxid: seed + 1,
            ctime: 1_700_000_000_000,
            mtime: 1_700_000_000_001,
            version: 2,
            cversion: 3,
            aversion: 4,
            ephemeral_owner: 0x1234,
            data_length: 5,
            num_children: 6,
            pzxid: seed + 2,
        }
    }

    fn ok(xid: i32) -> ReplyHeader {
        ReplyHeader {
            xid,
            zxid: 0x99,
            err: 0,
        }
    }

    fn every_response() -> Vec<(i32, Response)> {
        vec![
            (op::DELETE, Response::Empty),
            (op::PING, Response::Empty),
            (
                op::CREATE,
                Response::Create {
                    path: "/a0000000001".into(),
                },
            ),
            (
                op::CREATE2,
                Response::Create2 {
                    path: "/b".into(),
                    stat: stat(1),
                },
            ),
            (
                op::CREATE_TTL,
                Response::Create2 {
                    path: "/t".into(),
                    stat: stat(2),
                },
            ),
            (op::EXISTS, Response::Stat(stat(3))),
            (op::SET_DATA, Response::Stat(stat(4))),
            (op::SET_ACL, Response::Stat(stat(5))),
            (
                op::GET_DATA,
                Response::GetData {
                    data: b"payload".to_vec(),
                    stat: stat(6),
                },
            ),
            (
                op::GET_CHILDREN,
                Response::GetChildren {
                    children: vec!["x".into(), "y".into()],
                },
            ),
            (
                op::GET_CHILDREN2,
                Response::GetChildren2 {
                    children: vec![],
                    stat: stat(7),
                },
            ),
            (
                op::GET_ACL,
                Response::GetAcl {
                    acl: vec![Acl::open_unsafe()],
                    stat: stat(8),
                },
            ),
            (op::SYNC, Response::Sync { path: "/s".into() }),
            (
                op::GET_EPHEMERALS,
                Response::GetEphemerals {
                    paths: vec!["/e1".into(), "/e2".into()],
                },
            ),
            (
                op::GET_ALL_CHILDREN_NUMBER,
                Response::GetAllChildrenNumber { total: 42 },
            ),
            (
                op::WHO_AM_I,
                Response::WhoAmI {
                    ids: vec![("ip".into(), "127.0.0.1".into())],
                },
            ),
            (
                op::MULTI,
                Response::Multi(vec![
                    MultiResult::Create { path: "/m".into() },
                    MultiResult::Create2 {
                        path: "/m2".into(),
                        stat: stat(9),
                    },
                    MultiResult::Delete,
                    MultiResult::SetData { stat: stat(10) },
                    MultiResult::Check,
                ]),
            ),
            (
                op::MULTI_READ,
                Response::Multi(vec![
                    MultiResult::GetData {
                        data: vec![1],
                        stat: stat(11),
                    },
                    MultiResult::GetChildren {
                        children: vec!["c".into()],
                    },
                    MultiResult::Error { err: -101 },
                ]),
            ),
            (op::MULTI, Response::Multi(vec![])),
        ]
    }

    #[test]
    fn every_response_round_trips() {
        for (i, (op, body)) in every_response().into_iter().enumerate() {
            let header = ok(i32::try_from(i).unwrap());
            let bytes = encode_reply(&header, &body);
            assert_eq!(decode_reply(op, &bytes), Ok((header, body)), "op {op}");
            assert_eq!(decode_reply_header(&bytes), Ok(header));
        }
    }

    #[test]
    fn error_replies_have_no_body_except_multi() {
        let header = ReplyHeader {
            xid: 5,
            zxid: 7,
            err: -101,
        };
        for (op, body) in every_response() {
            let bytes = encode_reply(&header, &body);
            if matches!(body, Response::Multi(_)) {
                assert!(bytes.len() > 16, "op {op}");
                assert_eq!(decode_reply(op, &bytes), Ok((header, body)));
            } else {
                assert_eq!(
                    bytes,
                    [
                        &[0, 0, 0, 5][..],
                        &[0, 0, 0, 0, 0, 0, 0, 7],
                        &(-101i32).to_be_bytes()
                    ]
                    .concat(),
                    "op {op}"
                );
                assert_eq!(decode_reply(op, &bytes), Ok((header, Response::Empty)));
            }
        }
    }

    #[test]
    fn failed_multi_layout() {
        let header = ReplyHeader {
            xid: 2,
            zxid: 3,
            err: 0,
        };
        let body = Response::Multi(vec![
            MultiResult::Error { err: 0 },
            MultiResult::Error { err: -110 },
        ]);
        let bytes = encode_reply(&header, &body);
        let expected: Vec<u8> = [
            &[0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0][..],
            // MultiHeader(-1, false, 0) + ErrorResponse(0).
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            // MultiHeader(-1, false, -110) + ErrorResponse(-110).
            &[0xff, 0xff, 0xff, 0xff, 0],
            &(-110i32).to_be_bytes(),
            &(-110i32).to_be_bytes(),
            // Terminator.
            &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn successful_multi_entries_carry_err_zero() {
        let bytes = encode_reply(&ok(1), &Response::Multi(vec![MultiResult::Delete]));
        assert_eq!(
            &bytes[16..],
            &[
                0, 0, 0, 2, 0, 0, 0, 0, 0, // MultiHeader(delete, false, 0)
                0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff,
            ]
        );
    }

    #[test]
    fn exists_known_bytes() {
        let s = stat(0);
        let bytes = encode_reply(&ok(9), &Response::Stat(s));
        assert_eq!(bytes.len(), 16 + 68);
        assert_eq!(&bytes[..4], &[0, 0, 0, 9]);
        assert_eq!(&bytes[16..24], &0i64.to_be_bytes());
        // After 4 longs and 3 ints comes ephemeralOwner.
        assert_eq!(&bytes[60..68], &0x1234i64.to_be_bytes());
    }

    #[test]
    fn watch_event_layout() {
        let bytes = encode_watch_event(
            event_type::NODE_DATA_CHANGED,
            keeper_state::SYNC_CONNECTED,
            "/w",
            0x10,
        );
        let expected: Vec<u8> = [
            &[0xff, 0xff, 0xff, 0xff][..],
            &0x10i64.to_be_bytes(),
            &[0, 0, 0, 0],
            &[0, 0, 0, 3, 0, 0, 0, 3],
            &[0, 0, 0, 2, b'/', b'w'],
        ]
        .concat();
        assert_eq!(bytes, expected);
        let (header, event) = decode_watch_event(&bytes).unwrap();
        assert_eq!(header.xid, WATCH_XID);
        assert_eq!(header.zxid, 0x10);
        assert_eq!(
            event,
            WatcherEvent {
                event_type: 3,
                state: 3,
                path: "/w".into(),
            }
        );
    }

    #[test]
    fn decode_reply_rejects_garbage() {
        let mut bytes = encode_reply(&ok(1), &Response::Sync { path: "/".into() });
        bytes.push(0);
        assert_eq!(decode_reply(op::SYNC, &bytes), Err(ProtoError::Trailing));
        let mut w = Writer::new();
        w.write_i32(1);
        w.write_i64(0);
        w.write_i32(0);
        write_multi_header(&mut w, op::SYNC, false, 0);
        assert!(matches!(
            decode_reply(op::MULTI, w.as_slice()),
            Err(ProtoError::Invalid(_))
        ));
        assert_eq!(decode_reply_header(&[0; 15]), Err(ProtoError::Truncated));
    }
}
