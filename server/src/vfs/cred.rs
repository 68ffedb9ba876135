//! Per-thread filesystem credentials: squash rules (exports(5)) and a guard that
//! switches the calling thread's fsuid, fsgid, supplementary groups and
//! effective capabilities, then restores them on drop (error paths and
//! unwinding included).
//!
//! Raw syscalls are used on purpose: glibc's `setgroups` changes every thread of
//! the process, while the kernel's setgroups/setfsuid/setfsgid/capset act on the
//! calling thread only. Capabilities as knfsd's `nfsd_setuser`: a non-root
//! caller runs without `CAP_FS_SET` (DAC override, fowner, fsetid, mknod,
//! chown, linux_immutable...) and without `CAP_SYS_RESOURCE`, so the kernel
//! clears set-id bits on its writes and keeps it out of ext4's root-reserved
//! blocks and over quota, exactly as for a local process; the kernel's own
//! setfsuid rule drops only `CAP_FS_SET`. A root caller (no_root_squash) gets
//! `CAP_NFSD_SET` raised from the permitted set. Only the effective set
//! changes; the guard saves all three sets and puts them back exactly.
//!
//! Each thread remembers its fs ids, capability sets and groups as this
//! module last set or read them (nothing else in the server changes them), so
//! a switch makes only the syscalls that change something: a call whose
//! caller already has the thread's ids costs none. A root caller that keeps
//! the DAC-override capabilities also keeps the thread's supplementary groups:
//! with those capabilities groups decide no permission, and a new file's group
//! comes from the fsgid (or a set-gid directory), not from the group list.

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

/// What a guard puts back.
struct Saved {
    ids: Ids,
    groups: Vec<libc::gid_t>,
}

/// A thread's fs ids and capability sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ids {
    uid: u32,
    gid: u32,
    caps: CapSets,
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

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets, passed as two 32-bit words.
const CAP_VERSION_3: u32 = 0x2008_0522;
/// Words per set in version 3.
const CAP_WORDS: usize = 2;

// Capability numbers (linux/capability.h).
const CAP_CHOWN: u32 = 0;
const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_FOWNER: u32 = 3;
const CAP_FSETID: u32 = 4;
const CAP_LINUX_IMMUTABLE: u32 = 9;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_MKNOD: u32 = 27;
const CAP_MAC_OVERRIDE: u32 = 32;

const fn cap(c: u32) -> u64 {
    1 << c
}

/// The kernel's `CAP_FS_MASK`: the capabilities that belong to the fs ids.
const CAP_FS_MASK: u64 = cap(CAP_CHOWN)
    | cap(CAP_MKNOD)
    | cap(CAP_DAC_OVERRIDE)
    | cap(CAP_DAC_READ_SEARCH)
    | cap(CAP_FOWNER)
    | cap(CAP_FSETID)
    | cap(CAP_MAC_OVERRIDE);
/// `CAP_FS_SET`: what setfsuid to a non-zero id drops from the effective set.
const CAP_FS_SET: u64 = CAP_FS_MASK | cap(CAP_LINUX_IMMUTABLE);
/// `CAP_NFSD_SET`: what knfsd drops for a non-root caller and raises for root.
const CAP_NFSD_SET: u64 = CAP_FS_MASK | cap(CAP_SYS_RESOURCE);
/// Dropped from the effective set while acting for a non-root caller.
const CAPS_DROPPED_FOR_USER: u64 = CAP_FS_SET | CAP_NFSD_SET;

#[repr(C)]
struct CapHeader {
    version: u32,
    /// 0: the calling thread.
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A thread's three capability sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CapSets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

impl CapSets {
    /// The sets an operation for fsuid `uid` runs with, from the server's
    /// own: knfsd's `cap_drop_nfsd_set` (and the kernel's `CAP_FS_SET` rule)
    /// for a non-root caller, `cap_raise_nfsd_set` for root.
    fn for_fsuid(self, uid: u32) -> CapSets {
        let effective = if uid == ROOT_ID {
            self.effective | (self.permitted & CAP_NFSD_SET)
        } else {
            self.effective & !CAPS_DROPPED_FOR_USER
        };
        CapSets { effective, ..self }
    }
}

fn last_errno() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EPERM))
}

/// The calling thread's capability sets (capget).
fn thread_caps() -> Result<CapSets, Errno> {
    let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); CAP_WORDS];
    // SAFETY: hdr is a valid header; data has the CAP_WORDS entries version 3 writes.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut CapHeader, data.as_mut_ptr()) };
    if rc < 0 {
        return Err(last_errno());
    }
    let [lo, hi] = data;
    let join = |l: u32, h: u32| u64::from(l) | (u64::from(h) << 32);
    Ok(CapSets {
        effective: join(lo.effective, hi.effective),
        permitted: join(lo.permitted, hi.permitted),
        inheritable: join(lo.inheritable, hi.inheritable),
    })
}

/// Set the calling thread's capability sets (capset; other threads keep theirs).
fn set_thread_caps(c: CapSets) -> Result<(), Errno> {
    let mut hdr = CapHeader { version: CAP_VERSION_3, pid: 0 };
    let word = |v: u64, i: u32| (v >> (32 * i)) as u32;
    let data = [0, 1].map(|i| CapData {
        effective: word(c.effective, i),
        permitted: word(c.permitted, i),
        inheritable: word(c.inheritable, i),
    });
    // SAFETY: hdr is a valid header; data has the CAP_WORDS entries version 3 reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc < 0 {
        return Err(last_errno());
    }
    Ok(())
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
    /// This thread's fs ids and capability sets, kept exact the same way.
    static THREAD_IDS: RefCell<Option<Ids>> = const { RefCell::new(None) };
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

/// This thread's fs ids and capability sets (read from the kernel once per
/// thread: setfsuid/setfsgid with an invalid id only report the current one).
fn thread_ids() -> Result<Ids, Errno> {
    if let Some(ids) = THREAD_IDS.with(|t| *t.borrow()) {
        return Ok(ids);
    }
    let ids = Ids { uid: setfsuid(u32::MAX), gid: setfsgid(u32::MAX), caps: thread_caps()? };
    THREAD_IDS.with(|t| *t.borrow_mut() = Some(ids));
    Ok(ids)
}

/// Change this thread's fs ids and capabilities from `from` (what it has) to
/// `to`, with a syscall only for what differs; the record follows each step
/// that took, so it stays exact when one fails. The ids first, then the exact
/// sets (setfsuid applies the kernel's partial capability rule on its way, so
/// a changed uid is always followed by the capset). `verify` reads each
/// changed id back (setfsuid/setfsgid report no error; a second call returns
/// the current value); going back to the server's own ids cannot fail.
fn change_ids(from: Ids, to: Ids, verify: bool) -> Result<(), Errno> {
    let mut now = from;
    let result = (|| {
        if now.gid != to.gid {
            now.gid = set_fs_id(setfsgid, to.gid, verify)?;
        }
        let uid_changed = now.uid != to.uid;
        if uid_changed {
            now.uid = set_fs_id(setfsuid, to.uid, verify)?;
        }
        if uid_changed || now.caps != to.caps {
            set_thread_caps(to.caps)?;
            now.caps = to.caps;
        }
        Ok(())
    })();
    THREAD_IDS.with(|t| *t.borrow_mut() = Some(now));
    result
}

/// Set one fs id with `set` (setfsuid or setfsgid), read back when `verify`.
fn set_fs_id(set: fn(u32) -> u32, id: u32, verify: bool) -> Result<u32, Errno> {
    set(id);
    if verify && set(id) != id {
        return Err(Errno(libc::EPERM));
    }
    Ok(id)
}

/// Capabilities with which supplementary groups decide no permission check.
const CAPS_GROUPS_IRRELEVANT: u64 = cap(CAP_DAC_OVERRIDE) | cap(CAP_DAC_READ_SEARCH) | cap(CAP_FOWNER) | cap(CAP_CHOWN);

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
    /// Switch this thread to `c`, with the capabilities an operation for
    /// `c.uid` may use. Fails (and leaves the thread unchanged) if the kernel
    /// refuses any of the ids or the capability change.
    pub fn switch(c: &Creds) -> Result<CredGuard, Errno> {
        if !can_switch() {
            return Ok(CredGuard { saved: None });
        }
        let ids = thread_ids()?;
        let groups = thread_groups();
        let to = Ids { uid: c.uid, gid: c.gid, caps: ids.caps.for_fsuid(c.uid) };
        let guard = CredGuard { saved: Some(Saved { ids, groups }) };
        let groups_decide = to.uid != ROOT_ID || to.caps.effective & CAPS_GROUPS_IRRELEVANT != CAPS_GROUPS_IRRELEVANT;
        if groups_decide {
            ensure_groups(&c.gids)?;
        }
        // From the saved sets, not the current ones: setfsuid applies the
        // kernel's partial rule on its way.
        change_ids(ids, to, true)?;
        Ok(guard)
    }
}

impl Drop for CredGuard {
    fn drop(&mut self) {
        let Some(saved) = &self.saved else { return };
        let now = match thread_ids() {
            Ok(now) => now,
            Err(e) => {
                tracing::error!(errno = e.0, "could not read the thread's capabilities");
                return;
            }
        };
        if let Err(e) = change_ids(now, saved.ids, false) {
            tracing::error!(errno = e.0, "could not restore the thread's fs ids and capabilities");
        }
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

    #[test]
    fn switches_in_any_order_leave_the_kernel_as_recorded() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "needs root to switch ids (runs as euid {euid}); ./test.sh and CI run as root");
        let h = std::thread::spawn(|| {
            let kernel = || -> Result<(u32, u32, CapSets, Vec<u32>), i32> {
                Ok((setfsuid(u32::MAX), setfsgid(u32::MAX), thread_caps().map_err(|e| e.0)?, get_groups()))
            };
            let server = kernel()?;
            let mut seen = Vec::new();
            let callers = [
                Creds { uid: 1234, gid: 4321, gids: vec![77, 78] },
                Creds { uid: 0, gid: 0, gids: vec![0] },
                Creds { uid: 0, gid: 0, gids: vec![0] },
                Creds { uid: 1234, gid: 4321, gids: vec![77, 78] },
                Creds { uid: 1235, gid: 4321, gids: vec![] },
                Creds { uid: 0, gid: 5, gids: vec![9] },
            ];
            for c in &callers {
                let g = CredGuard::switch(c).map_err(|e| e.0)?;
                let inside = kernel()?;
                drop(g);
                seen.push((inside, kernel()?));
            }
            Ok::<_, i32>((server, seen))
        });
        let (server, seen) = h.join().unwrap().unwrap();
        let user_caps = CapSets { effective: server.2.effective & !CAPS_DROPPED_FOR_USER, ..server.2 };
        let expect_inside = [
            (1234, 4321, user_caps, vec![77, 78]),
            // Root keeps the thread's groups: with DAC override they decide nothing.
            (0, 0, server.2, server.3.clone()),
            (0, 0, server.2, server.3.clone()),
            (1234, 4321, user_caps, vec![77, 78]),
            (1235, 4321, user_caps, vec![]),
            (0, 5, server.2, server.3.clone()),
        ];
        for (i, ((inside, after), want)) in seen.into_iter().zip(expect_inside).enumerate() {
            assert_eq!(inside, want, "caller {i} inside");
            assert_eq!(after, server, "caller {i}: the server's own ids, caps and groups after");
        }
    }

    #[test]
    fn caps_for_fsuid_follow_knfsd() {
        const CAP_SETGID: u32 = 6;
        let all = (1u64 << 41) - 1;
        let server = CapSets { effective: all, permitted: all, inheritable: 0 };
        let user = server.for_fsuid(1000);
        for c in [CAP_FSETID, CAP_SYS_RESOURCE, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_MKNOD, CAP_LINUX_IMMUTABLE] {
            assert_eq!(user.effective & cap(c), 0, "cap {c} dropped for a non-root caller");
        }
        assert_eq!(
            user.effective & cap(CAP_SETGID),
            cap(CAP_SETGID),
            "CAP_SETGID is not the caller's business and stays"
        );
        assert_eq!((user.permitted, user.inheritable), (all, 0), "only the effective set changes");
        // Root raises the nfsd set from the permitted set, and nothing else.
        let lean = CapSets { effective: cap(CAP_SETGID), permitted: all, inheritable: 0 };
        assert_eq!(lean.for_fsuid(0).effective, cap(CAP_SETGID) | CAP_NFSD_SET);
        let unpermitted = CapSets { effective: 0, permitted: cap(CAP_FSETID), inheritable: 0 };
        assert_eq!(unpermitted.for_fsuid(0).effective, cap(CAP_FSETID));
    }

    #[test]
    fn guard_drops_and_restores_capabilities_on_this_thread_only() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "needs root to switch ids (runs as euid {euid}); ./test.sh and CI run as root");
        let before = thread_caps().unwrap();
        assert_ne!(before.effective & CAP_NFSD_SET, 0, "the test runs with root's capabilities");
        let h = std::thread::spawn(|| {
            let mine = thread_caps().map_err(|e| e.0)?;
            let user = Creds { uid: 1234, gid: 4321, gids: vec![] };
            let g = CredGuard::switch(&user).map_err(|e| e.0)?;
            let inside_user = thread_caps().map_err(|e| e.0)?;
            drop(g);
            let after_user = thread_caps().map_err(|e| e.0)?;
            let root = Creds { uid: 0, gid: 0, gids: vec![] };
            let g = CredGuard::switch(&root).map_err(|e| e.0)?;
            let inside_root = thread_caps().map_err(|e| e.0)?;
            drop(g);
            Ok::<_, i32>((mine, inside_user, after_user, inside_root, thread_caps().map_err(|e| e.0)?))
        });
        let (mine, inside_user, after_user, inside_root, after_root) = h.join().unwrap().unwrap();
        assert_eq!(inside_user.effective & CAPS_DROPPED_FOR_USER, 0, "{inside_user:?}");
        assert_eq!(inside_user.effective, mine.effective & !CAPS_DROPPED_FOR_USER, "nothing else dropped");
        assert_eq!(inside_user.permitted, mine.permitted, "permitted set kept (to restore from)");
        assert_eq!(after_user, mine, "restored exactly");
        assert_eq!(inside_root.effective & CAP_NFSD_SET, mine.permitted & CAP_NFSD_SET);
        assert_eq!(after_root, mine, "restored exactly");
        assert_eq!(thread_caps().unwrap(), before, "other threads keep their capabilities");
    }
}
