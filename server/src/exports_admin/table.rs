//! How a node's config relates to the replicated export table: the
//! commands that seed an unseeded table from it, the differences between the
//! two (warned at promotion and by `check-config`), and the `exports table`
//! answer `check-config` reads them from.

use hanfs_state::{Command, State};

use super::{decode_field, normal_name, Entry, ExportsAdminError};
use crate::config::ExportConfig;

/// The served table of `state`, by id.
pub fn table(state: &State) -> Vec<Entry> {
    state
        .served_exports()
        .map(|(id, name, spec)| Entry {
            id,
            name: name.to_owned(),
            dir: spec.dir.clone(),
            clients: spec.clients.clone(),
        })
        .collect()
}

/// The commands that seed an unseeded table from a node's config (empty
/// once seeded). Refused as a whole if one export is malformed.
pub fn seed_commands(config: &[ExportConfig], state: &State) -> Result<Vec<Command>, ExportsAdminError> {
    if state.exports_seeded() {
        return Ok(Vec::new());
    }
    config
        .iter()
        .map(|e| {
            let entry = Entry::from_config(e)?;
            Ok(Command::ExportSet { export_id: entry.id, path: entry.name.clone(), spec: entry.spec() })
        })
        .collect()
}

/// How `config`'s exports differ from the replicated `table`, one line each
/// (empty when they agree).
pub fn differences(config: &[ExportConfig], table: &[Entry]) -> Vec<String> {
    let mut out = Vec::new();
    for e in config {
        let Ok(want) = Entry::from_config(e) else {
            out.push(format!("{}: not a valid export", e.name));
            continue;
        };
        match table.iter().find(|t| t.name == want.name) {
            None => out.push(format!("{} (id {}) is in the config but not exported", want.name, want.id)),
            Some(t) if t.id != want.id => {
                out.push(format!("{}: id {} in the config, {} in the table", want.name, want.id, t.id))
            }
            Some(t) if t.dir != want.dir => {
                out.push(format!("{}: dir {} in the config, {} in the table", want.name, want.dir, t.dir))
            }
            Some(t) if t.clients != want.clients => out
                .push(format!("{}: clients `{}` in the config, `{}` in the table", want.name, want.clients, t.clients)),
            Some(_) => {}
        }
    }
    for t in table {
        let in_config = config.iter().any(|e| normal_name(&e.name).is_ok_and(|n| n == t.name));
        if !in_config {
            out.push(format!("{} (id {}) is exported but not in the config", t.name, t.id));
        }
    }
    out
}

/// `exports table`: the served table, one `export ID NAME DIR CLIENTS` line
/// each (fields encoded as on the wire), after `seeded yes|no`.
pub fn table_lines(state: &State) -> String {
    let mut out = format!("seeded {}\n", if state.exports_seeded() { "yes" } else { "no" });
    for e in table(state) {
        out.push_str(&format!("export {}\n", e.encode()));
    }
    out
}

/// Parses `table_lines`: (seeded, table).
pub fn parse_table_lines(text: &str) -> Result<(bool, Vec<Entry>), ExportsAdminError> {
    let mut seeded = false;
    let mut table = Vec::new();
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["seeded", yes] => seeded = *yes == "yes",
            ["export", id, name, dir, clients] => table.push(Entry {
                id: id.parse().map_err(|_| ExportsAdminError::Usage)?,
                name: decode_field(name)?,
                dir: decode_field(dir)?,
                clients: decode_field(clients)?,
            }),
            _ => return Err(ExportsAdminError::Usage),
        }
    }
    Ok((seeded, table))
}

/// Warn (log) about each way `config` differs from `table`, with the fixes;
/// nothing when they agree.
pub fn warn_differences(config: &[ExportConfig], table: &[Entry]) {
    let differences = differences(config, table);
    if !differences.is_empty() {
        tracing::warn!(
            ?differences,
            "this node's config differs from the replicated export table, which is what every node serves; \
             to serve the config's list run `hanfs-server exports reload --config FILE` (or change single \
             exports with `hanfs-server exports add|update|remove`), or edit the config to match"
        );
    }
}
