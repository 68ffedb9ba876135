//! NLM SHARE/UNSHARE: DOS share reservations, one per (file, owner).
//!
//! Conflict rule (XNFS `nlm_share`, Linux `fs/lockd/svcshare.c`): a new
//! reservation conflicts with another owner's if what it wants to do is what
//! the other denies, or what it denies is what the other does:
//! `new.access & old.mode != 0 || new.mode & old.access != 0`, with read = 1
//! and write = 2 in both `fsh4_mode` and `fsh4_access`. A second SHARE by the
//! same owner replaces its reservation. Owner = caller_name + oh (`nlm4_share`
//! has no svid).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{caller_name_valid, ArgError, FileId, LockBound, NlmUndo, UndoStep};
use crate::limits::{NETOBJ_BYTES_MAX, SHARES_MAX, SHARES_PER_FILE_MAX};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShareOwner {
    pub caller_name: String,
    pub oh: Vec<u8>,
}

/// `fsh4_mode`: what others may not do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareMode {
    DenyNone,
    DenyRead,
    DenyWrite,
    DenyReadWrite,
}

/// `fsh4_access`: what the owner does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareAccess {
    None,
    Read,
    Write,
    ReadWrite,
}

impl ShareMode {
    /// The XDR value, also its read (1) / write (2) bits.
    pub fn bits(self) -> u32 {
        self as u32
    }

    pub fn from_bits(bits: u32) -> Option<ShareMode> {
        [ShareMode::DenyNone, ShareMode::DenyRead, ShareMode::DenyWrite, ShareMode::DenyReadWrite]
            .into_iter()
            .find(|m| m.bits() == bits)
    }
}

impl ShareAccess {
    pub fn bits(self) -> u32 {
        self as u32
    }

    pub fn from_bits(bits: u32) -> Option<ShareAccess> {
        [ShareAccess::None, ShareAccess::Read, ShareAccess::Write, ShareAccess::ReadWrite]
            .into_iter()
            .find(|a| a.bits() == bits)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub owner: ShareOwner,
    pub mode: ShareMode,
    pub access: ShareAccess,
}

impl Share {
    fn conflicts_with(&self, other: &Share) -> bool {
        self.access.bits() & other.mode.bits() != 0 || self.mode.bits() & other.access.bits() != 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareOutcome {
    Granted,
    /// Conflicts with another owner's reservation (reply LCK_DENIED).
    Denied,
    Full(LockBound),
    Invalid(ArgError),
}

/// UNSHARE replies LCK_GRANTED either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnshareOutcome {
    Released,
    NothingHeld,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SharesWire")]
pub struct Shares {
    /// Per file, sorted by owner, one entry per owner; no empty lists.
    files: BTreeMap<FileId, Vec<Share>>,
    #[serde(skip)]
    total: u64,
}

#[derive(Deserialize)]
struct SharesWire {
    files: BTreeMap<FileId, Vec<Share>>,
}

impl TryFrom<SharesWire> for Shares {
    type Error = String;
    fn try_from(wire: SharesWire) -> Result<Self, String> {
        let total = wire.files.values().map(|l| l.len() as u64).sum();
        let shares = Shares { files: wire.files, total };
        shares.check_invariants()?;
        Ok(shares)
    }
}

fn owner_valid(owner: &ShareOwner) -> Result<(), ArgError> {
    if !caller_name_valid(&owner.caller_name) {
        return Err(ArgError::CallerName);
    }
    if owner.oh.len() as u64 > NETOBJ_BYTES_MAX {
        return Err(ArgError::OwnerHandle);
    }
    Ok(())
}

impl Shares {
    pub(super) fn share(&mut self, file: &FileId, share: &Share, undo: &mut NlmUndo) -> ShareOutcome {
        if let Err(e) = file.validate().and_then(|()| owner_valid(&share.owner)) {
            return ShareOutcome::Invalid(e);
        }
        let list = self.files.get(file).map_or(&[][..], Vec::as_slice);
        if list.iter().any(|s| s.owner != share.owner && share.conflicts_with(s)) {
            return ShareOutcome::Denied;
        }
        let replaces = list.iter().any(|s| s.owner == share.owner);
        if !replaces && list.len() as u64 >= SHARES_PER_FILE_MAX {
            return ShareOutcome::Full(LockBound::SharesPerFile);
        }
        if !replaces && self.total >= SHARES_MAX {
            return ShareOutcome::Full(LockBound::Shares);
        }
        let mut list = self.take(file, undo);
        list.retain(|s| s.owner != share.owner);
        list.push(share.clone());
        list.sort_by(|a, b| a.owner.cmp(&b.owner));
        self.put(file.clone(), list);
        ShareOutcome::Granted
    }

    pub(super) fn unshare(&mut self, file: &FileId, owner: &ShareOwner, undo: &mut NlmUndo) -> UnshareOutcome {
        let held = self.files.get(file).is_some_and(|l| l.iter().any(|s| s.owner == *owner));
        if !held {
            return UnshareOutcome::NothingHeld;
        }
        let mut list = self.take(file, undo);
        list.retain(|s| s.owner != *owner);
        self.put(file.clone(), list);
        UnshareOutcome::Released
    }

    /// Drops every reservation of `host`; returns how many.
    pub(super) fn free_host(&mut self, host: &str, undo: &mut NlmUndo) -> u64 {
        let touched: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, l)| l.iter().any(|s| s.owner.caller_name == host))
            .map(|(f, _)| f.clone())
            .collect();
        let mut freed = 0;
        for file in touched {
            let mut list = self.take(&file, undo);
            let before = list.len() as u64;
            list.retain(|s| s.owner.caller_name != host);
            freed += before - list.len() as u64;
            self.put(file, list);
        }
        freed
    }

    fn take(&mut self, file: &FileId, undo: &mut NlmUndo) -> Vec<Share> {
        let list = self.files.remove(file);
        self.total -= list.as_ref().map_or(0, |l| l.len() as u64);
        undo.push(UndoStep::Shares(file.clone(), list.clone()));
        list.unwrap_or_default()
    }

    fn put(&mut self, file: FileId, list: Vec<Share>) {
        if !list.is_empty() {
            self.total += list.len() as u64;
            self.files.insert(file, list);
        }
    }

    pub(super) fn restore(&mut self, file: FileId, prev: Option<Vec<Share>>) {
        let current = self.files.remove(&file);
        self.total -= current.map_or(0, |l| l.len() as u64);
        self.put(file, prev.unwrap_or_default());
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// (file, reservation), by file then owner.
    pub fn iter(&self) -> impl Iterator<Item = (&FileId, &Share)> + '_ {
        self.files.iter().flat_map(|(f, l)| l.iter().map(move |s| (f, s)))
    }

    pub fn check_invariants(&self) -> Result<(), String> {
        let mut total = 0;
        for (file, list) in &self.files {
            if list.is_empty() {
                return Err("an empty share list is kept".into());
            }
            if file.validate().is_err() {
                return Err("a share's file id is invalid".into());
            }
            if list.len() as u64 > SHARES_PER_FILE_MAX {
                return Err("a file is over SHARES_PER_FILE_MAX".into());
            }
            if list.windows(2).any(|p| p[0].owner >= p[1].owner) {
                return Err("shares of a file not sorted by owner, or an owner twice".into());
            }
            for (i, a) in list.iter().enumerate() {
                if owner_valid(&a.owner).is_err() {
                    return Err("a share owner is invalid".into());
                }
                if list.iter().skip(i + 1).any(|b| a.conflicts_with(b)) {
                    return Err("two owners hold conflicting shares".into());
                }
            }
            total += list.len() as u64;
        }
        if total != self.total {
            return Err("share count disagrees".into());
        }
        if total > SHARES_MAX {
            return Err("over SHARES_MAX".into());
        }
        Ok(())
    }
}
