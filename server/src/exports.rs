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

/// Parse an exports(5) client list such as
/// `*(rw,no_root_squash) 10.0.0.0/8(ro) host.example(rw,all_squash,anonuid=1000)`.
///
/// Options not given take `ExportOptions::default()`, the exports(5) defaults:
/// ro, root_squash, sync, secure, anonuid/anongid 65534 (the quick start passes
/// `rw` explicitly). `no_subtree_check` is
/// accepted and changes nothing: hanfs never does subtree checking.
pub fn parse_clients(spec: &str) -> Result<Vec<ClientRule>, String> {
    if spec.len() > CLIENT_SPEC_BYTES_MAX {
        return Err(format!("client list longer than {CLIENT_SPEC_BYTES_MAX} bytes"));
    }
    let rules = spec.split_whitespace().map(parse_entry).collect::<Result<Vec<_>, _>>()?;
    if rules.is_empty() {
        return Err("empty client list (use `*` to allow every client)".to_string());
    }
    Ok(rules)
}

fn parse_entry(entry: &str) -> Result<ClientRule, String> {
    let (host, options) = match entry.split_once('(') {
        None => (entry, ExportOptions::default()),
        Some((host, rest)) => {
            let Some(opts) = rest.strip_suffix(')') else {
                return Err(format!("`{entry}`: missing `)` after the options"));
            };
            (host, parse_options(opts).map_err(|e| format!("`{entry}`: {e}"))?)
        }
    };
    let pattern = parse_pattern(host).map_err(|e| format!("`{entry}`: {e}"))?;
    Ok(ClientRule { pattern, options })
}

fn parse_pattern(host: &str) -> Result<ClientPattern, String> {
    if host.is_empty() {
        return Err("no client before `(` (write `*` for every client)".to_string());
    }
    if host == "*" {
        return Ok(ClientPattern::Any);
    }
    if host.starts_with('@') {
        return Err(format!("netgroups are not supported: `{host}`"));
    }
    if let Some((addr, mask)) = host.split_once('/') {
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let prefix = parse_prefix(addr, mask)?;
        return Ok(ClientPattern::Cidr { addr, prefix });
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ClientPattern::Host(ip.to_string()));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | '?');
    if !host.chars().all(valid) {
        return Err(format!("`{host}` is not a host name, address, network or `*`"));
    }
    if host.contains(['*', '?']) {
        Ok(ClientPattern::Wildcard(host.to_ascii_lowercase()))
    } else {
        Ok(ClientPattern::Host(host.to_ascii_lowercase()))
    }
}

/// A prefix length (`/24`) or, for IPv4, a dotted netmask (`/255.255.255.0`).
fn parse_prefix(addr: IpAddr, mask: &str) -> Result<u8, String> {
    let bits: u8 = if addr.is_ipv4() { 32 } else { 128 };
    if let Ok(prefix) = mask.parse::<u8>() {
        if prefix <= bits {
            return Ok(prefix);
        }
        return Err(format!("prefix /{prefix} is longer than {bits} bits"));
    }
    if let (IpAddr::V4(_), Ok(std::net::IpAddr::V4(m))) = (addr, mask.parse::<IpAddr>()) {
        let m = u32::from(m);
        if m.leading_ones() + m.trailing_zeros() == 32 {
            return Ok(m.leading_ones() as u8);
        }
    }
    Err(format!("`{mask}` is not a prefix length or netmask"))
}

fn parse_options(opts: &str) -> Result<ExportOptions, String> {
    let mut o = ExportOptions::default();
    for opt in opts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match opt.split_once('=') {
            Some(("anonuid", v)) => o.anonuid = v.parse().map_err(|_| format!("bad anonuid `{v}`"))?,
            Some(("anongid", v)) => o.anongid = v.parse().map_err(|_| format!("bad anongid `{v}`"))?,
            Some(_) => return Err(format!("unknown export option `{opt}`")),
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
                _ => return Err(format!("unknown export option `{opt}`")),
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
        assert!(parse_clients("*(rw,bogus)").unwrap_err().contains("unknown export option `bogus`"));
        assert!(parse_clients("*(rw").unwrap_err().contains("missing `)`"));
        assert!(parse_clients("10.0.0.0/33(rw)").unwrap_err().contains("/33"));
        assert!(parse_clients("@group(rw)").unwrap_err().contains("netgroups"));
        assert!(parse_clients("(rw)").unwrap_err().contains("no client"));
        assert!(parse_clients("*(anonuid=x)").unwrap_err().contains("anonuid"));
        assert!(parse_clients("   ").is_err());
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
    fn by_name_ignores_trailing_slash() {
        let t = table("*");
        assert!(t.by_name("/export/").is_some());
        assert!(t.by_name("/export").is_some());
        assert!(t.by_name("/other").is_none());
        assert!(t.by_id(1).is_some());
    }
}
