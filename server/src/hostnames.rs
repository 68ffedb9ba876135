//! Clients' host names for the export client lists, as rpc.mountd finds them:
//! the name of a client address is its reverse lookup (getnameinfo with
//! `NI_NAMEREQD`), accepted only if a forward lookup of that name gives the
//! address back. A plain-name rule matches a client whose verified name is
//! the rule's (ASCII case-insensitive), or whose address is one the rule's
//! name forward-resolves to; a wildcard rule (`*`, `?`) matches the verified
//! name; `@group` asks NSS `innetgr(group, host, NULL, NULL)` with the
//! verified name, its first label, then the address text (mountd's order).
//!
//! Every answer is cached per client address (`HostNames`, one per export
//! table, so a new table starts empty as `exportfs -r` flushes knfsd's
//! caches): at most `HOST_CACHE_ENTRIES_MAX` addresses, for the configured
//! TTL (`[server] host_cache_ttl_seconds`, default
//! `HOST_CACHE_TTL_SECONDS_DEFAULT`) when a name was found, for at most
//! `HOST_CACHE_NEGATIVE_TTL_MAX` when none was. The rule names' own forward
//! lookups are cached with the same TTLs, and a client's entry never outlives
//! the forward lookups it used, so a changed address is followed within one
//! TTL. Lookups block, so they run on tokio's blocking pool, at most
//! `LOOKUPS_CONCURRENT_MAX` at once and one per address at a time (callers
//! asking for an address being looked up wait for that lookup); a caller
//! waits `HOST_LOOKUP_WAIT` at most, then gets no answer (the lookup goes on
//! and fills the cache).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

/// Client addresses whose names are cached per export table.
pub const HOST_CACHE_ENTRIES_MAX: usize = 8192;
/// Default positive TTL: 10 minutes. knfsd's auth.unix.ip entries live 30
/// minutes; a third of that follows a renumbered client three times sooner
/// and costs one lookup per client per 10 minutes, nothing next to its calls.
pub const HOST_CACHE_TTL_SECONDS_DEFAULT: u64 = 600;
/// Accepted `host_cache_ttl_seconds` (one day at most).
pub const HOST_CACHE_TTL_SECONDS_MIN: u64 = 1;
pub const HOST_CACHE_TTL_SECONDS_MAX: u64 = 86_400;
/// A client (or rule name) that did not resolve is asked again after at most
/// this long: a client just added to DNS or the hosts file gets in within a
/// minute, and a client without a name costs a lookup a minute.
pub const HOST_CACHE_NEGATIVE_TTL_MAX: Duration = Duration::from_secs(60);
/// Lookups running at once on the blocking pool (which also runs every
/// filesystem call), per export table.
pub const LOOKUPS_CONCURRENT_MAX: usize = 4;
/// Addresses waiting for or in a lookup at once; a further new address gets
/// no answer until some finish (bounds the memory a flood of addresses takes).
pub const LOOKUPS_PENDING_MAX: usize = 1024;
/// How long a call waits for its client's lookup before going on without it.
pub const HOST_LOOKUP_WAIT: Duration = Duration::from_secs(10);
/// Longest host name kept (NI_MAXHOST less its NUL).
pub const HOST_NAME_BYTES_MAX: usize = 1024;
/// Where glibc reads which NSS sources serve netgroups.
pub const NSSWITCH_PATH: &str = "/etc/nsswitch.conf";
/// The file NSS's `files` source reads netgroups from.
pub const NETGROUP_FILE_PATH: &str = "/etc/netgroup";

/// What a client address is known as, for one export table's name rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNames {
    /// The verified name (reverse lookup confirmed by a forward one),
    /// lowercase, without a trailing dot.
    pub name: Option<String>,
    /// The table's plain-name rules whose forward lookup gives the address.
    pub hosts: Vec<String>,
    /// The table's netgroups the client is in.
    pub netgroups: Vec<String>,
    expires: Instant,
}

impl PeerNames {
    /// A plain-name rule (lowercase): the verified name is it, or it resolves
    /// to the client's address.
    pub fn is_host(&self, rule: &str) -> bool {
        self.name.as_deref() == Some(rule) || self.hosts.iter().any(|h| h == rule)
    }

    /// A wildcard rule (lowercase) matches the verified name.
    pub fn matches_wildcard(&self, pattern: &str) -> bool {
        self.name.as_deref().is_some_and(|n| wildcard_matches(pattern, n))
    }

    pub fn in_netgroup(&self, group: &str) -> bool {
        self.netgroups.iter().any(|g| g == group)
    }
}

/// `pattern` (`*`: any run of characters, dots included, as mountd's
/// wildmat; `?`: one character) matches all of `name`, ASCII case-insensitive.
pub fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and the name position it has eaten up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || n.get(ni).is_some_and(|b| b.eq_ignore_ascii_case(&c)) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..).is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// The name service: the system's (`SystemResolver`), or a fake in tests.
pub trait Resolve: Send + Sync + 'static {
    /// The name of `addr` by reverse lookup, if it has one.
    fn reverse(&self, addr: IpAddr) -> Option<String>;
    /// The addresses `name` forward-resolves to (none if it does not).
    fn forward(&self, name: &str) -> Vec<IpAddr>;
    /// NSS `innetgr(group, host, NULL, NULL)`.
    fn in_netgroup(&self, group: &str, host: &str) -> bool;
    /// Whether netgroups can be looked up at all (see `netgroup_support`).
    fn netgroups_usable(&self) -> Result<(), NetgroupError>;
}

/// getnameinfo, getaddrinfo and innetgr of the C library (NSS: hosts file,
/// DNS, NIS, LDAP... as /etc/nsswitch.conf says).
pub struct SystemResolver;

extern "C" {
    // glibc <netdb.h>; not in the libc crate.
    fn innetgr(
        netgroup: *const libc::c_char,
        host: *const libc::c_char,
        user: *const libc::c_char,
        domain: *const libc::c_char,
    ) -> libc::c_int;
}

/// glibc marks innetgr MT-Unsafe (netgroup iteration state): one at a time.
static INNETGR: Mutex<()> = Mutex::new(());

impl Resolve for SystemResolver {
    fn reverse(&self, addr: IpAddr) -> Option<String> {
        let mut host = [0 as libc::c_char; HOST_NAME_BYTES_MAX + 1];
        // SAFETY: zeroed sockaddr_in/in6 are valid; getnameinfo gets their
        // true sizes and a host buffer of its stated length, and writes a NUL
        // terminated name into it on success.
        let rc = unsafe {
            match addr {
                IpAddr::V4(v4) => {
                    let mut sa: libc::sockaddr_in = std::mem::zeroed();
                    sa.sin_family = libc::AF_INET as libc::sa_family_t;
                    sa.sin_addr.s_addr = u32::from_ne_bytes(v4.octets());
                    libc::getnameinfo(
                        (&sa as *const libc::sockaddr_in).cast(),
                        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        host.as_mut_ptr(),
                        host.len() as libc::socklen_t,
                        std::ptr::null_mut(),
                        0,
                        libc::NI_NAMEREQD,
                    )
                }
                IpAddr::V6(v6) => {
                    let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
                    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    sa.sin6_addr.s6_addr = v6.octets();
                    libc::getnameinfo(
                        (&sa as *const libc::sockaddr_in6).cast(),
                        std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                        host.as_mut_ptr(),
                        host.len() as libc::socklen_t,
                        std::ptr::null_mut(),
                        0,
                        libc::NI_NAMEREQD,
                    )
                }
            }
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: on success the buffer holds a NUL-terminated string (it was
        // zeroed and one byte longer than getnameinfo was told).
        let name = unsafe { CStr::from_ptr(host.as_ptr()) };
        name.to_str().ok().map(str::to_owned)
    }

    fn forward(&self, name: &str) -> Vec<IpAddr> {
        match (name, 0).to_socket_addrs() {
            Ok(addrs) => addrs.map(|a| canonical(a.ip())).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn in_netgroup(&self, group: &str, host: &str) -> bool {
        let (Ok(group), Ok(host)) = (CString::new(group), CString::new(host)) else { return false };
        let _one = INNETGR.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: NUL-terminated strings that outlive the call; NULL user and
        // domain mean "any", as innetgr(3) documents.
        unsafe { innetgr(group.as_ptr(), host.as_ptr(), std::ptr::null(), std::ptr::null()) == 1 }
    }

    fn netgroups_usable(&self) -> Result<(), NetgroupError> {
        netgroup_support()
    }
}

/// Why `@netgroup` rules cannot work on this system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetgroupError {
    #[error("netgroups need NSS, but {path} cannot be read: {error}")]
    Unreadable { path: &'static str, error: String },
    #[error("netgroups need a `netgroup:` line in {path} (e.g. `netgroup: files` with {file}, or nis, sss, ldap)")]
    NoLine { path: &'static str, file: &'static str },
    #[error("no usable netgroup source in {path} (`netgroup: {line}`): {why}")]
    NoSource { path: &'static str, line: String, why: String },
}

/// Whether this system can answer innetgr: /etc/nsswitch.conf names a
/// netgroup source that is there (`files` with /etc/netgroup present, or
/// another source whose `libnss_NAME.so.2` loads). glibc answers "not in
/// the group" rather than failing when there is none, so this is checked
/// when a config with `@group` rules is loaded.
pub fn netgroup_support() -> Result<(), NetgroupError> {
    let text = std::fs::read_to_string(NSSWITCH_PATH)
        .map_err(|e| NetgroupError::Unreadable { path: NSSWITCH_PATH, error: e.to_string() })?;
    check_nsswitch(&text, std::path::Path::new(NETGROUP_FILE_PATH).exists(), nss_module_loads)
}

/// `netgroup_support` on nsswitch.conf text: whether /etc/netgroup exists,
/// and whether an NSS module loads, are asked of the callers.
fn check_nsswitch(text: &str, netgroup_file: bool, loads: fn(&str) -> bool) -> Result<(), NetgroupError> {
    let line = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find_map(|l| l.strip_prefix("netgroup:"))
        .map(str::trim)
        .ok_or(NetgroupError::NoLine { path: NSSWITCH_PATH, file: NETGROUP_FILE_PATH })?;
    let mut why = Vec::new();
    // Sources are the words outside `[STATUS=action]` brackets.
    let mut depth = 0usize;
    for word in line.split_whitespace() {
        if word.starts_with('[') || depth > 0 {
            depth += word.matches('[').count();
            depth = depth.saturating_sub(word.matches(']').count());
            continue;
        }
        if word == "files" {
            if netgroup_file {
                return Ok(());
            }
            why.push(format!("`files` but {NETGROUP_FILE_PATH} does not exist"));
        } else if loads(word) {
            return Ok(());
        } else {
            why.push(format!("`{word}` but libnss_{word}.so.2 is not installed"));
        }
    }
    if why.is_empty() {
        why.push("no source named".to_string());
    }
    Err(NetgroupError::NoSource { path: NSSWITCH_PATH, line: line.to_string(), why: why.join("; ") })
}

/// Whether NSS module `name` can be loaded (then unloaded at once).
fn nss_module_loads(name: &str) -> bool {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return false;
    }
    let Ok(lib) = CString::new(format!("libnss_{name}.so.2")) else { return false };
    // SAFETY: dlopen of a NUL-terminated name; the handle is closed at once.
    unsafe {
        let handle = libc::dlopen(lib.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
    }
    true
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// A name from a reverse lookup, as rules compare it; `None` for what is not
/// a host name (a PTR record may hold anything, such as an address in text
/// form, which a forward lookup would then "confirm").
fn host_name(raw: &str) -> Option<String> {
    let name = raw.strip_suffix('.').unwrap_or(raw);
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if name.is_empty() || name.len() > HOST_NAME_BYTES_MAX || !name.chars().all(valid) || name.parse::<IpAddr>().is_ok()
    {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

/// A rule name's forward lookup.
struct Forward {
    addrs: Vec<IpAddr>,
    expires: Instant,
}

#[derive(Default)]
struct Cache {
    peers: HashMap<IpAddr, Arc<PeerNames>>,
    pending: HashMap<IpAddr, watch::Receiver<Option<Arc<PeerNames>>>>,
    forward: HashMap<String, Forward>,
}

/// The name cache of one export table (see the module docs).
pub struct HostNames {
    /// The table's plain-name rules (lowercase) and netgroups.
    hosts: Vec<String>,
    netgroups: Vec<String>,
    ttl: Duration,
    negative_ttl: Duration,
    /// How long a caller waits for a lookup (`HOST_LOOKUP_WAIT`).
    wait: Duration,
    resolver: Arc<dyn Resolve>,
    cache: Mutex<Cache>,
    lookups: Arc<Semaphore>,
}

impl HostNames {
    pub fn new(hosts: Vec<String>, netgroups: Vec<String>, ttl: Duration, resolver: Arc<dyn Resolve>) -> Self {
        HostNames {
            hosts,
            netgroups,
            ttl,
            negative_ttl: ttl.min(HOST_CACHE_NEGATIVE_TTL_MAX),
            wait: HOST_LOOKUP_WAIT,
            resolver,
            cache: Mutex::default(),
            lookups: Arc::new(Semaphore::new(LOOKUPS_CONCURRENT_MAX)),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `peer`'s names if cached and not expired; never looks anything up.
    pub fn cached(&self, peer: IpAddr) -> Option<Arc<PeerNames>> {
        let peer = canonical(peer);
        self.cache().peers.get(&peer).filter(|p| p.expires > Instant::now()).cloned()
    }

    /// `peer`'s names: from the cache, else from a lookup on the blocking
    /// pool (joining one already running for `peer`), waited for up to
    /// `HOST_LOOKUP_WAIT`. `None`: no answer yet (the wait ran out, too many
    /// addresses are pending, or the lookup failed).
    pub async fn lookup(self: &Arc<Self>, peer: IpAddr) -> Option<Arc<PeerNames>> {
        let peer = canonical(peer);
        let mut rx = {
            let mut cache = self.cache();
            if let Some(p) = cache.peers.get(&peer).filter(|p| p.expires > Instant::now()) {
                return Some(p.clone());
            }
            match cache.pending.get(&peer) {
                Some(rx) => rx.clone(),
                None if cache.pending.len() >= LOOKUPS_PENDING_MAX => {
                    tracing::debug!(%peer, "host name lookups: too many pending; no answer for now");
                    return None;
                }
                None => {
                    let (tx, rx) = watch::channel(None);
                    cache.pending.insert(peer, rx.clone());
                    tokio::spawn(self.clone().resolve(peer, tx));
                    rx
                }
            }
        };
        let names = match tokio::time::timeout(self.wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(names)) => names.clone(),
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::info!(%peer, wait = ?self.wait, "host name lookup still running; call goes on without it");
                None
            }
        };
        names
    }

    /// Runs one lookup (under the concurrency bound) and publishes it.
    async fn resolve(self: Arc<Self>, peer: IpAddr, tx: watch::Sender<Option<Arc<PeerNames>>>) {
        let permit = self.lookups.clone().acquire_owned().await;
        let this = self.clone();
        let names = tokio::task::spawn_blocking(move || this.look_up(peer)).await;
        drop(permit);
        let mut cache = self.cache();
        cache.pending.remove(&peer);
        match names {
            Ok(names) => {
                let names = Arc::new(names);
                insert_bounded(&mut cache.peers, peer, names.clone());
                drop(cache);
                tx.send_replace(Some(names));
            }
            // The lookup panicked: waiters see the sender dropped.
            Err(e) => tracing::warn!(%peer, error = %e, "host name lookup failed"),
        }
    }

    /// Every lookup `peer` needs, blocking (runs on the blocking pool).
    fn look_up(&self, peer: IpAddr) -> PeerNames {
        let now = Instant::now();
        let name = self.verified_name(peer);
        let mut expires = now + if name.is_some() { self.ttl } else { self.negative_ttl };
        let mut hosts = Vec::new();
        for rule in &self.hosts {
            let (addrs, until) = self.forward(rule, now);
            expires = expires.min(until);
            if addrs.contains(&peer) {
                hosts.push(rule.clone());
            }
        }
        let mut candidates: Vec<String> = Vec::new();
        if let Some(n) = &name {
            candidates.push(n.clone());
            if let Some((short, _)) = n.split_once('.') {
                candidates.push(short.to_string());
            }
        }
        candidates.push(peer.to_string());
        let netgroups = self
            .netgroups
            .iter()
            .filter(|g| candidates.iter().any(|c| self.resolver.in_netgroup(g, c)))
            .cloned()
            .collect();
        tracing::debug!(%peer, name = ?name, ?hosts, ?netgroups, "client host names looked up");
        PeerNames { name, hosts, netgroups, expires }
    }

    /// `peer`'s reverse name if its forward lookup gives `peer` back.
    fn verified_name(&self, peer: IpAddr) -> Option<String> {
        let raw = self.resolver.reverse(peer)?;
        let Some(name) = host_name(&raw) else {
            tracing::info!(%peer, name = %raw.escape_debug(), "client's reverse name is not a host name; ignored");
            return None;
        };
        if self.resolver.forward(&name).iter().any(|a| canonical(*a) == peer) {
            Some(name)
        } else {
            tracing::info!(%peer, %name, "client's reverse name does not resolve back to it; not used");
            None
        }
    }

    /// A rule name's addresses and until when they hold, from the cache or
    /// a fresh lookup.
    fn forward(&self, name: &str, now: Instant) -> (Vec<IpAddr>, Instant) {
        if let Some(f) = self.cache().forward.get(name).filter(|f| f.expires > now) {
            return (f.addrs.clone(), f.expires);
        }
        let addrs: Vec<IpAddr> = self.resolver.forward(name).into_iter().map(canonical).collect();
        let expires = now + if addrs.is_empty() { self.negative_ttl } else { self.ttl };
        // Rule names are the table's: as many entries as its rules at most.
        self.cache().forward.insert(name.to_string(), Forward { addrs: addrs.clone(), expires });
        (addrs, expires)
    }
}

/// Inserts, first making room when `HOST_CACHE_ENTRIES_MAX` are cached:
/// expired entries go, then the one expiring soonest.
fn insert_bounded(peers: &mut HashMap<IpAddr, Arc<PeerNames>>, peer: IpAddr, names: Arc<PeerNames>) {
    if peers.len() >= HOST_CACHE_ENTRIES_MAX && !peers.contains_key(&peer) {
        let now = Instant::now();
        peers.retain(|_, p| p.expires > now);
        if peers.len() >= HOST_CACHE_ENTRIES_MAX {
            if let Some(oldest) = peers.iter().min_by_key(|(_, p)| p.expires).map(|(a, _)| *a) {
                peers.remove(&oldest);
            }
        }
    }
    peers.insert(peer, names);
}

#[cfg(test)]
#[path = "hostnames_tests.rs"]
mod tests;
