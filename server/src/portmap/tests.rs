//! The portmap handlers called directly with a `Call`: who may SET and UNSET,
//! and the size of a DUMP over UDP.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use nfs3_types::portmap::{IPPROTO_TCP, IPPROTO_UDP};

use super::*;
use crate::rpc::program::{Cred, Handler};

fn m(prog: u32, vers: u32, prot: u32, port: u32) -> mapping {
    mapping { prog, vers, prot, port }
}

fn call_from(peer: SocketAddr, transport: Transport) -> Call {
    Call { peer, xid: 1, cred: Cred::None, transport, intent_ms: None }
}

fn local(port: u16) -> Call {
    call_from(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Transport::Udp)
}

fn args(m: mapping) -> Vec<u8> {
    [m.prog, m.vers, m.prot, m.port].iter().flat_map(|w| w.to_be_bytes()).collect()
}

async fn answer(handler: Handler<Table>, table: &Arc<Table>, call: Call, m: mapping) -> bool {
    let reply = handler(table.clone(), call, args(m).into()).await.map_err(|e| format!("{e:?}")).unwrap();
    let mut r = Reader::new(&reply.body);
    let b = r.bool().unwrap();
    r.finish().unwrap();
    b
}

/// A table with hanfs' NFS v3 (TCP) registered, as the node does.
fn with_nfs() -> Arc<Table> {
    let t = Arc::new(Table::default());
    t.set_own(m(100_003, 3, IPPROTO_TCP, 2049));
    t
}

#[tokio::test]
async fn set_and_unset_need_a_reserved_port_on_loopback() {
    let t = with_nfs();
    let new = m(300_000, 1, IPPROTO_TCP, 4000);
    assert!(!answer(set, &t, local(40_000), new).await, "unprivileged port");
    assert!(!answer(set, &t, local(PRIVILEGED_PORT_END), new).await, "1024 is not reserved");
    let remote = call_from(SocketAddr::from((Ipv4Addr::new(10, 0, 0, 1), 700)), Transport::Udp);
    assert!(!answer(set, &t, remote, new).await, "reserved port, but remote");
    assert_eq!(t.getport(300_000, 1, IPPROTO_TCP), 0);
    assert_eq!(t.refused(), 3);

    assert!(answer(set, &t, local(700), new).await, "root on this host");
    let v6 = call_from(SocketAddr::from((Ipv6Addr::LOCALHOST, 701)), Transport::Tcp);
    assert!(answer(set, &t, v6, m(300_000, 1, IPPROTO_UDP, 4001)).await, "::1 is loopback too");
    assert_eq!(t.getport(300_000, 1, IPPROTO_TCP), 4000);
    assert!(!answer(unset, &t, local(40_000), new).await, "UNSET from an unprivileged port");
    assert_eq!(t.getport(300_000, 1, IPPROTO_TCP), 4000);
    assert!(answer(unset, &t, local(702), new).await, "any root caller may unset a foreign mapping");
    assert_eq!(t.getport(300_000, 1, IPPROTO_UDP), 0);
    assert_eq!(t.refused(), 4);
}

#[tokio::test]
async fn hanfs_own_and_bad_mappings_are_refused() {
    let t = with_nfs();
    assert!(!answer(unset, &t, local(700), m(100_003, 3, 0, 0)).await, "UNSET of hanfs' NFS");
    assert!(!answer(set, &t, local(700), m(100_003, 3, IPPROTO_TCP, 4000)).await, "SET over hanfs' NFS");
    assert!(!answer(set, &t, local(700), m(100_003, 3, IPPROTO_UDP, 4000)).await, "SET beside hanfs' NFS");
    assert_eq!(t.getport(100_003, 3, IPPROTO_TCP), 2049);
    assert_eq!(t.getport(100_003, 3, IPPROTO_UDP), 0);
    assert!(!answer(set, &t, local(700), m(300_000, 1, IPPROTO_TCP, 70_000)).await, "port 70000");
    assert!(!answer(set, &t, local(700), m(300_000, 1, 99, 4000)).await, "protocol 99");
    assert!(!answer(set, &t, local(700), m(300_000, 1, IPPROTO_TCP, 0)).await, "port 0");
    assert_eq!(t.dump().len(), 1);
    assert_eq!(t.refused(), 0, "refusals for what was asked are not counted as sender refusals");
}

/// The decoded (prog, vers, prot, port) entries of a pmaplist, checking its form.
fn entries(body: &[u8]) -> Vec<mapping> {
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while r.bool().unwrap() {
        out.push(m(r.u32().unwrap(), r.u32().unwrap(), r.u32().unwrap(), r.u32().unwrap()));
    }
    r.finish().unwrap();
    out
}

#[tokio::test]
async fn udp_dump_is_bounded_and_lists_hanfs_own_first() {
    let t = Arc::new(Table::default());
    for prog in 0..11 {
        t.set_own(m(200_000 + prog, 1, IPPROTO_TCP, 2000));
    }
    for i in 0..PMAP_FOREIGN_ENTRIES_MAX as u32 {
        assert!(answer(set, &t, local(700), m(100 + i, 1, IPPROTO_UDP, 3000)).await);
    }
    assert!(!answer(set, &t, local(700), m(99, 1, IPPROTO_UDP, 3000)).await, "beyond the bound");

    let udp = dump(t.clone(), local(700), Vec::new().into()).await.map_err(|e| format!("{e:?}")).unwrap().body;
    assert!(udp.len() <= PMAP_UDP_DUMP_BYTES_MAX, "{} bytes", udp.len());
    let listed = entries(&udp);
    assert_eq!(listed.len(), (PMAP_UDP_DUMP_BYTES_MAX - PMAPLIST_END_BYTES) / PMAPLIST_ENTRY_BYTES);
    assert!(listed.iter().take(11).all(|e| (200_000..200_011).contains(&e.prog)), "own first: {listed:?}");

    let tcp_call = call_from(SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000)), Transport::Tcp);
    let tcp = dump(t.clone(), tcp_call, Vec::new().into()).await.map_err(|e| format!("{e:?}")).unwrap().body;
    assert_eq!(entries(&tcp).len(), 11 + PMAP_FOREIGN_ENTRIES_MAX, "TCP lists the whole table");
    assert_eq!(tcp.len(), PMAPLIST_END_BYTES + PMAPLIST_ENTRY_BYTES * (11 + PMAP_FOREIGN_ENTRIES_MAX));
}
