//! Tickle ACKs and SOCK_DESTROY against the real kernel, in two network
//! namespaces each test creates and deletes: a "server" namespace holding
//! the VIP and a "client" one, joined by a veth pair. A plain Linux TCP
//! connection stands for the NFS client's.
//!
//! The old active's death is modelled by cutting the server's link, closing
//! the server's socket (its reset or FIN is lost with the link) and bringing
//! the link back: the client keeps an ESTABLISHED connection nobody answers.
//! Code runs in a namespace on a short-lived thread that calls `setns`; a
//! socket stays in the namespace it was created in, so the test thread uses
//! it afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hanfs_server::vip::sockdiag;
use hanfs_server::vip::tickle;

use crate::util::in_ns;

const VIP: [u8; 4] = [10, 77, 0, 100];
const CLIENT: [u8; 4] = [10, 77, 0, 2];
const PORT: u16 = 2049;
/// How long the client waits for the reset a tickle provokes (a bound on
/// the wait, not a claim about speed: the reset comes in milliseconds).
const RESET_WAIT_MS: u64 = 10_000;
/// The client's read timeout when showing that, untickled, nothing comes.
const QUIET_WAIT_MS: u64 = 300;
/// TCP states in a `sock_diag` dump.
const TCP_FIN_WAIT1: u8 = 4;
const TCP_TIME_WAIT: u8 = 6;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two namespaces joined by veth `ts0` (server) / `tc0` (client); deleted on drop.
struct Pair {
    server: String,
    client: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip (needs iproute2): {e}"));
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Pair {
    fn new(label: &str) -> Pair {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = |side: &str| format!("hanfs-tk-{label}-{side}-{}-{seq}", std::process::id());
        let p = Pair { server: name("s"), client: name("c") };
        ip(&["netns", "add", &p.server]);
        ip(&["netns", "add", &p.client]);
        ip(&["-n", &p.server, "link", "add", "ts0", "type", "veth", "peer", "name", "tc0", "netns", &p.client]);
        ip(&["-n", &p.server, "addr", "add", "10.77.0.1/24", "dev", "ts0"]);
        ip(&["-n", &p.server, "addr", "add", "10.77.0.100/32", "dev", "ts0"]);
        ip(&["-n", &p.client, "addr", "add", "10.77.0.2/24", "dev", "tc0"]);
        for (ns, dev) in [(&p.server, "ts0"), (&p.client, "tc0")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }

    /// Adds or deletes the VIP on the server's link (the link stays up).
    fn server_vip(&self, held: bool) {
        ip(&["-n", &self.server, "addr", if held { "replace" } else { "del" }, "10.77.0.100/32", "dev", "ts0"]);
    }

    fn server_link(&self, up: bool) {
        ip(&["-n", &self.server, "link", "set", "ts0", if up { "up" } else { "down" }]);
        if up {
            // The /32 VIP has no connected route of its own; the /24 comes back with the link.
            ip(&["-n", &self.server, "addr", "replace", "10.77.0.100/32", "dev", "ts0"]);
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn vip() -> SocketAddr {
    SocketAddr::from((VIP, PORT))
}

/// A connection from the client namespace to the VIP, both ends.
fn connect(pair: &Pair, listener: &TcpListener) -> (TcpStream, TcpStream) {
    let client = in_ns(&pair.client, || TcpStream::connect_timeout(&vip(), Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("connect to the VIP: {e}"));
    let (server, peer) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
    assert_eq!(peer.ip(), IpAddr::from(CLIENT));
    (client, server)
}

fn set_linger_zero(s: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid socket and value.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

#[test]
fn a_tickle_resets_a_client_connection_the_dead_active_left_open() {
    let pair = Pair::new("reset");
    let listener = in_ns(&pair.server, || TcpListener::bind(vip())).unwrap_or_else(|e| panic!("bind the VIP: {e}"));
    let (mut client, server) = connect(&pair, &listener);
    let client_addr = client.local_addr().unwrap_or_else(|e| panic!("client address: {e}"));

    // The active dies with its link cut: its reset never reaches the client.
    pair.server_link(false);
    set_linger_zero(&server);
    drop(server);
    drop(listener);
    pair.server_link(true);

    // Untickled, the idle client hears nothing (it would wait for ever, or
    // through its retransmissions once it sends).
    client.set_read_timeout(Some(Duration::from_millis(QUIET_WAIT_MS))).unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut buf = [0u8; 16];
    match client.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the orphaned connection answered before any tickle: {other:?}"),
    }

    // The new active (no socket for this connection; a listener again) tickles it.
    let _new_listener = in_ns(&pair.server, || TcpListener::bind(vip())).unwrap_or_else(|e| panic!("rebind: {e}"));
    let (report, error) = in_ns(&pair.server, || tickle::send_tickles(&[(vip(), client_addr)]));
    assert!(error.is_none(), "tickle failed: {error:?}");
    assert_eq!(report, tickle::TickleReport { tickled: 1, failed: 0 });

    client.set_read_timeout(Some(Duration::from_millis(RESET_WAIT_MS))).unwrap_or_else(|e| panic!("timeout: {e}"));
    match client.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected ECONNRESET after the tickle, got {other:?}"),
    }
    // And it can connect again at once.
    let again = in_ns(&pair.client, || TcpStream::connect_timeout(&vip(), Duration::from_secs(5)));
    assert!(again.is_ok(), "reconnect after the reset: {again:?}");
}

/// What a demotion relies on: it releases the VIP before it closes the
/// connections, so their FINs (or resets) have no source address to leave
/// from and the client, unaware, waits for the new active's tickle instead
/// of reconnecting at once into an address nobody holds (and then waiting
/// out its SYN backoff: 1 s, 2 s).
#[test]
fn a_connection_closed_after_the_vip_is_released_sends_the_client_nothing() {
    let pair = Pair::new("silent");
    let listener = in_ns(&pair.server, || TcpListener::bind(vip())).unwrap_or_else(|e| panic!("bind the VIP: {e}"));
    let (mut client, server) = connect(&pair, &listener);
    let (mut client2, mut server2) = connect(&pair, &listener);
    // One closes with unread data (a reset), one plainly (a FIN).
    client2.write_all(b"a call never read").unwrap_or_else(|e| panic!("write: {e}"));
    std::thread::sleep(Duration::from_millis(50));

    pair.server_vip(false);
    drop(server);
    let _ = server2.flush();
    drop(server2);
    drop(listener);

    let mut buf = [0u8; 16];
    for c in [&mut client, &mut client2] {
        c.set_read_timeout(Some(Duration::from_millis(QUIET_WAIT_MS))).unwrap_or_else(|e| panic!("timeout: {e}"));
        match c.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("the client heard the close of a connection whose address was gone: {other:?}"),
        }
    }
}

#[test]
fn sock_destroy_removes_orphaned_fin_wait_and_time_wait_sockets_on_the_vip() {
    let pair = Pair::new("destroy");
    let listener = in_ns(&pair.server, || TcpListener::bind(vip())).unwrap_or_else(|e| panic!("bind the VIP: {e}"));

    // TIME-WAIT on the server: it closes first, the client closes too.
    let (mut c1, s1) = connect(&pair, &listener);
    drop(s1);
    let mut buf = [0u8; 16];
    c1.set_read_timeout(Some(Duration::from_millis(RESET_WAIT_MS))).unwrap_or_else(|e| panic!("timeout: {e}"));
    assert!(matches!(c1.read(&mut buf), Ok(0)), "the client sees the server's FIN");
    drop(c1);

    // FIN-WAIT-1 orphan: the link is cut, the server writes and closes (its
    // data and FIN stay unacknowledged), as a killed active's sockets do.
    let (c2, mut s2) = connect(&pair, &listener);
    pair.server_link(false);
    s2.write_all(b"a reply that never arrives").unwrap_or_else(|e| panic!("write: {e}"));
    let _ = s2.shutdown(Shutdown::Write);
    drop(s2);
    drop(listener);

    let states = |pair: &Pair| -> Vec<u8> {
        let all = in_ns(&pair.server, || sockdiag::dump_tcp(libc::AF_INET as u8))
            .unwrap_or_else(|e| panic!("sock_diag dump: {e}"));
        all.iter().filter(|s| s.local == IpAddr::from(VIP)).map(|s| s.state).collect()
    };
    // The TIME-WAIT may take a moment to appear (the client's FIN in flight).
    let mut before = states(&pair);
    for _ in 0..50 {
        if before.contains(&TCP_TIME_WAIT) && before.contains(&TCP_FIN_WAIT1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        before = states(&pair);
    }
    assert!(before.contains(&TCP_TIME_WAIT), "no TIME-WAIT socket on the VIP: {before:?}");
    assert!(before.contains(&TCP_FIN_WAIT1), "no FIN-WAIT-1 socket on the VIP: {before:?}");

    let report = in_ns(&pair.server, || sockdiag::destroy_tcp_on(IpAddr::from(VIP)));
    let report = report.unwrap_or_else(|e| panic!("SOCK_DESTROY: {e}"));
    assert_eq!(report.found, before.len() as u64, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(states(&pair), Vec::<u8>::new(), "sockets left on the VIP after {report:?}");
    drop(c2);
}
