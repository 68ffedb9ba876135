//! NSM: who asked to be told when which host restarts (SM_MON), the last
//! NSM state number each host announced (SM_NOTIFY), and this server's own
//! state number, odd while up (it goes up by 2 per restart).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{caller_name_valid, ArgError, LockBound, NlmUndo, UndoStep};
use crate::limits::MONITORS_MAX;

/// `my_id` of SM_MON: whom to call back, and how.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MonitorId {
    pub my_name: String,
    pub my_prog: u32,
    pub my_vers: u32,
    pub my_proc: u32,
}

/// (mon_name, requester)
pub(super) type MonitorKey = (String, MonitorId);

/// An SM_NOTIFY callback to make (`status`: mon_name, state, priv).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorCallback {
    pub mon_name: String,
    pub id: MonitorId,
    pub state: u32,
    pub priv_: [u8; 16],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonOutcome {
    /// Reply STAT_SUCC with this server's state.
    Monitored {
        state: u32,
    },
    /// Reply STAT_FAIL.
    Full(LockBound),
    Invalid(ArgError),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyOutcome {
    /// False for a retransmitted NOTIFY (same state as recorded).
    pub restarted: bool,
    pub freed: super::FreeAllOutcome,
    /// Watchers registered for that host, by requester.
    pub callbacks: Vec<MonitorCallback>,
}

/// The first NSM state: odd, "up".
const NSM_STATE_FIRST: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitors {
    entries: BTreeMap<MonitorKey, [u8; 16]>,
    /// Last state each host announced; at most MONITORS_MAX hosts.
    host_states: BTreeMap<String, u32>,
    own_state: u32,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors { entries: BTreeMap::new(), host_states: BTreeMap::new(), own_state: NSM_STATE_FIRST }
    }
}

impl Monitors {
    pub(super) fn mon(&mut self, mon_name: &str, id: &MonitorId, priv_: [u8; 16], undo: &mut NlmUndo) -> MonOutcome {
        if !caller_name_valid(mon_name) || !caller_name_valid(&id.my_name) {
            return MonOutcome::Invalid(ArgError::CallerName);
        }
        let key = (mon_name.to_owned(), id.clone());
        if !self.entries.contains_key(&key) && self.entries.len() as u64 >= MONITORS_MAX {
            return MonOutcome::Full(LockBound::Monitors);
        }
        let prev = self.entries.insert(key.clone(), priv_);
        undo.push(UndoStep::Monitor(key, prev));
        MonOutcome::Monitored { state: self.own_state }
    }

    pub(super) fn unmon(&mut self, mon_name: &str, id: &MonitorId, undo: &mut NlmUndo) -> u32 {
        let key = (mon_name.to_owned(), id.clone());
        if let Some(prev) = self.entries.remove(&key) {
            undo.push(UndoStep::Monitor(key, Some(prev)));
        }
        self.own_state
    }

    pub(super) fn unmon_all(&mut self, id: &MonitorId, undo: &mut NlmUndo) -> u32 {
        let keys: Vec<MonitorKey> = self.entries.keys().filter(|(_, i)| i == id).cloned().collect();
        for key in keys {
            if let Some(prev) = self.entries.remove(&key) {
                undo.push(UndoStep::Monitor(key, Some(prev)));
            }
        }
        self.own_state
    }

    pub fn host_state(&self, host: &str) -> Option<u32> {
        self.host_states.get(host).copied()
    }

    /// Remembers `host`'s new state. A new host beyond MONITORS_MAX is not
    /// remembered: its locks are still freed, and a retransmission of that
    /// NOTIFY frees them again (harmless right after a restart).
    pub(super) fn record_host_state(&mut self, host: &str, state: u32, undo: &mut NlmUndo) {
        if !self.host_states.contains_key(host) && self.host_states.len() as u64 >= MONITORS_MAX {
            return;
        }
        let prev = self.host_states.insert(host.to_owned(), state);
        undo.push(UndoStep::HostState(host.to_owned(), prev));
    }

    /// Everyone watching `host`, in requester order.
    pub(super) fn watchers(&self, host: &str, state: u32) -> Vec<MonitorCallback> {
        self.entries
            .iter()
            .filter(|((name, _), _)| name == host)
            .map(|((name, id), priv_)| MonitorCallback { mon_name: name.clone(), id: id.clone(), state, priv_: *priv_ })
            .collect()
    }

    pub fn own_state(&self) -> u32 {
        self.own_state
    }

    /// +2 keeps it odd; wrapping past u32::MAX lands on 1 again.
    pub(super) fn bump_own_state(&mut self, undo: &mut NlmUndo) -> u32 {
        undo.push(UndoStep::OwnState(self.own_state));
        self.own_state = self.own_state.wrapping_add(2);
        self.own_state
    }

    pub(super) fn restore(&mut self, key: MonitorKey, prev: Option<[u8; 16]>) {
        match prev {
            Some(p) => self.entries.insert(key, p),
            None => self.entries.remove(&key),
        };
    }

    pub(super) fn restore_host_state(&mut self, host: String, prev: Option<u32>) {
        match prev {
            Some(s) => self.host_states.insert(host, s),
            None => self.host_states.remove(&host),
        };
    }

    pub(super) fn restore_own_state(&mut self, state: u32) {
        self.own_state = state;
    }

    /// (mon_name, requester, priv), by mon_name then requester.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MonitorId, &[u8; 16])> + '_ {
        self.entries.iter().map(|((name, id), p)| (name.as_str(), id, p))
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        if self.own_state % 2 != 1 {
            return Err("own NSM state is even".into());
        }
        if self.entries.len() as u64 > MONITORS_MAX {
            return Err("over MONITORS_MAX monitors".into());
        }
        if self.host_states.len() as u64 > MONITORS_MAX {
            return Err("over MONITORS_MAX host states".into());
        }
        if self.entries.keys().any(|(name, id)| !caller_name_valid(name) || !caller_name_valid(&id.my_name)) {
            return Err("a monitor name is invalid".into());
        }
        if self.host_states.keys().any(|h| !caller_name_valid(h)) {
            return Err("a monitored host name is invalid".into());
        }
        Ok(())
    }
}
