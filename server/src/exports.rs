//! The export table: exports by id and by name, the exports(5)-style client
//! list parser, and the per-client access decision used by MOUNT and NFS.
//!
//! Host-name rules are matched by forward-resolving the name once, when the
//! table is built, and comparing addresses; wildcard host names (`*.example.com`)
//! would need a reverse lookup of every client and never match for now (a
//! warning is logged when such a rule is loaded). Netgroups (`@group`) are refused
//! by the parser.

use std::net::{IpAddr, ToSocketAddrs};

use crate::config::{ClientPattern, ClientRule, ExportConfig, ExportOptions, Squash};

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
    #[error("netgroups are not supported: `{0}`")]
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
    /// For each rule, the addresses a `Host(name)` rule resolved to.
    resolved: Vec<Vec<IpAddr>>,
}

pub struct ExportTable {
    exports: Vec<Export>,
}

impl ExportTable {
    pub fn new(exports: &[ExportConfig]) -> Self {
        let exports = exports
            .iter()
            .map(|e| Export { resolved: e.clients.iter().map(resolve_rule).collect(), config: e.clone() })
            .collect();
        ExportTable { exports }
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

    /// The options of the first rule of the export's client list matching `peer`,
    /// or `None` if the client may not use the export.
    pub fn access(&self, export_id: u32, peer: IpAddr) -> Option<ExportOptions> {
        let peer = canonical(peer);
        let export = self.exports.iter().find(|e| e.config.export_id == export_id)?;
        export
            .config
            .clients
            .iter()
            .zip(&export.resolved)
            .find(|(rule, resolved)| matches(&rule.pattern, resolved, peer))
            .map(|(rule, _)| rule.options)
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn resolve_rule(rule: &ClientRule) -> Vec<IpAddr> {
    match &rule.pattern {
        ClientPattern::Host(name) => match name.parse::<IpAddr>() {
            Ok(ip) => vec![canonical(ip)],
            Err(_) => match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => addrs.map(|a| canonical(a.ip())).collect(),
                Err(e) => {
                    tracing::warn!(host = %name, error = %e, "export client host does not resolve; rule never matches");
                    Vec::new()
                }
            },
        },
        ClientPattern::Wildcard(w) => {
            tracing::warn!(pattern = %w, "wildcard host names need reverse lookups, which hanfs does not do; rule never matches");
            Vec::new()
        }
        ClientPattern::Any | ClientPattern::Cidr { .. } => Vec::new(),
    }
}

fn matches(pattern: &ClientPattern, resolved: &[IpAddr], peer: IpAddr) -> bool {
    match pattern {
        ClientPattern::Any => true,
        ClientPattern::Host(_) => resolved.contains(&peer),
        ClientPattern::Wildcard(_) => false,
        ClientPattern::Cidr { addr, prefix } => in_network(peer, canonical(*addr), *prefix),
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
    if host.starts_with('@') {
        return Err(EntryError::Netgroup(host.to_string()));
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
        assert!(msg("@group(rw)").contains("netgroups"));
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
