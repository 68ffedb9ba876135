//! The exports an active node serves right now, replaced as a whole when
//! they change live (issue 12 item 2: `hanfs-server exports add|update|
//! remove|reload`).
//!
//! A `View` is the opened export roots (`Vfs`) and their client lists
//! (`ExportTable`), built from the replicated export table, with the table
//! revision it was built from. `Live` holds the current one behind a
//! `RwLock<Arc<View>>`: every RPC call takes it once when it starts (one
//! uncontended read lock and a reference count) and keeps it to the end, so
//! a call never sees half a change. `refresh` builds a new view from the
//! replicated table, reusing the roots already open for exports whose id and
//! directory stay, and swaps it in; calls already running finish on the old
//! one. An export no longer served is gone from the new view: MNT of it is
//! refused (NOENT) and its handles are STALE, as knfsd after `exportfs -u`.
//!
//! On the active, a refresh follows each committed change (the admin command
//! that made it, `exports_admin`), and the lifecycle refreshes whenever it
//! sees the table's revision move (its `LIFECYCLE_POLL_MS` backstop), so a
//! change committed any other way is served within that period too.
//!
//! A served export that cannot be opened at a refresh (its directory gone,
//! on another filesystem than the one recorded, its client list refused by
//! this server's parser) is left out of the new view with a warning; the
//! others stay served. At promotion the same problems fail the promotion
//! instead (`node::single::open_and_commit`), so that the other storage node,
//! which may have the right disk, takes over.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hanfs_state::{FsIdentity, State};

use crate::config::ExportConfig;
use crate::exports::{parse_clients, ClientSpecError, ExportTable};
use crate::vfs::{self, ExportError, ExportRoot, Vfs};

/// What an active node serves at one moment.
pub struct View {
    /// Export roots, handle resolution.
    pub vfs: Arc<Vfs>,
    /// Exports by id and name, each with its client list.
    pub exports: Arc<ExportTable>,
    /// `State::exports_revision` this view was built from.
    pub revision: u64,
}

/// The current `View`, replaced as a whole.
pub struct Live {
    current: RwLock<Arc<View>>,
    /// How long each new table caches clients' host names (`[server]
    /// host_cache_ttl_seconds`); a new table starts with an empty cache.
    host_cache_ttl: Duration,
    /// Serialises rebuilds (admin command and lifecycle backstop).
    rebuild: Mutex<()>,
}

/// Why one served export of the replicated table is not in a view.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("export {name} (id {export_id}): client list: {error}")]
    Clients { name: String, export_id: u32, error: ClientSpecError },
    #[error("export {name} (id {export_id}): {error}")]
    Open { name: String, export_id: u32, error: Box<ExportError> },
    #[error("export {name} (id {export_id}): no filesystem identity recorded yet")]
    Unregistered { name: String, export_id: u32 },
}

/// One served export of the replicated table, as a config, with the
/// identity recorded for it.
pub struct Wanted {
    pub config: ExportConfig,
    pub recorded: Option<FsIdentity>,
}

/// The served exports of `state`, by id; those whose client list this
/// server's parser refuses come back as errors.
pub fn wanted(state: &State) -> (Vec<Wanted>, Vec<ServeError>) {
    let mut wanted = Vec::new();
    let mut refused = Vec::new();
    for (export_id, name, spec) in state.served_exports() {
        match parse_clients(&spec.clients) {
            Ok(clients) => wanted.push(Wanted {
                config: ExportConfig { name: name.to_owned(), dir: spec.dir.clone().into(), export_id, clients },
                recorded: state.export_fs(export_id).cloned(),
            }),
            Err(error) => refused.push(ServeError::Clients { name: name.to_owned(), export_id, error }),
        }
    }
    (wanted, refused)
}

impl Live {
    pub fn new(view: View, host_cache_ttl: Duration) -> Arc<Live> {
        Arc::new(Live { current: RwLock::new(Arc::new(view)), host_cache_ttl, rebuild: Mutex::new(()) })
    }

    /// A view that never changes (tests, fuzzing).
    pub fn fixed(vfs: Arc<Vfs>, exports: Arc<ExportTable>) -> Arc<Live> {
        let ttl = Duration::from_secs(crate::hostnames::HOST_CACHE_TTL_SECONDS_DEFAULT);
        Live::new(View { vfs, exports, revision: 0 }, ttl)
    }

    /// The current view: what one call uses from start to end.
    pub fn load(&self) -> Arc<View> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuild the view from the replicated table if its revision moved
    /// since this view was built. Returns the exports left out (each also
    /// logged); blocking (it opens directories).
    pub fn refresh(&self, state: &RwLock<State>) -> Vec<ServeError> {
        let _one = self.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.load();
        let (revision, (wanted, mut problems)) = {
            let guard = state.read().unwrap_or_else(|p| p.into_inner());
            if guard.exports_revision() == old.revision {
                return Vec::new();
            }
            (guard.exports_revision(), self::wanted(&guard))
        };
        let mut roots: Vec<Arc<ExportRoot>> = Vec::new();
        let mut configs = Vec::new();
        for w in wanted {
            match root_for(&old.vfs, &w) {
                Ok(root) => {
                    roots.push(root);
                    configs.push(w.config);
                }
                Err(e) => problems.push(e),
            }
        }
        for p in &problems {
            tracing::warn!(problem = %p, "export not served");
        }
        let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
        tracing::info!(revision, exports = ?names, "serving the changed export table");
        let exports = ExportTable::with_host_cache(&configs, self.host_cache_ttl);
        let view = View { vfs: Arc::new(old.vfs.with_roots(roots)), exports: Arc::new(exports), revision };
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        problems
    }
}

/// The root `w` is served from: the one already open when its id and
/// directory are unchanged, else opened now and checked against the
/// identity recorded for it.
fn root_for(vfs: &Vfs, w: &Wanted) -> Result<Arc<ExportRoot>, ServeError> {
    let c = &w.config;
    if let Some(open) = vfs.roots().iter().find(|r| r.export_id == c.export_id && r.dir == c.dir) {
        return Ok(open.clone());
    }
    let name = c.name.clone();
    let export_id = c.export_id;
    let recorded = w.recorded.as_ref().ok_or_else(|| ServeError::Unregistered { name: name.clone(), export_id })?;
    let open_error = |error| ServeError::Open { name: name.clone(), export_id, error: Box::new(error) };
    let root = vfs::open_root(c).map_err(open_error)?;
    root.check_identity(recorded).map_err(open_error)?;
    Ok(Arc::new(root))
}
