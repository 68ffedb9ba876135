//! Objects this node has just renamed, whose new location may not be in the
//! replicated handle table yet.
//!
//! RENAME renames on disk first; the new (parent, name) is committed by
//! dispatch afterwards, with the reply. A request for the same object that
//! arrives in between would walk the old path and get STALE: the Linux client
//! does exactly that when it silly-renames an open file that still has dirty
//! pages (RENAME to `.nfsXXXX`, then COMMIT/WRITE on the same handle at once).
//! Resolution therefore tries the location noted here when the table's fails;
//! the object found is still checked by inode, device and identity, so a wrong
//! or stale note can never resolve to another object.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Renames remembered at once; the oldest is dropped beyond this.
pub const MOVED_ENTRIES_MAX: usize = 4096;
/// How long a note is kept. Far longer than any commit takes; after it the
/// table holds the new location (or the rename failed).
pub const MOVED_TTL: Duration = Duration::from_secs(30);

struct Note {
    parent_ino: u64,
    name: Vec<u8>,
    at: Instant,
}

#[derive(Default)]
pub struct Moved {
    notes: Mutex<BTreeMap<(u32, u64), Note>>,
}

impl Moved {
    /// Remember that (export_id, ino) is being moved to `name` in `parent_ino`.
    pub fn note(&self, export_id: u32, ino: u64, parent_ino: u64, name: &[u8]) {
        let now = Instant::now();
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        notes.retain(|_, n| now.duration_since(n.at) < MOVED_TTL);
        if notes.len() >= MOVED_ENTRIES_MAX {
            let oldest = notes.iter().min_by_key(|(_, n)| n.at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                notes.remove(&k);
            }
        }
        notes.insert((export_id, ino), Note { parent_ino, name: name.to_vec(), at: now });
    }

    /// The noted (parent inode, name) of an object, if noted recently.
    pub fn get(&self, export_id: u32, ino: u64) -> Option<(u64, Vec<u8>)> {
        let notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        let n = notes.get(&(export_id, ino))?;
        (n.at.elapsed() < MOVED_TTL).then(|| (n.parent_ino, n.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_per_object_and_bounded() {
        let m = Moved::default();
        m.note(1, 10, 2, b"a");
        m.note(1, 10, 3, b"b");
        assert_eq!(m.get(1, 10), Some((3, b"b".to_vec())));
        assert_eq!(m.get(2, 10), None);
        for ino in 0..(MOVED_ENTRIES_MAX as u64 + 10) {
            m.note(7, 1000 + ino, 1, b"x");
        }
        assert!(m.notes.lock().unwrap().len() <= MOVED_ENTRIES_MAX);
        assert!(m.get(7, 1000 + MOVED_ENTRIES_MAX as u64 + 9).is_some());
    }
}
