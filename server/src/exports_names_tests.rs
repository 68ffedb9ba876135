//! Client lists by host name, wildcard and netgroup, with names from a
//! table instead of the system's resolver.

use std::path::PathBuf;

use super::*;

/// Names from a table: (address, name) pairs both ways, and (group, host).
struct Names(Vec<(&'static str, &'static str)>, Vec<(&'static str, &'static str)>);

impl Resolve for Names {
    fn reverse(&self, addr: IpAddr) -> Option<String> {
        self.0.iter().find(|(a, _)| a.parse() == Ok(addr)).map(|(_, n)| n.to_string())
    }
    fn forward(&self, name: &str) -> Vec<IpAddr> {
        self.0.iter().filter(|(_, n)| *n == name).filter_map(|(a, _)| a.parse().ok()).collect()
    }
    fn in_netgroup(&self, group: &str, host: &str) -> bool {
        self.1.iter().any(|(g, h)| *g == group && *h == host)
    }
    fn netgroups_usable(&self) -> Result<(), crate::hostnames::NetgroupError> {
        Ok(())
    }
}

fn named_table(spec: &str) -> ExportTable {
    let clients = parse_clients(spec).unwrap();
    let names = Names(
        vec![("127.0.0.2", "a.example.test"), ("127.0.0.3", "b.other.test"), ("127.0.0.4", "c.example.test")],
        vec![("staff", "b")],
    );
    let export = ExportConfig { name: "/export".into(), dir: PathBuf::from("/tmp"), export_id: 1, clients };
    ExportTable::with_resolver(&[export], Duration::from_secs(3600), Arc::new(names))
}

async fn verdict(t: &ExportTable, peer: &str) -> Verdict {
    let peer: IpAddr = peer.parse().unwrap();
    let names = t.peer_names(Some(1), peer).await;
    t.verdict(1, peer, &names)
}

#[test]
fn names_wildcards_and_netgroups_parse() {
    let rules = parse_clients("A.Example.Test(rw) *.EXAMPLE.test node?.lab @staff(ro) @net-1.x").unwrap();
    assert_eq!(rules[0].pattern, ClientPattern::Host("a.example.test".into()));
    assert_eq!(rules[1].pattern, ClientPattern::Wildcard("*.example.test".into()));
    assert_eq!(rules[2].pattern, ClientPattern::Wildcard("node?.lab".into()));
    assert_eq!(rules[3].pattern, ClientPattern::Netgroup("staff".into()));
    assert_eq!(pattern_string(&rules[3].pattern), "@staff");
    assert_eq!(rules[4].pattern, ClientPattern::Netgroup("net-1.x".into()));
}

#[tokio::test]
async fn host_names_match_by_verified_name_and_forward_lookup() {
    let t = named_table("a.example.test(rw)");
    assert!(matches!(verdict(&t, "127.0.0.2").await, Verdict::Allow(o) if !o.read_only));
    assert_eq!(verdict(&t, "::ffff:127.0.0.2").await, verdict(&t, "127.0.0.2").await);
    assert_eq!(verdict(&t, "127.0.0.3").await, Verdict::Deny);
    assert_eq!(verdict(&t, "127.0.0.9").await, Verdict::Deny, "no name at all");
    // `access` answers from the cache only: filled above for .2.
    assert!(t.access(1, "127.0.0.2".parse().unwrap()).is_some());
    assert!(t.access(1, "127.0.0.5".parse().unwrap()).is_none(), "not cached: refused");
}

#[tokio::test]
async fn wildcards_match_the_verified_name() {
    let t = named_table("*.example.test(rw)");
    assert!(matches!(verdict(&t, "127.0.0.2").await, Verdict::Allow(_)));
    assert!(matches!(verdict(&t, "127.0.0.4").await, Verdict::Allow(_)));
    assert_eq!(verdict(&t, "127.0.0.3").await, Verdict::Deny);
}

#[tokio::test]
async fn netgroups_match_by_name() {
    let t = named_table("@staff(rw) *.example.test(ro)");
    assert!(matches!(verdict(&t, "127.0.0.3").await, Verdict::Allow(o) if !o.read_only));
    assert!(matches!(verdict(&t, "127.0.0.2").await, Verdict::Allow(o) if o.read_only));
    assert_eq!(verdict(&t, "127.0.0.9").await, Verdict::Deny);
}

#[test]
fn address_rules_never_need_names() {
    let t = ExportTable::new(&[ExportConfig {
        name: "/export".into(),
        dir: PathBuf::from("/tmp"),
        export_id: 1,
        clients: parse_clients("127.0.0.2(ro) 127.0.0.0/8(rw) *").unwrap(),
    }]);
    assert!(t.hosts.is_none(), "no name cache, no lookup");
    let t = named_table("127.0.0.2(rw) a.example.test");
    // An address rule decides before a name rule is reached...
    assert!(matches!(t.verdict(1, "127.0.0.2".parse().unwrap(), &PeerLookup::Unresolved), Verdict::Allow(_)));
    // ...and a name rule without names is undecided, not refused.
    assert_eq!(t.verdict(1, "127.0.0.3".parse().unwrap(), &PeerLookup::Unresolved), Verdict::Unresolved);
    assert_eq!(t.verdict(2, "127.0.0.3".parse().unwrap(), &PeerLookup::Unresolved), Verdict::Deny);
}

#[tokio::test]
async fn clients_an_address_rule_decides_are_not_looked_up() {
    let clients = |spec| parse_clients(spec).unwrap();
    let export = |id, spec| ExportConfig {
        name: format!("/e{id}"),
        dir: PathBuf::from("/tmp"),
        export_id: id,
        clients: clients(spec),
    };
    let names = Names(vec![("127.0.0.2", "a.example.test")], vec![]);
    let t = ExportTable::with_resolver(
        &[export(1, "127.0.0.0/24(rw) *.example.test"), export(2, "10.0.0.0/8")],
        Duration::from_secs(3600),
        Arc::new(names),
    );
    let (inside, outside) = ("127.0.0.2".parse().unwrap(), "10.1.1.1".parse().unwrap());
    assert!(matches!(t.peer_names(None, inside).await, PeerLookup::NotNeeded), "its address decides everywhere");
    assert!(matches!(t.peer_names(Some(2), outside).await, PeerLookup::NotNeeded), "export 2 has no name rule");
    assert!(matches!(t.peer_names(None, outside).await, PeerLookup::Known(_)), "export 1 needs its name");
    assert!(matches!(t.peer_names(Some(1), "::1".parse().unwrap()).await, PeerLookup::Known(_)));
}
