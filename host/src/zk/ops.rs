//! Translation of ZooKeeper requests into pipeline ops and of results back into replies.
//! No outcome is decided here: every answer comes from the pipeline (`faaskeeper-core`).

use super::{Gateway, GwSession};
use faaskeeper_client::Error as ClientError;
use faaskeeper_core::wire::{
    EventType, MultiOp as WireMultiOp, Op, OpResult, WatchEvent, WatchKind, multi_failure_codes,
};
use faaskeeper_core::{CreateMode, ZkError};
use faaskeeper_zk_proto::{
    Acl, MultiOp, MultiResult, ProtoError, ReplyHeader, Request, Response, add_watch_mode,
    decode_header, decode_request, encode_reply, encode_watch_event, op,
};
use std::sync::Arc;

/// What the connection does after a request.
pub(crate) enum Reply {
    /// Send this payload.
    Send(Vec<u8>),
    /// Send this payload, then close the connection.
    SendAndClose(Vec<u8>),
    /// Close the connection without an answer (undecodable frame).
    Close,
}

/// ZooKeeper's `KeeperState.SyncConnected`.
const SYNC_CONNECTED: i32 = 3;

fn event_code(kind: EventType) -> i32 {
    kind.code()
}

/// The notification frame for a watch event. ZooKeeper 3.8 sends notifications with xid -1
/// and zxid -1 in the reply header.
pub(crate) fn watch_frame(ev: &WatchEvent) -> Vec<u8> {
    encode_watch_event(event_code(ev.kind), SYNC_CONNECTED, &ev.path, -1)
}

fn reply(xid: i32, zxid: i64, outcome: Result<Response, ZkError>) -> Reply {
    let (err, body) = match outcome {
        Ok(body) => (0, body),
        Err(e) => (e.code(), Response::Empty),
    };
    Reply::Send(encode_reply(&ReplyHeader { xid, zxid, err }, &body))
}

/// A ZooKeeper ACL as the pipeline takes it. Every ZooKeeper create carries one (clients
/// send `world:anyone` when the application gives none), so it always goes along.
fn acl_in(acl: Vec<Acl>) -> Vec<faaskeeper_core::acl::Acl> {
    acl.into_iter()
        .map(|a| faaskeeper_core::acl::Acl {
            perms: a.perms,
            scheme: a.scheme,
            id: a.id,
        })
        .collect()
}

fn acl_out(acl: Vec<faaskeeper_core::acl::Acl>) -> Vec<Acl> {
    acl.into_iter()
        .map(|a| Acl {
            perms: a.perms,
            scheme: a.scheme,
            id: a.id,
        })
        .collect()
}

fn zk_mode(opcode: i32, flags: i32, ttl: Option<i64>) -> Result<CreateMode, ZkError> {
    CreateMode::for_request(flags, opcode == op::CREATE_CONTAINER, ttl)
}

/// Run a pipeline op; `None` when the pipeline is unreachable (the connection is closed so
/// the client reconnects, as after a lost server).
async fn pipeline(s: &GwSession, op: Op) -> Option<(i64, OpResult)> {
    match s.client.request(op).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "pipeline request failed");
            None
        }
    }
}

/// Guarantee 4 for direct reads: a client must not see data newer than a watch event it has
/// not received. If the session has watches and the read observed a change (`observed`: the
/// newest zxid in the answer; `None` when the node is missing) the session has not yet been
/// told about, a sync through the pipeline delivers every earlier event first. `false` if
/// the pipeline is unreachable.
async fn settle(s: &GwSession, observed: Option<i64>) -> bool {
    if !s.has_watches.load(std::sync::atomic::Ordering::SeqCst) {
        return true;
    }
    if observed.is_some_and(|z| z <= s.client.last_zxid()) {
        return true;
    }
    pipeline(
        s,
        Op::Sync {
            path: "/".to_string(),
        },
    )
    .await
    .is_some()
}

fn client_err(e: ClientError) -> Option<ZkError> {
    match e {
        ClientError::Zk { code, .. } => Some(code),
        _ => None,
    }
}

pub(crate) async fn handle(gw: &Arc<Gateway>, s: &Arc<GwSession>, payload: &[u8]) -> Reply {
    let (hdr, req) = match decode_request(payload) {
        Ok(x) => x,
        Err(ProtoError::UnknownOpCode(code)) => {
            // ZooKeeper 3.8 answers an unknown request type with Unimplemented under its xid
            // (`UnimplementedRequestProcessor`) and drops the connection; the session lives
            // on. Its client does not always see the answer before the close
            // (tests/zk_wire.rs accepts both).
            tracing::debug!(op = code, "unknown zk op code");
            let Ok(hdr) = decode_header(payload) else {
                return Reply::Close;
            };
            return match reply(hdr.xid, s.client.last_zxid(), Err(ZkError::Unimplemented)) {
                Reply::Send(p) => Reply::SendAndClose(p),
                other => other,
            };
        }
        Err(e) => {
            // ZooKeeper answers an undecodable body with MarshallingError under the request's
            // xid, then drops the connection (tests/zk_wire.rs).
            tracing::debug!(error = %e, "malformed zk request");
            let Ok(hdr) = decode_header(payload) else {
                return Reply::Close;
            };
            return match reply(
                hdr.xid,
                s.client.last_zxid(),
                Err(ZkError::MarshallingError),
            ) {
                Reply::Send(p) => Reply::SendAndClose(p),
                other => other,
            };
        }
    };
    let xid = hdr.xid;
    let c = &s.client;
    let leaves_watch = match &req {
        Request::GetData { watch, .. }
        | Request::Exists { watch, .. }
        | Request::GetChildren { watch, .. } => *watch,
        Request::AddWatch { .. } | Request::SetWatches { .. } => true,
        _ => false,
    };
    if leaves_watch {
        s.has_watches
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    macro_rules! settled {
        ($observed:expr) => {
            if !settle(s, $observed).await {
                return Reply::Close;
            }
        };
    }
    macro_rules! run {
        ($op:expr) => {
            match pipeline(s, $op).await {
                Some(r) => r,
                None => return Reply::Close,
            }
        };
    }
    macro_rules! direct {
        ($e:expr) => {
            match $e {
                Ok(v) => Ok(v),
                Err(e) => match client_err(e) {
                    Some(code) => Err(code),
                    None => return Reply::Close,
                },
            }
        };
    }
    match req {
        Request::Ping => reply(xid, c.last_zxid(), Ok(Response::Empty)),
        Request::Create {
            path,
            data,
            acl,
            flags,
            ttl,
        } => {
            let mode = match zk_mode(hdr.op, flags, ttl) {
                Ok(m) => m,
                Err(e) => return reply(xid, c.last_zxid(), Err(e)),
            };
            let (zxid, r) = run!(Op::Create {
                path,
                data,
                mode,
                acl: Some(acl_in(acl)),
            });
            let out = match r {
                OpResult::Created { path, .. } if hdr.op == op::CREATE => {
                    Ok(Response::Create { path })
                }
                OpResult::Created { path, stat } => Ok(Response::Create2 { path, stat }),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::Delete { path, version } => {
            let (zxid, r) = run!(Op::Delete { path, version });
            let out = match r {
                OpResult::Deleted => Ok(Response::Empty),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::SetData {
            path,
            data,
            version,
        } => {
            let (zxid, r) = run!(Op::SetData {
                path,
                data,
                version
            });
            let out = match r {
                OpResult::Stat { stat } => Ok(Response::Stat(stat)),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::Exists { path, watch: true } => {
            let (zxid, r) = run!(Op::Exists { path, watch: true });
            let out = match r {
                OpResult::Exists { stat: Some(stat) } => Ok(Response::Stat(stat)),
                OpResult::Exists { stat: None } => Err(ZkError::NoNode),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::Exists { path, watch: false } => {
            let read = direct!(c.exists(&path).await);
            settled!(
                read.as_ref()
                    .ok()
                    .and_then(|s| s.as_ref().map(|s| s.newest_zxid()))
            );
            let out = match read {
                Ok(Some(stat)) => Ok(Response::Stat(stat)),
                Ok(None) => Err(ZkError::NoNode),
                Err(e) => Err(e),
            };
            reply(xid, c.last_zxid(), out)
        }
        Request::GetData { path, watch: true } => {
            let (zxid, r) = run!(Op::GetData { path, watch: true });
            let out = match r {
                OpResult::Data { data, stat } => Ok(Response::GetData { data, stat }),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::GetData { path, watch: false } => {
            let out = direct!(c.get_data(&path).await)
                .map(|(data, stat)| Response::GetData { data, stat });
            reply(xid, c.last_zxid(), out)
        }
        Request::GetChildren { path, watch } => {
            let (zxid, out) = if watch {
                let (zxid, r) = run!(Op::GetChildren { path, watch: true });
                let out = match r {
                    OpResult::Children { children, stat } => Ok((children, stat)),
                    other => Err(error_of(other)),
                };
                (zxid, out)
            } else {
                let read = direct!(c.get_children2(&path).await);
                settled!(read.as_ref().ok().map(|(_, stat)| stat.newest_zxid()));
                (c.last_zxid(), read)
            };
            let out = out.map(|(children, stat)| {
                if hdr.op == op::GET_CHILDREN2 {
                    Response::GetChildren2 { children, stat }
                } else {
                    Response::GetChildren { children }
                }
            });
            reply(xid, zxid, out)
        }
        Request::GetAcl { path } => {
            let (zxid, r) = run!(Op::GetAcl { path });
            let out = match r {
                OpResult::Acl { acl, stat } => Ok(Response::GetAcl {
                    acl: acl_out(acl),
                    stat,
                }),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::SetAcl { path, acl, version } => {
            let (zxid, r) = run!(Op::SetAcl {
                path,
                acl: acl_in(acl),
                version
            });
            let out = match r {
                OpResult::Stat { stat } => Ok(Response::Stat(stat)),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::Sync { path } => {
            let (zxid, r) = run!(Op::Sync { path });
            let out = match r {
                OpResult::Synced { path } => Ok(Response::Sync { path }),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::SetWatches {
            relative_zxid,
            data,
            exist,
            child,
            ..
        } => {
            let (zxid, r) = run!(Op::SetWatches {
                relative_zxid,
                data,
                exist,
                child
            });
            let out = match r {
                OpResult::WatchesSet => Ok(Response::Empty),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        // ZooKeeper answers auth packets with zxid 0. Here the auth goes through the pipeline
        // like any request of the session, so a request sent after it is judged with it.
        Request::Auth { scheme, auth, .. } => {
            let (_, r) = run!(Op::AddAuth { scheme, auth });
            match r {
                OpResult::AuthAdded => reply(xid, 0, Ok(Response::Empty)),
                // An unknown scheme: ZooKeeper answers AuthFailed and closes the connection
                // (the session lives on until it times out; clients give it up).
                other => match reply(xid, 0, Err(error_of(other))) {
                    Reply::Send(p) => Reply::SendAndClose(p),
                    other => other,
                },
            }
        }
        Request::WhoAmI => reply(
            xid,
            c.last_zxid(),
            Ok(Response::WhoAmI {
                ids: vec![("ip".to_string(), "127.0.0.1".to_string())],
            }),
        ),
        Request::CloseSession => {
            gw.forget(c.session_id());
            let zxid = c.last_zxid();
            let _ = c.close_ref().await;
            match reply(xid, zxid, Ok(Response::Empty)) {
                Reply::Send(p) => Reply::SendAndClose(p),
                other => other,
            }
        }
        Request::Multi(ops) => {
            let mut wire = Vec::with_capacity(ops.len());
            let mut kinds = Vec::with_capacity(ops.len());
            for o in ops {
                kinds.push(o.op_code());
                wire.push(match o {
                    MultiOp::Create {
                        op: opcode,
                        path,
                        data,
                        acl,
                        flags,
                        ttl,
                    } => match zk_mode(opcode, flags, ttl) {
                        Ok(mode) => WireMultiOp::Create {
                            path,
                            data,
                            mode,
                            acl: Some(acl_in(acl)),
                        },
                        Err(e) => return reply(xid, c.last_zxid(), Err(e)),
                    },
                    MultiOp::Delete { path, version } => WireMultiOp::Delete { path, version },
                    MultiOp::SetData {
                        path,
                        data,
                        version,
                    } => WireMultiOp::SetData {
                        path,
                        data,
                        version,
                    },
                    MultiOp::Check { path, version } => WireMultiOp::Check { path, version },
                    // The decoder admits no reads inside a write multi.
                    _ => return reply(xid, c.last_zxid(), Err(ZkError::BadArguments)),
                });
            }
            let (zxid, r) = run!(Op::Multi { ops: wire });
            let out = match r {
                OpResult::Multi { results } => Ok(Response::Multi(
                    results
                        .into_iter()
                        .zip(kinds)
                        .map(|(r, kind)| multi_result(r, kind))
                        .collect(),
                )),
                // ZooKeeper reports a failed multi with err 0 in the header and the failure
                // in the results: 0 before the culprit, its code, then RuntimeInconsistency.
                OpResult::MultiFailed { index, error, .. } => Ok(Response::Multi(
                    multi_failure_codes(kinds.len(), index, error)
                        .into_iter()
                        .map(|err| MultiResult::Error { err })
                        .collect(),
                )),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::MultiRead(ops) => {
            let mut results = Vec::with_capacity(ops.len());
            for o in ops {
                let r = match o {
                    MultiOp::GetData { path, .. } => match c.get_data(&path).await {
                        Ok((data, stat)) => MultiResult::GetData { data, stat },
                        Err(e) => match client_err(e) {
                            Some(code) => MultiResult::Error { err: code.code() },
                            None => return Reply::Close,
                        },
                    },
                    MultiOp::GetChildren { path, .. } => match c.get_children(&path).await {
                        Ok(children) => MultiResult::GetChildren { children },
                        Err(e) => match client_err(e) {
                            Some(code) => MultiResult::Error { err: code.code() },
                            None => return Reply::Close,
                        },
                    },
                    _ => MultiResult::Error {
                        err: ZkError::BadArguments.code(),
                    },
                };
                results.push(r);
            }
            settled!(None);
            reply(xid, c.last_zxid(), Ok(Response::Multi(results)))
        }
        Request::GetEphemerals { prefix } => {
            let (zxid, r) = run!(Op::GetEphemerals { prefix });
            let out = match r {
                OpResult::Ephemerals { paths } => Ok(Response::GetEphemerals { paths }),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::GetAllChildrenNumber { path } => {
            let (zxid, r) = run!(Op::GetAllChildrenNumber { path });
            let out = match r {
                OpResult::AllChildrenNumber { total } => {
                    Ok(Response::GetAllChildrenNumber { total })
                }
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::AddWatch { path, mode } => {
            let recursive = match mode {
                add_watch_mode::PERSISTENT => false,
                add_watch_mode::PERSISTENT_RECURSIVE => true,
                _ => return reply(xid, c.last_zxid(), Err(ZkError::BadArguments)),
            };
            let (zxid, r) = run!(Op::AddWatch { path, recursive });
            let out = match r {
                OpResult::WatchAdded => Ok(Response::Empty),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        Request::RemoveWatches { path, watch_type }
        | Request::CheckWatches { path, watch_type } => {
            let check_only = hdr.op == op::CHECK_WATCHES;
            let Some(kind) = WatchKind::from_code(watch_type) else {
                return reply(xid, c.last_zxid(), Err(ZkError::BadArguments));
            };
            let (zxid, r) = run!(Op::RemoveWatches {
                path,
                kind,
                check_only
            });
            let out = match r {
                OpResult::WatchesRemoved => Ok(Response::Empty),
                other => Err(error_of(other)),
            };
            reply(xid, zxid, out)
        }
        // Not in the pipeline yet.
        _ => reply(xid, c.last_zxid(), Err(ZkError::Unimplemented)),
    }
}

fn multi_result(r: OpResult, kind: i32) -> MultiResult {
    match r {
        OpResult::Created { path, .. } if kind == op::CREATE => MultiResult::Create { path },
        OpResult::Created { path, stat } => MultiResult::Create2 { path, stat },
        OpResult::Deleted => MultiResult::Delete,
        OpResult::Stat { stat } => MultiResult::SetData { stat },
        OpResult::Checked => MultiResult::Check,
        other => MultiResult::Error {
            err: error_of(other).code(),
        },
    }
}

fn error_of(r: OpResult) -> ZkError {
    match r {
        OpResult::Error { error, .. } => error,
        _ => ZkError::SystemError,
    }
}
