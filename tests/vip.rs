//! The VIP against the real kernel, inside a network namespace each test
//! creates (and deletes on drop, also when the test panics): a veth pair
//! `vipa` (where the VIP is claimed) and `vipb` (its peer, where the
//! announcements are captured with an AF_PACKET socket). No frame leaves the
//! namespace.
//!
//! How the code runs inside the namespace: on a dedicated OS thread that calls
//! `setns(CLONE_NEWNET)` and then builds its own current-thread tokio runtime.
//! A network namespace switch applies to the calling thread only, and a socket
//! belongs to the namespace its creator was in when it was created. On this
//! thread, the netlink socket, the raw packet socket, the capture socket and
//! the bind checks all land in the test namespace, no task of another test
//! (or of a shared multi-thread runtime) ever runs there, and the thread ends
//! afterwards, so the switch cannot leak. (`setns` on a tokio worker would
//! move every later task scheduled on that worker into the namespace.)

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use hanfs_server::vip::{Vip, VipConfig, VipError, ANNOUNCE_COUNT};

/// Frames read from a capture socket at most (the namespace is quiet; this
/// only bounds the loop).
const CAPTURE_FRAMES_MAX: u32 = 256;
/// A capture read gives up after this long without a frame.
const CAPTURE_IDLE_MS: i64 = 300;
const FRAME_BYTES_MAX: usize = 2048;
pub(crate) const MAC_A: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0xa1];
pub(crate) const MAC_B: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0xb1];
pub(crate) const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

static NETNS_SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by one test; deleted on drop.
pub(crate) struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace with the veth pair up; panics with the reason
    /// when `ip netns` cannot run here (needs root and iproute2).
    pub(crate) fn with_veth(label: &str) -> NetNs {
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("{label}: `ip netns list` failed (needs root): {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => panic!("{label}: cannot run `ip` (Debian package iproute2; ./test.sh installs it): {e}"),
        }
        let seq = NETNS_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("hanfs-vip-{}-{}-{}", label, std::process::id(), seq);
        run(&["netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "add", "vipa", "address", &mac_text(&MAC_A), "type", "veth", "peer", "name", "vipb"]);
        ns.ip(&["link", "set", "vipb", "address", &mac_text(&MAC_B)]);
        ns.ip(&["link", "set", "vipa", "up"]);
        ns.ip(&["link", "set", "vipb", "up"]);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args...`; panics with its stderr on failure.
    pub(crate) fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run(&all)
    }

    /// `ip -o addr show dev <dev>` in the namespace.
    pub(crate) fn addrs(&self, dev: &str) -> String {
        self.ip(&["-o", "addr", "show", "dev", dev])
    }

    /// Runs `f` on a fresh thread inside this namespace, with a current-thread
    /// runtime. A panic in `f` is re-raised here (and the namespace still
    /// dropped by the caller's guard).
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                enter_netns(&path);
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("current-thread runtime");
                f(&rt)
            });
            match worker.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = Command::new("ip").args(["netns", "del", &self.name]).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("could not delete network namespace {}: {out:?}", self.name);
        }
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Moves the calling thread (only) into the namespace at `path`.
fn enter_netns(path: &str) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
}

/// An AF_PACKET socket receiving frames of `ethertype` arriving on `dev`, in
/// the calling thread's namespace, with a receive timeout of CAPTURE_IDLE_MS.
pub(crate) fn capture(dev: &str, ethertype: u16) -> OwnedFd {
    let name = std::ffi::CString::new(dev).expect("device name");
    // SAFETY: plain syscalls with valid arguments; results checked.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        assert_ne!(index, 0, "if_nametoindex {dev}: {}", io::Error::last_os_error());
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(ethertype.to_be()));
        assert!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ethertype.to_be();
        addr.sll_ifindex = index as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "bind packet socket: {}", io::Error::last_os_error());
        let tv = libc::timeval { tv_sec: 0, tv_usec: CAPTURE_IDLE_MS * 1000 };
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", io::Error::last_os_error());
        fd
    }
}

/// Every frame queued on `fd`, until it stays idle for CAPTURE_IDLE_MS.
pub(crate) fn drain(fd: &OwnedFd) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..CAPTURE_FRAMES_MAX {
        let mut buf = [0u8; FRAME_BYTES_MAX];
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "recv: {e}");
            break;
        }
        frames.push(buf[..n as usize].to_vec());
    }
    frames
}

/// The fields of an ARP request frame that a gratuitous ARP is judged by.
#[derive(Debug)]
pub(crate) struct ArpRequest {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

/// Parses an Ethernet/IPv4 ARP request (offsets from RFC 826); None for
/// anything else.
fn arp_request(f: &[u8]) -> Option<ArpRequest> {
    let f = f.get(..42)?;
    if f[12..14] != [0x08, 0x06] || f[14..22] != [0, 1, 0x08, 0x00, 6, 4, 0, 1] {
        return None;
    }
    Some(ArpRequest {
        eth_dst: f[0..6].try_into().ok()?,
        eth_src: f[6..12].try_into().ok()?,
        sender_mac: f[22..28].try_into().ok()?,
        sender_ip: Ipv4Addr::new(f[28], f[29], f[30], f[31]),
        target_ip: Ipv4Addr::new(f[38], f[39], f[40], f[41]),
    })
}

/// The gratuitous ARP requests among `frames`: sender IP == target IP.
pub(crate) fn gratuitous(frames: &[Vec<u8>]) -> Vec<ArpRequest> {
    frames.iter().filter_map(|f| arp_request(f)).filter(|a| a.sender_ip == a.target_ip).collect()
}

/// Source MAC and target of an ICMPv6 Neighbor Advertisement with the
/// Override flag; None for anything else.
fn neighbor_advert(f: &[u8]) -> Option<([u8; 6], Ipv6Addr, [u8; 6])> {
    let icmp = f.get(54..)?;
    if f[12..14] != [0x86, 0xdd] || f[20] != 58 || icmp.len() < 32 || icmp[0] != 136 {
        return None;
    }
    assert_eq!(f[21], 255, "hop limit 255");
    assert_eq!(icmp[4] & 0x20, 0x20, "Override flag set");
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let tlla: [u8; 6] = icmp[26..32].try_into().ok()?;
    assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
    Some((f[6..12].try_into().ok()?, Ipv6Addr::from(target), tlla))
}

fn vip(interface: &str, addr: &str, prefix: u8) -> Vip {
    Vip::new(VipConfig { interface: interface.into(), addr: addr.parse().expect("address"), prefix, device: None })
        .expect("valid VIP config")
}

pub(crate) fn can_bind(addr: IpAddr) -> bool {
    TcpListener::bind(SocketAddr::new(addr, 0)).is_ok()
}

#[test]
fn ipv4_claim_adds_announces_and_release_removes() {
    let ns = NetNs::with_veth("v4");
    let v = vip("vipa", "10.77.0.10", 24);
    let addr: IpAddr = "10.77.0.10".parse().expect("address");
    assert!(!ns.addrs("vipa").contains("10.77.0.10"));

    let (frames, held, bindable) = ns.run(|rt| {
        let cap = capture("vipb", ETH_P_ARP);
        assert!(!rt.block_on(v.held()));
        assert!(!can_bind(addr), "VIP not bindable before claim");
        rt.block_on(v.claim()).expect("claim");
        (drain(&cap), rt.block_on(v.held()), can_bind(addr))
    });
    assert!(held, "held() after claim");
    assert!(bindable, "a listener can bind the VIP after claim");
    assert!(ns.addrs("vipa").contains("inet 10.77.0.10/24"), "{}", ns.addrs("vipa"));
    assert!(!ns.addrs("vipb").contains("10.77.0.10"));

    let garps = gratuitous(&frames);
    assert_eq!(garps.len(), ANNOUNCE_COUNT as usize, "one gratuitous ARP per announcement: {frames:?}");
    for a in &garps {
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 77, 0, 10), "sender IP is the VIP: {a:?}");
        assert_eq!(a.target_ip, Ipv4Addr::new(10, 77, 0, 10), "target IP is the VIP: {a:?}");
        assert_eq!(a.sender_mac, MAC_A, "sender MAC is vipa's: {a:?}");
        assert_eq!(a.eth_src, MAC_A, "Ethernet source is vipa's: {a:?}");
        assert_eq!(a.eth_dst, [0xff; 6], "broadcast: {a:?}");
    }

    // Claim again: idempotent, and it announces again.
    let again = ns.run(|rt| {
        let cap = capture("vipb", ETH_P_ARP);
        rt.block_on(v.claim()).expect("second claim");
        gratuitous(&drain(&cap)).len()
    });
    assert_eq!(again, ANNOUNCE_COUNT as usize);
    assert_eq!(ns.addrs("vipa").matches("10.77.0.10").count(), 1, "still one address");

    let (held, bindable) = ns.run(|rt| {
        rt.block_on(v.release()).expect("release");
        rt.block_on(v.release()).expect("second release (absent is fine)");
        (rt.block_on(v.held()), can_bind(addr))
    });
    assert!(!held, "held() after release");
    assert!(!bindable, "VIP not bindable after release");
    assert!(!ns.addrs("vipa").contains("10.77.0.10"), "{}", ns.addrs("vipa"));
}

#[test]
fn ipv6_claim_is_usable_at_once_and_sends_unsolicited_na() {
    let ns = NetNs::with_veth("v6");
    let v = vip("vipa", "2001:db8:77::10", 64);
    let addr: IpAddr = "2001:db8:77::10".parse().expect("address");

    let (frames, held, bindable) = ns.run(|rt| {
        let cap = capture("vipb", ETH_P_IPV6);
        rt.block_on(v.claim()).expect("claim");
        // No duplicate address detection: bindable right away, not tentative.
        let bindable = can_bind(addr);
        (drain(&cap), rt.block_on(v.held()), bindable)
    });
    assert!(held);
    assert!(bindable, "the VIP is not left tentative");
    let shown = ns.addrs("vipa");
    let line = shown.lines().find(|l| l.contains("inet6 2001:db8:77::10/64"));
    let line = line.unwrap_or_else(|| panic!("VIP not on vipa: {shown}"));
    assert!(!line.contains("tentative"), "{line}");

    let nas: Vec<_> = frames.iter().filter_map(|f| neighbor_advert(f)).filter(|n| n.1 == addr).collect();
    assert_eq!(nas.len(), ANNOUNCE_COUNT as usize, "one NA per announcement");
    for (src, _, tlla) in &nas {
        assert_eq!(*src, MAC_A);
        assert_eq!(*tlla, MAC_A);
    }

    let held = ns.run(|rt| {
        rt.block_on(v.release()).expect("release");
        rt.block_on(v.held())
    });
    assert!(!held);
    assert!(!ns.addrs("vipa").contains("2001:db8:77::10"));
}

#[test]
fn loopback_mode_adds_and_removes_without_announcing() {
    let ns = NetNs::with_veth("lo");
    // Not in 127.0.0.0/8, which is local as a whole: only the holder of this
    // address can bind it, as the cluster tests need.
    let v = vip("lo", "10.77.2.1", 32);
    let addr: IpAddr = "10.77.2.1".parse().expect("address");
    let (arp_frames, held, bindable) = ns.run(|rt| {
        let cap = capture("lo", ETH_P_ARP);
        assert!(!can_bind(addr));
        rt.block_on(v.claim()).expect("claim on lo");
        (drain(&cap).len(), rt.block_on(v.held()), can_bind(addr))
    });
    assert_eq!(arp_frames, 0, "nothing announced on loopback");
    assert!(held);
    assert!(bindable);
    assert!(ns.addrs("lo").contains("inet 10.77.2.1/32"), "{}", ns.addrs("lo"));
    let (held, bindable) = ns.run(|rt| {
        rt.block_on(v.release()).expect("release on lo");
        (rt.block_on(v.held()), can_bind(addr))
    });
    assert!(!held);
    assert!(!bindable);
    assert!(!ns.addrs("lo").contains("10.77.2.1"));
}

#[test]
fn release_removes_the_address_whatever_its_prefix() {
    let ns = NetNs::with_veth("pfx");
    // Added by hand with two other prefixes; the config says /24.
    ns.ip(&["addr", "add", "10.77.5.10/32", "dev", "vipa"]);
    ns.ip(&["addr", "add", "10.77.5.10/16", "dev", "vipa"]);
    let v = vip("vipa", "10.77.5.10", 24);
    let held = ns.run(|rt| {
        assert!(rt.block_on(v.held()), "held() sees an address with another prefix");
        rt.block_on(v.release()).expect("release");
        rt.block_on(v.held())
    });
    assert!(!held);
    assert!(!ns.addrs("vipa").contains("10.77.5.10"), "{}", ns.addrs("vipa"));
}

#[test]
fn claim_and_release_from_a_multi_thread_runtime() {
    // The node runs on a multi-thread runtime, where the netlink driver task
    // may run on another worker than the caller. Workers started from the
    // namespace thread inherit its namespace.
    let ns = NetNs::with_veth("mt");
    let v = vip("vipa", "10.77.3.10", 24);
    let (claimed, garps, released) = ns.run(|_| {
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("multi-thread runtime");
        let cap = capture("vipb", ETH_P_ARP);
        mt.block_on(async {
            v.claim().await.expect("claim");
            let claimed = v.held().await;
            let garps = gratuitous(&drain(&cap)).len();
            v.release().await.expect("release");
            (claimed, garps, !v.held().await)
        })
    });
    assert!(claimed);
    assert_eq!(garps, ANNOUNCE_COUNT as usize);
    assert!(released);
    assert!(!ns.addrs("vipa").contains("10.77.3.10"));
}

#[test]
fn outside_a_runtime_is_an_error_not_a_panic() {
    let v = vip("lo", "10.77.4.1", 32);
    // A future polled by hand, with no tokio runtime: claim must fail cleanly
    // before touching any interface.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut claim = std::pin::pin!(v.claim());
    match claim.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Err(VipError::Netlink { .. })) => {}
        other => panic!("claim outside a runtime: {other:?}"),
    }
}

#[test]
fn errors_name_the_problem() {
    let ns = NetNs::with_veth("err");
    ns.run(|rt| {
        let missing = vip("nosuch0", "10.77.1.10", 24);
        match rt.block_on(missing.claim()) {
            Err(VipError::InterfaceMissing { interface }) => assert_eq!(interface, "nosuch0"),
            other => panic!("claim on a missing interface: {other:?}"),
        }
        assert!(!rt.block_on(missing.held()));
        rt.block_on(missing.release()).expect("release with the interface gone is a no-op");
    });

    ns.ip(&["link", "set", "vipa", "down"]);
    let down = vip("vipa", "10.77.1.10", 24);
    ns.run(|rt| match rt.block_on(down.claim()) {
        Err(VipError::InterfaceDown { interface }) => assert_eq!(interface, "vipa"),
        other => panic!("claim on a down interface: {other:?}"),
    });
    assert!(!ns.addrs("vipa").contains("10.77.1.10"), "nothing added on a down interface");
    ns.ip(&["link", "set", "vipa", "up"]);

    // Without CAP_NET_ADMIN (dropped on this thread only) the address change
    // is refused and reported as a permission problem.
    ns.run(|rt| {
        keep_only_capabilities(0);
        match rt.block_on(down.claim()) {
            Err(VipError::Permission { op, interface }) => {
                assert_eq!(interface, "vipa");
                assert_eq!(op, "address add");
            }
            other => panic!("claim without capabilities: {other:?}"),
        }
    });
    assert!(!ns.addrs("vipa").contains("10.77.1.10"));

    // With CAP_NET_ADMIN but without CAP_NET_RAW the address is added and the
    // announcement is refused: the error says which step failed.
    ns.run(|rt| {
        keep_only_capabilities(1 << CAP_NET_ADMIN);
        match rt.block_on(down.claim()) {
            Err(VipError::Permission { op, .. }) => assert_eq!(op, "announce"),
            other => panic!("claim without CAP_NET_RAW: {other:?}"),
        }
        assert!(rt.block_on(down.held()), "the address step succeeded");
        rt.block_on(down.release()).expect("release needs only CAP_NET_ADMIN");
    });
    assert!(!ns.addrs("vipa").contains("10.77.1.10"));

    match Vip::new(VipConfig {
        interface: "vipa".into(),
        addr: "10.0.0.1".parse().expect("addr"),
        prefix: 33,
        device: None,
    }) {
        Err(VipError::Prefix { prefix: 33, max: 32, .. }) => {}
        other => panic!("prefix 33 for IPv4: {other:?}"),
    }
}

const CAP_NET_ADMIN: u32 = 12;

/// Sets the calling thread's effective and permitted capability sets to
/// `caps` (bits below 32) and empties the inheritable set. Capabilities are
/// per thread on Linux, so the rest of the test process keeps its own.
fn keep_only_capabilities(caps: u32) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [
        Data { effective: caps, permitted: caps, inheritable: 0 },
        Data { effective: 0, permitted: 0, inheritable: 0 },
    ];
    // SAFETY: header and data have the kernel's layout for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", io::Error::last_os_error());
}
