//! What `State::apply` decided for each command: the per-command response
//! that travels back through the commit (openraft's `Response`) to the
//! handler, which encodes its reply from it. Most commands only succeed or
//! fail (`Done`); the NLM and NSM commands carry the table's decision.

use serde::{Deserialize, Serialize};

use crate::locks::{
    CancelOutcome, Effect, FreeAllOutcome, Grant, LockOutcome, MonOutcome, NotifyOutcome, ShareOutcome, UnlockOutcome,
    UnshareOutcome,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; nothing more to report.
    Done,
    /// One outcome per member of a `Command::Batch`, in order.
    Batch(Vec<Outcome>),
    Lock(Effect<LockOutcome>),
    Unlock(Effect<UnlockOutcome>),
    Cancel(CancelOutcome),
    /// GRANTED_RES: whether the callback was still pending.
    GrantAcknowledged(bool),
    FreeAll(Effect<FreeAllOutcome>),
    Share(ShareOutcome),
    Unshare(UnshareOutcome),
    Mon(MonOutcome),
    /// SM_UNMON / SM_UNMON_ALL: this server's NSM state (the reply's `state`).
    Unmon(u32),
    Notify(Effect<NotifyOutcome>),
    /// BumpNsmState: the new state.
    NsmState(u32),
    /// Wake: the waiters it granted (FIFO per file, files in key order).
    Wake(Vec<Grant>),
}

impl Outcome {
    /// Waiters granted by this outcome (and, for a batch, by its members), in
    /// order: the leader sends each a GRANTED_MSG.
    pub fn granted(&self) -> Vec<&Grant> {
        match self {
            Outcome::Batch(members) => members.iter().flat_map(Outcome::granted).collect(),
            Outcome::Lock(e) => e.granted.iter().collect(),
            Outcome::Unlock(e) => e.granted.iter().collect(),
            Outcome::FreeAll(e) => e.granted.iter().collect(),
            Outcome::Notify(e) => e.granted.iter().collect(),
            Outcome::Wake(granted) => granted.iter().collect(),
            _ => Vec::new(),
        }
    }
}
