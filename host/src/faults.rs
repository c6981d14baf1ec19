//! Test-only fault injection: a [`FaultPlan`] makes chosen stages trap at chosen steps,
//! disturbs the messages between stages, and can SIGKILL the whole process — the failures the
//! pipeline must survive (DESIGN.md Guarantee 1 and the redo, dedup and periodic-run paths).
//!
//! A plan is off unless a test sets one: in process through [`Limits::faults`], or for the
//! `faaskeeper` binary through the `FAASKEEPER_TEST_FAULTS` environment variable (a JSON
//! [`FaultSpec`]), which `serve` announces loudly. Production code never builds one.
//!
//! *Steps.* Every call a guest makes into the host's key-value implementation is a storage
//! step; every outgoing HTTP request (stage to stage, stage to session channel) is a
//! message. A trap fires *after* the step took effect (the write is in the store, the message
//! was delivered), which is the case the protocol must repair; a trap before a step is a trap
//! after the one before it. A trap after a message dooms the invocation: its next storage call
//! traps, and if it makes none its answer is replaced by an error, so the caller never learns
//! what the callee did.
//!
//! Decisions come from one seeded generator, so a seed fixes the sequence of decisions; which
//! step meets which decision still depends on thread scheduling.
//!
//! [`Limits::faults`]: crate::runtime::Limits::faults

use crate::routing::Route;
use crate::runtime::StageName;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Where a trap fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// After a key-value call returned.
    Storage,
    /// After an outgoing request was delivered.
    Outgoing,
}

/// Which stage-to-stage messages a message fault touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every message.
    Any,
    /// Wake-ups of the distributor (from the writer).
    Distributor,
    /// Batches for the watch stage (from the distributor).
    Watch,
    /// Deliveries to session channels (from the watch stage).
    Sessions,
}

impl Target {
    fn covers(self, route: Route) -> bool {
        matches!(
            (self, route),
            (Target::Any, _)
                | (Target::Distributor, Route::Stage(StageName::Distributor))
                | (Target::Watch, Route::Stage(StageName::Watch))
                | (Target::Sessions, Route::Sessions)
        )
    }
}

/// One kind of fault, with the chance that it fires at each step it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FaultRule {
    /// `stage` traps after a step.
    Trap {
        /// The stage that traps.
        stage: StageName,
        /// After which kind of step.
        at: Step,
        /// Chance per step (0..=1).
        chance: f64,
    },
    /// `stage` traps after its `nth` step of kind `at`, counted over all its invocations
    /// (1-based; fires once).
    TrapNth {
        /// The stage that traps.
        stage: StageName,
        /// Which kind of step is counted.
        at: Step,
        /// Which one.
        nth: u64,
    },
    /// The message never arrives; the sender sees a refused connection.
    Drop {
        /// Which messages.
        target: Target,
        /// Chance per message.
        chance: f64,
    },
    /// The message arrives but its answer is lost; the sender sees a timeout.
    LoseReply {
        /// Which messages.
        target: Target,
        /// Chance per message.
        chance: f64,
    },
    /// The message arrives twice; the sender sees the second answer.
    Duplicate {
        /// Which messages.
        target: Target,
        /// Chance per message.
        chance: f64,
    },
    /// The message is held up to `max_ms` before it is sent on.
    Delay {
        /// Which messages.
        target: Target,
        /// Chance per message.
        chance: f64,
        /// Longest delay.
        max_ms: u64,
    },
    /// The message is held until a later message to the same place has overtaken it (or
    /// `max_ms` passed).
    Reorder {
        /// Which messages.
        target: Target,
        /// Chance per message.
        chance: f64,
        /// Longest hold.
        max_ms: u64,
    },
    /// The process sends itself SIGKILL after a storage step (any stage), at most `limit`
    /// times in its life (a restarted process counts afresh: the test decides how often it
    /// restarts with the plan).
    Kill {
        /// Chance per storage step.
        chance: f64,
        /// Storage steps to let pass first (so that a restarted host gets some work done).
        after_steps: u64,
    },
}

/// A serialisable plan: what `FAASKEEPER_TEST_FAULTS` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Seed of the decisions.
    pub seed: u64,
    /// Faults that may fire.
    pub rules: Vec<FaultRule>,
}

/// What has been injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Traps after a storage step.
    pub storage_traps: u64,
    /// Traps after an outgoing request.
    pub outgoing_traps: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Answers lost.
    pub lost_replies: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Messages delayed.
    pub delayed: u64,
    /// Messages held for reordering.
    pub reordered: u64,
}

impl FaultCounts {
    /// Every injected fault.
    pub fn total(&self) -> u64 {
        self.storage_traps
            + self.outgoing_traps
            + self.dropped
            + self.lost_replies
            + self.duplicated
            + self.delayed
            + self.reordered
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFault {
    /// Do not deliver; the sender gets an error.
    Drop,
    /// Deliver; the sender gets an error.
    LoseReply,
    /// Deliver twice.
    Duplicate,
    /// Wait, then deliver.
    Delay(Duration),
    /// Wait for a later message to the same place (at most this long), then deliver.
    Reorder(Duration),
}

/// SplitMix64: small, seedable, good enough to pick faults.
#[derive(Debug, Clone)]
pub struct SeededRng(u64);

impl SeededRng {
    /// A generator whose output is fixed by `seed`.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`0` if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// A live plan: the rules, the generator, and the counters a test reads.
#[derive(Debug)]
pub struct FaultPlan {
    spec: FaultSpec,
    rng: Mutex<SeededRng>,
    steps: [AtomicU64; 8],
    storage_steps: AtomicU64,
    storage_traps: AtomicU64,
    outgoing_traps: AtomicU64,
    dropped: AtomicU64,
    lost_replies: AtomicU64,
    duplicated: AtomicU64,
    delayed: AtomicU64,
    reordered: AtomicU64,
    /// Bumped whenever a message is delivered; reorder waits on it.
    delivered: tokio::sync::watch::Sender<u64>,
    paused: AtomicBool,
}

impl FaultPlan {
    /// A plan from its spec.
    pub fn new(spec: FaultSpec) -> FaultPlan {
        FaultPlan {
            rng: Mutex::new(SeededRng::new(spec.seed)),
            spec,
            steps: Default::default(),
            storage_steps: AtomicU64::new(0),
            storage_traps: AtomicU64::new(0),
            outgoing_traps: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            lost_replies: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            delayed: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            delivered: tokio::sync::watch::Sender::new(0),
            paused: AtomicBool::new(false),
        }
    }

    /// Stop injecting (a test checking the outcome wants a quiet service); counts stay.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Inject again after [`FaultPlan::pause`].
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }

    fn active(&self) -> bool {
        !self.paused.load(Ordering::SeqCst)
    }

    /// The plan in `FAASKEEPER_TEST_FAULTS`, if that variable is set.
    pub fn from_env() -> Result<Option<FaultPlan>, serde_json::Error> {
        match std::env::var("FAASKEEPER_TEST_FAULTS") {
            Ok(json) if !json.trim().is_empty() => {
                Ok(Some(FaultPlan::new(serde_json::from_str(&json)?)))
            }
            _ => Ok(None),
        }
    }

    /// The spec this plan runs.
    pub fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    /// What has been injected so far.
    pub fn counts(&self) -> FaultCounts {
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        FaultCounts {
            storage_traps: get(&self.storage_traps),
            outgoing_traps: get(&self.outgoing_traps),
            dropped: get(&self.dropped),
            lost_replies: get(&self.lost_replies),
            duplicated: get(&self.duplicated),
            delayed: get(&self.delayed),
            reordered: get(&self.reordered),
        }
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0 && self.active() && self.rng.lock().map(|mut r| r.chance(p)).unwrap_or(false)
    }

    fn below(&self, n: u64) -> u64 {
        self.rng.lock().map(|mut r| r.below(n)).unwrap_or(0)
    }

    fn step_counter(&self, stage: StageName, at: Step) -> &AtomicU64 {
        let s = match stage {
            StageName::Writer => 0,
            StageName::Distributor => 1,
            StageName::Watch => 2,
            StageName::Heartbeat => 3,
        };
        &self.steps[s * 2 + usize::from(at == Step::Outgoing)]
    }

    /// Whether `stage` traps after the step it just made.
    fn trap_after(&self, stage: StageName, at: Step) -> bool {
        let n = self.step_counter(stage, at).fetch_add(1, Ordering::SeqCst) + 1;
        let fire = self.spec.rules.iter().any(|r| match *r {
            FaultRule::Trap {
                stage: s,
                at: a,
                chance,
            } => s == stage && a == at && self.roll(chance),
            FaultRule::TrapNth {
                stage: s,
                at: a,
                nth,
            } => s == stage && a == at && n == nth && self.active(),
            _ => false,
        });
        if fire {
            let counter = match at {
                Step::Storage => &self.storage_traps,
                Step::Outgoing => &self.outgoing_traps,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
        fire
    }

    /// SIGKILL this process if a kill rule says so.
    fn maybe_kill(&self) {
        let n = self.storage_steps.fetch_add(1, Ordering::SeqCst);
        let kill = self.spec.rules.iter().any(|r| match *r {
            FaultRule::Kill {
                chance,
                after_steps,
            } => n >= after_steps && self.roll(chance),
            _ => false,
        });
        if kill {
            // kill(1) rather than libc: the workspace forbids unsafe code. This thread waits
            // for it, so the step goes no further; the process dies with no shutdown code run.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &std::process::id().to_string()])
                .status();
        }
    }

    /// What happens to a message on `route`: the first rule that fires wins.
    pub fn message_fault(&self, route: Route) -> Option<MessageFault> {
        if !self.active() {
            return None;
        }
        for rule in &self.spec.rules {
            let fault = match *rule {
                FaultRule::Drop { target, chance } if target.covers(route) && self.roll(chance) => {
                    self.dropped.fetch_add(1, Ordering::SeqCst);
                    MessageFault::Drop
                }
                FaultRule::LoseReply { target, chance }
                    if target.covers(route) && self.roll(chance) =>
                {
                    self.lost_replies.fetch_add(1, Ordering::SeqCst);
                    MessageFault::LoseReply
                }
                FaultRule::Duplicate { target, chance }
                    if target.covers(route) && self.roll(chance) =>
                {
                    self.duplicated.fetch_add(1, Ordering::SeqCst);
                    MessageFault::Duplicate
                }
                FaultRule::Delay {
                    target,
                    chance,
                    max_ms,
                } if target.covers(route) && self.roll(chance) => {
                    self.delayed.fetch_add(1, Ordering::SeqCst);
                    MessageFault::Delay(Duration::from_millis(1 + self.below(max_ms)))
                }
                FaultRule::Reorder {
                    target,
                    chance,
                    max_ms,
                } if target.covers(route) && self.roll(chance) => {
                    self.reordered.fetch_add(1, Ordering::SeqCst);
                    MessageFault::Reorder(Duration::from_millis(max_ms.max(1)))
                }
                _ => continue,
            };
            return Some(fault);
        }
        None
    }

    /// Note that a message was delivered (releases messages held for reordering).
    pub fn delivered(&self) {
        self.delivered.send_modify(|n| *n += 1);
    }

    /// Hold a message until another one has been delivered after it, or `max` passed.
    pub async fn hold_for_overtake(&self, max: Duration) {
        let mut rx = self.delivered.subscribe();
        rx.mark_unchanged();
        let _ = tokio::time::timeout(max, rx.changed()).await;
    }
}

/// The plan as one invocation sees it: it knows its stage and whether an earlier fault
/// doomed it.
#[derive(Debug)]
pub struct InvocationFaults {
    plan: std::sync::Arc<FaultPlan>,
    stage: StageName,
    doomed: AtomicBool,
}

/// The error a fault turns into: a trap for the guest, an error for the invoker.
#[derive(Debug, thiserror::Error)]
#[error("injected fault: {stage} trapped after a {at:?} step")]
pub struct InjectedTrap {
    /// The stage.
    pub stage: &'static str,
    /// After which kind of step.
    pub at: Step,
}

impl InvocationFaults {
    /// The plan for one invocation of `stage`.
    pub fn new(plan: std::sync::Arc<FaultPlan>, stage: StageName) -> InvocationFaults {
        InvocationFaults {
            plan,
            stage,
            doomed: AtomicBool::new(false),
        }
    }

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Called after every storage step: `Err` makes the guest trap.
    pub fn after_storage(&self) -> Result<(), InjectedTrap> {
        self.plan.maybe_kill();
        if self.doomed.load(Ordering::SeqCst) || self.plan.trap_after(self.stage, Step::Storage) {
            self.doomed.store(true, Ordering::SeqCst);
            return Err(InjectedTrap {
                stage: self.stage.name(),
                at: Step::Storage,
            });
        }
        Ok(())
    }

    /// Called after an outgoing request was delivered: a trap dooms the invocation (its next
    /// storage step traps, and its answer is thrown away).
    pub fn after_outgoing(&self) {
        if self.plan.trap_after(self.stage, Step::Outgoing) {
            self.doomed.store(true, Ordering::SeqCst);
        }
    }

    /// Whether a fault has ended this invocation; its answer must not reach the caller.
    pub fn check_doomed(&self) -> Result<(), InjectedTrap> {
        if self.doomed.load(Ordering::SeqCst) {
            Err(InjectedTrap {
                stage: self.stage.name(),
                at: Step::Outgoing,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn seeded_rng_repeats() {
        let a: Vec<u64> = {
            let mut r = SeededRng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let mut r = SeededRng::new(7);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(SeededRng::new(8).next_u64(), a[0]);
    }

    #[test]
    fn nth_storage_step_traps_once_and_dooms_the_rest() {
        let plan = Arc::new(FaultPlan::new(FaultSpec {
            seed: 1,
            rules: vec![FaultRule::TrapNth {
                stage: StageName::Writer,
                at: Step::Storage,
                nth: 3,
            }],
        }));
        let inv = InvocationFaults::new(plan.clone(), StageName::Writer);
        assert!(inv.after_storage().is_ok());
        assert!(inv.after_storage().is_ok());
        assert!(inv.after_storage().is_err());
        assert!(
            inv.after_storage().is_err(),
            "a trapped invocation stays dead"
        );
        let next = InvocationFaults::new(plan.clone(), StageName::Writer);
        assert!(next.after_storage().is_ok());
        // Other stages count their own steps.
        let other = InvocationFaults::new(plan.clone(), StageName::Distributor);
        for _ in 0..5 {
            assert!(other.after_storage().is_ok());
        }
        assert_eq!(plan.counts().storage_traps, 1);
    }

    #[test]
    fn message_faults_respect_targets_and_count() {
        let plan = FaultPlan::new(FaultSpec {
            seed: 3,
            rules: vec![FaultRule::Drop {
                target: Target::Sessions,
                chance: 1.0,
            }],
        });
        assert_eq!(
            plan.message_fault(Route::Stage(StageName::Watch)),
            None,
            "only session deliveries are targeted"
        );
        assert_eq!(
            plan.message_fault(Route::Sessions),
            Some(MessageFault::Drop)
        );
        assert_eq!(plan.counts().dropped, 1);
        assert_eq!(plan.counts().total(), 1);
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = FaultSpec {
            seed: 9,
            rules: vec![
                FaultRule::Kill {
                    chance: 0.01,
                    after_steps: 100,
                },
                FaultRule::Reorder {
                    target: Target::Any,
                    chance: 0.5,
                    max_ms: 20,
                },
            ],
        };
        let json = serde_json::to_string(&spec).expect("encode");
        assert_eq!(
            serde_json::from_str::<FaultSpec>(&json).expect("decode"),
            spec
        );
    }
}
