//! `hanfs-server exports add|update|remove|reload`: changes to the
//! replicated export table, made on the active node (issue 12 item 2), and
//! how a node's config relates to that table (`table.rs`: seeding,
//! differences, the `exports table` answer).
//!
//! The asking node checks the request's syntax (`Request::check`: names,
//! directories, client lists) and, in a cluster, forwards it to the leader
//! (`node::control`); the leader plans it against the replicated table,
//! opens every directory it would serve (it must exist there and be a
//! directory, on the filesystem recorded for that export id if one was) and
//! commits the whole change as one group: `ExportSet`s with their
//! `RegisterExport`s, `ExportRemove`s. Any refusal commits nothing. The
//! active then serves the new table at once (`live::Live::refresh`).
//!
//! Names and directories are absolute, without `.` or `..` components
//! (rejected, never resolved) or control characters, and with no trailing
//! `/`. Client lists are
//! parsed and stored canonically (`exports::canonical_clients`), so two
//! spellings of the same list compare equal. Ids: an export keeps its id
//! for ever; `add` of a removed name gets its old id back (`--id` must agree),
//! a new name gets `--id` if that id never named anything else, else the next
//! id never used; `reload` takes each id from the config and refuses one the
//! table binds to another name.
//!
//! Wire form on the admin socket (one line, each field percent-encoded so it
//! holds no blank; `-` alone: not given): `exports add NAME DIR CLIENTS ID`,
//! `exports update NAME DIR CLIENTS`, `exports remove NAME`, `exports reload
//! [ID NAME DIR CLIENTS]...`, and `exports table` (the served table, encoded
//! the same way, for `check-config`).

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::Arc;

use hanfs_raft::commit::Commit;
use hanfs_state::{Command, ExportSpec, FsIdentity, State, PATH_BYTES_MAX};

use crate::config::ExportConfig;
use crate::exports::{canonical_clients, parse_clients, ClientSpecError};
use crate::live::Live;
use crate::mount::MOUNT_PATH_BYTES_MAX;
use crate::vfs::{self, ExportError};

/// Most exports one `reload` may name (the replicated table's own bound).
pub const RELOAD_EXPORTS_MAX: usize = hanfs_state::EXPORTS_MAX as usize;

/// One export as a config (or the table) gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: u32,
    pub name: String,
    pub dir: String,
    pub clients: String,
}

impl Entry {
    /// `ID NAME DIR CLIENTS`, the fields encoded as on the wire (`encode_field`).
    pub fn encode(&self) -> String {
        format!("{} {} {} {}", self.id, encode_field(&self.name), encode_field(&self.dir), encode_field(&self.clients))
    }
}

/// A change to the export table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Add {
        name: String,
        dir: String,
        clients: String,
        id: Option<u32>,
    },
    Update {
        name: String,
        dir: Option<String>,
        clients: Option<String>,
    },
    Remove {
        name: String,
    },
    /// The whole list, as `exportfs -ra` applies /etc/exports.
    Reload {
        exports: Vec<Entry>,
    },
}

/// Why a change was refused (nothing was committed).
#[derive(Debug, thiserror::Error)]
pub enum ExportsAdminError {
    #[error("usage: exports add NAME DIR CLIENTS ID | update NAME DIR CLIENTS | remove NAME | reload [ID NAME DIR CLIENTS]...")]
    Usage,
    #[error("`{0}` is not percent-encoded text")]
    Encoding(String),
    #[error("export name `{0}` must be an absolute path without `.`, `..` or control characters (like /export), at most {MOUNT_PATH_BYTES_MAX} bytes")]
    BadName(String),
    #[error("export dir `{0}` must be an absolute path without `.`, `..` or control characters, at most {PATH_BYTES_MAX} bytes")]
    BadDir(String),
    #[error("export {name}: clients: {error}")]
    Clients { name: String, error: ClientSpecError },
    #[error("update {0}: give a new dir or client list")]
    NothingToUpdate(String),
    #[error("{name} is already exported (id {id}); use `exports update`")]
    AlreadyExported { name: String, id: u32 },
    #[error("{0} is not exported")]
    NotExported(String),
    #[error("export id {id} already names {other}: ids are never reused for another name (handles of {other} must never resolve into {name})")]
    IdTaken { id: u32, name: String, other: String },
    #[error("{name} was export id {known}, not {asked}: an export keeps its id (handles carry it)")]
    IdChanged { name: String, known: u32, asked: u32 },
    #[error("no export id left")]
    NoIdLeft,
    #[error("{0} is named twice")]
    Duplicate(String),
    #[error("a reload names at most {RELOAD_EXPORTS_MAX} exports")]
    TooMany,
    #[error("{name}: {error}")]
    Dir { name: String, error: Box<ExportError> },
    /// A `@netgroup` rule where this (serving) node's NSS cannot answer for
    /// netgroups: glibc would quietly say "not a member".
    #[error("{name}: `{group}`: {error}")]
    Netgroup { name: String, group: String, error: crate::hostnames::NetgroupError },
    #[error("committing: {0}")]
    Commit(#[from] hanfs_raft::commit::CommitError),
}

/// Percent-encode `s` so that it holds no blank and no bare `-`.
pub fn encode_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let safe = b.is_ascii_alphanumeric() || b"/._~:*()=,@?!+[]".contains(&b);
        if safe {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode_field(s: &str) -> Result<String, ExportsAdminError> {
    let bad = || ExportsAdminError::Encoding(s.chars().take(64).collect());
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn opt_field(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_string(), encode_field)
}

fn decode_opt(s: &str) -> Result<Option<String>, ExportsAdminError> {
    if s == "-" {
        Ok(None)
    } else {
        decode_field(s).map(Some)
    }
}

/// `name` as the table holds it: absolute, no `.`/`..`, no trailing `/`.
pub fn normal_name(name: &str) -> Result<String, ExportsAdminError> {
    match normal_path(name) {
        Some(n) if n.len() <= MOUNT_PATH_BYTES_MAX => Ok(n),
        _ => Err(ExportsAdminError::BadName(name.chars().take(256).collect())),
    }
}

/// `dir` as the table holds it (as `normal_name`).
pub fn normal_dir(dir: &str) -> Result<String, ExportsAdminError> {
    match normal_path(dir) {
        Some(d) if d.len() as u64 <= PATH_BYTES_MAX => Ok(d),
        _ => Err(ExportsAdminError::BadDir(dir.chars().take(256).collect())),
    }
}

fn normal_path(p: &str) -> Option<String> {
    // Control characters (a newline above all) would break every
    // line-oriented listing the name or directory appears in.
    if !p.starts_with('/') || p.chars().any(char::is_control) {
        return None;
    }
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    // `Path::components` drops a `.` in the middle silently; refuse it too.
    if p.split('/').any(|c| c == "." || c == "..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// A client list in canonical form (`exports::canonical_clients`).
pub fn normal_clients(name: &str, clients: &str) -> Result<String, ExportsAdminError> {
    let rules = parse_clients(clients).map_err(|error| ExportsAdminError::Clients { name: name.to_owned(), error })?;
    Ok(canonical_clients(&rules))
}

impl Entry {
    /// A config's export as the table would hold it.
    pub fn from_config(e: &ExportConfig) -> Result<Entry, ExportsAdminError> {
        let dir = std::path::absolute(&e.dir).unwrap_or_else(|_| e.dir.clone());
        let dir = dir.to_str().ok_or_else(|| ExportsAdminError::BadDir(dir.display().to_string()))?;
        Ok(Entry {
            id: e.export_id,
            name: normal_name(&e.name)?,
            dir: normal_dir(dir)?,
            clients: canonical_clients(&e.clients),
        })
    }

    fn normalised(&self) -> Result<Entry, ExportsAdminError> {
        let name = normal_name(&self.name)?;
        Ok(Entry { id: self.id, dir: normal_dir(&self.dir)?, clients: normal_clients(&name, &self.clients)?, name })
    }

    fn spec(&self) -> ExportSpec {
        ExportSpec { dir: self.dir.clone(), clients: self.clients.clone() }
    }
}

impl Request {
    /// The admin line (without the trailing newline).
    pub fn to_line(&self) -> String {
        match self {
            Request::Add { name, dir, clients, id } => format!(
                "exports add {} {} {} {}",
                encode_field(name),
                encode_field(dir),
                encode_field(clients),
                id.map_or_else(|| "-".to_string(), |i| i.to_string())
            ),
            Request::Update { name, dir, clients } => {
                format!(
                    "exports update {} {} {}",
                    encode_field(name),
                    opt_field(dir.as_deref()),
                    opt_field(clients.as_deref())
                )
            }
            Request::Remove { name } => format!("exports remove {}", encode_field(name)),
            Request::Reload { exports } => {
                let mut line = "exports reload".to_string();
                for e in exports {
                    line.push(' ');
                    line.push_str(&e.encode());
                }
                line
            }
        }
    }

    /// The words after `exports`.
    pub fn parse(words: &[&str]) -> Result<Request, ExportsAdminError> {
        let id = |s: &str| s.parse::<u32>().map_err(|_| ExportsAdminError::Usage);
        match words {
            ["add", name, dir, clients, i] => Ok(Request::Add {
                name: decode_field(name)?,
                dir: decode_field(dir)?,
                clients: decode_field(clients)?,
                id: if *i == "-" { None } else { Some(id(i)?) },
            }),
            ["update", name, dir, clients] => {
                Ok(Request::Update { name: decode_field(name)?, dir: decode_opt(dir)?, clients: decode_opt(clients)? })
            }
            ["remove", name] => Ok(Request::Remove { name: decode_field(name)? }),
            ["reload", rest @ ..] if rest.len() % 4 == 0 => {
                if rest.len() / 4 > RELOAD_EXPORTS_MAX {
                    return Err(ExportsAdminError::TooMany);
                }
                let exports = rest
                    .chunks_exact(4)
                    .map(|c| match c {
                        [i, name, dir, clients] => Ok(Entry {
                            id: id(i)?,
                            name: decode_field(name)?,
                            dir: decode_field(dir)?,
                            clients: decode_field(clients)?,
                        }),
                        _ => Err(ExportsAdminError::Usage),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Request::Reload { exports })
            }
            _ => Err(ExportsAdminError::Usage),
        }
    }

    /// The checks any node can make: names, directories and client lists
    /// well formed; the same request in normal form.
    pub fn check(&self) -> Result<Request, ExportsAdminError> {
        match self {
            Request::Add { name, dir, clients, id } => {
                let name = normal_name(name)?;
                Ok(Request::Add { dir: normal_dir(dir)?, clients: normal_clients(&name, clients)?, id: *id, name })
            }
            Request::Update { name, dir, clients } => {
                let name = normal_name(name)?;
                if dir.is_none() && clients.is_none() {
                    return Err(ExportsAdminError::NothingToUpdate(name));
                }
                let dir = dir.as_deref().map(normal_dir).transpose()?;
                let clients = clients.as_deref().map(|c| normal_clients(&name, c)).transpose()?;
                Ok(Request::Update { name, dir, clients })
            }
            Request::Remove { name } => Ok(Request::Remove { name: normal_name(name)? }),
            Request::Reload { exports } => {
                if exports.len() > RELOAD_EXPORTS_MAX {
                    return Err(ExportsAdminError::TooMany);
                }
                let exports = exports.iter().map(Entry::normalised).collect::<Result<Vec<_>, _>>()?;
                for (i, e) in exports.iter().enumerate() {
                    let earlier = exports.get(..i).unwrap_or_default();
                    if earlier.iter().any(|x| x.name == e.name) {
                        return Err(ExportsAdminError::Duplicate(e.name.clone()));
                    }
                    if earlier.iter().any(|x| x.id == e.id) {
                        return Err(ExportsAdminError::Duplicate(format!("export id {}", e.id)));
                    }
                }
                Ok(Request::Reload { exports })
            }
        }
    }
}

/// One planned change, with what to say about it.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Set { entry: Entry, verb: &'static str },
    Remove { id: u32, name: String },
}

/// The changes `req` (checked) makes to `state`'s table.
fn plan(state: &State, req: &Request) -> Result<Vec<Change>, ExportsAdminError> {
    let served = |name: &str| state.export_id(name).filter(|&id| state.export_spec(id).is_some());
    match req {
        Request::Add { name, dir, clients, id } => {
            if let Some(known) = served(name) {
                return Err(ExportsAdminError::AlreadyExported { name: name.clone(), id: known });
            }
            let id = id_for(state, name, *id)?;
            Ok(vec![Change::Set {
                entry: Entry { id, name: name.clone(), dir: dir.clone(), clients: clients.clone() },
                verb: "added",
            }])
        }
        Request::Update { name, dir, clients } => {
            let id = served(name).ok_or_else(|| ExportsAdminError::NotExported(name.clone()))?;
            let spec = state.export_spec(id).cloned().ok_or_else(|| ExportsAdminError::NotExported(name.clone()))?;
            let entry = Entry {
                id,
                name: name.clone(),
                dir: dir.clone().unwrap_or(spec.dir.clone()),
                clients: clients.clone().unwrap_or(spec.clients.clone()),
            };
            if entry.spec() == spec {
                return Ok(Vec::new());
            }
            Ok(vec![Change::Set { entry, verb: "updated" }])
        }
        Request::Remove { name } => {
            let id = served(name).ok_or_else(|| ExportsAdminError::NotExported(name.clone()))?;
            Ok(vec![Change::Remove { id, name: name.clone() }])
        }
        Request::Reload { exports } => {
            let mut changes = Vec::new();
            for e in exports {
                let id = id_for(state, &e.name, Some(e.id))?;
                match state.export_spec(id) {
                    Some(spec) if *spec == e.spec() => {}
                    Some(_) => changes.push(Change::Set { entry: e.clone(), verb: "updated" }),
                    None => changes.push(Change::Set { entry: e.clone(), verb: "added" }),
                }
            }
            for (id, name, _) in state.served_exports() {
                if !exports.iter().any(|e| e.name == name) {
                    changes.push(Change::Remove { id, name: name.to_owned() });
                }
            }
            Ok(changes)
        }
    }
}

/// The id `name` is (or would be) exported under: its own if the table
/// knows it, else `asked` if free, else the next id never used.
fn id_for(state: &State, name: &str, asked: Option<u32>) -> Result<u32, ExportsAdminError> {
    if let Some(known) = state.export_id(name) {
        return match asked {
            Some(asked) if asked != known => Err(ExportsAdminError::IdChanged { name: name.to_owned(), known, asked }),
            _ => Ok(known),
        };
    }
    match asked {
        Some(id) => match state.export_path(id) {
            Some(other) => Err(ExportsAdminError::IdTaken { id, name: name.to_owned(), other: other.to_owned() }),
            None => Ok(id),
        },
        None => state.next_export_id().ok_or(ExportsAdminError::NoIdLeft),
    }
}

/// Opens the directory of each export a change serves, here, and returns
/// the commands: each `ExportSet` with a `RegisterExport` of the identity
/// found (the one recorded for its id, if any, must match), each
/// `ExportRemove`.
fn commands(recorded: &BTreeMap<u32, FsIdentity>, changes: &[Change]) -> Result<Vec<Command>, ExportsAdminError> {
    let mut cmds = Vec::new();
    for change in changes {
        match change {
            Change::Set { entry, .. } => {
                let config = ExportConfig {
                    name: entry.name.clone(),
                    dir: entry.dir.clone().into(),
                    export_id: entry.id,
                    clients: Vec::new(),
                };
                let dir_error = |error| ExportsAdminError::Dir { name: entry.name.clone(), error: Box::new(error) };
                netgroups_answer(entry)?;
                let root = vfs::open_root(&config).map_err(dir_error)?;
                if let Some(recorded) = recorded.get(&entry.id) {
                    root.check_identity(recorded).map_err(dir_error)?;
                }
                cmds.push(Command::ExportSet { export_id: entry.id, path: entry.name.clone(), spec: entry.spec() });
                cmds.push(Command::RegisterExport {
                    export_id: entry.id,
                    path: entry.name.clone(),
                    fs: root.identity(),
                });
            }
            Change::Remove { id, .. } => cmds.push(Command::ExportRemove { export_id: *id }),
        }
    }
    Ok(cmds)
}

/// `entry`'s client list has no `@netgroup` rule, or this node's NSS can
/// answer for netgroups (as `check-config` and `run` require of a config).
fn netgroups_answer(entry: &Entry) -> Result<(), ExportsAdminError> {
    let rules = parse_clients(&entry.clients)
        .map_err(|error| ExportsAdminError::Clients { name: entry.name.clone(), error })?;
    let Some(rule) = rules.iter().find(|r| matches!(r.pattern, crate::config::ClientPattern::Netgroup(_))) else {
        return Ok(());
    };
    crate::hostnames::netgroup_support().map_err(|error| ExportsAdminError::Netgroup {
        name: entry.name.clone(),
        group: crate::exports::pattern_string(&rule.pattern),
        error,
    })
}

fn report(changes: &[Change], unchanged: usize) -> String {
    let mut out = String::new();
    for c in changes {
        match c {
            Change::Set { entry: e, verb } => {
                out.push_str(&format!("{verb} {} (id {}): dir {} clients {}\n", e.name, e.id, e.dir, e.clients));
            }
            Change::Remove { id, name } => out.push_str(&format!("removed {name} (id {id})\n")),
        }
    }
    if changes.is_empty() || unchanged > 0 {
        out.push_str(&format!("unchanged: {unchanged} export(s)\n"));
    }
    out
}

/// Run `req` on this node, which must lead (the leader serves): check,
/// plan against the replicated table, open the directories, commit, serve.
/// The caller serialises admin changes. Returns the answer text.
pub async fn run(commit: &Arc<dyn Commit>, live: Option<Arc<Live>>, req: &Request) -> String {
    match run_inner(commit, live, req).await {
        Ok(text) => text,
        Err(e) => format!("error: {e}\n"),
    }
}

async fn run_inner(
    commit: &Arc<dyn Commit>,
    live: Option<Arc<Live>>,
    req: &Request,
) -> Result<String, ExportsAdminError> {
    let req = req.check()?;
    let state = commit.state();
    let (changes, recorded) = {
        let guard = state.read().unwrap_or_else(|p| p.into_inner());
        let changes = plan(&guard, &req)?;
        let recorded: BTreeMap<u32, FsIdentity> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Set { entry, .. } => Some((entry.id, guard.export_fs(entry.id)?.clone())),
                Change::Remove { .. } => None,
            })
            .collect();
        (changes, recorded)
    };
    // Opening directories blocks: off the runtime's threads.
    let (cmds, changes) =
        tokio::task::spawn_blocking(move || commands(&recorded, &changes).map(|cmds| (cmds, changes)))
            .await
            .map_err(|_| ExportsAdminError::Usage)??;
    let total = match &req {
        Request::Reload { exports } => exports.len(),
        _ => 0,
    };
    let unchanged = total.saturating_sub(changes.iter().filter(|c| matches!(c, Change::Set { .. })).count());
    if !cmds.is_empty() {
        commit.commit(cmds).await?;
        tracing::info!(changes = ?changes, "export table changed");
    }
    let mut text = report(&changes, unchanged);
    if let Some(live) = live {
        let problems = tokio::task::spawn_blocking(move || live.refresh(&state)).await.unwrap_or_default();
        for p in problems {
            text.push_str(&format!("warning: not served: {p}\n"));
        }
    }
    Ok(text)
}

mod table;
#[cfg(test)]
mod tests;

pub use table::{differences, parse_table_lines, seed_commands, table, table_lines, warn_differences};
