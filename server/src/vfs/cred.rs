//! Per-thread filesystem credentials: squash rules (exports(5)) and a guard that
//! switches the calling thread's fsuid, fsgid and supplementary groups, then
//! restores them on drop (error paths and unwinding included).
//!
//! Raw syscalls are used on purpose: glibc's `setgroups` changes every thread of
//! the process, while the kernel's setgroups/setfsuid/setfsgid act on the
//! calling thread only. With a non-zero fsuid the kernel drops the fs
//! capabilities (DAC override, fowner...), so permission checks and the
//! ownership of new files are exactly the kernel's for that user.

use std::cell::RefCell;
use std::sync::OnceLock;

use crate::config::{ExportOptions, Squash};
use crate::rpc::program::Cred;

use super::sys::Errno;

/// AUTH_SYS carries at most 16 supplementary gids (RFC 5531).
pub const GROUPS_MAX: usize = 16;
const ROOT_ID: u32 = 0;

/// The ids an operation runs with, after squashing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub gids: Vec<u32>,
}

/// Apply the export's squash options to the caller's credentials.
pub fn squash(cred: &Cred, opts: &ExportOptions) -> Creds {
    let anon = Creds { uid: opts.anonuid, gid: opts.anongid, gids: Vec::new() };
    let (uid, gid, gids) = match cred {
        Cred::None => return anon,
        Cred::Sys { uid, gid, gids, .. } => (*uid, *gid, gids),
    };
    match opts.squash {
        Squash::All => anon,
        Squash::None => Creds { uid, gid, gids: gids.iter().take(GROUPS_MAX).copied().collect() },
        Squash::Root => {
            // As knfsd's nfsd_setuser: uid 0 and gid 0 (also in the group list)
            // map to the anonymous ids.
            let map_g = |g: u32| if g == ROOT_ID { opts.anongid } else { g };
            Creds {
                uid: if uid == ROOT_ID { opts.anonuid } else { uid },
                gid: map_g(gid),
                gids: gids.iter().take(GROUPS_MAX).map(|g| map_g(*g)).collect(),
            }
        }
    }
}

/// While alive, the current thread's fs credentials are `Creds`.
pub struct CredGuard {
    /// None when the server cannot switch ids (see `can_switch`).
    saved: Option<Saved>,
}

struct Saved {
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

static CAN_SWITCH: OnceLock<bool> = OnceLock::new();

/// Only root can act as other users. An unprivileged server (a quick start
/// by an ordinary user) runs every operation with its own ids instead, and
/// says so once.
pub fn can_switch() -> bool {
    *CAN_SWITCH.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == ROOT_ID;
        if !root {
            tracing::warn!(
                "not running as root: NFS operations run with the server's own ids, \
                 not the callers' (no per-user permission checks or ownership)"
            );
        }
        root
    })
}

fn setfsuid(uid: u32) -> u32 {
    // SAFETY: setfsuid takes an id and returns the previous fsuid.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) as u32 }
}

fn setfsgid(gid: u32) -> u32 {
    // SAFETY: setfsgid takes an id and returns the previous fsgid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) as u32 }
}

fn set_groups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    // SAFETY: groups is a valid slice of gid_t for groups.len() entries.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        return Err(Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EPERM)));
    }
    THREAD_GROUPS.with(|g| *g.borrow_mut() = Some(groups.to_vec()));
    Ok(())
}

thread_local! {
    /// This thread's supplementary groups as last read or set here. Only this
    /// module changes them, with the per-thread raw syscall, so the copy stays
    /// exact and saves a getgroups pair per call, and a setgroups when the
    /// caller's groups are the ones the thread already has.
    static THREAD_GROUPS: RefCell<Option<Vec<libc::gid_t>>> = const { RefCell::new(None) };
}

/// This thread's supplementary groups (read from the kernel once per thread).
fn thread_groups() -> Vec<libc::gid_t> {
    THREAD_GROUPS.with(|g| {
        let mut g = g.borrow_mut();
        g.get_or_insert_with(get_groups).clone()
    })
}

/// Set the supplementary groups unless the thread already has exactly these.
fn ensure_groups(groups: &[libc::gid_t]) -> Result<(), Errno> {
    let same = THREAD_GROUPS.with(|g| g.borrow().as_deref() == Some(groups));
    if same {
        return Ok(());
    }
    set_groups(groups)
}

fn get_groups() -> Vec<libc::gid_t> {
    // SAFETY: size 0 asks only for the count; nothing is written.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    let mut buf = vec![0 as libc::gid_t; usize::try_from(n).unwrap_or(0)];
    if buf.is_empty() {
        return buf;
    }
    // SAFETY: buf has exactly the number of entries the kernel reported.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, buf.len(), buf.as_mut_ptr()) };
    buf.truncate(usize::try_from(n).unwrap_or(0));
    buf
}

impl CredGuard {
    /// Switch this thread to `c`. Fails (and leaves the thread unchanged) if the
    /// kernel refuses any of the ids.
    pub fn switch(c: &Creds) -> Result<CredGuard, Errno> {
        if !can_switch() {
            return Ok(CredGuard { saved: None });
        }
        let groups = thread_groups();
        ensure_groups(&c.gids)?;
        let gid = setfsgid(c.gid);
        let uid = setfsuid(c.uid);
        let guard = CredGuard { saved: Some(Saved { uid, gid, groups }) };
        // setfsuid/setfsgid report no error; reading back (a second call
        // returns the current value) tells whether the switch took.
        if setfsuid(c.uid) != c.uid || setfsgid(c.gid) != c.gid {
            return Err(Errno(libc::EPERM));
        }
        Ok(guard)
    }
}

impl Drop for CredGuard {
    fn drop(&mut self) {
        let Some(saved) = &self.saved else { return };
        // Regain the fs capabilities first, then the group ids.
        setfsuid(saved.uid);
        setfsgid(saved.gid);
        if let Err(e) = ensure_groups(&saved.groups) {
            tracing::error!(errno = e.0, "could not restore supplementary groups");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(uid: u32, gid: u32, gids: Vec<u32>) -> Cred {
        Cred::Sys { uid, gid, gids, machine: "m".into() }
    }

    #[test]
    fn root_squash_default() {
        let o = ExportOptions::default();
        let c = squash(&sys(0, 0, vec![0, 5]), &o);
        assert_eq!(c, Creds { uid: 65534, gid: 65534, gids: vec![65534, 5] });
        let c = squash(&sys(1000, 100, vec![4]), &o);
        assert_eq!(c, Creds { uid: 1000, gid: 100, gids: vec![4] });
    }

    #[test]
    fn all_and_none() {
        let mut o = ExportOptions { squash: Squash::All, anonuid: 7, anongid: 8, ..Default::default() };
        assert_eq!(squash(&sys(1000, 100, vec![4]), &o), Creds { uid: 7, gid: 8, gids: vec![] });
        assert_eq!(squash(&Cred::None, &o), Creds { uid: 7, gid: 8, gids: vec![] });
        o.squash = Squash::None;
        assert_eq!(squash(&sys(0, 0, vec![]), &o), Creds { uid: 0, gid: 0, gids: vec![] });
        assert_eq!(squash(&Cred::None, &o).uid, 7);
    }

    #[test]
    fn guard_switches_only_this_thread() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "needs root to switch ids (runs as euid {euid}); ./test.sh and CI run as root");
        let c = Creds { uid: 1234, gid: 4321, gids: vec![77] };
        let h = std::thread::spawn(move || {
            let g = CredGuard::switch(&c).map_err(|e| e.0);
            let inside = (setfsuid(u32::MAX), get_groups());
            drop(g);
            (inside, setfsuid(u32::MAX))
        });
        let ((inside_uid, inside_groups), after) = h.join().unwrap();
        assert_eq!(inside_uid, 1234);
        assert_eq!(inside_groups, vec![77]);
        assert_eq!(after, 0);
        assert_eq!(setfsuid(u32::MAX), 0, "other threads keep their ids");
    }
}
