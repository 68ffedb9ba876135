//! Create `files` empty files directly on the disk under a fresh directory,
//! `per_dir` to a subdirectory (`d000000/f0000` ...), with several threads
//! that each take the next subdirectory. Before creating anything, checks
//! with statvfs that the filesystem has the inodes and the space the run
//! needs (the files, their directories, the handle file the walk writes) and
//! refuses with the figures otherwise.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::handles::RECORD_BYTES_MAX;
use crate::ScaleError;

/// Most files one run creates.
pub const FILES_MAX: u64 = 50_000_000;
/// Most files in one subdirectory.
pub const PER_DIR_MAX: u64 = 100_000;
/// Most creating threads.
pub const THREADS_MAX: usize = 64;
/// Inodes left free beyond what the run uses (the system keeps working).
pub const INODES_SPARE: u64 = 200_000;
/// Disk bytes one empty file costs at most beyond its inode: its directory
/// entry (ext4: 8 bytes + the name, rounded to 4) with ample slack.
pub const DIRENT_BYTES_EST: u64 = 64;
/// Disk bytes left free beyond what the run uses (state dirs, logs, system).
pub const SPACE_SPARE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// What `populate` did.
#[derive(Debug, Clone, Copy)]
pub struct Populated {
    pub files: u64,
    pub dirs: u64,
    pub seconds: f64,
}

/// Free inodes and bytes of the filesystem holding `path`, as an
/// unprivileged process sees them (root's reserved blocks not counted).
fn free_room(path: &Path) -> Result<(u64, u64), ScaleError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ScaleError::io(path, std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed statvfs
    // the call fills in; both outlive the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(ScaleError::io(path, std::io::Error::last_os_error()));
    }
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    let (inodes, blocks, frsize) = (u64::from(st.f_favail), u64::from(st.f_bavail), u64::from(st.f_frsize));
    Ok((inodes, blocks.saturating_mul(frsize)))
}

/// Refuse unless the filesystem of `root` has room for `files` files in
/// `dirs` subdirectories plus the handle file and the spares.
pub fn check_room(root: &Path, files: u64, dirs: u64) -> Result<(), ScaleError> {
    let (inodes, bytes) = free_room(root)?;
    let need_inodes = files + dirs + INODES_SPARE;
    if inodes < need_inodes {
        return Err(ScaleError::NoRoom {
            path: root.to_path_buf(),
            detail: format!(
                "{files} files need {need_inodes} free inodes ({dirs} directories, {INODES_SPARE} spare), \
                 the filesystem has {inodes}"
            ),
        });
    }
    let per_file = DIRENT_BYTES_EST + RECORD_BYTES_MAX;
    let need_bytes = files.saturating_mul(per_file).saturating_add(dirs.saturating_mul(4096)) + SPACE_SPARE_BYTES;
    if bytes < need_bytes {
        return Err(ScaleError::NoRoom {
            path: root.to_path_buf(),
            detail: format!(
                "{files} files need {} MiB free ({per_file} bytes a file for directory entries and saved \
                 handles, {} MiB spare), the filesystem has {} MiB",
                need_bytes >> 20,
                SPACE_SPARE_BYTES >> 20,
                bytes >> 20
            ),
        });
    }
    Ok(())
}

/// The subdirectory holding files `[d * per_dir, (d + 1) * per_dir)`.
pub fn subdir(root: &Path, d: u64) -> PathBuf {
    root.join(format!("d{d:06}"))
}

/// Create directory `d` and its files (the last one may hold fewer).
fn fill(root: &Path, d: u64, files: u64, per_dir: u64) -> Result<u64, ScaleError> {
    let dir = subdir(root, d);
    std::fs::create_dir(&dir).map_err(|e| ScaleError::io(&dir, e))?;
    let first = d * per_dir;
    let count = per_dir.min(files - first);
    let mut path = dir.clone();
    for i in 0..count {
        path.push(format!("f{i:05}"));
        OpenOptions::new().write(true).create_new(true).open(&path).map_err(|e| ScaleError::io(&path, e))?;
        path.pop();
    }
    Ok(count)
}

/// Create the tree under `root` (which must exist and be empty).
pub fn populate(root: &Path, files: u64, per_dir: u64, threads: usize) -> Result<Populated, ScaleError> {
    if files == 0 || files > FILES_MAX {
        return Err(ScaleError::Limit(format!("--files must be 1..={FILES_MAX}")));
    }
    if per_dir == 0 || per_dir > PER_DIR_MAX {
        return Err(ScaleError::Limit(format!("--per-dir must be 1..={PER_DIR_MAX}")));
    }
    let threads = threads.clamp(1, THREADS_MAX);
    let mut entries = std::fs::read_dir(root).map_err(|e| ScaleError::io(root, e))?;
    if entries.next().is_some() {
        return Err(ScaleError::NotFresh { path: root.to_path_buf() });
    }
    let dirs = files.div_ceil(per_dir);
    check_room(root, files, dirs)?;
    let start = Instant::now();
    let next = AtomicU64::new(0);
    let made = AtomicU64::new(0);
    let results: Vec<Result<(), ScaleError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<(), ScaleError> {
                    loop {
                        let d = next.fetch_add(1, Ordering::Relaxed);
                        if d >= dirs {
                            return Ok(());
                        }
                        match fill(root, d, files, per_dir) {
                            Ok(n) => {
                                made.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(e) => {
                                // Stop the other threads after their current directory.
                                next.store(dirs, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(ScaleError::Internal("a creating thread panicked".into()))))
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(Populated { files: made.load(Ordering::Relaxed), dirs, seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_tree_and_refuses_a_used_directory() {
        let root = std::env::temp_dir().join(format!("hanfs-scale-populate-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let p = populate(&root, 25, 10, 3).unwrap();
        assert_eq!((p.files, p.dirs), (25, 3));
        assert_eq!(std::fs::read_dir(subdir(&root, 2)).unwrap().count(), 5);
        assert!(matches!(populate(&root, 1, 10, 1), Err(ScaleError::NotFresh { .. })));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn refuses_more_inodes_than_the_filesystem_has() {
        let root = std::env::temp_dir();
        assert!(matches!(check_room(&root, FILES_MAX * 1000, 1), Err(ScaleError::NoRoom { .. })));
    }
}
