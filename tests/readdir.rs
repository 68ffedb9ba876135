//! Large directories: 2,500 entries through READDIR and READDIRPLUS with small
//! replies list each name exactly once, a saved cookie resumes the listing,
//! and READDIRPLUS records its handles in one commit per reply, not per name.

use std::collections::BTreeMap;

use hanfs_raft::local::LocalCommit;
use nfs3_types::nfs3::*;

use crate::nfs3_ops::*;
use crate::util::*;

const FILES: u32 = 2500;
/// Most calls a listing may take before the test gives up (a loop bound).
const CALLS_MAX: u32 = 10_000;

fn populate(dir: &std::path::Path) {
    for i in 0..FILES {
        std::fs::write(dir.join(format!("file-{i:05}")), b"").unwrap();
    }
}

/// READDIR from `cookie` until eof; (name → times seen, cookies in order).
async fn list(
    c: &mut Conn,
    dir: &nfs_fh3,
    mut cookie: u64,
    count: u32,
) -> (BTreeMap<Vec<u8>, u32>, Vec<(Vec<u8>, u64)>) {
    let mut seen = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..CALLS_MAX {
        let args = READDIR3args { dir: dir.clone(), cookie, cookieverf: cookieverf3::default(), count };
        let Nfs3Result::Ok(ok) = c.readdir(&args).await.unwrap() else { panic!("READDIR failed") };
        for e in &ok.reply.entries.0 {
            *seen.entry(e.name.0.to_vec()).or_insert(0) += 1;
            order.push((e.name.0.to_vec(), e.cookie));
            cookie = e.cookie;
        }
        if ok.reply.eof {
            return (seen, order);
        }
        assert!(!ok.reply.entries.0.is_empty(), "no progress without eof");
    }
    panic!("listing did not end within {CALLS_MAX} calls");
}

fn assert_each_once(seen: &BTreeMap<Vec<u8>, u32>) {
    assert_eq!(seen.len() as u32, FILES + 2, "every name plus . and ..");
    assert!(seen.contains_key(b".".as_slice()) && seen.contains_key(b"..".as_slice()));
    for (name, n) in seen {
        assert_eq!(*n, 1, "{} listed {n} times", String::from_utf8_lossy(name));
    }
}

#[tokio::test]
async fn readdir_2500_entries_each_once_and_resumable() {
    let export = tempdir("readdir-big");
    populate(export.path());
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (seen, order) = list(&mut c, &root, 0, 1024).await;
    assert_each_once(&seen);
    // Resume from a cookie saved in the middle (telldir/seekdir): the rest of
    // the listing is exactly what followed it the first time.
    let mid = order.len() / 2;
    let (_, rest) = list(&mut c, &root, order[mid].1, 700).await;
    let want: Vec<Vec<u8>> = order[mid + 1..].iter().map(|(n, _)| n.clone()).collect();
    let got: Vec<Vec<u8>> = rest.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn readdirplus_2500_entries_replicate_nothing() {
    let export = tempdir("readdirplus-big");
    populate(export.path());
    let mut s = TestServer::start(export.path(), RW_NO_SQUASH);
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let mut seen = BTreeMap::new();
    let mut handles = Vec::new();
    let mut cookie = 0;
    let mut calls = 0u32;
    let mut saved = None;
    loop {
        calls += 1;
        assert!(calls < CALLS_MAX, "listing did not end");
        let args = READDIRPLUS3args {
            dir: root.clone(),
            cookie,
            cookieverf: cookieverf3::default(),
            dircount: 1024,
            maxcount: 4096,
        };
        let Nfs3Result::Ok(ok) = c.readdirplus(&args).await.unwrap() else { panic!("READDIRPLUS failed") };
        for e in &ok.reply.entries.0 {
            *seen.entry(e.name.0.to_vec()).or_insert(0u32) += 1;
            if e.name.0.starts_with(b"file-") {
                handles.push((e.name_handle.clone().unwrap(), e.fileid));
            }
            cookie = e.cookie;
        }
        if calls == 10 {
            saved = Some((cookie, seen.len()));
        }
        if ok.reply.eof {
            break;
        }
    }
    assert_each_once(&seen);
    assert!(calls > 10, "small replies need many calls ({calls})");
    // Resume READDIRPLUS from the cookie saved after the 10th reply.
    let (saved_cookie, seen_then) = saved.unwrap();
    let mut rest = 0usize;
    let mut cookie = saved_cookie;
    for _ in 0..CALLS_MAX {
        let args = READDIRPLUS3args {
            dir: root.clone(),
            cookie,
            cookieverf: cookieverf3::default(),
            dircount: 1024,
            maxcount: 4096,
        };
        let Nfs3Result::Ok(ok) = c.readdirplus(&args).await.unwrap() else { panic!() };
        rest += ok.reply.entries.0.len();
        cookie = ok.reply.entries.0.last().map_or(cookie, |e| e.cookie);
        if ok.reply.eof {
            break;
        }
    }
    assert_eq!(seen_then + rest, FILES as usize + 2);
    // A sample of the handles works (and after a restart: they resolve by themselves).
    for (fh, ino) in handles.iter().step_by(97) {
        assert_eq!(getattr(&mut c, fh).await.unwrap().fileid, *ino);
    }
    drop(c);
    s.stop();
    // Handles are the filesystem's own: listing commits nothing, whatever the
    // number of names (the log holds only what starting and mounting wrote).
    let commit = LocalCommit::open(&s.state_dir).expect("reopen state");
    let last = commit.last_index();
    commit.shutdown().await;
    assert!(last < 10, "log entries {last} after {calls} READDIRPLUS replies");
    s.restart();
    let mut c = s.connect().await;
    for (fh, ino) in handles.iter().step_by(131) {
        assert_eq!(getattr(&mut c, fh).await.unwrap().fileid, *ino);
    }
}

/// Every entry of a whole READDIRPLUS listing of `dir` (1 KiB replies): name
/// → (fileid, handle if given).
async fn plus_all(c: &mut Conn, dir: &nfs_fh3) -> BTreeMap<Vec<u8>, (u64, Option<nfs_fh3>)> {
    let mut all = BTreeMap::new();
    let mut cookie = 0;
    for _ in 0..CALLS_MAX {
        let args = READDIRPLUS3args {
            dir: dir.clone(),
            cookie,
            cookieverf: cookieverf3::default(),
            dircount: 512,
            maxcount: 1024,
        };
        let Nfs3Result::Ok(ok) = c.readdirplus(&args).await.unwrap() else { panic!("READDIRPLUS failed") };
        for e in &ok.reply.entries.0 {
            let fh = match &e.name_handle {
                Nfs3Option::Some(fh) => Some(fh.clone()),
                Nfs3Option::None => None,
            };
            assert!(all.insert(e.name.0.to_vec(), (e.fileid, fh)).is_none(), "a name listed twice");
            cookie = e.cookie;
        }
        if ok.reply.eof {
            return all;
        }
    }
    panic!("listing did not end within {CALLS_MAX} calls");
}

/// The listings READDIRPLUS remembers (`vfs::dircache`, filled once a
/// directory has not changed for 50 ms) never outlive a change: a file
/// created, removed, renamed or replaced on the disk right after a
/// remembered listing shows at once, with handles of the objects there now;
/// and a caller who may read the directory but not search it gets no
/// handles from a remembered listing either.
#[tokio::test]
async fn remembered_listings_follow_every_change_at_once() {
    let export = tempdir("readdirplus-cache");
    let d = export.path().join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..60 {
        std::fs::write(d.join(format!("n{i:02}")), b"x").unwrap();
    }
    let s = TestServer::start(export.path(), RW_NO_SQUASH);
    let mut c = s.connect().await;
    let root = c.root_nfs_fh3();
    let (dir, _) = lookup(&mut c, &root, "d").await.unwrap();
    // Let the directory settle so its listing is remembered, then list twice.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let first = plus_all(&mut c, &dir).await;
    assert_eq!(first, plus_all(&mut c, &dir).await);
    assert_eq!(first.len(), 62);
    let (old_ino, old_fh) = first.get(b"n05".as_slice()).cloned().unwrap();
    // Changes straight on the disk, right away.
    std::fs::remove_file(d.join("n05")).unwrap();
    std::fs::write(d.join("n05"), b"new").unwrap();
    std::fs::write(d.join("added"), b"").unwrap();
    std::fs::rename(d.join("n07"), d.join("moved")).unwrap();
    std::fs::remove_file(d.join("n09")).unwrap();
    let now = plus_all(&mut c, &dir).await;
    let names: Vec<&[u8]> = now.keys().map(|k| k.as_slice()).collect();
    assert!(names.contains(&b"added".as_slice()) && names.contains(&b"moved".as_slice()));
    assert!(!names.contains(&b"n07".as_slice()) && !names.contains(&b"n09".as_slice()));
    assert_eq!(now.len(), 62);
    // The replaced name has the new file's handle; the old one is stale.
    let (ino, fh) = now.get(b"n05".as_slice()).cloned().unwrap();
    let fh = fh.expect("a handle for n05");
    let attrs = getattr(&mut c, &fh).await.unwrap();
    assert_eq!((attrs.fileid, attrs.size), (ino, 3));
    let old = old_fh.expect("the old handle");
    if ino == old_ino {
        assert_ne!(old, fh, "a reused inode number gets a new handle");
    }
    assert_eq!(getattr(&mut c, &old).await.unwrap_err(), nfsstat3::NFS3ERR_STALE);
    // Every handle listed resolves to the object of that name now.
    for (name, (ino, fh)) in &now {
        if let Some(fh) = fh {
            assert_eq!(getattr(&mut c, fh).await.unwrap().fileid, *ino, "{}", String::from_utf8_lossy(name));
        }
    }
    // Read but no search permission: names, no attributes or handles, also
    // when the listing was remembered under root a moment ago.
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o744)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _ = plus_all(&mut c, &dir).await;
    let mut other = s.connect_as(4321, 4321, &[]).await;
    let seen = plus_all(&mut other, &dir).await;
    assert_eq!(seen.len(), 62);
    assert!(seen.values().all(|(_, fh)| fh.is_none()), "no handle without search permission");
}
