//! One full recursive READDIRPLUS walk of an export over NFS. `tasks`
//! sessions share a queue of directories still to list; each lists one
//! directory page by page, appends every entry's fileid and handle (`.` and
//! `..` excepted) to the handle file and queues the subdirectories. Bounded
//! by a deadline (the walk then reports `complete: false`), by
//! `ENTRIES_MAX` and by `DIRS_QUEUED_MAX`; the first error stops every task.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nfs3_client::nfs3_types::nfs3::{cookieverf3, entryplus3, ftype3, nfs_fh3, Nfs3Option};

use crate::client::{Session, Target};
use crate::handles::HandleWriter;
use crate::ScaleError;

/// READDIRPLUS dircount and maxcount (hanfs serves at most 64 KiB, its dtpref).
pub const PAGE_BYTES: u32 = 64 * 1024;
/// Most entries one walk saves.
pub const ENTRIES_MAX: u64 = 100_000_000;
/// Most directories queued at once.
pub const DIRS_QUEUED_MAX: usize = 10_000_000;
/// Most pages of one directory (a server cookie loop ends here).
pub const PAGES_PER_DIR_MAX: u64 = 1_000_000;
/// Most concurrent sessions.
pub const TASKS_MAX: usize = 64;
/// Wait of an idle task before it looks at the queue again.
const IDLE_MS: u64 = 2;

/// What a walk did.
#[derive(Debug, Clone, Default)]
pub struct Walked {
    pub entries: u64,
    pub dirs: u64,
    pub pages: u64,
    /// Entries without a handle in the reply (looked up when directories).
    pub no_handle: u64,
    pub fh_bytes_max: usize,
    pub seconds: f64,
    /// False when the deadline stopped it.
    pub complete: bool,
}

struct Shared {
    queue: VecDeque<nfs_fh3>,
    /// Tasks listing a directory now: the walk ends when none is and the queue is empty.
    busy: usize,
    walked: Walked,
    error: Option<ScaleError>,
    out_of_time: bool,
}

enum Next {
    Dir(nfs_fh3),
    Wait,
    Done,
}

fn next(shared: &Mutex<Shared>, deadline: Instant) -> Next {
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    if s.error.is_some() {
        return Next::Done;
    }
    if Instant::now() >= deadline {
        s.out_of_time = true;
        return Next::Done;
    }
    match s.queue.pop_front() {
        Some(d) => {
            s.busy += 1;
            Next::Dir(d)
        }
        None if s.busy == 0 => Next::Done,
        None => Next::Wait,
    }
}

/// Is this entry a directory? From its attributes, else one GETATTR.
async fn is_dir(session: &mut Session, e: &entryplus3<'_>, fh: &nfs_fh3) -> Result<bool, ScaleError> {
    if let Nfs3Option::Some(a) = &e.name_attributes {
        return Ok(a.type_ == ftype3::NF3DIR);
    }
    match session.getattr(fh).await? {
        Ok(a) => Ok(a.type_ == ftype3::NF3DIR),
        Err(status) => Err(ScaleError::Nfs { op: "GETATTR", status: format!("{status:?}") }),
    }
}

/// List one directory to its end (or the deadline); save and queue.
async fn list_dir(
    session: &mut Session,
    dir: &nfs_fh3,
    shared: &Mutex<Shared>,
    out: &Mutex<HandleWriter>,
    deadline: Instant,
) -> Result<(), ScaleError> {
    let (mut cookie, mut verf) = (0u64, cookieverf3::default());
    for _ in 0..PAGES_PER_DIR_MAX {
        if Instant::now() >= deadline {
            shared.lock().unwrap_or_else(|p| p.into_inner()).out_of_time = true;
            return Ok(());
        }
        let page = session.readdirplus(dir, cookie, verf, PAGE_BYTES).await?;
        let (mut records, mut subdirs, mut no_handle) = (Vec::with_capacity(page.entries.len()), Vec::new(), 0u64);
        for e in &page.entries {
            cookie = e.cookie;
            let name = e.name.0.as_ref();
            if name == b"." || name == b".." {
                continue;
            }
            let fh = match &e.name_handle {
                Nfs3Option::Some(fh) => fh.clone(),
                Nfs3Option::None => {
                    no_handle += 1;
                    session.lookup(dir, name).await?
                }
            };
            if is_dir(session, e, &fh).await? {
                subdirs.push(fh.clone());
            }
            records.push((e.fileid, fh));
        }
        verf = page.cookieverf;
        {
            let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
            for (id, fh) in &records {
                w.push(*id, fh.data.as_ref())?;
            }
        }
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.walked.pages += 1;
        s.walked.entries += records.len() as u64;
        s.walked.no_handle += no_handle;
        s.walked.fh_bytes_max = records.iter().map(|(_, fh)| fh.data.len()).fold(s.walked.fh_bytes_max, usize::max);
        if s.walked.entries > ENTRIES_MAX {
            return Err(ScaleError::Limit(format!("over {ENTRIES_MAX} entries")));
        }
        if s.queue.len() + subdirs.len() > DIRS_QUEUED_MAX {
            return Err(ScaleError::Limit(format!("over {DIRS_QUEUED_MAX} directories queued")));
        }
        s.walked.dirs += subdirs.len() as u64;
        s.queue.extend(subdirs);
        drop(s);
        if page.eof {
            return Ok(());
        }
        if page.entries.is_empty() {
            return Err(ScaleError::Nfs { op: "READDIRPLUS", status: "empty page without eof".into() });
        }
    }
    Err(ScaleError::Limit(format!("a directory of over {PAGES_PER_DIR_MAX} pages")))
}

async fn task(mut session: Session, shared: Arc<Mutex<Shared>>, out: Arc<Mutex<HandleWriter>>, deadline: Instant) {
    loop {
        match next(&shared, deadline) {
            Next::Done => return,
            Next::Wait => tokio::time::sleep(Duration::from_millis(IDLE_MS)).await,
            Next::Dir(dir) => {
                let res = list_dir(&mut session, &dir, &shared, &out, deadline).await;
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                s.busy -= 1;
                if let Err(e) = res {
                    s.error.get_or_insert(e);
                    return;
                }
            }
        }
    }
}

/// Walk the export of `target` with `tasks` sessions for at most `limit`;
/// write every entry to `out`.
pub async fn walk(target: &Target, tasks: usize, limit: Duration, out: HandleWriter) -> Result<Walked, ScaleError> {
    let tasks = tasks.clamp(1, TASKS_MAX);
    let start = Instant::now();
    let deadline = start + limit;
    let (root, first) = target.mount().await?;
    let mut sessions = vec![first];
    for _ in 1..tasks {
        sessions.push(target.session().await?);
    }
    let shared = Arc::new(Mutex::new(Shared {
        queue: VecDeque::from([root]),
        busy: 0,
        walked: Walked { dirs: 1, ..Walked::default() },
        error: None,
        out_of_time: false,
    }));
    let out = Arc::new(Mutex::new(out));
    let handles: Vec<_> =
        sessions.into_iter().map(|s| tokio::spawn(task(s, shared.clone(), out.clone(), deadline))).collect();
    for h in handles {
        h.await.map_err(|e| ScaleError::Internal(format!("walk task: {e}")))?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = s.error.take() {
        return Err(e);
    }
    let writer = Arc::try_unwrap(out)
        .map_err(|_| ScaleError::Internal("handle writer still shared after the walk".into()))?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let saved = writer.finish()?;
    debug_assert_eq!(saved, s.walked.entries);
    let mut walked = std::mem::take(&mut s.walked);
    walked.seconds = seconds;
    walked.complete = !s.out_of_time;
    Ok(walked)
}
