//! portmap v2 over TCP and UDP: GETPORT, DUMP, SET, UNSET, CALLIT's silence,
//! and rpcbind v3/v4 answered with PROG_MISMATCH(2, 2).

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
        assert_eq!(words(&pmap(&s, udp, 1, &mapping_args(prog, 1, TCP, 4000))), vec![1], "SET");
        assert_eq!(words(&pmap(&s, udp, 1, &mapping_args(prog, 1, UDP, 4001))), vec![1], "SET udp");
        assert_eq!(words(&pmap(&s, udp, 1, &mapping_args(prog, 1, TCP, 4002))), vec![0], "SET of a taken key");
        assert_eq!(getport(&s, udp, prog, 1, TCP), 4000);
        assert_eq!(words(&pmap(&s, udp, 2, &mapping_args(prog, 1, 0, 0))), vec![1], "UNSET");
        assert_eq!(getport(&s, udp, prog, 1, TCP), 0);
        assert_eq!(getport(&s, udp, prog, 1, UDP), 0, "UNSET removes every protocol");
        assert_eq!(words(&pmap(&s, udp, 2, &mapping_args(prog, 1, 0, 0))), vec![0], "UNSET of nothing");
    }
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
