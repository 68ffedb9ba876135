//! The client hosts that hold (or wait for) NLM locks, by `caller_name`, with
//! the address their last LOCK came from. GRANTED_MSG callbacks go only to
//! that address (never to one a client names), and classic-mode recovery
//! sends SM_NOTIFY to every host listed here. A host leaves the list when
//! FREE_ALL or a reboot (SM_NOTIFY) frees it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{NlmUndo, UndoStep};
use crate::limits::{CLIENT_BYTES_MAX, MONITORS_MAX};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hosts {
    /// caller_name → client address (IP, no port), at most `MONITORS_MAX`.
    entries: BTreeMap<String, String>,
}

impl Hosts {
    /// Records (or moves) `caller_name` at `addr`. False, and nothing
    /// changes, when the list is full or the address is invalid.
    pub(super) fn record(&mut self, caller_name: &str, addr: &str, undo: &mut NlmUndo) -> bool {
        if addr.is_empty() || addr.len() as u64 > CLIENT_BYTES_MAX {
            return false;
        }
        match self.entries.get(caller_name) {
            Some(known) if known == addr => true,
            None if self.entries.len() as u64 >= MONITORS_MAX => false,
            prev => {
                let prev = prev.cloned();
                self.entries.insert(caller_name.to_string(), addr.to_string());
                undo.push(UndoStep::Host(caller_name.to_string(), prev));
                true
            }
        }
    }

    pub(super) fn forget(&mut self, caller_name: &str, undo: &mut NlmUndo) {
        if let Some(prev) = self.entries.remove(caller_name) {
            undo.push(UndoStep::Host(caller_name.to_string(), Some(prev)));
        }
    }

    pub(super) fn restore(&mut self, caller_name: String, prev: Option<String>) {
        match prev {
            Some(addr) => self.entries.insert(caller_name, addr),
            None => self.entries.remove(&caller_name),
        };
    }

    /// The address `caller_name`'s locks came from.
    pub fn addr(&self, caller_name: &str) -> Option<&str> {
        self.entries.get(caller_name).map(String::as_str)
    }

    /// Hosts whose recorded address is `addr` (a reboot notice from that address).
    pub fn named_at<'a>(&'a self, addr: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries.iter().filter(move |(_, a)| a.as_str() == addr).map(|(name, _)| name.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(name, addr)| (name.as_str(), addr.as_str()))
    }

    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn check_invariants(&self) -> Result<(), String> {
        if self.len() > MONITORS_MAX {
            return Err(format!("{} lock hosts exceed MONITORS_MAX {MONITORS_MAX}", self.len()));
        }
        for (name, addr) in &self.entries {
            if !super::caller_name_valid(name) {
                return Err(format!("lock host {name:?} has an invalid name"));
            }
            if addr.is_empty() || addr.len() as u64 > CLIENT_BYTES_MAX {
                return Err(format!("lock host {name:?} has an invalid address {addr:?}"));
            }
        }
        Ok(())
    }
}
