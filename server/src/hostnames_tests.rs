//! The name cache against a fake name service (no DNS, no NSS).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A name service from tables, counting reverse lookups; `delay` makes each
/// reverse lookup take that long (on the blocking pool).
#[derive(Default)]
struct Fake {
    reverse: Mutex<HashMap<IpAddr, String>>,
    forward: Mutex<HashMap<String, Vec<IpAddr>>>,
    netgroups: Vec<(String, String)>,
    reverse_calls: AtomicUsize,
    delay: Duration,
}

impl Fake {
    fn host(self, name: &str, addr: &str) -> Self {
        let ip: IpAddr = addr.parse().unwrap();
        self.reverse.lock().unwrap().insert(ip, name.to_string());
        self.forward.lock().unwrap().entry(name.to_ascii_lowercase()).or_default().push(ip);
        self
    }
}

impl Resolve for Fake {
    fn reverse(&self, addr: IpAddr) -> Option<String> {
        self.reverse_calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.delay);
        self.reverse.lock().unwrap().get(&addr).cloned()
    }
    fn forward(&self, name: &str) -> Vec<IpAddr> {
        self.forward.lock().unwrap().get(name).cloned().unwrap_or_default()
    }
    fn in_netgroup(&self, group: &str, host: &str) -> bool {
        self.netgroups.iter().any(|(g, h)| g == group && h == host)
    }
    fn netgroups_usable(&self) -> Result<(), NetgroupError> {
        Ok(())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cache(fake: Arc<Fake>, hosts: &[&str], groups: &[&str], ttl: Duration) -> Arc<HostNames> {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
    Arc::new(HostNames::new(v(hosts), v(groups), ttl, fake))
}

const LONG: Duration = Duration::from_secs(3600);

#[test]
fn wildcards_match_like_wildmat() {
    assert!(wildcard_matches("*.example.test", "a.example.test"));
    assert!(wildcard_matches("*.example.test", "a.b.example.test"));
    assert!(wildcard_matches("*.EXAMPLE.test", "A.example.TEST"));
    assert!(!wildcard_matches("*.example.test", "example.test"));
    assert!(!wildcard_matches("*.example.test", "b.other.test"));
    assert!(!wildcard_matches("*.example.test", "a.example.test.evil"));
    assert!(wildcard_matches("node?.example.test", "node7.example.test"));
    assert!(!wildcard_matches("node?.example.test", "node17.example.test"));
    assert!(wildcard_matches("node*", "node"));
    assert!(wildcard_matches("*", "anything.at.all"));
    assert!(wildcard_matches("a*b*c", "axxbyyc"));
    assert!(!wildcard_matches("a*b*c", "axxbyy"));
    assert!(!wildcard_matches("", "a"));
}

#[test]
fn reverse_names_must_look_like_host_names() {
    assert_eq!(host_name("Client.Example.Test."), Some("client.example.test".into()));
    assert_eq!(host_name("127.0.0.2"), None);
    assert_eq!(host_name("::1"), None);
    assert_eq!(host_name("a b"), None);
    assert_eq!(host_name(""), None);
    assert_eq!(host_name(&"a".repeat(HOST_NAME_BYTES_MAX + 1)), None);
}

#[test]
fn nsswitch_netgroup_sources() {
    let yes = |_: &str| true;
    let no = |_: &str| false;
    assert_eq!(check_nsswitch("hosts: files\nnetgroup: files\n", true, no), Ok(()));
    assert_eq!(check_nsswitch("netgroup: nis files # x\n", true, no), Ok(()));
    assert_eq!(check_nsswitch("netgroup: sss\n", false, yes), Ok(()));
    assert_eq!(check_nsswitch("netgroup: [NOTFOUND=return] sss\n", false, yes), Ok(()));
    let err = check_nsswitch("netgroup: nis\n", true, no).unwrap_err().to_string();
    assert!(err.contains("libnss_nis.so.2 is not installed"), "{err}");
    let err = check_nsswitch("netgroup: files\n", false, yes).unwrap_err().to_string();
    assert!(err.contains("/etc/netgroup does not exist"), "{err}");
    assert!(matches!(check_nsswitch("hosts: files\n#netgroup: files\n", true, yes), Err(NetgroupError::NoLine { .. })));
}

#[tokio::test]
async fn a_verified_name_plain_names_and_netgroups() {
    let mut fake = Fake::default().host("a.example.test", "127.0.0.2").host("mover.example.test", "127.0.0.4");
    fake.netgroups = vec![("staff".into(), "a".into()), ("ops".into(), "127.0.0.4".into())];
    // A name that resolves elsewhere is not 127.0.0.3's, though its PTR says so.
    fake.reverse.lock().unwrap().insert(ip("127.0.0.3"), "liar.example.test".into());
    fake.forward.lock().unwrap().insert("liar.example.test".into(), vec![ip("127.0.0.9")]);
    // A second name for 127.0.0.4, known only forward.
    fake.forward.lock().unwrap().insert("alias.example.test".into(), vec![ip("127.0.0.4")]);
    let hosts = cache(Arc::new(fake), &["alias.example.test", "gone.example.test"], &["staff", "ops"], LONG);

    let a = hosts.lookup(ip("127.0.0.2")).await.unwrap();
    assert_eq!(a.name.as_deref(), Some("a.example.test"));
    assert!(a.is_host("a.example.test") && !a.is_host("alias.example.test"));
    assert!(a.matches_wildcard("*.example.test") && !a.matches_wildcard("*.other.test"));
    assert_eq!(a.netgroups, vec!["staff".to_string()], "matched by its short name");

    let liar = hosts.lookup(ip("127.0.0.3")).await.unwrap();
    assert_eq!(liar.name, None);
    assert!(!liar.matches_wildcard("*.example.test") && !liar.is_host("liar.example.test"));

    let mover = hosts.lookup(ip("::ffff:127.0.0.4")).await.unwrap();
    assert!(mover.is_host("mover.example.test") && mover.is_host("alias.example.test"));
    assert!(!mover.is_host("gone.example.test"));
    assert_eq!(mover.netgroups, vec!["ops".to_string()], "matched by its address text");
}

#[tokio::test]
async fn answers_are_cached_and_lookups_joined() {
    let fake =
        Arc::new(Fake { delay: Duration::from_millis(50), ..Fake::default() }.host("a.example.test", "127.0.0.2"));
    let hosts = cache(fake.clone(), &[], &[], LONG);
    let peer = ip("127.0.0.2");
    assert!(hosts.cached(peer).is_none());
    let (x, y) = tokio::join!(hosts.lookup(peer), hosts.lookup(peer));
    assert_eq!(x, y);
    assert_eq!(fake.reverse_calls.load(Ordering::SeqCst), 1, "one lookup for two callers");
    assert!(hosts.lookup(peer).await.is_some());
    assert!(hosts.cached(peer).is_some());
    assert_eq!(fake.reverse_calls.load(Ordering::SeqCst), 1, "answered from the cache");
    // Unknown addresses are cached too (negatively).
    assert_eq!(hosts.lookup(ip("127.0.0.7")).await.unwrap().name, None);
    assert!(hosts.cached(ip("127.0.0.7")).is_some());
}

#[tokio::test]
async fn entries_expire_and_follow_changes() {
    let fake = Arc::new(Fake::default().host("mover.example.test", "127.0.0.4"));
    let ttl = Duration::from_millis(100);
    let hosts = cache(fake.clone(), &["mover.example.test"], &[], ttl);
    let (old, new) = (ip("127.0.0.4"), ip("127.0.0.5"));
    assert!(hosts.lookup(old).await.unwrap().is_host("mover.example.test"));
    assert!(!hosts.lookup(new).await.unwrap().is_host("mover.example.test"));
    // The name moves: its forward lookup now gives the new address only.
    fake.forward.lock().unwrap().insert("mover.example.test".into(), vec![new]);
    fake.reverse.lock().unwrap().clear();
    tokio::time::sleep(ttl * 2).await;
    assert!(hosts.cached(old).is_none(), "expired");
    assert!(!hosts.lookup(old).await.unwrap().is_host("mover.example.test"));
    assert!(hosts.lookup(new).await.unwrap().is_host("mover.example.test"));
}

#[tokio::test]
async fn a_slow_lookup_is_not_waited_for_forever() {
    let fake = Arc::new(Fake { delay: Duration::from_millis(500), ..Fake::default() });
    let mut names = HostNames::new(vec![], vec![], LONG, fake.clone());
    names.wait = Duration::from_millis(20);
    let hosts = Arc::new(names);
    let peer = ip("127.0.0.2");
    assert_eq!(hosts.lookup(peer).await, None, "no answer within the wait");
    // The lookup went on and fills the cache; a later caller joins it.
    names_eventually(&hosts, peer).await;
    assert_eq!(fake.reverse_calls.load(Ordering::SeqCst), 1);
}

/// Polls `cached` (bounded) until the lookup running for `peer` is done.
async fn names_eventually(hosts: &HostNames, peer: IpAddr) {
    for _ in 0..200 {
        if hosts.cached(peer).is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("lookup of {peer} never finished");
}

#[test]
fn the_cache_is_bounded() {
    let mut peers = HashMap::new();
    let now = Instant::now();
    let entry = |secs| {
        Arc::new(PeerNames { name: None, hosts: vec![], netgroups: vec![], expires: now + Duration::from_secs(secs) })
    };
    for i in 0..HOST_CACHE_ENTRIES_MAX {
        let addr = IpAddr::V6(std::net::Ipv6Addr::from(i as u128 + 1));
        insert_bounded(&mut peers, addr, entry(100 + i as u64));
    }
    assert_eq!(peers.len(), HOST_CACHE_ENTRIES_MAX);
    insert_bounded(&mut peers, ip("127.0.0.2"), entry(10_000));
    assert_eq!(peers.len(), HOST_CACHE_ENTRIES_MAX);
    assert!(!peers.contains_key(&IpAddr::V6(std::net::Ipv6Addr::from(1u128))), "the soonest to expire went");
    assert!(peers.contains_key(&ip("127.0.0.2")));
}
