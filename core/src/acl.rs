//! ZooKeeper's access control lists, as ZooKeeper 3.8's server judges them.
//!
//! An ACL is a list of `(perms, scheme:id)` entries. Schemes:
//! - `world:anyone` — everybody;
//! - `digest:user:base64(sha1("user:password"))` — sessions that authenticated with
//!   `addAuth("digest", "user:password")` ([`authenticate`]);
//! - `auth` — in a create or setACL, stands for every id the session authenticated with
//!   (expanded by [`fixup`]; `InvalidACL` when it has none).
//!
//! ZooKeeper's `ip` scheme is not supported: a session here has no address the service can
//! vouch for (requests reach the pipeline through the HTTP API or the gateway), so an `ip`
//! entry is refused as `InvalidACL` rather than stored and never matched.
//!
//! The functions follow `PrepRequestProcessor.fixupACL`, `ZooKeeperServer.checkACL`,
//! `DigestAuthenticationProvider` and `FinalRequestProcessor`'s getACL (digest ids shown as
//! `user:x` to a session without ADMIN). Where each check happens, and in which order
//! relative to `NoNode` and `BadVersion`, is decided in [`crate::apply`].

use crate::ZkError;
use serde::{Deserialize, Serialize};

/// Permission bits (`ZooDefs.Perms`).
pub mod perms {
    /// Read data and list children.
    pub const READ: i32 = 1;
    /// Set data.
    pub const WRITE: i32 = 2;
    /// Create children.
    pub const CREATE: i32 = 4;
    /// Delete children.
    pub const DELETE: i32 = 8;
    /// Set the ACL.
    pub const ADMIN: i32 = 16;
    /// All of the above.
    pub const ALL: i32 = READ | WRITE | CREATE | DELETE | ADMIN;
}

/// An identity a session holds: `scheme:id` (e.g. `digest:alice:<hash>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    /// Authentication scheme.
    pub scheme: String,
    /// Identity within the scheme.
    pub id: String,
}

/// One ACL entry: permission bits for an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Acl {
    /// Permission bits ([`perms`]); any value is stored as given, as ZooKeeper does.
    pub perms: i32,
    /// Scheme: `world`, `digest` or `auth`.
    pub scheme: String,
    /// Identity within the scheme.
    pub id: String,
}

impl Acl {
    /// An entry.
    pub fn new(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            scheme: scheme.to_string(),
            id: id.to_string(),
        }
    }

    fn is_world_anyone(&self) -> bool {
        self.scheme == "world" && self.id == "anyone"
    }
}

/// `world:anyone` with every permission (`ZooDefs.Ids.OPEN_ACL_UNSAFE`): the ACL of a node
/// created without one.
pub fn open_unsafe() -> Vec<Acl> {
    vec![Acl::new(perms::ALL, "world", "anyone")]
}

/// `world:anyone` may only read (`ZooDefs.Ids.READ_ACL_UNSAFE`; ZooKeeper's
/// `/zookeeper/config`).
pub fn read_unsafe() -> Vec<Acl> {
    vec![Acl::new(perms::READ, "world", "anyone")]
}

/// How a node record keeps its ACL: empty for [`open_unsafe`] (so that records of open nodes,
/// the common case, hold the same bytes as before ACLs existed), the list otherwise. A list
/// that passed [`fixup`] is never empty, so the empty list means nothing else.
pub fn stored(acl: Vec<Acl>) -> Vec<Acl> {
    if acl == open_unsafe() {
        Vec::new()
    } else {
        acl
    }
}

/// The ACL a stored list stands for (the inverse of [`stored`]).
pub fn effective(stored: &[Acl]) -> Vec<Acl> {
    if stored.is_empty() {
        open_unsafe()
    } else {
        stored.to_vec()
    }
}

/// The digest id for `user:password`, as `DigestAuthenticationProvider.generateDigest`:
/// the part before the first `:`, a `:`, then base64 of the SHA-1 of the whole string.
pub fn digest(user_password: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    let user = match user_password.iter().position(|b| *b == b':') {
        Some(i) => &user_password[..i],
        None => user_password,
    };
    let hash = sha1::Sha1::digest(user_password);
    format!(
        "{}:{}",
        String::from_utf8_lossy(user),
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// What `addAuth(scheme, auth)` proves: for `digest`, the session's digest id. `ip` succeeds
/// and proves nothing here (see the module docs). Any other scheme is `AuthFailed`, which
/// ZooKeeper answers by closing the connection.
pub fn authenticate(scheme: &str, auth: &[u8]) -> Result<Option<Id>, ZkError> {
    match scheme {
        "digest" => Ok(Some(Id {
            scheme: "digest".to_string(),
            id: digest(auth),
        })),
        "ip" => Ok(None),
        _ => Err(ZkError::AuthFailed),
    }
}

/// `DigestAuthenticationProvider.isValid`: Java's `id.split(":")` (trailing empty parts
/// dropped) must give exactly two parts.
fn valid_digest_id(id: &str) -> bool {
    let mut parts: Vec<&str> = id.split(':').collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts.len() == 2
}

/// Whether a list could pass [`fixup`] for some session: everything but the expansion of
/// `auth`, which depends on the session's ids. Returns whether it holds an `auth` entry.
pub fn check_shape(acl: &[Acl]) -> Result<bool, ZkError> {
    if acl.is_empty() {
        return Err(ZkError::InvalidAcl);
    }
    let mut has_auth = false;
    for a in acl {
        let ok = if a.is_world_anyone() {
            true
        } else {
            match a.scheme.as_str() {
                "auth" => {
                    has_auth = true;
                    true
                }
                "digest" => valid_digest_id(&a.id),
                _ => false,
            }
        };
        if !ok {
            return Err(ZkError::InvalidAcl);
        }
    }
    Ok(has_auth)
}

/// `PrepRequestProcessor.fixupACL`: the list a create or setACL stores. Duplicates go (first
/// kept); `world:anyone` and well-formed `digest` ids stay; each `auth` entry becomes one entry
/// per authenticated id of the session (`auth`), with its perms. `InvalidACL` for an empty
/// list, an unknown scheme, `world` with another id, a malformed digest id, or `auth` when
/// the session has not authenticated.
pub fn fixup(acl: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, ZkError> {
    check_shape(acl)?;
    let mut unique: Vec<&Acl> = Vec::with_capacity(acl.len());
    for a in acl {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    let mut out = Vec::with_capacity(unique.len());
    for a in unique {
        if a.scheme == "auth" {
            if auth.is_empty() {
                return Err(ZkError::InvalidAcl);
            }
            out.extend(auth.iter().map(|id| Acl::new(a.perms, &id.scheme, &id.id)));
        } else {
            out.push(a.clone());
        }
    }
    Ok(out)
}

/// `ZooKeeperServer.checkACL`: whether a session with ids `auth` holds any bit of `perm` on a
/// node whose stored ACL is `stored` ([`stored`]'s form).
pub fn allows(stored: &[Acl], auth: &[Id], perm: i32) -> bool {
    if stored.is_empty() {
        return true;
    }
    stored.iter().any(|a| {
        a.perms & perm != 0
            && (a.is_world_anyone() || auth.iter().any(|id| id.scheme == a.scheme && id.id == a.id))
    })
}

/// `NoAuth` unless [`allows`].
pub fn require(stored: &[Acl], auth: &[Id], perm: i32) -> Result<(), ZkError> {
    if allows(stored, auth, perm) {
        Ok(())
    } else {
        Err(ZkError::NoAuth)
    }
}

/// The ACL getACL shows a session without ADMIN on the node: digest ids cut to `user:x`
/// (Java's `replaceAll(":.*", ":x")`), so password hashes stay with the node's admins.
pub fn redacted(acl: Vec<Acl>) -> Vec<Acl> {
    acl.into_iter()
        .map(|mut a| {
            if a.scheme == "digest"
                && let Some(i) = a.id.find(':')
            {
                a.id.truncate(i);
                a.id.push_str(":x");
            }
            a
        })
        .collect()
}

/// Only the ACL of a stored node object ([`crate::wire::NodeView`]): serde skips the
/// payload without decoding it, so checking an open node costs no base64 decoding.
#[derive(Deserialize)]
struct ObjectAcl {
    #[serde(default)]
    acl: Vec<Acl>,
}

/// Only the ids of a stored session record ([`crate::apply::SessionRecord`]).
#[derive(Deserialize)]
struct SessionIds {
    #[serde(default)]
    auth: Vec<Id>,
    #[serde(default)]
    closed: bool,
}

/// The ids a stored session record holds; none for a closed session, whose reads get only
/// what `world:anyone` may read.
pub fn session_ids(record: &[u8]) -> Result<Vec<Id>, serde_json::Error> {
    let s: SessionIds = serde_json::from_slice(record)?;
    Ok(if s.closed { Vec::new() } else { s.auth })
}

/// What a read route answers for a node object read straight from the user bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// Serve these bytes: the object itself when it is open, else re-encoded without its ACL.
    Serve(Vec<u8>),
    /// The session lacks READ (`NoAuth`, as ZooKeeper's getData and getChildren); the stat
    /// may still be shown, as ZooKeeper's `exists` shows it to anyone.
    NoAuth(crate::Stat),
}

/// Judge a read of the stored node object `object` (JSON [`crate::wire::NodeView`]) by the
/// session whose ids `ids` gives. `ids` is called only for a node whose ACL is not open, so
/// reads of open nodes cost no lookup of the session. This is ZooKeeper's READ check for
/// reads served without the pipeline: the host's `GET /v1/node`, the gateway's in-process
/// reads and the writer's `/node` route.
pub fn judge_read<E>(
    object: Vec<u8>,
    ids: impl FnOnce() -> Result<Vec<Id>, E>,
) -> Result<ReadAnswer, ReadError<E>> {
    let acl = serde_json::from_slice::<ObjectAcl>(&object)
        .map_err(ReadError::Corrupt)?
        .acl;
    if acl.is_empty() {
        return Ok(ReadAnswer::Serve(object));
    }
    let mut view: crate::wire::NodeView =
        serde_json::from_slice(&object).map_err(ReadError::Corrupt)?;
    if !allows(&acl, &ids().map_err(ReadError::Ids)?, perms::READ) {
        return Ok(ReadAnswer::NoAuth(view.stat));
    }
    // The ACL stays with the node: readers without ADMIN must not see digest hashes.
    view.acl.clear();
    serde_json::to_vec(&view)
        .map(ReadAnswer::Serve)
        .map_err(ReadError::Corrupt)
}

/// Why [`judge_read`] could not judge.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The stored object is not a node object.
    #[error("corrupt node object: {0}")]
    Corrupt(serde_json::Error),
    /// The session's ids could not be read.
    #[error("session ids: {0}")]
    Ids(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Id {
        Id {
            scheme: "digest".into(),
            id: digest(b"alice:pa"),
        }
    }

    #[test]
    fn digest_is_zookeepers() {
        // Measured on ZooKeeper 3.8.0: getACL of a node made with
        // `make_digest_acl("alice", "pa")` shows this id.
        assert_eq!(digest(b"alice:pa"), "alice:XGwR/aNhtZ4drCHeICTZJGkWU30=");
        // No colon: the whole string is the user.
        assert!(digest(b"nocolon").starts_with("nocolon:"));
        assert_eq!(authenticate("digest", b"alice:pa"), Ok(Some(alice())));
        assert_eq!(authenticate("ip", b"x"), Ok(None));
        assert_eq!(authenticate("foo", b"x"), Err(ZkError::AuthFailed));
    }

    #[test]
    fn fixup_is_zookeepers() {
        let a = |scheme: &str, id: &str| Acl::new(perms::ALL, scheme, id);
        assert_eq!(fixup(&[], &[]), Err(ZkError::InvalidAcl));
        for bad in [
            a("foo", "bar"),
            a("world", "foo"),
            a("digest", "alice"),
            a("digest", "alice:"),
            a("digest", "a:b:c"),
            a("digest", ""),
            a("ip", "127.0.0.1"),
        ] {
            assert_eq!(
                fixup(std::slice::from_ref(&bad), &[alice()]),
                Err(ZkError::InvalidAcl),
                "{bad:?}"
            );
        }
        // Accepted by ZooKeeper: an empty user, any perms value.
        assert!(fixup(&[a("digest", ":x")], &[]).is_ok());
        assert!(fixup(&[Acl::new(-1, "world", "anyone")], &[]).is_ok());
        // `auth` needs ids and expands to each of them with its perms.
        assert_eq!(fixup(&[a("auth", "")], &[]), Err(ZkError::InvalidAcl));
        let bob = Id {
            scheme: "digest".into(),
            id: digest(b"bob:pb"),
        };
        assert_eq!(
            fixup(&[Acl::new(3, "auth", "whatever")], &[alice(), bob.clone()]),
            Ok(vec![
                Acl::new(3, "digest", &alice().id),
                Acl::new(3, "digest", &bob.id)
            ])
        );
        // Duplicates go.
        let ali = Acl::new(perms::ALL, "digest", &alice().id);
        assert_eq!(fixup(&[ali.clone(), ali.clone()], &[]), Ok(vec![ali]));
    }

    #[test]
    fn reads_are_judged_on_the_stored_object() {
        use crate::wire::NodeView;
        let view = |acl: Vec<Acl>| NodeView {
            data: b"secret".to_vec(),
            stat: crate::Stat::default(),
            children: vec![],
            acl,
        };
        let never = || -> Result<Vec<Id>, ()> { panic!("open nodes need no session lookup") };
        let open = serde_json::to_vec(&view(vec![])).expect("json");
        assert_eq!(
            judge_read(open.clone(), never).expect("judged"),
            ReadAnswer::Serve(open)
        );
        let ali = vec![Acl::new(perms::READ, "digest", &alice().id)];
        let closed = serde_json::to_vec(&view(ali)).expect("json");
        assert_eq!(
            judge_read(closed.clone(), || Ok::<_, ()>(vec![])).expect("judged"),
            ReadAnswer::NoAuth(crate::Stat::default())
        );
        let ReadAnswer::Serve(bytes) =
            judge_read(closed, || Ok::<_, ()>(vec![alice()])).expect("judged")
        else {
            panic!("alice may read")
        };
        assert_eq!(
            serde_json::from_slice::<NodeView>(&bytes).expect("view"),
            view(vec![])
        );
        assert!(judge_read(b"garbage".to_vec(), never).is_err());
        let rec = br#"{"timeout_ms":1,"auth":[{"scheme":"digest","id":"a:b"}],"closed":true}"#;
        assert_eq!(session_ids(rec).expect("record"), vec![]);
    }

    #[test]
    fn checks_and_redaction() {
        let ali = Acl::new(perms::READ | perms::ADMIN, "digest", &alice().id);
        let world_read = Acl::new(perms::READ, "world", "anyone");
        let acl = vec![ali.clone(), world_read];
        assert!(allows(&acl, &[], perms::READ));
        assert!(!allows(&acl, &[], perms::WRITE));
        assert!(!allows(&acl, &[], perms::ADMIN));
        assert!(allows(&acl, &[alice()], perms::ADMIN));
        assert!(
            allows(&acl, &[alice()], perms::READ | perms::WRITE),
            "any bit"
        );
        assert!(!allows(std::slice::from_ref(&ali), &[], perms::READ));
        assert!(allows(&[], &[], perms::ALL), "the stored open ACL");
        assert_eq!(
            require(std::slice::from_ref(&ali), &[], perms::READ),
            Err(ZkError::NoAuth)
        );
        assert_eq!(redacted(vec![ali])[0].id, "alice:x");
        assert_eq!(stored(open_unsafe()), Vec::<Acl>::new());
        assert_eq!(effective(&[]), open_unsafe());
        assert_eq!(stored(read_unsafe()), read_unsafe());
    }
}
