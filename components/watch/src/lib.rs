//! # faaskeeper-watch
//!
//! The watch stage: delivers the distributor's per-session event lists (results and fired
//! watches, already matched and in zxid order) to each session's channel with an outgoing
//! HTTP POST. Delivery is at least once; clients drop what they have already seen
//! (Guarantee 4 is kept because the distributor calls this stage, and waits for it, before it
//! marks a batch applied). A delivery that fails without an answer is retried; if it still
//! fails, the stage answers 503 and the distributor sends the batch again later. A session
//! whose channel answers 4xx is gone and is not retried.
//!
//! Sessions whose addresses belong to one hub (`<origin>/v1/sessions/<id>/deliver`, the
//! bundled host's) get their events in one POST to the hub's batch path instead of one POST
//! each: under load a batch carries tens of sessions, and each outgoing request is a round
//! trip through the platform. Only a receipt that accounts for every session of the POST
//! counts: an endpoint that answers anything else (4xx, or a catch-all's `200 {}`) gets one
//! POST per session after all, as any other address does.

use faaskeeper_core::SessionId;
use faaskeeper_core::wire::{DeliveryReceipt, HUB_BATCH_PATH, HandOver, hub_origin};
use faaskeeper_guest::{Reply, Stage};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

struct Watch;

/// A `DeliveryBatch` as this stage reads it: each delivery is routed by its session and
/// address, and its events are forwarded as the distributor wrote them, never decoded here
/// (the receiver reads them). Decoding and re-encoding every result and event took most of
/// this stage's time under load.
#[derive(Deserialize)]
struct Batch<'a> {
    #[serde(borrow)]
    deliveries: Vec<Delivery<'a>>,
}

/// One session's `wire::Delivery`, serialized to the same JSON.
#[derive(Serialize, Deserialize)]
struct Delivery<'a> {
    session: SessionId,
    #[serde(borrow)]
    notify: Cow<'a, str>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    fallback: Option<Cow<'a, str>>,
    #[serde(borrow)]
    events: &'a RawValue,
}

impl Stage for Watch {
    fn handle(_path: &str, body: Vec<u8>) -> Reply {
        let batch: Batch = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return Reply::error(400, &format!("malformed delivery batch: {e}")),
        };
        if let Some(d) = batch
            .deliveries
            .iter()
            .find(|d| !d.events.get().starts_with('['))
        {
            return Reply::error(
                400,
                &format!(
                    "malformed delivery batch: the events of session {} are not a list",
                    d.session
                ),
            );
        }
        let mut tally = Tally::default();
        // Group by hub, keeping the first-seen order; each session appears once per batch,
        // so no session's events are reordered by grouping.
        let mut hubs: Vec<(&str, Vec<&Delivery>)> = Vec::new();
        let mut single: Vec<&Delivery> = Vec::new();
        for d in &batch.deliveries {
            match hub_origin(&d.notify, d.session) {
                Some(origin) => match hubs.iter_mut().find(|(o, _)| *o == origin) {
                    Some((_, group)) => group.push(d),
                    None => hubs.push((origin, vec![d])),
                },
                None => single.push(d),
            }
        }
        for (origin, group) in hubs {
            if group.len() < 2 || !deliver_to_hub(origin, &group, &mut tally) {
                single.extend(group);
            }
        }
        if let Err(e) = deliver_each(&single, &mut tally) {
            return Reply::error(500, &e);
        }
        let Tally {
            delivered,
            gone,
            undelivered,
            fell_back,
        } = tally;
        if !undelivered.is_empty() {
            // Not handed over: the distributor keeps the batch's redo record and sends the
            // whole batch again, so no session misses a result or an event, and each session
            // still gets its events in zxid order (Guarantee 4). The sessions that did get it
            // drop the repeats.
            return Reply::error(
                503,
                &format!("sessions {undelivered:?} unreachable; {delivered} delivered"),
            );
        }
        Reply::json(&HandOver {
            delivered,
            failed: gone,
            fell_back,
        })
    }
}

/// What became of each session's delivery.
#[derive(Default)]
struct Tally {
    delivered: usize,
    gone: usize,
    undelivered: Vec<SessionId>,
    /// Delivered at their fallback address (counted in `delivered` too).
    fell_back: Vec<SessionId>,
}

impl Tally {
    fn record(&mut self, session: SessionId, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => self.delivered += 1,
            Outcome::FellBack => {
                faaskeeper_guest::log(&format!(
                    "watch: session {session} delivered at its fallback address"
                ));
                self.delivered += 1;
                self.fell_back.push(session);
            }
            Outcome::Gone(status) => {
                // The session's channel is gone (closed client): nothing to retry.
                self.gone += 1;
                faaskeeper_guest::log(&format!("watch: session {session} answered {status}"));
            }
            Outcome::Unreachable(e) => {
                faaskeeper_guest::log(&format!("watch: session {session} unreachable: {e}"));
                self.undelivered.push(session);
            }
        }
    }
}

/// The body of a batch POST, without copying the deliveries.
#[derive(Serialize)]
struct Group<'a, 'b> {
    deliveries: &'a [&'a Delivery<'b>],
}

/// Deliver `group` in one POST to the hub at `origin`; `false` if the hub does not take
/// batches or cannot be reached (then each delivery goes on its own).
fn deliver_to_hub(origin: &str, group: &[&Delivery<'_>], tally: &mut Tally) -> bool {
    let body = match serde_json::to_vec(&Group { deliveries: group }) {
        Ok(b) => b,
        Err(_) => return false,
    };
    let url = format!("{origin}{HUB_BATCH_PATH}");
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match faaskeeper_guest::post(&url, &body) {
            Ok((200..=299, answer)) => {
                // Only a receipt that accounts for every session shows a hub took the batch;
                // any other 2xx is an endpoint that is not one (a catch-all handler, say),
                // and each session's events go to its own address after all.
                let Some(receipt) = serde_json::from_slice::<DeliveryReceipt>(&answer)
                    .ok()
                    .filter(|r| r.delivered + r.gone.len() == group.len())
                else {
                    return false;
                };
                for d in group {
                    if receipt.gone.contains(&d.session) {
                        tally.record(d.session, Outcome::Gone(410));
                    } else {
                        tally.delivered += 1;
                    }
                }
                return true;
            }
            // The hub refused the batch as a whole: it queued nothing.
            Ok((400..=499, _)) => return false,
            Ok((status, _)) => last = format!("status {status}"),
            Err(e) => last = e.to_string(),
        }
    }
    // No answer: each session is tried at its own address after all, and, failing that, at
    // its fallback address (a client's listener that is down, with its queue behind it).
    faaskeeper_guest::log(&format!("watch: hub {origin} unreachable: {last}"));
    false
}

/// Attempts per delivery before the batch is given back to the distributor.
const ATTEMPTS: usize = 3;

enum Outcome {
    Delivered,
    /// Delivered at the fallback address, the session's own having failed.
    FellBack,
    /// The receiver answered that the session is not there (a 4xx status).
    Gone(u16),
    /// No answer, or a server error, after every attempt.
    Unreachable(String),
}

/// Most deliveries on their way at once.
const IN_FLIGHT: usize = 32;

/// Time (ms) a batch may spend on own addresses of sessions that have a fallback, before
/// the rest of them are delivered at their fallback at once. A chunk started within it may
/// take one more attempt (the bundled host gives a client's listener 2.5 s), so a hand-over
/// stays within ≈ 4 s plus the fallback sends: the distributor keeps at least 5 s of its
/// lease when it starts a round.
const OWN_ADDRESS_BUDGET_MS: i64 = 1_500;

/// Deliver each of `single` at its own address, up to [`IN_FLIGHT`] at once: every request
/// is sent before the first answer is awaited, so the sessions of a batch are reached in
/// about the time of one request, not of one per session (on AWS each is an SQS send of
/// some milliseconds, and a batch under load names tens of sessions). Each session appears
/// once per batch, so no session's events are reordered; a failed request is sent again, up
/// to [`ATTEMPTS`] times. A session whose own address still fails (no answer, or 4xx: a
/// client's listener that no longer knows it) and that has a fallback address gets its
/// events there, and the answer names it so that the distributor moves it there for good.
fn deliver_each(single: &[&Delivery], tally: &mut Tally) -> Result<(), String> {
    let start = faaskeeper_guest::now_ms();
    for chunk in single.chunks(IN_FLIGHT) {
        // Once the batch has spent its time for own addresses, sessions with a fallback go
        // straight there: however many listeners hang, the hand-over stays well inside the
        // distributor's lease.
        let spent = faaskeeper_guest::now_ms() - start > OWN_ADDRESS_BUDGET_MS;
        let bodies = chunk
            .iter()
            .map(|d| serde_json::to_vec(d).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let own: Vec<usize> = (0..chunk.len()).collect();
        // A session with a fallback address is tried at its own address once: a client's
        // listener that is down or slow must not hold up every session's writes (nor the
        // distributor's lease) for several attempts.
        let tries = |i: usize| match (&chunk[i].fallback, spent) {
            (None, _) => ATTEMPTS,
            (Some(_), false) => 1,
            (Some(_), true) => 0,
        };
        let mut outcomes: Vec<Outcome> = attempt(&own, |i| &chunk[i].notify, tries, &bodies)
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        let failed: Vec<usize> = own
            .into_iter()
            .filter(|i| chunk[*i].fallback.is_some() && !matches!(outcomes[*i], Outcome::Delivered))
            .collect();
        let fallback = |i: usize| chunk[i].fallback.as_deref().unwrap_or_default();
        for (i, o) in attempt(&failed, fallback, |_| ATTEMPTS, &bodies) {
            outcomes[i] = match o {
                Outcome::Delivered => Outcome::FellBack,
                other => other,
            };
        }
        for (d, outcome) in chunk.iter().zip(outcomes) {
            tally.record(d.session, outcome);
        }
    }
    Ok(())
}

/// POST `bodies[i]` to `address(i)` for each of `which` (indices into `bodies`), all at once,
/// each up to `tries(i)` times (at most [`ATTEMPTS`]); the outcome of each, in the order of
/// `which`.
fn attempt<'d>(
    which: &[usize],
    address: impl Fn(usize) -> &'d str,
    tries: impl Fn(usize) -> usize,
    bodies: &[Vec<u8>],
) -> Vec<(usize, Outcome)> {
    let mut outcomes: Vec<Option<Outcome>> = which.iter().map(|_| None).collect();
    let mut last: Vec<String> = vec![String::new(); which.len()];
    for round in 0..ATTEMPTS {
        let sent: Vec<_> = (0..which.len())
            .filter(|k| outcomes[*k].is_none() && round < tries(which[*k]))
            .map(|k| {
                (
                    k,
                    faaskeeper_guest::send(address(which[k]), &bodies[which[k]]),
                )
            })
            .collect();
        if sent.is_empty() {
            break;
        }
        for (k, request) in sent {
            match request.and_then(faaskeeper_guest::Sent::wait) {
                Ok((status, _)) if (200..300).contains(&status) => {
                    outcomes[k] = Some(Outcome::Delivered);
                }
                Ok((status, _)) if (400..500).contains(&status) => {
                    outcomes[k] = Some(Outcome::Gone(status));
                }
                Ok((status, _)) => last[k] = format!("status {status}"),
                Err(e) => last[k] = e,
            }
        }
    }
    which
        .iter()
        .zip(outcomes.into_iter().zip(last))
        .map(|(i, (o, last))| {
            let last = if last.is_empty() {
                "not tried: the batch's time for own addresses is spent".to_string()
            } else {
                last
            };
            (*i, o.unwrap_or(Outcome::Unreachable(last)))
        })
        .collect()
}

faaskeeper_guest::export_stage!(Watch);
