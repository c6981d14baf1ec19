//! Client requests: a header (xid, op code) followed by the op's record.

use crate::consts::{op, perms};
use crate::error::{ProtoError, Result};
use crate::jute::{Reader, Writer};

/// The header in front of every request after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestHeader {
    /// Client-chosen id echoed in the reply; negative values are the special xids.
    pub xid: i32,
    /// The op code, one of [`op`](crate::op).
    pub op: i32,
}

/// An access control entry: permission bits for an identity `scheme:id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    /// Permission bits, see [`perms`](crate::perms).
    pub perms: i32,
    /// Authentication scheme, e.g. `world`, `digest`, `ip`.
    pub scheme: String,
    /// Identity within the scheme.
    pub id: String,
}

impl Acl {
    /// `world:anyone` with every permission (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
    pub fn open_unsafe() -> Self {
        Acl {
            perms: perms::ALL,
            scheme: "world".to_owned(),
            id: "anyone".to_owned(),
        }
    }
}

/// One operation of a `multi` or `multiRead`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    /// `create`, `create2`, `createContainer` or `createTTL`.
    Create {
        /// Which create op code; it decides whether `ttl` is on the wire.
        op: i32,
        /// Node path.
        path: String,
        /// Node data (a null buffer reads as empty).
        data: Vec<u8>,
        /// Node ACL.
        acl: Vec<Acl>,
        /// Create mode flags, see [`create_mode`](crate::create_mode).
        flags: i32,
        /// TTL in milliseconds; present exactly when `op` is `createTTL`.
        ttl: Option<i64>,
    },
    /// `delete`.
    Delete {
        /// Node path.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `setData`.
    SetData {
        /// Node path.
        path: String,
        /// New data.
        data: Vec<u8>,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `check`: fails the batch unless the node has this version.
    Check {
        /// Node path.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `getChildren` (multiRead only).
    GetChildren {
        /// Node path.
        path: String,
        /// Watch flag (clients send false inside multiRead).
        watch: bool,
    },
    /// `getData` (multiRead only).
    GetData {
        /// Node path.
        path: String,
        /// Watch flag (clients send false inside multiRead).
        watch: bool,
    },
}

impl MultiOp {
    /// The op code written in this operation's multi header.
    pub fn op_code(&self) -> i32 {
        match self {
            MultiOp::Create { op, .. } => *op,
            MultiOp::Delete { .. } => op::DELETE,
            MultiOp::SetData { .. } => op::SET_DATA,
            MultiOp::Check { .. } => op::CHECK,
            MultiOp::GetChildren { .. } => op::GET_CHILDREN,
            MultiOp::GetData { .. } => op::GET_DATA,
        }
    }
}

/// A decoded request body. The variant follows the header's op code; where several op
/// codes share a body (the creates, `getChildren`/`getChildren2`, `setWatches`/
/// `setWatches2`) the header tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `create` (1), `create2` (15), `createContainer` (19) or `createTTL` (21).
    Create {
        /// Node path.
        path: String,
        /// Node data (a null buffer reads as empty).
        data: Vec<u8>,
        /// Node ACL (a null vector reads as empty).
        acl: Vec<Acl>,
        /// Create mode flags, see [`create_mode`](crate::create_mode).
        flags: i32,
        /// TTL in milliseconds; present exactly for `createTTL`.
        ttl: Option<i64>,
    },
    /// `delete` (2).
    Delete {
        /// Node path.
        path: String,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `exists` (3).
    Exists {
        /// Node path.
        path: String,
        /// Whether to leave a data watch (set even if the node is missing).
        watch: bool,
    },
    /// `getData` (4).
    GetData {
        /// Node path.
        path: String,
        /// Whether to leave a data watch.
        watch: bool,
    },
    /// `setData` (5).
    SetData {
        /// Node path.
        path: String,
        /// New data (a null buffer reads as empty).
        data: Vec<u8>,
        /// Expected version, -1 for any.
        version: i32,
    },
    /// `getACL` (6).
    GetAcl {
        /// Node path.
        path: String,
    },
    /// `setACL` (7).
    SetAcl {
        /// Node path.
        path: String,
        /// New ACL.
        acl: Vec<Acl>,
        /// Expected ACL version (`aversion`), -1 for any.
        version: i32,
    },
    /// `getChildren` (8) or `getChildren2` (12).
    GetChildren {
        /// Node path.
        path: String,
        /// Whether to leave a child watch.
        watch: bool,
    },
    /// `sync` (9).
    Sync {
        /// Path to sync (echoed in the reply).
        path: String,
    },
    /// `ping` (11), empty body.
    Ping,
    /// `check` (13), normally only inside `multi`.
    Check {
        /// Node path.
        path: String,
        /// Expected version.
        version: i32,
    },
    /// `multi` (14): writes applied atomically.
    Multi(Vec<MultiOp>),
    /// `multiRead` (22): independent reads.
    MultiRead(Vec<MultiOp>),
    /// `removeWatches` (18).
    RemoveWatches {
        /// Node path.
        path: String,
        /// Which watches, see [`watcher_type`](crate::watcher_type).
        watch_type: i32,
    },
    /// `checkWatches` (17).
    CheckWatches {
        /// Node path.
        path: String,
        /// Which watches, see [`watcher_type`](crate::watcher_type).
        watch_type: i32,
    },
    /// `auth` (100), sent with [`AUTH_XID`](crate::AUTH_XID).
    Auth {
        /// Unused by ZooKeeper, always 0.
        auth_type: i32,
        /// Auth scheme, e.g. `digest`.
        scheme: String,
        /// Credentials (a null buffer reads as empty).
        auth: Vec<u8>,
    },
    /// `setWatches` (101) or `setWatches2` (105): re-registers watches after reconnect;
    /// events newer than `relative_zxid` fire at once.
    SetWatches {
        /// The last zxid the client saw.
        relative_zxid: i64,
        /// Paths with data watches.
        data: Vec<String>,
        /// Paths with exist watches.
        exist: Vec<String>,
        /// Paths with child watches.
        child: Vec<String>,
        /// Paths with persistent watches (`setWatches2` only, else empty).
        persistent: Vec<String>,
        /// Paths with persistent recursive watches (`setWatches2` only, else empty).
        persistent_recursive: Vec<String>,
    },
    /// `getEphemerals` (103).
    GetEphemerals {
        /// Path prefix to match the session's ephemerals against.
        prefix: String,
    },
    /// `getAllChildrenNumber` (104).
    GetAllChildrenNumber {
        /// Node path.
        path: String,
    },
    /// `addWatch` (106).
    AddWatch {
        /// Node path.
        path: String,
        /// See [`add_watch_mode`](crate::add_watch_mode).
        mode: i32,
    },
    /// `whoAmI` (107), empty body.
    WhoAmI,
    /// `closeSession` (-11), empty body.
    CloseSession,
}

/// Decodes just the request header, which [`decode_request`] needs to be intact before
/// anything else; use it to learn the xid when the body fails to decode.
pub fn decode_header(payload: &[u8]) -> Result<RequestHeader> {
    let mut r = Reader::new(payload);
    Ok(RequestHeader {
        xid: r.read_i32()?,
        op: r.read_i32()?,
    })
}

/// Decodes a request frame's payload (header then body).
///
/// Bytes after the record are ignored, as ZooKeeper's server ignores them. On error,
/// [`decode_header`] on the same payload still yields the xid and op code whenever the
/// first 8 bytes are present, so the caller can answer that xid with an error.
pub fn decode_request(payload: &[u8]) -> Result<(RequestHeader, Request)> {
    let header = decode_header(payload)?;
    let body = payload.get(8..).unwrap_or_default();
    Ok((header, decode_request_body(header.op, body)?))
}

/// Decodes the body that follows a request header with op code `op`.
pub fn decode_request_body(op: i32, body: &[u8]) -> Result<Request> {
    let mut r = Reader::new(body);
    let r = &mut r;
    Ok(match op {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            let (path, data, acl, flags, ttl) = read_create(r, op == op::CREATE_TTL)?;
            Request::Create {
                path,
                data,
                acl,
                flags,
                ttl,
            }
        }
        op::DELETE => Request::Delete {
            path: r.read_ustring()?,
            version: r.read_i32()?,
        },
        op::EXISTS => Request::Exists {
            path: r.read_ustring()?,
            watch: r.read_bool()?,
        },
        op::GET_DATA => Request::GetData {
            path: r.read_ustring()?,
            watch: r.read_bool()?,
        },
        op::SET_DATA => Request::SetData {
            path: r.read_ustring()?,
            data: r.read_buffer()?.unwrap_or_default(),
            version: r.read_i32()?,
        },
        op::GET_ACL => Request::GetAcl {
            path: r.read_ustring()?,
        },
        op::SET_ACL => Request::SetAcl {
            path: r.read_ustring()?,
            acl: r.read_vec_acl()?,
            version: r.read_i32()?,
        },
        op::GET_CHILDREN | op::GET_CHILDREN2 => Request::GetChildren {
            path: r.read_ustring()?,
            watch: r.read_bool()?,
        },
        op::SYNC => Request::Sync {
            path: r.read_ustring()?,
        },
        op::PING => Request::Ping,
        op::CHECK => Request::Check {
            path: r.read_ustring()?,
            version: r.read_i32()?,
        },
        op::MULTI => Request::Multi(read_multi(r, false)?),
        op::MULTI_READ => Request::MultiRead(read_multi(r, true)?),
        op::REMOVE_WATCHES => Request::RemoveWatches {
            path: r.read_ustring()?,
            watch_type: r.read_i32()?,
        },
        op::CHECK_WATCHES => Request::CheckWatches {
            path: r.read_ustring()?,
            watch_type: r.read_i32()?,
        },
        op::AUTH => Request::Auth {
            auth_type: r.read_i32()?,
            scheme: r.read_ustring()?,
            auth: r.read_buffer()?.unwrap_or_default(),
        },
        op::SET_WATCHES | op::SET_WATCHES2 => {
            let relative_zxid = r.read_i64()?;
            let data = r.read_vec_string()?;
            let exist = r.read_vec_string()?;
            let child = r.read_vec_string()?;
            let (persistent, persistent_recursive) = if op == op::SET_WATCHES2 {
                (r.read_vec_string()?, r.read_vec_string()?)
            } else {
                (Vec::new(), Vec::new())
            };
            Request::SetWatches {
                relative_zxid,
                data,
                exist,
                child,
                persistent,
                persistent_recursive,
            }
        }
        op::GET_EPHEMERALS => Request::GetEphemerals {
            prefix: r.read_ustring()?,
        },
        op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber {
            path: r.read_ustring()?,
        },
        op::ADD_WATCH => Request::AddWatch {
            path: r.read_ustring()?,
            mode: r.read_i32()?,
        },
        op::WHO_AM_I => Request::WhoAmI,
        op::CLOSE_SESSION => Request::CloseSession,
        other => return Err(ProtoError::UnknownOpCode(other)),
    })
}

type CreateBody = (String, Vec<u8>, Vec<Acl>, i32, Option<i64>);

fn read_create(r: &mut Reader<'_>, with_ttl: bool) -> Result<CreateBody> {
    let path = r.read_ustring()?;
    let data = r.read_buffer()?.unwrap_or_default();
    let acl = r.read_vec_acl()?;
    let flags = r.read_i32()?;
    let ttl = if with_ttl { Some(r.read_i64()?) } else { None };
    Ok((path, data, acl, flags, ttl))
}

/// The `MultiHeader` before each operation or result of a batch.
pub(crate) struct MultiHeader {
    /// Op code of the entry, -1 for errors and for the terminator.
    pub(crate) op: i32,
    /// Set only on the terminator.
    pub(crate) done: bool,
}

pub(crate) fn read_multi_header(r: &mut Reader<'_>) -> Result<MultiHeader> {
    let op = r.read_i32()?;
    let done = r.read_bool()?;
    // The err field says nothing a decoder needs: -1 in requests, and error results
    // repeat their code in the body.
    let _err = r.read_i32()?;
    Ok(MultiHeader { op, done })
}

pub(crate) fn write_multi_header(w: &mut Writer, op: i32, done: bool, err: i32) {
    w.write_i32(op);
    w.write_bool(done);
    w.write_i32(err);
}

/// Reads operations up to the `done` header. ZooKeeper refuses to mix reads and writes
/// in one batch, so each kind of batch accepts only its own operations.
fn read_multi(r: &mut Reader<'_>, read_only: bool) -> Result<Vec<MultiOp>> {
    let mut ops = Vec::new();
    // Every iteration consumes at least a 9-byte header, so the loop ends with the input.
    loop {
        let MultiHeader { op, done } = read_multi_header(r)?;
        if done {
            return Ok(ops);
        }
        let item = match (op, read_only) {
            (op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL, false) => {
                let (path, data, acl, flags, ttl) = read_create(r, op == op::CREATE_TTL)?;
                MultiOp::Create {
                    op,
                    path,
                    data,
                    acl,
                    flags,
                    ttl,
                }
            }
            (op::DELETE, false) => MultiOp::Delete {
                path: r.read_ustring()?,
                version: r.read_i32()?,
            },
            (op::SET_DATA, false) => MultiOp::SetData {
                path: r.read_ustring()?,
                data: r.read_buffer()?.unwrap_or_default(),
                version: r.read_i32()?,
            },
            (op::CHECK, false) => MultiOp::Check {
                path: r.read_ustring()?,
                version: r.read_i32()?,
            },
            (op::GET_CHILDREN, true) => MultiOp::GetChildren {
                path: r.read_ustring()?,
                watch: r.read_bool()?,
            },
            (op::GET_DATA, true) => MultiOp::GetData {
                path: r.read_ustring()?,
                watch: r.read_bool()?,
            },
            (other, _) => {
                let batch = if read_only { "multiRead" } else { "multi" };
                return Err(ProtoError::Invalid(format!(
                    "op code {other} is not allowed in {batch}"
                )));
            }
        };
        ops.push(item);
    }
}

fn write_create(
    w: &mut Writer,
    with_ttl: bool,
    path: &str,
    data: &[u8],
    acl: &[Acl],
    flags: i32,
    ttl: Option<i64>,
) {
    w.write_string(path);
    w.write_buffer(data);
    w.write_vec_acl(acl);
    w.write_i32(flags);
    if with_ttl {
        w.write_i64(ttl.unwrap_or(0));
    }
}

fn write_multi(w: &mut Writer, ops: &[MultiOp]) {
    for item in ops {
        // Requests carry err -1 in their multi headers, as ZooKeeper's client writes.
        write_multi_header(w, item.op_code(), false, -1);
        match item {
            MultiOp::Create {
                op,
                path,
                data,
                acl,
                flags,
                ttl,
            } => write_create(w, *op == op::CREATE_TTL, path, data, acl, *flags, *ttl),
            MultiOp::Delete { path, version } | MultiOp::Check { path, version } => {
                w.write_string(path);
                w.write_i32(*version);
            }
            MultiOp::SetData {
                path,
                data,
                version,
            } => {
                w.write_string(path);
                w.write_buffer(data);
                w.write_i32(*version);
            }
            MultiOp::GetChildren { path, watch } | MultiOp::GetData { path, watch } => {
                w.write_string(path);
                w.write_bool(*watch);
            }
        }
    }
    write_multi_header(w, -1, true, -1);
}

/// Encodes a request payload (header then body, without length prefix).
///
/// As on the wire, the header's op code picks the layout where op codes share a
/// variant: the TTL is written only for `createTTL` (0 if `ttl` is `None`), and the
/// persistent watch lists only for `setWatches2`. The caller keeps the two consistent;
/// a mismatched pair encodes the variant's fields as they are.
pub fn encode_request(header: &RequestHeader, req: &Request) -> Vec<u8> {
    let mut w = Writer::with_capacity(64);
    w.write_i32(header.xid);
    w.write_i32(header.op);
    match req {
        Request::Create {
            path,
            data,
            acl,
            flags,
            ttl,
        } => write_create(
            &mut w,
            header.op == op::CREATE_TTL,
            path,
            data,
            acl,
            *flags,
            *ttl,
        ),
        Request::Delete { path, version } | Request::Check { path, version } => {
            w.write_string(path);
            w.write_i32(*version);
        }
        Request::Exists { path, watch }
        | Request::GetData { path, watch }
        | Request::GetChildren { path, watch } => {
            w.write_string(path);
            w.write_bool(*watch);
        }
        Request::SetData {
            path,
            data,
            version,
        } => {
            w.write_string(path);
            w.write_buffer(data);
            w.write_i32(*version);
        }
        Request::GetAcl { path }
        | Request::Sync { path }
        | Request::GetAllChildrenNumber { path }
        | Request::GetEphemerals { prefix: path } => w.write_string(path),
        Request::SetAcl { path, acl, version } => {
            w.write_string(path);
            w.write_vec_acl(acl);
            w.write_i32(*version);
        }
        Request::Ping | Request::WhoAmI | Request::CloseSession => {}
        Request::Multi(ops) | Request::MultiRead(ops) => write_multi(&mut w, ops),
        Request::RemoveWatches { path, watch_type }
        | Request::CheckWatches { path, watch_type } => {
            w.write_string(path);
            w.write_i32(*watch_type);
        }
        Request::Auth {
            auth_type,
            scheme,
            auth,
        } => {
            w.write_i32(*auth_type);
            w.write_string(scheme);
            w.write_buffer(auth);
        }
        Request::SetWatches {
            relative_zxid,
            data,
            exist,
            child,
            persistent,
            persistent_recursive,
        } => {
            w.write_i64(*relative_zxid);
            w.write_vec_string(data);
            w.write_vec_string(exist);
            w.write_vec_string(child);
            if header.op == op::SET_WATCHES2 {
                w.write_vec_string(persistent);
                w.write_vec_string(persistent_recursive);
            }
        }
        Request::AddWatch { path, mode } => {
            w.write_string(path);
            w.write_i32(*mode);
        }
    }
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(xid: i32, op: i32) -> RequestHeader {
        RequestHeader { xid, op }
    }

    fn acl() -> Vec<Acl> {
        vec![
            Acl::open_unsafe(),
            Acl {
                perms: perms::READ | perms::WRITE,
                scheme: "digest".into(),
                id: "user:hash".into(),
            },
        ]
    }

    fn create(ttl: Option<i64>) -> Request {
        Request::Create {
            path: "/a/b".into(),
            data: b"data".to_vec(),
            acl: acl(),
            flags: 3,
            ttl,
        }
    }

    fn write_ops() -> Vec<MultiOp> {
        vec![
            MultiOp::Create {
                op: op::CREATE,
                path: "/m1".into(),
                data: vec![1, 2],
                acl: vec![Acl::open_unsafe()],
                flags: 0,
                ttl: None,
            },
            MultiOp::Create {
                op: op::CREATE2,
                path: "/m2".into(),
                data: vec![],
                acl: acl(),
                flags: 2,
                ttl: None,
            },
            MultiOp::Create {
                op: op::CREATE_CONTAINER,
                path: "/m3".into(),
                data: vec![],
                acl: vec![Acl::open_unsafe()],
                flags: 4,
                ttl: None,
            },
            MultiOp::Create {
                op: op::CREATE_TTL,
                path: "/m4".into(),
                data: vec![3],
                acl: vec![Acl::open_unsafe()],
                flags: 5,
                ttl: Some(60_000),
            },
            MultiOp::Delete {
                path: "/m5".into(),
                version: -1,
            },
            MultiOp::SetData {
                path: "/m6".into(),
                data: b"x".to_vec(),
                version: 7,
            },
            MultiOp::Check {
                path: "/m7".into(),
                version: 2,
            },
        ]
    }

    fn read_ops() -> Vec<MultiOp> {
        vec![
            MultiOp::GetChildren {
                path: "/r1".into(),
                watch: false,
            },
            MultiOp::GetData {
                path: "/r2".into(),
                watch: true,
            },
        ]
    }

    /// One request of every decodable op code, with a header that matches it.
    fn every_request() -> Vec<(RequestHeader, Request)> {
        vec![
            (h(1, op::CREATE), create(None)),
            (h(2, op::CREATE2), create(None)),
            (h(3, op::CREATE_CONTAINER), create(None)),
            (h(4, op::CREATE_TTL), create(Some(1_000))),
            (
                h(5, op::DELETE),
                Request::Delete {
                    path: "/d".into(),
                    version: 4,
                },
            ),
            (
                h(6, op::EXISTS),
                Request::Exists {
                    path: "/e".into(),
                    watch: true,
                },
            ),
            (
                h(7, op::GET_DATA),
                Request::GetData {
                    path: "/g".into(),
                    watch: false,
                },
            ),
            (
                h(8, op::SET_DATA),
                Request::SetData {
                    path: "/s".into(),
                    data: vec![0, 255, 7],
                    version: -1,
                },
            ),
            (h(9, op::GET_ACL), Request::GetAcl { path: "/ga".into() }),
            (
                h(10, op::SET_ACL),
                Request::SetAcl {
                    path: "/sa".into(),
                    acl: acl(),
                    version: 3,
                },
            ),
            (
                h(11, op::GET_CHILDREN),
                Request::GetChildren {
                    path: "/c".into(),
                    watch: true,
                },
            ),
            (h(12, op::SYNC), Request::Sync { path: "/".into() }),
            (h(crate::PING_XID, op::PING), Request::Ping),
            (
                h(13, op::GET_CHILDREN2),
                Request::GetChildren {
                    path: "/c2".into(),
                    watch: false,
                },
            ),
            (
                h(14, op::CHECK),
                Request::Check {
                    path: "/ck".into(),
                    version: 9,
                },
            ),
            (h(15, op::MULTI), Request::Multi(write_ops())),
            (h(16, op::MULTI), Request::Multi(vec![])),
            (
                h(17, op::CHECK_WATCHES),
                Request::CheckWatches {
                    path: "/cw".into(),
                    watch_type: crate::watcher_type::DATA,
                },
            ),
            (
                h(18, op::REMOVE_WATCHES),
                Request::RemoveWatches {
                    path: "/rw".into(),
                    watch_type: crate::watcher_type::ANY,
                },
            ),
            (h(19, op::MULTI_READ), Request::MultiRead(read_ops())),
            (
                h(crate::AUTH_XID, op::AUTH),
                Request::Auth {
                    auth_type: 0,
                    scheme: "digest".into(),
                    auth: b"user:pw".to_vec(),
                },
            ),
            (
                h(crate::SET_WATCHES_XID, op::SET_WATCHES),
                Request::SetWatches {
                    relative_zxid: 0x55,
                    data: vec!["/d1".into(), "/d2".into()],
                    exist: vec!["/e1".into()],
                    child: vec![],
                    persistent: vec![],
                    persistent_recursive: vec![],
                },
            ),
            (
                h(20, op::GET_EPHEMERALS),
                Request::GetEphemerals {
                    prefix: "/eph".into(),
                },
            ),
            (
                h(21, op::GET_ALL_CHILDREN_NUMBER),
                Request::GetAllChildrenNumber { path: "/n".into() },
            ),
            (
                h(crate::SET_WATCHES_XID, op::SET_WATCHES2),
                Request::SetWatches {
                    relative_zxid: -1,
                    data: vec!["/d".into()],
                    exist: vec![],
                    child: vec!["/c".into()],
                    persistent: vec!["/p".into()],
                    persistent_recursive: vec!["/pr".into(), "/pr2".into()],
                },
            ),
            (
                h(22, op::ADD_WATCH),
                Request::AddWatch {
                    path: "/aw".into(),
                    mode: crate::add_watch_mode::PERSISTENT_RECURSIVE,
                },
            ),
            (h(23, op::WHO_AM_I), Request::WhoAmI),
            (h(24, op::CLOSE_SESSION), Request::CloseSession),
        ]
    }

    #[test]
    fn every_request_round_trips() {
        for (header, req) in every_request() {
            let bytes = encode_request(&header, &req);
            assert_eq!(
                decode_request(&bytes),
                Ok((header, req.clone())),
                "op {}",
                header.op
            );
            assert_eq!(decode_header(&bytes), Ok(header));
        }
    }

    #[test]
    fn every_strict_prefix_fails() {
        for (header, req) in every_request() {
            let bytes = encode_request(&header, &req);
            for cut in 0..bytes.len() {
                assert!(
                    decode_request(&bytes[..cut]).is_err(),
                    "op {} cut at {cut}",
                    header.op
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_ignored() {
        let header = h(1, op::SYNC);
        let req = Request::Sync { path: "/x".into() };
        let mut bytes = encode_request(&header, &req);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode_request(&bytes), Ok((header, req)));
    }

    #[test]
    fn get_data_known_bytes() {
        let bytes = encode_request(
            &h(5, op::GET_DATA),
            &Request::GetData {
                path: "/a".into(),
                watch: true,
            },
        );
        assert_eq!(
            bytes,
            [0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 2, b'/', b'a', 1].to_vec()
        );
    }

    #[test]
    fn create_ttl_layout() {
        let bytes = encode_request(&h(1, op::CREATE_TTL), &create(Some(0x0102)));
        assert_eq!(
            &bytes[bytes.len() - 12..bytes.len() - 8],
            &3i32.to_be_bytes()
        );
        assert_eq!(&bytes[bytes.len() - 8..], &0x0102i64.to_be_bytes());
        // Plain create carries no TTL, whatever the variant holds.
        let plain = encode_request(&h(1, op::CREATE), &create(Some(0x0102)));
        assert_eq!(plain.len(), bytes.len() - 8);
        assert_eq!(decode_request(&plain).map(|(_, r)| r), Ok(create(None)));
    }

    #[test]
    fn set_watches_v1_has_no_persistent_lists() {
        let req = Request::SetWatches {
            relative_zxid: 1,
            data: vec![],
            exist: vec![],
            child: vec![],
            persistent: vec!["/p".into()],
            persistent_recursive: vec![],
        };
        let v1 = encode_request(&h(-8, op::SET_WATCHES), &req);
        let v2 = encode_request(&h(-8, op::SET_WATCHES2), &req);
        assert_eq!(v1.len(), 8 + 8 + 3 * 4);
        assert_eq!(v2.len(), v1.len() + 4 + 4 + 2 + 4);
    }

    #[test]
    fn null_data_and_acl_read_as_empty() {
        let mut w = Writer::new();
        w.write_i32(1);
        w.write_i32(op::CREATE);
        w.write_string("/n");
        w.write_opt_buffer(None);
        w.write_i32(-1);
        w.write_i32(0);
        let (_, req) = decode_request(w.as_slice()).unwrap();
        assert_eq!(
            req,
            Request::Create {
                path: "/n".into(),
                data: vec![],
                acl: vec![],
                flags: 0,
                ttl: None,
            }
        );
    }

    #[test]
    fn null_path_is_an_error() {
        let mut w = Writer::new();
        w.write_i32(1);
        w.write_i32(op::GET_ACL);
        w.write_opt_string(None);
        assert_eq!(
            decode_request(w.as_slice()),
            Err(ProtoError::UnexpectedNull)
        );
    }

    #[test]
    fn unknown_op_keeps_the_xid_reachable() {
        for unknown in [op::SASL, op::RECONFIG, op::DELETE_CONTAINER, 10, 9999, -3] {
            let mut w = Writer::new();
            w.write_i32(77);
            w.write_i32(unknown);
            w.write_string("/whatever");
            let bytes = w.into_inner();
            assert_eq!(
                decode_request(&bytes),
                Err(ProtoError::UnknownOpCode(unknown))
            );
            assert_eq!(decode_header(&bytes), Ok(h(77, unknown)));
        }
        assert_eq!(decode_header(&[0, 0, 0, 1, 0]), Err(ProtoError::Truncated));
    }

    #[test]
    fn huge_string_in_body_does_not_allocate() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&1i32.to_be_bytes());
        bytes.extend_from_slice(&op::GET_DATA.to_be_bytes());
        bytes.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
        bytes.extend_from_slice(b"/a");
        assert_eq!(decode_request(&bytes), Err(ProtoError::Truncated));
    }

    #[test]
    fn multi_layout() {
        let ops = vec![MultiOp::Check {
            path: "/a".into(),
            version: 1,
        }];
        let bytes = encode_request(&h(3, op::MULTI), &Request::Multi(ops));
        let expected: Vec<u8> = [
            &[0, 0, 0, 3, 0, 0, 0, 14][..],
            // MultiHeader(check, done=false, err=-1), then CheckVersionRequest.
            &[0, 0, 0, 13, 0, 0xff, 0xff, 0xff, 0xff],
            &[0, 0, 0, 2, b'/', b'a', 0, 0, 0, 1],
            // Terminator: MultiHeader(-1, done=true, err=-1).
            &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn multi_rejects_foreign_ops() {
        // Reads in a write batch, writes in a read batch, nested batches.
        let cases = [
            (
                op::MULTI,
                MultiOp::GetData {
                    path: "/a".into(),
                    watch: false,
                },
            ),
            (
                op::MULTI_READ,
                MultiOp::Delete {
                    path: "/a".into(),
                    version: 0,
                },
            ),
        ];
        for (batch, item) in cases {
            let req = if batch == op::MULTI {
                Request::Multi(vec![item])
            } else {
                Request::MultiRead(vec![item])
            };
            let bytes = encode_request(&h(1, batch), &req);
            assert!(matches!(
                decode_request(&bytes),
                Err(ProtoError::Invalid(_))
            ));
        }
        let mut w = Writer::new();
        w.write_i32(1);
        w.write_i32(op::MULTI);
        write_multi_header(&mut w, op::MULTI, false, -1);
        write_multi_header(&mut w, -1, true, -1);
        assert!(matches!(
            decode_request(w.as_slice()),
            Err(ProtoError::Invalid(_))
        ));
    }

    #[test]
    fn multi_without_terminator_is_truncated() {
        let mut w = Writer::new();
        w.write_i32(1);
        w.write_i32(op::MULTI);
        write_multi_header(&mut w, op::DELETE, false, -1);
        w.write_string("/a");
        w.write_i32(0);
        assert_eq!(decode_request(w.as_slice()), Err(ProtoError::Truncated));
    }

    #[test]
    fn open_unsafe_acl() {
        let a = Acl::open_unsafe();
        assert_eq!(
            (a.perms, a.scheme.as_str(), a.id.as_str()),
            (31, "world", "anyone")
        );
    }
}
