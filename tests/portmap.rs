//! portmap v2 over TCP and UDP: GETPORT, DUMP, SET, UNSET, CALLIT's silence,
//! and rpcbind v3/v4 answered with PROG_MISMATCH(2, 2). SET and UNSET only
//! from a reserved source port on loopback (the tests run as root to bind
//! one), never of hanfs' own mappings, and a UDP DUMP bounded in size.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hanfs_server::portmap::{PMAP_FOREIGN_ENTRIES_MAX, PMAP_UDP_DUMP_BYTES_MAX};
use nfs3_client::PortmapperClient;

use crate::util::*;

const PMAP: u32 = 100_000;
const TCP: u32 = 6;
const UDP: u32 = 17;

fn mapping_args(prog: u32, vers: u32, prot: u32, port: u32) -> Vec<u8> {
    let mut a = Vec::new();
    for w in [prog, vers, prot, port] {
        put_u32(&mut a, w);
    }
    a
}

/// Call portmap `proc_` with `args` over TCP or UDP; the result body.
fn pmap(s: &TestServer, udp: bool, proc_: u32, args: &[u8]) -> Vec<u8> {
    let msg = call_msg(0x77, PMAP, 2, proc_, CRED_NONE, args);
    let reply = if udp { udp_call(s.portmap_port, &msg) } else { tcp_call(s.portmap_port, &msg) };
    match parse_reply(&reply.expect("portmap answered")) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => body,
        other => panic!("portmap proc {proc_}: {other:?}"),
    }
}

/// A UDP socket on 127.0.0.1 bound to a reserved port (needs root).
fn reserved_udp() -> UdpSocket {
    for local in PRIVILEGED_PORT_RANGE.0..=PRIVILEGED_PORT_RANGE.1 {
        if let Ok(s) = UdpSocket::bind((Ipv4Addr::LOCALHOST, local)) {
            s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
            return s;
        }
    }
    panic!("no reserved UDP source port available (tests must run as root)");
}

/// A TCP connection to 127.0.0.1:`port` from a reserved port (needs root).
fn reserved_tcp(port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for local in PRIVILEGED_PORT_RANGE.0..=PRIVILEGED_PORT_RANGE.1 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, local))).is_err() {
            continue;
        }
        if let Ok(stream) = rt.block_on(socket.connect(addr)) {
            let s = stream.into_std().expect("std stream");
            s.set_nonblocking(false).expect("blocking");
            s.set_read_timeout(Some(Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
            return s;
        }
    }
    panic!("no reserved TCP source port available (tests must run as root)");
}

/// Call portmap `proc_` from a reserved source port on loopback; the result body.
fn pmap_root(s: &TestServer, udp: bool, proc_: u32, args: &[u8]) -> Vec<u8> {
    let msg = call_msg(0x78, PMAP, 2, proc_, CRED_NONE, args);
    let reply = if udp {
        let sock = reserved_udp();
        sock.send_to(&msg, (Ipv4Addr::LOCALHOST, s.portmap_port)).expect("send");
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).expect("portmap answered");
        buf.truncate(n);
        buf
    } else {
        let mut conn = reserved_tcp(s.portmap_port);
        conn.write_all(&frame(&msg)).expect("send");
        read_record(&mut conn).expect("portmap answered")
    };
    match parse_reply(&reply) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => body,
        other => panic!("portmap proc {proc_}: {other:?}"),
    }
}

fn getport(s: &TestServer, udp: bool, prog: u32, vers: u32, prot: u32) -> u32 {
    words(&pmap(s, udp, 3, &mapping_args(prog, vers, prot, 0)))[0]
}

fn dump(s: &TestServer, udp: bool) -> Vec<[u32; 4]> {
    let w = words(&pmap(s, udp, 4, &[]));
    let mut out = Vec::new();
    let mut i = 0;
    while w[i] == 1 {
        out.push([w[i + 1], w[i + 2], w[i + 3], w[i + 4]]);
        i += 5;
    }
    assert_eq!(i + 1, w.len(), "list ends with FALSE and nothing after");
    out
}

#[test]
fn getport_and_dump_list_our_programs() {
    let export = tempdir("pmap");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    for udp in [false, true] {
        assert_eq!(getport(&s, udp, 100_003, 3, TCP), u32::from(s.nfs_port));
        assert_eq!(getport(&s, udp, 100_005, 3, UDP), u32::from(s.mount_port));
        assert_eq!(getport(&s, udp, 100_005, 1, TCP), u32::from(s.mount_port));
        assert_eq!(getport(&s, udp, PMAP, 2, UDP), u32::from(s.portmap_port));
        assert_eq!(getport(&s, udp, 100_021, 4, TCP), u32::from(s.nlm_port), "NLM v4");
        assert_eq!(getport(&s, udp, 100_021, 4, UDP), u32::from(s.nlm_port), "NLM v4");
        assert_eq!(getport(&s, udp, 100_021, 3, TCP), 0, "only NLM v4 is registered");
        assert_eq!(getport(&s, udp, 100_024, 1, UDP), u32::from(s.nsm_port), "NSM v1");
        let d = dump(&s, udp);
        assert!(d.contains(&[100_003, 3, TCP, u32::from(s.nfs_port)]), "{d:?}");
        assert!(d.contains(&[100_005, 3, UDP, u32::from(s.mount_port)]), "{d:?}");
        assert!(d.contains(&[PMAP, 2, TCP, u32::from(s.portmap_port)]), "{d:?}");
        assert!(d.contains(&[100_024, 1, TCP, u32::from(s.nsm_port)]), "{d:?}");
        assert_eq!(d.len(), 11, "{d:?}");
    }
}

#[test]
fn set_and_unset_over_tcp_and_udp() {
    let export = tempdir("pmap-set");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    for (udp, prog) in [(false, 300_001), (true, 300_002)] {
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(prog, 1, TCP, 4000))), vec![1], "SET");
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(prog, 1, UDP, 4001))), vec![1], "SET udp");
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(prog, 1, TCP, 4002))), vec![0], "SET of a taken key");
        assert_eq!(getport(&s, udp, prog, 1, TCP), 4000);
        assert_eq!(words(&pmap(&s, udp, 2, &mapping_args(prog, 1, 0, 0))), vec![0], "UNSET, unprivileged port");
        assert_eq!(getport(&s, udp, prog, 1, TCP), 4000);
        assert_eq!(words(&pmap_root(&s, udp, 2, &mapping_args(prog, 1, 0, 0))), vec![1], "UNSET");
        assert_eq!(getport(&s, udp, prog, 1, TCP), 0);
        assert_eq!(getport(&s, udp, prog, 1, UDP), 0, "UNSET removes every protocol");
        assert_eq!(words(&pmap_root(&s, udp, 2, &mapping_args(prog, 1, 0, 0))), vec![0], "UNSET of nothing");
    }
}

/// The attack of issue 11: an unprivileged local user removes the NFS
/// mapping, repoints MOUNT, fills the table with bogus entries and then draws
/// a large UDP DUMP reply. Each step is refused or bounded.
#[test]
fn unprivileged_and_bogus_set_unset_are_refused() {
    let export = tempdir("pmap-attack");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    let nfs = u32::from(s.nfs_port);
    let mount = u32::from(s.mount_port);
    for udp in [false, true] {
        // From an unprivileged port: nothing changes.
        assert_eq!(words(&pmap(&s, udp, 1, &mapping_args(300_003, 1, TCP, 4000))), vec![0], "SET, unprivileged");
        assert_eq!(getport(&s, udp, 300_003, 1, TCP), 0);
        assert_eq!(words(&pmap(&s, udp, 2, &mapping_args(100_003, 3, 0, 0))), vec![0], "UNSET NFS, unprivileged");
        // From a reserved port: hanfs' own mappings still stay.
        assert_eq!(words(&pmap_root(&s, udp, 2, &mapping_args(100_003, 3, 0, 0))), vec![0], "UNSET of hanfs' NFS");
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(100_005, 3, UDP, 4000))), vec![0], "SET over MOUNT");
        assert_eq!(getport(&s, udp, 100_003, 3, TCP), nfs);
        assert_eq!(getport(&s, udp, 100_005, 3, UDP), mount);
        // Only TCP and UDP, ports 1..=65535.
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(300_003, 1, TCP, 70_000))), vec![0], "port 70000");
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(300_003, 1, 99, 4000))), vec![0], "protocol 99");
        assert_eq!(words(&pmap_root(&s, udp, 1, &mapping_args(300_003, 1, TCP, 0))), vec![0], "port 0");
        assert_eq!(dump(&s, udp).len(), 11, "nothing was added");
    }
    // Fill the table with foreign mappings (one reserved UDP socket for all).
    let sock = reserved_udp();
    let set_from = |prog: u32| {
        let msg = call_msg(prog, PMAP, 2, 1, CRED_NONE, &mapping_args(prog, 1, UDP, 5000));
        sock.send_to(&msg, (Ipv4Addr::LOCALHOST, s.portmap_port)).expect("send");
        let mut buf = vec![0u8; 1024];
        let n = sock.recv(&mut buf).expect("answered");
        buf.truncate(n);
        match parse_reply(&buf) {
            RpcReply::Accepted { stat: SUCCESS, body, .. } => words(&body),
            other => panic!("SET: {other:?}"),
        }
    };
    for i in 0..PMAP_FOREIGN_ENTRIES_MAX as u32 {
        assert_eq!(set_from(400_000 + i), vec![1], "SET {i}");
    }
    assert_eq!(set_from(500_000), vec![0], "SET beyond the bound");
    // A UDP DUMP stays within its bound and lists hanfs' programs; TCP lists all.
    let msg = call_msg(0x79, PMAP, 2, 4, CRED_NONE, &[]);
    let reply = udp_call(s.portmap_port, &msg).expect("DUMP answered");
    match parse_reply(&reply) {
        RpcReply::Accepted { stat: SUCCESS, body, .. } => {
            assert!(body.len() <= PMAP_UDP_DUMP_BYTES_MAX, "{} bytes", body.len())
        }
        other => panic!("DUMP: {other:?}"),
    }
    let listed = dump(&s, true);
    assert!(listed.contains(&[100_003, 3, TCP, nfs]), "{listed:?}");
    assert!(listed.contains(&[100_005, 3, UDP, mount]), "{listed:?}");
    assert!(listed.len() < 11 + PMAP_FOREIGN_ENTRIES_MAX, "truncated: {}", listed.len());
    assert_eq!(dump(&s, false).len(), 11 + PMAP_FOREIGN_ENTRIES_MAX);
}

#[test]
fn rpcbind_v3_and_v4_get_prog_mismatch_2_2() {
    let export = tempdir("pmap-v3");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    // GETADDR (proc 3) with an rpcb argument; the version is refused before decoding.
    for vers in [3, 4] {
        let msg = call_msg(0x99, PMAP, vers, 3, CRED_NONE, &[0; 20]);
        for reply in [tcp_call(s.portmap_port, &msg), udp_call(s.portmap_port, &msg)] {
            assert_eq!(
                parse_reply(&reply.expect("answered")),
                RpcReply::Accepted { xid: 0x99, stat: PROG_MISMATCH, body: [0, 0, 0, 2, 0, 0, 0, 2].to_vec() }
            );
        }
    }
}

#[test]
fn callit_is_answered_with_silence() {
    let export = tempdir("pmap-callit");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    let mut args = Vec::new();
    for w in [100_005u32, 3, 0] {
        put_u32(&mut args, w);
    }
    put_opaque(&mut args, &[]);
    assert_eq!(udp_call_wait(s.portmap_port, &call_msg(0x42, PMAP, 2, 5, CRED_NONE, &args), 1000), None);
    // Still served afterwards.
    assert_eq!(getport(&s, true, 100_003, 3, TCP), u32::from(s.nfs_port));
}

#[tokio::test]
async fn nfs3_client_portmapper_finds_the_ports() {
    let export = tempdir("pmap-client");
    let s = TestServer::start(export.path(), "*(rw,insecure)");
    let mut pm = PortmapperClient::new(tokio_connect(s.portmap_port, false).await);
    pm.null().await.expect("NULL");
    assert_eq!(pm.getport(100_003, 3, TCP).await.expect("GETPORT"), s.nfs_port);
    assert_eq!(pm.getport(100_005, 3, TCP).await.expect("GETPORT"), s.mount_port);
    assert_eq!(pm.getport(100_021, 4, TCP).await.expect("GETPORT"), s.nlm_port);
    assert_eq!(pm.dump().await.expect("DUMP").len(), 11);
}
