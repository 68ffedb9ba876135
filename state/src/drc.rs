//! The duplicate-request cache: for each non-idempotent request, either its
//! intent (recorded before it touched the disk) or its reply, bounded in
//! entries, bytes and age. Eviction is deterministic: oldest by (`now_ms`
//! stamped into the inserting command, insertion sequence number). An intent
//! counts as one entry of zero bytes and ages like a reply.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::DrcKey;
use crate::error::{ApplyError, InvariantError, Table};
use crate::limits::{DRC_BYTES_MAX, DRC_ENTRIES_MAX, DRC_REPLY_BYTES_MAX, DRC_WINDOW_MS};

/// What the cache knows about one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrcValue {
    /// The request was about to run; no reply was recorded (yet).
    Intent,
    /// The reply body that was (or is about to be) sent.
    Reply(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrcEntry {
    pub value: DrcValue,
    /// `now_ms` of the command that inserted it.
    pub time_ms: u64,
    /// Insertion sequence number: breaks ties between equal times.
    pub seq: u64,
}

impl DrcEntry {
    /// The recorded reply, or None for an intent.
    pub fn reply(&self) -> Option<&[u8]> {
        match &self.value {
            DrcValue::Intent => None,
            DrcValue::Reply(r) => Some(r),
        }
    }

    /// Bytes counted against `DRC_BYTES_MAX`: the reply's, 0 for an intent.
    fn bytes(&self) -> u64 {
        self.reply().map_or(0, |r| r.len() as u64)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DrcWire")]
pub(crate) struct Drc {
    entries: BTreeMap<DrcKey, DrcEntry>,
    next_seq: u64,
    /// Derived: (time_ms, seq) → key, oldest first.
    #[serde(skip)]
    by_age: BTreeMap<(u64, u64), DrcKey>,
    /// Derived: total reply bytes.
    #[serde(skip)]
    bytes: u64,
}

#[derive(Deserialize)]
struct DrcWire {
    entries: BTreeMap<DrcKey, DrcEntry>,
    next_seq: u64,
}

impl TryFrom<DrcWire> for Drc {
    type Error = InvariantError;
    fn try_from(wire: DrcWire) -> Result<Self, InvariantError> {
        let mut drc = Drc { next_seq: wire.next_seq, ..Drc::default() };
        for (key, entry) in wire.entries {
            drc.insert_raw(key, entry);
        }
        drc.check()?;
        Ok(drc)
    }
}

/// What one insert changed, so a failed batch can put it back.
#[derive(Debug)]
pub(crate) struct DrcUndo {
    inserted: DrcKey,
    /// Entries removed: the replaced one and every evicted one.
    removed: Vec<(DrcKey, DrcEntry)>,
    seq_before: u64,
}

impl Drc {
    /// Inserts (or replaces) the reply for `key` (an intent for it becomes
    /// this reply), evicting first what is outside the window, then the
    /// oldest until the new entry fits the entry and byte bounds.
    pub(crate) fn insert(&mut self, key: &DrcKey, reply: &[u8], now_ms: u64) -> Result<DrcUndo, ApplyError> {
        let reply_bytes = reply.len() as u64;
        if reply_bytes > DRC_REPLY_BYTES_MAX {
            return Err(ApplyError::DrcReplyTooLarge { bytes: reply_bytes, max: DRC_REPLY_BYTES_MAX });
        }
        self.put(key, DrcValue::Reply(reply.to_vec()), now_ms)
    }

    /// Records the intent of `key`, evicting as `insert` does; `None` (no
    /// change) if `key` already has an intent or a reply.
    pub(crate) fn intent(&mut self, key: &DrcKey, now_ms: u64) -> Result<Option<DrcUndo>, ApplyError> {
        if self.entries.contains_key(key) {
            return Ok(None);
        }
        self.put(key, DrcValue::Intent, now_ms).map(Some)
    }

    fn put(&mut self, key: &DrcKey, value: DrcValue, now_ms: u64) -> Result<DrcUndo, ApplyError> {
        if !crate::rmtab::client_valid(&key.client) {
            return Err(ApplyError::ClientInvalid);
        }
        let mut removed = Vec::new();
        if let Some(old) = self.remove_raw(key) {
            removed.push((key.clone(), old));
        }
        let seq_before = self.next_seq;
        let entry = DrcEntry { value, time_ms: now_ms, seq: seq_before };
        let new_bytes = entry.bytes();
        let cutoff = now_ms.saturating_sub(DRC_WINDOW_MS);
        while let Some(((time_ms, _), _)) = self.by_age.first_key_value() {
            let too_old = *time_ms < cutoff;
            let too_many = self.len() >= DRC_ENTRIES_MAX;
            let too_big = self.bytes.saturating_add(new_bytes) > DRC_BYTES_MAX;
            if !(too_old || too_many || too_big) {
                break;
            }
            match self.pop_oldest() {
                Some(evicted) => removed.push(evicted),
                None => break,
            }
        }
        self.next_seq = self.next_seq.wrapping_add(1);
        self.insert_raw(key.clone(), entry);
        Ok(DrcUndo { inserted: key.clone(), removed, seq_before })
    }

    pub(crate) fn undo(&mut self, undo: DrcUndo) {
        self.remove_raw(&undo.inserted);
        for (key, entry) in undo.removed {
            self.insert_raw(key, entry);
        }
        self.next_seq = undo.seq_before;
    }

    fn pop_oldest(&mut self) -> Option<(DrcKey, DrcEntry)> {
        let (_, key) = self.by_age.pop_first()?;
        let entry = self.entries.remove(&key)?;
        self.bytes = self.bytes.saturating_sub(entry.bytes());
        Some((key, entry))
    }

    fn insert_raw(&mut self, key: DrcKey, entry: DrcEntry) {
        self.remove_raw(&key);
        self.bytes = self.bytes.saturating_add(entry.bytes());
        self.by_age.insert((entry.time_ms, entry.seq), key.clone());
        self.entries.insert(key, entry);
    }

    fn remove_raw(&mut self, key: &DrcKey) -> Option<DrcEntry> {
        let entry = self.entries.remove(key)?;
        self.by_age.remove(&(entry.time_ms, entry.seq));
        self.bytes = self.bytes.saturating_sub(entry.bytes());
        Some(entry)
    }

    pub(crate) fn get(&self, key: &DrcKey) -> Option<&DrcEntry> {
        self.entries.get(key)
    }

    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keys in eviction order, oldest first.
    pub(crate) fn keys_by_age(&self) -> impl Iterator<Item = &DrcKey> + '_ {
        self.by_age.values()
    }

    /// O(1): the bounds hold and the age index is as large as the cache.
    pub(crate) fn check_sizes(&self) -> Result<(), InvariantError> {
        if self.len() > DRC_ENTRIES_MAX {
            return Err(InvariantError::OverBound { table: Table::Drc, count: self.len(), max: DRC_ENTRIES_MAX });
        }
        if self.bytes > DRC_BYTES_MAX {
            return Err(InvariantError::OverBound { table: Table::DrcBytes, count: self.bytes, max: DRC_BYTES_MAX });
        }
        let (entries, by_age) = (self.entries.len() as u64, self.by_age.len() as u64);
        if entries != by_age {
            return Err(InvariantError::DrcAgeIndexSize { entries, by_age });
        }
        Ok(())
    }

    /// O(log n): the entry for `key`, if cached (intent or reply), fits the
    /// reply bound, is in the age index under its own (time, seq), and its
    /// seq is below `next_seq`.
    pub(crate) fn check_key(&self, key: &DrcKey) -> Result<(), InvariantError> {
        let Some(entry) = self.entries.get(key) else { return Ok(()) };
        let bytes = entry.bytes();
        if bytes > DRC_REPLY_BYTES_MAX {
            return Err(InvariantError::DrcReplyTooLarge { bytes, max: DRC_REPLY_BYTES_MAX });
        }
        if self.by_age.get(&(entry.time_ms, entry.seq)) != Some(key) {
            return Err(InvariantError::DrcAgeIndex { time_ms: entry.time_ms, seq: entry.seq });
        }
        if entry.seq >= self.next_seq {
            return Err(InvariantError::DrcSeqFromFuture { seq: entry.seq, next_seq: self.next_seq });
        }
        Ok(())
    }

    /// O(n): the sizes and every entry check out, and the byte count is the
    /// sum of the replies (intents count 0).
    pub(crate) fn check(&self) -> Result<(), InvariantError> {
        self.check_sizes()?;
        let mut sum: u64 = 0;
        for (key, entry) in &self.entries {
            self.check_key(key)?;
            sum = sum.saturating_add(entry.bytes());
        }
        if sum != self.bytes {
            return Err(InvariantError::DrcBytes { counted: self.bytes, sum });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(xid: u32) -> DrcKey {
        DrcKey {
            client: "10.0.0.1".into(),
            xid,
            prog: 100003,
            vers: 3,
            proc_: 12,
            args_sum: 7,
            cred: crate::command::DrcCred::Sys { uid: 0, gid: 0 },
        }
    }

    #[test]
    fn insert_get_replace() {
        let mut d = Drc::default();
        assert!(d.insert(&key(1), b"one", 1000).is_ok());
        assert_eq!(d.get(&key(1)).and_then(DrcEntry::reply), Some(&b"one"[..]));
        assert!(d.insert(&key(1), b"uno", 2000).is_ok());
        assert_eq!(d.len(), 1);
        assert_eq!(d.bytes(), 3);
        assert_eq!(d.get(&key(1)).map(|e| e.time_ms), Some(2000));
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn window_evicts_old_entries() {
        let mut d = Drc::default();
        assert!(d.insert(&key(1), b"a", 1000).is_ok());
        assert!(d.insert(&key(2), b"b", 2000).is_ok());
        // Exactly at the window edge stays; older goes.
        assert!(d.insert(&key(3), b"c", 2000 + DRC_WINDOW_MS).is_ok());
        assert!(d.get(&key(1)).is_none());
        assert!(d.get(&key(2)).is_some());
        assert_eq!(d.len(), 2);
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn entry_bound_evicts_oldest_deterministically() {
        let mut d = Drc::default();
        for xid in 0..DRC_ENTRIES_MAX as u32 + 10 {
            // Equal times: the insertion sequence decides.
            assert!(d.insert(&key(xid), b"r", 5).is_ok());
        }
        assert_eq!(d.len(), DRC_ENTRIES_MAX);
        assert!(d.get(&key(9)).is_none());
        assert!(d.get(&key(10)).is_some());
        assert_eq!(d.keys_by_age().next(), Some(&key(10)));
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn byte_bound_and_reply_bound() {
        let mut d = Drc::default();
        let big = vec![0u8; DRC_REPLY_BYTES_MAX as usize];
        let fit = DRC_BYTES_MAX / DRC_REPLY_BYTES_MAX;
        for xid in 0..fit as u32 + 3 {
            assert!(d.insert(&key(xid), &big, 1).is_ok());
        }
        assert_eq!(d.len(), fit);
        assert!(d.bytes() <= DRC_BYTES_MAX);
        let too_big = vec![0u8; DRC_REPLY_BYTES_MAX as usize + 1];
        let before = d.clone();
        assert!(matches!(d.insert(&key(999_999), &too_big, 1), Err(ApplyError::DrcReplyTooLarge { .. })));
        assert_eq!(d, before);
    }

    #[test]
    fn undo_restores_everything() {
        let mut d = Drc::default();
        for xid in 0..5 {
            assert!(d.insert(&key(xid), b"x", u64::from(xid)).is_ok());
        }
        let before = d.clone();
        let undo = d.insert(&key(2), b"replaced", DRC_WINDOW_MS + 3);
        assert!(d.get(&key(0)).is_none());
        if let Ok(undo) = undo {
            d.undo(undo);
        }
        assert_eq!(d, before);
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn intent_then_reply() {
        let mut d = Drc::default();
        let undo = d.intent(&key(1), 1000);
        assert!(matches!(undo, Ok(Some(_))));
        assert_eq!(d.get(&key(1)).map(|e| &e.value), Some(&DrcValue::Intent));
        assert_eq!((d.len(), d.bytes()), (1, 0));
        // A second intent, or one for a key with a reply, changes nothing.
        let before = d.clone();
        assert!(matches!(d.intent(&key(1), 5000), Ok(None)));
        assert_eq!(d, before);
        assert!(d.insert(&key(1), b"done", 2000).is_ok());
        assert_eq!(d.get(&key(1)).and_then(DrcEntry::reply), Some(&b"done"[..]));
        assert_eq!((d.len(), d.bytes()), (1, 4));
        let before = d.clone();
        assert!(matches!(d.intent(&key(1), 3000), Ok(None)));
        assert_eq!(d, before);
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn intents_are_bounded_and_evicted_like_replies() {
        let mut d = Drc::default();
        assert!(d.intent(&key(0), 1000).is_ok());
        assert!(d.insert(&key(1), b"r", 2000).is_ok());
        // The window evicts an old intent.
        assert!(d.intent(&key(2), 1000 + DRC_WINDOW_MS + 1).is_ok());
        assert!(d.get(&key(0)).is_none());
        assert_eq!(d.len(), 2);
        let mut d = Drc::default();
        for xid in 0..DRC_ENTRIES_MAX as u32 + 5 {
            assert!(d.intent(&key(xid), 7).is_ok());
        }
        assert_eq!(d.len(), DRC_ENTRIES_MAX);
        assert_eq!(d.bytes(), 0);
        assert!(d.get(&key(4)).is_none());
        assert_eq!(d.keys_by_age().next(), Some(&key(5)));
        assert_eq!(d.check(), Ok(()));
    }

    #[test]
    fn intent_undo_restores_everything() {
        let mut d = Drc::default();
        for xid in 0..5 {
            assert!(d.insert(&key(xid), b"x", u64::from(xid)).is_ok());
        }
        let before = d.clone();
        let undo = d.intent(&key(9), DRC_WINDOW_MS + 3);
        assert!(d.get(&key(0)).is_none());
        if let Ok(Some(undo)) = undo {
            d.undo(undo);
        }
        assert_eq!(d, before);
        let bad = DrcKey { client: String::new(), ..key(9) };
        assert_eq!(d.intent(&bad, 1).map(|u| u.is_some()), Err(ApplyError::ClientInvalid));
        assert_eq!(d, before);
    }
}
