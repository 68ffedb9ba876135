//! `hanfs-server generate man|completions DIR`: the man pages and shell
//! completions, generated from the clap definitions in `args`, so they say
//! exactly what the binary accepts. `hanfs-server(8)` and one
//! `hanfs-server-SUBCOMMAND(8)` per subcommand are clap_mangen's pages;
//! `hanfs.toml(5)` is the config file's page, built from `check-config`'s
//! long help (the file's documented example). The Debian package ships what
//! this writes; `cli/pkg/man/` holds a copy a test keeps equal to it.

use std::io;
use std::path::Path;

use clap::CommandFactory;

use crate::args::Cli;

/// The binary's name, as installed.
pub const BIN: &str = "hanfs-server";

/// Writes `hanfs-server.8`, one `hanfs-server-SUBCOMMAND.8` per visible
/// subcommand (the pages the first one's SUBCOMMANDS section names), and
/// `hanfs.toml.5` into `dir`.
pub fn man(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, page) in pages()? {
        std::fs::write(dir.join(file), page)?;
    }
    Ok(())
}

/// Every page: (file name, roff text).
fn pages() -> io::Result<Vec<(String, Vec<u8>)>> {
    let cmd = Cli::command().name(BIN);
    let mut pages = vec![(format!("{BIN}.8"), render(cmd.clone())?)];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{BIN}-{}", sub.get_name());
        // clap names are `&'static str`; a few bytes per page, once.
        let named = sub.clone().name(&*Box::leak(name.clone().into_boxed_str()));
        pages.push((format!("{name}.8"), render(named)?));
    }
    pages.push(("hanfs.toml.5".to_owned(), config_page()));
    Ok(pages)
}

fn render(cmd: clap::Command) -> io::Result<Vec<u8>> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd).section("8").render(&mut page)?;
    page.extend_from_slice(b".SH \"SEE ALSO\"\nhanfs.toml(5), exports(5), mount.nfs(8), systemd.service(5)\n");
    Ok(page)
}

/// Writes the bash, zsh and fish completions into `dir`.
pub fn completions(dir: &Path) -> io::Result<()> {
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = Cli::command();
        clap_complete::generate_to(shell, &mut cmd, BIN, dir)?;
    }
    Ok(())
}

/// hanfs.toml(5): `check-config`'s long help, which documents the file.
fn config_page() -> Vec<u8> {
    let cmd = Cli::command();
    let help = cmd
        .find_subcommand("check-config")
        .and_then(|c| c.get_long_about())
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut page = String::new();
    page.push_str(".TH HANFS.TOML 5 \"\" \"hanfs\" \"File Formats\"\n");
    page.push_str(".SH NAME\nhanfs.toml \\- configuration file of hanfs-server(8)\n");
    page.push_str(".SH SYNOPSIS\n/etc/hanfs/hanfs.toml\n");
    page.push_str(".SH DESCRIPTION\nTOML. `hanfs-server check-config FILE` reports every problem with its line.\n");
    page.push_str(".PP\n.nf\n");
    for line in help.lines() {
        page.push_str(&roff_line(line));
        page.push('\n');
    }
    page.push_str(".fi\n.SH \"SEE ALSO\"\nhanfs-server(8), exports(5)\n");
    page.into_bytes()
}

/// One line of text made safe inside `.nf`: backslashes escaped, and a
/// leading `.` or `'` (a roff request) neutralised.
fn roff_line(line: &str) -> String {
    let escaped = line.replace('\\', "\\e");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages in cli/pkg/man are what `generate man` writes now: a change
    /// to the CLI must regenerate them (`cargo run -p hanfs-cli -- generate
    /// man cli/pkg/man`).
    #[test]
    fn shipped_man_pages_match_the_cli() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("pkg/man");
        let fix = "run `cargo run -p hanfs-cli -- generate man cli/pkg/man`";
        let mut names = Vec::new();
        for (file, now) in pages().expect("generate") {
            let kept = std::fs::read(shipped.join(&file)).unwrap_or_default();
            assert!(now == kept, "cli/pkg/man/{file} is out of date: {fix}");
            names.push(file);
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&shipped)
            .expect("cli/pkg/man")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        on_disk.sort();
        names.sort();
        assert_eq!(on_disk, names, "cli/pkg/man holds a page no subcommand has: {fix}");
    }

    #[test]
    fn roff_requests_in_help_text_are_neutralised() {
        assert_eq!(roff_line(".x"), "\\&.x");
        assert_eq!(roff_line("a\\b"), "a\\eb");
        assert_eq!(roff_line("plain"), "plain");
    }

    #[test]
    fn completions_are_written_for_three_shells() {
        let dir = std::env::temp_dir().join(format!("hanfs-completions-{}", std::process::id()));
        completions(&dir).expect("generate");
        for file in ["hanfs-server.bash", "_hanfs-server", "hanfs-server.fish"] {
            let text = std::fs::read_to_string(dir.join(file)).expect(file);
            assert!(text.contains("check-config"), "{file} lacks the subcommands");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
