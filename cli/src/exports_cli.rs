//! `hanfs-server exports add|update|remove|reload` (the request built from
//! the command line, checked here, sent to the running node, which runs it
//! on the leader: `hanfs_server::exports_admin`), and what `check-config`
//! says about a config's [[export]] list against the replicated table.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use hanfs_server::admin::ADMIN_LINE_BYTES_MAX;
use hanfs_server::exports_admin::{self, Entry, Request};

use crate::args::{ExportsAction, StateArgs};
use crate::config::Config;

/// The request an `exports` subcommand makes, and the node to send it to.
pub fn request(action: ExportsAction) -> anyhow::Result<(Request, StateArgs)> {
    Ok(match action {
        ExportsAction::Add(a) => {
            let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
            let req = Request::Add { name: a.name, dir: absolute(&dir)?, clients: a.clients.join(" "), id: a.id };
            (req, a.state)
        }
        ExportsAction::Update(a) => {
            let clients = (!a.clients.is_empty()).then(|| a.clients.join(" "));
            let dir = a.dir.as_deref().map(absolute).transpose()?;
            (Request::Update { name: a.name, dir, clients }, a.state)
        }
        ExportsAction::Remove(a) => (Request::Remove { name: a.name }, a.state),
        ExportsAction::Reload(a) => {
            let cfg = crate::config::load_file(&a.config).map_err(|e| anyhow!("{e}"))?;
            let exports = cfg
                .server
                .exports
                .iter()
                .map(Entry::from_config)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{}", a.config.display()))?;
            let state = StateArgs {
                state_dir: Some(a.state_dir.unwrap_or_else(|| cfg.server.state_dir.clone())),
                config: None,
            };
            (Request::Reload { exports }, state)
        }
    })
}

/// The admin line of `req`, checked here first (names, directories, client
/// lists) so that a typo is reported before any node is asked.
pub fn line(req: &Request) -> anyhow::Result<String> {
    let checked = req.check()?;
    let line = checked.to_line();
    if line.len() as u64 >= ADMIN_LINE_BYTES_MAX {
        return Err(anyhow!("the request is {} bytes, over the admin socket's {ADMIN_LINE_BYTES_MAX}", line.len()));
    }
    Ok(line)
}

/// `dir` made absolute against the current directory (not resolved: the
/// active node resolves it), as UTF-8.
fn absolute(dir: &Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    abs.to_str().map(str::to_owned).ok_or_else(|| anyhow!("{}: not UTF-8", abs.display()))
}

/// `check-config`'s lines about the replicated export table: `table_text`
/// is the running node's `exports table` answer (`None`: nobody answered).
pub fn table_report(file: &Path, cfg: &Config, table_text: Option<&str>) -> Vec<String> {
    let Some(text) = table_text else {
        return vec![format!(
            "  exports table: no running node answers on {}; not compared",
            hanfs_server::admin::socket_path(&cfg.server.state_dir).display()
        )];
    };
    let (seeded, table) = match exports_admin::parse_table_lines(text) {
        Ok(t) => t,
        Err(e) => return vec![format!("  exports table: unreadable answer ({e}); not compared")],
    };
    if !seeded {
        return vec!["  exports table: not seeded yet; this file's [[export]] list seeds it when a node first serves"
            .to_string()];
    }
    let differences = exports_admin::differences(&cfg.server.exports, &table);
    if differences.is_empty() {
        return vec![format!("  exports table: the same as this file ({} exports)", table.len())];
    }
    let mut out = vec![
        "  warning: this file's [[export]] list differs from the replicated export table, which is what every node serves:"
            .to_string(),
    ];
    out.extend(differences.iter().map(|d| format!("  warning:   {d}")));
    out.push(format!(
        "  warning: to serve this file's list: hanfs-server exports reload --config {}; to match the table, edit the file",
        file.display()
    ));
    out
}
