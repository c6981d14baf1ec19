//! Reads served without the pipeline (the HTTP API's `GET /v1/node`, the gateway's in-process
//! reads), with ZooKeeper's READ check: a node whose ACL is not open is served only to a
//! session whose ids (kept in its record in the `system` bucket by the distributor) may read
//! it. Open nodes, the common case, cost no lookup of the session.

use faaskeeper_core::acl::{ReadAnswer, judge_read, session_ids};
use faaskeeper_core::{SessionId, keys};
use faaskeeper_storage::Store;

/// The object at `path` as `session` may see it: `None` when there is no node. Without a
/// session the read is judged as one without ids (what `world:anyone` may read).
pub(crate) async fn read_node(
    user: &dyn Store,
    system: &dyn Store,
    session: Option<SessionId>,
    path: &str,
) -> Result<Option<ReadAnswer>, String> {
    let Some(object) = user
        .get(&keys::user_node(path))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    // The session record is fetched only if the node's ACL is not open; `judge_read` asks
    // for the ids synchronously, so the record is read up front in that case.
    let restricted = judge_read(object.clone(), || Err::<Vec<_>, _>(()));
    let ids = match restricted {
        Ok(answer) => return Ok(Some(answer)),
        Err(faaskeeper_core::acl::ReadError::Corrupt(e)) => {
            return Err(format!("node object of {path}: {e}"));
        }
        Err(faaskeeper_core::acl::ReadError::Ids(())) => match session {
            None => Vec::new(),
            Some(id) => match system
                .get(&keys::session(id))
                .await
                .map_err(|e| e.to_string())?
            {
                Some(rec) => session_ids(&rec).map_err(|e| format!("session {id}: {e}"))?,
                None => Vec::new(),
            },
        },
    };
    judge_read(object, || Ok::<_, String>(ids))
        .map(Some)
        .map_err(|e| format!("node object of {path}: {e}"))
}
