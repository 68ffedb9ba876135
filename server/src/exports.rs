//! The export table: exports by id and by name, the exports(5)-style client
//! list parser, and the per-client access decision used by MOUNT, NFS and NLM.
//!
//! Addresses, networks and `*` are matched on the client's address alone. A
//! host name, a wildcard name (`*.example.com`, `node?.lab`) or a netgroup
//! (`@group`) needs the client's names, which `hostnames` looks up as
//! rpc.mountd does and caches per table: `peer_names` gives them (waiting
//! for a lookup on the blocking pool), `verdict` decides with them. A client
//! is looked up only when a name rule comes before any address rule that
//! matches it, in the export asked for (MOUNT, NLM) or in any export (NFS:
//! the handle, and so the export, is decoded in the handler); a table with
//! no name rule never looks anything up. `@group` rules need an NSS
//! netgroup source: loading a config without one is an error (the CLI asks
//! `hostnames::netgroup_support`); a table built anyway (e.g. from another
//! node's exports) logs a warning and the rule never matches.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClientPattern, ClientRule, ExportConfig, ExportOptions, Squash};
use crate::hostnames::{canonical, HostNames, PeerNames, Resolve, SystemResolver, HOST_CACHE_TTL_SECONDS_DEFAULT};

/// Longest client spec string accepted (a whole exports(5) line's client part).
pub const CLIENT_SPEC_BYTES_MAX: usize = 64 * 1024;

/// Why a client list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSpecError {
    #[error("client list longer than {max} bytes")]
    TooLong { max: usize },
    #[error("empty client list (use `*` to allow every client)")]
    Empty,
    /// One entry (`host(options)`) of the list is wrong.
    #[error("`{entry}`: {error}")]
    Entry { entry: String, error: EntryError },
}

/// What is wrong with one entry of a client list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("missing `)` after the options")]
    MissingParen,
    #[error("no client before `(` (write `*` for every client)")]
    NoClient,
    /// `@` and then not a netgroup name.
    #[error("`{0}` is not a netgroup name (`@` then letters, digits, `.`, `_` or `-`)")]
    Netgroup(String),
    #[error("`{0}` is not an IP address")]
    BadAddress(String),
    #[error("prefix /{prefix} is longer than {bits} bits")]
    PrefixTooLong { prefix: u8, bits: u8 },
    #[error("`{0}` is not a prefix length or netmask")]
    BadMask(String),
    #[error("`{0}` is not a host name, address, network or `*`")]
    BadHost(String),
    /// `anonuid=` or `anongid=` with something that is not a number.
    #[error("bad {option} `{value}`")]
    BadId { option: &'static str, value: String },
    #[error("unknown export option `{0}`")]
    UnknownOption(String),
}

struct Export {
    config: ExportConfig,
    /// The client list's patterns, ready to match.
    rules: Vec<Match>,
}

/// A client pattern as `access` matches it.
enum Match {
    Any,
    Addr(IpAddr),
    Net(IpAddr, u8),
    /// Host name (lowercase).
    Name(String),
    Wildcard(String),
    Netgroup(String),
    /// A `@group` with no netgroup source on this system.
    Never,
}

/// What is known of a client's names when its access is decided.
#[derive(Clone, Debug)]
pub enum PeerLookup {
    /// The table has no name rule: nothing to know.
    NotNeeded,
    Known(Arc<PeerNames>),
    /// The lookup has not answered (yet): see `Verdict::Unresolved`.
    Unresolved,
}

/// The access decision for one client on one export.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The options of the first rule that matches.
    Allow(ExportOptions),
    /// No rule matches (or no such export).
    Deny,
    /// A name rule comes before any match and the client's names are not
    /// known: NFS answers JUKEBOX (the client retries), MOUNT and NLM refuse.
    Unresolved,
}

pub struct ExportTable {
    exports: Vec<Export>,
    /// The name cache, when any export has a name rule.
    hosts: Option<Arc<HostNames>>,
}

impl ExportTable {
    /// A table whose client names are cached for the default TTL.
    pub fn new(exports: &[ExportConfig]) -> Self {
        Self::with_host_cache(exports, Duration::from_secs(HOST_CACHE_TTL_SECONDS_DEFAULT))
    }

    /// A table whose client names (if it has name rules) are looked up by
    /// the system's resolver and cached for `ttl`.
    pub fn with_host_cache(exports: &[ExportConfig], ttl: Duration) -> Self {
        Self::with_resolver(exports, ttl, Arc::new(SystemResolver))
    }

    /// As `with_host_cache`, with names from `resolver`.
    pub fn with_resolver(exports: &[ExportConfig], ttl: Duration, resolver: Arc<dyn Resolve>) -> Self {
        let patterns = || exports.iter().flat_map(|e| e.clients.iter().map(|r| &r.pattern));
        let mut hosts: Vec<String> = Vec::new();
        let mut groups: Vec<String> = Vec::new();
        for pattern in patterns() {
            match pattern {
                ClientPattern::Host(h) if h.parse::<IpAddr>().is_err() => hosts.push(h.to_ascii_lowercase()),
                ClientPattern::Netgroup(g) => groups.push(g.clone()),
                _ => {}
            }
        }
        hosts.sort();
        hosts.dedup();
        groups.sort();
        groups.dedup();
        let netgroups_ok = match groups.is_empty() {
            true => true,
            false => match resolver.netgroups_usable() {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(netgroups = ?groups, error = %e, "netgroup rules never match here");
                    groups.clear();
                    false
                }
            },
        };
        let needs_names = patterns().any(|p| match p {
            ClientPattern::Host(h) => h.parse::<IpAddr>().is_err(),
            ClientPattern::Wildcard(_) => true,
            ClientPattern::Netgroup(_) => netgroups_ok,
            _ => false,
        });
        let exports = exports
            .iter()
            .map(|e| Export {
                rules: e.clients.iter().map(|r| compile(&r.pattern, netgroups_ok)).collect(),
                config: e.clone(),
            })
            .collect();
        let hosts = needs_names.then(|| Arc::new(HostNames::new(hosts, groups, ttl, resolver)));
        ExportTable { exports, hosts }
    }

    pub fn all(&self) -> impl Iterator<Item = &ExportConfig> {
        self.exports.iter().map(|e| &e.config)
    }

    pub fn by_id(&self, export_id: u32) -> Option<&ExportConfig> {
        self.all().find(|e| e.export_id == export_id)
    }

    /// Look an export up by the path a client mounts. A trailing `/` is ignored.
    pub fn by_name(&self, name: &str) -> Option<&ExportConfig> {
        let trimmed = if name.len() > 1 { name.trim_end_matches('/') } else { name };
        self.all().find(|e| e.name == trimmed)
    }

    /// The export a client's MNT path is in, and the rest of the path below
    /// it (empty for the export itself, no leading or trailing `/`, `.` and
    /// empty components dropped): the export whose name is the longest
    /// prefix of `path` on a component boundary, as mountd matches a path
    /// inside an exported directory.
    pub fn containing(&self, path: &str) -> Option<(&ExportConfig, String)> {
        let trimmed = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        let below = |name: &str| -> Option<String> {
            let rest = trimmed.strip_prefix(name)?;
            if !(rest.is_empty() || rest.starts_with('/') || name.ends_with('/')) {
                return None;
            }
            let parts: Vec<&str> = rest.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
            Some(parts.join("/"))
        };
        self.all().filter_map(|e| below(&e.name).map(|rest| (e, rest))).max_by_key(|(e, _)| e.name.len())
    }

    /// What `verdict` needs to know of `peer` on export `export_id` (MOUNT,
    /// NLM), or on any export (`None`: NFS, whose export is known only in the
    /// handler): nothing when the client's address decides (the table has no
    /// name rule, or an address rule matches before any), else its names from
    /// the cache or a lookup (awaited up to `hostnames::HOST_LOOKUP_WAIT`).
    pub async fn peer_names(&self, export_id: Option<u32>, peer: IpAddr) -> PeerLookup {
        let Some(hosts) = &self.hosts else { return PeerLookup::NotNeeded };
        let peer = canonical(peer);
        let mut exports = self.exports.iter().filter(|e| export_id.is_none_or(|id| e.config.export_id == id));
        if !exports.any(|e| decide(e, peer, &PeerLookup::Unresolved) == Verdict::Unresolved) {
            return PeerLookup::NotNeeded;
        }
        hosts.lookup(peer).await.map_or(PeerLookup::Unresolved, PeerLookup::Known)
    }

    /// The options of the first rule of the export's client list matching
    /// `peer` (named `names`, from `peer_names`).
    pub fn verdict(&self, export_id: u32, peer: IpAddr, names: &PeerLookup) -> Verdict {
        match self.exports.iter().find(|e| e.config.export_id == export_id) {
            Some(export) => decide(export, canonical(peer), names),
            None => Verdict::Deny,
        }
    }

    /// `verdict` with only what is cached now (never waits, never looks up):
    /// the options, or `None` when refused or the names are not cached.
    pub fn access(&self, export_id: u32, peer: IpAddr) -> Option<ExportOptions> {
        let names = match &self.hosts {
            None => PeerLookup::NotNeeded,
            Some(hosts) => hosts.cached(peer).map_or(PeerLookup::Unresolved, PeerLookup::Known),
        };
        match self.verdict(export_id, peer, &names) {
            Verdict::Allow(options) => Some(options),
            Verdict::Deny | Verdict::Unresolved => None,
        }
    }
}

/// `verdict` on one export, `peer` canonical.
fn decide(export: &Export, peer: IpAddr, names: &PeerLookup) -> Verdict {
    for (rule, m) in export.config.clients.iter().zip(&export.rules) {
        match matches(m, peer, names) {
            Some(true) => return Verdict::Allow(rule.options),
            Some(false) => {}
            None => return Verdict::Unresolved,
        }
    }
    Verdict::Deny
}

fn compile(pattern: &ClientPattern, netgroups_ok: bool) -> Match {
    match pattern {
        ClientPattern::Any => Match::Any,
        ClientPattern::Host(name) => match name.parse::<IpAddr>() {
            Ok(ip) => Match::Addr(canonical(ip)),
            Err(_) => Match::Name(name.to_ascii_lowercase()),
        },
        ClientPattern::Wildcard(w) => Match::Wildcard(w.to_ascii_lowercase()),
        ClientPattern::Netgroup(g) if netgroups_ok => Match::Netgroup(g.clone()),
        ClientPattern::Netgroup(_) => Match::Never,
        ClientPattern::Cidr { addr, prefix } => Match::Net(canonical(*addr), *prefix),
    }
}

/// Whether `m` matches `peer`; `None`: it depends on names not known.
fn matches(m: &Match, peer: IpAddr, names: &PeerLookup) -> Option<bool> {
    let by_name = |f: &dyn Fn(&PeerNames) -> bool| match names {
        PeerLookup::Known(n) => Some(f(n)),
        // Only a table without name rules needs no names.
        PeerLookup::NotNeeded => Some(false),
        PeerLookup::Unresolved => None,
    };
    match m {
        Match::Any => Some(true),
        Match::Never => Some(false),
        Match::Addr(a) => Some(*a == peer),
        Match::Net(net, prefix) => Some(in_network(peer, *net, *prefix)),
        Match::Name(h) => by_name(&|n| n.is_host(h)),
        Match::Wildcard(w) => by_name(&|n| n.matches_wildcard(w)),
        Match::Netgroup(g) => by_name(&|n| n.in_netgroup(g)),
    }
}

fn in_network(peer: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (peer, net) {
        (IpAddr::V4(p), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            u32::from(p) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(p), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            u128::from(p) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// How a pattern is shown to clients (`showmount -e`) and admins.
pub fn pattern_string(pattern: &ClientPattern) -> String {
    match pattern {
        ClientPattern::Any => "*".to_string(),
        ClientPattern::Host(h) => h.clone(),
        ClientPattern::Wildcard(w) => w.clone(),
        ClientPattern::Netgroup(g) => format!("@{g}"),
        ClientPattern::Cidr { addr, prefix } => format!("{addr}/{prefix}"),
    }
}

/// A client list as the replicated table stores it: each rule as
/// `pattern(options)` with every option spelled out (`exportfs -v` style),
/// so two spellings of the same list compare equal. `parse_clients` of it
/// gives the same rules back.
pub fn canonical_clients(rules: &[ClientRule]) -> String {
    let rule = |r: &ClientRule| format!("{}({})", pattern_string(&r.pattern), options_string(&r.options));
    rules.iter().map(rule).collect::<Vec<_>>().join(" ")
}

/// Every option of `o`, comma-separated, in exports(5) spelling.
pub fn options_string(o: &ExportOptions) -> String {
    let squash = match o.squash {
        Squash::Root => "root_squash",
        Squash::None => "no_root_squash",
        Squash::All => "all_squash",
    };
    format!(
        "{},{squash},{},{},anonuid={},anongid={}",
        if o.read_only { "ro" } else { "rw" },
        if o.sync { "sync" } else { "async" },
        if o.secure { "secure" } else { "insecure" },
        o.anonuid,
        o.anongid
    )
}

/// Parse an exports(5) client list such as
/// `*(rw,no_root_squash) 10.0.0.0/8(ro) host.example(rw,all_squash,anonuid=1000)`.
///
/// Options not given take `ExportOptions::default()`, the exports(5) defaults:
/// ro, root_squash, sync, secure, anonuid/anongid 65534 (the quick start passes
/// `rw` explicitly). `no_subtree_check` is
/// accepted and changes nothing: hanfs never does subtree checking.
pub fn parse_clients(spec: &str) -> Result<Vec<ClientRule>, ClientSpecError> {
    if spec.len() > CLIENT_SPEC_BYTES_MAX {
        return Err(ClientSpecError::TooLong { max: CLIENT_SPEC_BYTES_MAX });
    }
    let rules = spec
        .split_whitespace()
        .map(|entry| parse_entry(entry).map_err(|error| ClientSpecError::Entry { entry: entry.to_string(), error }))
        .collect::<Result<Vec<_>, _>>()?;
    if rules.is_empty() {
        return Err(ClientSpecError::Empty);
    }
    Ok(rules)
}

fn parse_entry(entry: &str) -> Result<ClientRule, EntryError> {
    let (host, options) = match entry.split_once('(') {
        None => (entry, ExportOptions::default()),
        Some((host, rest)) => {
            let opts = rest.strip_suffix(')').ok_or(EntryError::MissingParen)?;
            (host, parse_options(opts)?)
        }
    };
    Ok(ClientRule { pattern: parse_pattern(host)?, options })
}

fn parse_pattern(host: &str) -> Result<ClientPattern, EntryError> {
    if host.is_empty() {
        return Err(EntryError::NoClient);
    }
    if host == "*" {
        return Ok(ClientPattern::Any);
    }
    if let Some(group) = host.strip_prefix('@') {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if group.is_empty() || !group.chars().all(valid) {
            return Err(EntryError::Netgroup(host.to_string()));
        }
        return Ok(ClientPattern::Netgroup(group.to_string()));
    }
    if let Some((addr, mask)) = host.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| EntryError::BadAddress(addr.to_string()))?;
        let prefix = parse_prefix(addr, mask)?;
        return Ok(ClientPattern::Cidr { addr, prefix });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ClientPattern::Host(ip.to_string()));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | '?');
    if !host.chars().all(valid) {
        return Err(EntryError::BadHost(host.to_string()));
    }
    if host.contains(['*', '?']) {
        Ok(ClientPattern::Wildcard(host.to_ascii_lowercase()))
    } else {
        Ok(ClientPattern::Host(host.to_ascii_lowercase()))
    }
}

/// A prefix length (`/24`) or, for IPv4, a dotted netmask (`/255.255.255.0`).
fn parse_prefix(addr: IpAddr, mask: &str) -> Result<u8, EntryError> {
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    if let Ok(prefix) = mask.parse::<u8>() {
        if prefix <= bits {
            return Ok(prefix);
        }
        return Err(EntryError::PrefixTooLong { prefix, bits });
    }
    if let (IpAddr::V4(_), Ok(std::net::IpAddr::V4(m))) = (addr, mask.parse::<IpAddr>()) {
        let m = u32::from(m);
        if m.leading_ones() + m.trailing_zeros() == 32 {
            return Ok(m.leading_ones() as u8);
        }
    }
    Err(EntryError::BadMask(mask.to_string()))
}

fn parse_id(option: &'static str, value: &str) -> Result<u32, EntryError> {
    value.parse().map_err(|_| EntryError::BadId { option, value: value.to_string() })
}

fn parse_options(opts: &str) -> Result<ExportOptions, EntryError> {
    let mut o = ExportOptions::default();
    for opt in opts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match opt.split_once('=') {
            Some(("anonuid", v)) => o.anonuid = parse_id("anonuid", v)?,
            Some(("anongid", v)) => o.anongid = parse_id("anongid", v)?,
            Some(_) => return Err(EntryError::UnknownOption(opt.to_string())),
            None => match opt {
                "rw" => o.read_only = false,
                "ro" => o.read_only = true,
                "root_squash" => o.squash = Squash::Root,
                "no_root_squash" => o.squash = Squash::None,
                "all_squash" => o.squash = Squash::All,
                "no_all_squash" => {
                    if o.squash == Squash::All {
                        o.squash = Squash::Root;
                    }
                }
                "sync" => o.sync = true,
                "async" => o.sync = false,
                "secure" => o.secure = true,
                "insecure" => o.secure = false,
                "no_subtree_check" => {}
                _ => return Err(EntryError::UnknownOption(opt.to_string())),
            },
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn table(spec: &str) -> ExportTable {
        let clients = parse_clients(spec).unwrap();
        ExportTable::new(&[ExportConfig { name: "/export".into(), dir: PathBuf::from("/tmp"), export_id: 1, clients }])
    }

    #[test]
    fn parses_the_exports5_example() {
        let rules =
            parse_clients("*(rw,no_root_squash) 10.0.0.0/8(ro) host.example(rw,all_squash,anonuid=1000)").unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].pattern, ClientPattern::Any);
        assert_eq!(rules[0].options.squash, Squash::None);
        assert_eq!(rules[1].pattern, ClientPattern::Cidr { addr: "10.0.0.0".parse().unwrap(), prefix: 8 });
        assert!(rules[1].options.read_only);
        assert_eq!(rules[2].pattern, ClientPattern::Host("host.example".into()));
        assert_eq!(rules[2].options.squash, Squash::All);
        assert_eq!(rules[2].options.anonuid, 1000);
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |spec: &str| parse_clients(spec).unwrap_err().to_string();
        assert!(msg("*(rw,bogus)").contains("unknown export option `bogus`"));
        assert!(msg("*(rw").contains("missing `)`"));
        assert!(msg("10.0.0.0/33(rw)").contains("/33"));
        assert!(msg("@(rw)").contains("not a netgroup name"));
        assert!(msg("@a/b(rw)").contains("not a netgroup name"));
        assert!(msg("(rw)").contains("no client"));
        assert!(msg("*(anonuid=x)").contains("anonuid"));
        assert_eq!(parse_clients("   ").unwrap_err(), ClientSpecError::Empty);
    }

    #[test]
    fn errors_can_be_matched() {
        let entry = |spec: &str| match parse_clients(spec) {
            Err(ClientSpecError::Entry { entry, error }) => (entry, error),
            other => panic!("{spec}: {other:?}"),
        };
        assert_eq!(
            entry("* 10.0.0.0/33(rw)"),
            ("10.0.0.0/33(rw)".into(), EntryError::PrefixTooLong { prefix: 33, bits: 32 })
        );
        assert_eq!(entry("*(anongid=-1)").1, EntryError::BadId { option: "anongid", value: "-1".into() });
        assert_eq!(entry("x/255.0.255.0").1, EntryError::BadAddress("x".into()));
        assert_eq!(entry("10.0.0.0/255.0.255.0").1, EntryError::BadMask("255.0.255.0".into()));
        assert_eq!(entry("a,b").1, EntryError::BadHost("a,b".into()));
        let long = "*".repeat(CLIENT_SPEC_BYTES_MAX + 1);
        assert_eq!(parse_clients(&long).unwrap_err(), ClientSpecError::TooLong { max: CLIENT_SPEC_BYTES_MAX });
    }

    #[test]
    fn read_only_unless_rw_like_exports5() {
        let rules = parse_clients("* 10.0.0.0/8(no_root_squash) 10.1.0.0/16(rw)").unwrap();
        assert!(rules[0].options.read_only);
        assert!(rules[1].options.read_only);
        assert!(!rules[2].options.read_only);
    }

    #[test]
    fn first_matching_rule_wins() {
        let t = table("127.0.0.2(ro) 127.0.0.0/8(rw,insecure) 10.1.2.3");
        assert!(t.access(1, "127.0.0.2".parse().unwrap()).unwrap().read_only);
        let o = t.access(1, "127.0.0.1".parse().unwrap()).unwrap();
        assert!(!o.read_only && !o.secure);
        assert!(t.access(1, "10.1.2.3".parse().unwrap()).is_some());
        assert!(t.access(1, "10.1.2.4".parse().unwrap()).is_none());
        assert!(t.access(2, "127.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn netmask_and_mapped_addresses() {
        let t = table("192.168.1.0/255.255.255.0(rw)");
        assert!(t.access(1, "192.168.1.77".parse().unwrap()).is_some());
        assert!(t.access(1, "::ffff:192.168.1.77".parse().unwrap()).is_some());
        assert!(t.access(1, "192.168.2.1".parse().unwrap()).is_none());
        let t = table("0.0.0.0/0");
        assert!(t.access(1, "8.8.8.8".parse().unwrap()).is_some());
    }

    #[test]
    fn canonical_clients_round_trip_and_equal_spellings_agree() {
        let spec = "*(rw,no_root_squash) 10.0.0.0/255.0.0.0(ro,insecure) host.example(all_squash,anonuid=7,async)";
        let canon = canonical_clients(&parse_clients(spec).unwrap());
        assert_eq!(
            canon,
            "*(rw,no_root_squash,sync,secure,anonuid=65534,anongid=65534) \
             10.0.0.0/8(ro,root_squash,sync,insecure,anonuid=65534,anongid=65534) \
             host.example(ro,all_squash,async,secure,anonuid=7,anongid=65534)"
        );
        assert_eq!(canonical_clients(&parse_clients(&canon).unwrap()), canon);
        let a = canonical_clients(&parse_clients("*(rw)").unwrap());
        let b = canonical_clients(&parse_clients("*(rw,root_squash,sync,secure,no_subtree_check)").unwrap());
        assert_eq!(a, b);
    }

    #[test]
    fn by_name_ignores_trailing_slash() {
        let t = table("*");
        assert!(t.by_name("/export/").is_some());
        assert!(t.by_name("/export").is_some());
        assert!(t.by_name("/other").is_none());
        assert!(t.by_id(1).is_some());
    }
}

#[cfg(test)]
#[path = "exports_names_tests.rs"]
mod names_tests;
