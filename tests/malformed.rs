//! Malformed RPC input: each case asserts the error reply (or the closed
//! connection) and then that another client is still served.

use crate::util::*;

const NFS_PROGRAM: u32 = 100_003;
const MOUNT_PROGRAM: u32 = 100_005;

fn server() -> (TempDir, TestServer) {
    let export = tempdir("malformed");
    let server = TestServer::start(export.path(), "*(rw,insecure)");
    (export, server)
}

fn still_served(s: &TestServer) {
    assert_serves_null(s.mount_port, MOUNT_PROGRAM, 3);
    assert_serves_null(s.nfs_port, NFS_PROGRAM, 3);
}

#[test]
fn record_length_2_31_minus_1_closes_only_that_connection() {
    let (_export, s) = server();
    // Last-fragment flag plus length 2^31 - 1, then a few bytes.
    let mut bytes = 0xffff_ffffu32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[0; 16]);
    assert_eq!(raw_tcp(s.nfs_port, &bytes), None, "oversize record must close the connection");
    // Same without the last-fragment flag.
    assert_eq!(raw_tcp(s.mount_port, &0x7fff_ffffu32.to_be_bytes()), None);
    still_served(&s);
}

#[test]
fn truncated_record_is_dropped_and_closed() {
    let (_export, s) = server();
    let full = frame(&call_msg(7, MOUNT_PROGRAM, 3, 0, CRED_NONE, &[]));
    assert_eq!(raw_tcp_then_close(s.mount_port, &full[..full.len() - 10]), None);
    // A whole record holding a call header cut after the program number.
    let mut cut = Vec::new();
    for w in [8u32, 0, 2, MOUNT_PROGRAM] {
        put_u32(&mut cut, w);
    }
    let reply = tcp_call(s.mount_port, &cut).expect("a reply to a short header");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 8, stat: GARBAGE_ARGS, body: vec![] });
    still_served(&s);
}

#[test]
fn garbage_xdr_gets_garbage_args() {
    let (_export, s) = server();
    // MNT whose dirpath claims 4 GiB.
    let args = 0xffff_ffffu32.to_be_bytes();
    let reply = tcp_call(s.mount_port, &call_msg(9, MOUNT_PROGRAM, 3, 1, CRED_NONE, &args)).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 9, stat: GARBAGE_ARGS, body: vec![] });
    // NFS GETATTR with a truncated handle, over TCP and UDP.
    let args = [0, 0, 0, 32, 1, 2];
    let msg = call_msg(10, NFS_PROGRAM, 3, 1, CRED_NONE, &args);
    let reply = tcp_call(s.nfs_port, &msg).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 10, stat: GARBAGE_ARGS, body: vec![] });
    let reply = udp_call(s.mount_port, &call_msg(11, MOUNT_PROGRAM, 3, 1, CRED_NONE, &[0xff; 3])).expect("udp reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 11, stat: GARBAGE_ARGS, body: vec![] });
    still_served(&s);
}

#[test]
fn unknown_program_gets_prog_unavail() {
    let (_export, s) = server();
    for port in [s.nfs_port, s.mount_port, s.portmap_port] {
        let reply = tcp_call(port, &call_msg(12, 400_000, 1, 0, CRED_NONE, &[])).expect("reply");
        assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 12, stat: PROG_UNAVAIL, body: vec![] });
    }
    let reply = udp_call(s.portmap_port, &call_msg(13, 400_000, 1, 0, CRED_NONE, &[])).expect("udp reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 13, stat: PROG_UNAVAIL, body: vec![] });
    still_served(&s);
}

#[test]
fn unknown_procedure_gets_proc_unavail() {
    let (_export, s) = server();
    let cases = [
        (s.mount_port, MOUNT_PROGRAM, 3, 6),
        (s.mount_port, MOUNT_PROGRAM, 1, 99),
        (s.nfs_port, NFS_PROGRAM, 3, 22),
        (s.portmap_port, 100_000, 2, 6),
    ];
    for (port, prog, vers, proc_) in cases {
        let reply = tcp_call(port, &call_msg(14, prog, vers, proc_, CRED_NONE, &[])).expect("reply");
        assert_eq!(
            parse_reply(&reply),
            RpcReply::Accepted { xid: 14, stat: PROC_UNAVAIL, body: vec![] },
            "{prog}/{vers}/{proc_}"
        );
    }
    still_served(&s);
}

#[test]
fn nfs_v2_and_v4_get_prog_mismatch_3_3() {
    let (_export, s) = server();
    for vers in [2, 4] {
        let reply = tcp_call(s.nfs_port, &call_msg(15, NFS_PROGRAM, vers, 0, CRED_NONE, &[])).expect("reply");
        assert_eq!(
            parse_reply(&reply),
            RpcReply::Accepted { xid: 15, stat: PROG_MISMATCH, body: [0, 0, 0, 3, 0, 0, 0, 3].to_vec() }
        );
    }
    // MOUNT serves v1 and v3: v2 gets (1, 3).
    let reply = tcp_call(s.mount_port, &call_msg(16, MOUNT_PROGRAM, 2, 0, CRED_NONE, &[])).expect("reply");
    assert_eq!(
        parse_reply(&reply),
        RpcReply::Accepted { xid: 16, stat: PROG_MISMATCH, body: [0, 0, 0, 1, 0, 0, 0, 3].to_vec() }
    );
    still_served(&s);
}

#[test]
fn bad_auth_sys_gets_auth_error() {
    let (_export, s) = server();
    let gids: Vec<u32> = (0..17).collect();
    let body = auth_sys_body(1000, 1000, &gids);
    let reply = tcp_call(s.nfs_port, &call_msg(17, NFS_PROGRAM, 3, 0, (1, &body), &[])).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::AuthError { xid: 17, stat: 1 }, "AUTH_BADCRED");
    // 16 groups are fine.
    let body = auth_sys_body(1000, 1000, &gids[..16]);
    let reply = tcp_call(s.nfs_port, &call_msg(18, NFS_PROGRAM, 3, 0, (1, &body), &[])).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::Accepted { xid: 18, stat: SUCCESS, body: vec![] });
    // An unsupported flavor (RPCSEC_GSS) is too weak.
    let reply = tcp_call(s.mount_port, &call_msg(19, MOUNT_PROGRAM, 3, 0, (6, &[0; 8]), &[])).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::AuthError { xid: 19, stat: 5 }, "AUTH_TOOWEAK");
    still_served(&s);
}

#[test]
fn rpc_version_3_gets_rpc_mismatch() {
    let (_export, s) = server();
    let mut msg = call_msg(20, MOUNT_PROGRAM, 3, 0, CRED_NONE, &[]);
    msg[8..12].copy_from_slice(&3u32.to_be_bytes());
    let reply = tcp_call(s.mount_port, &msg).expect("reply");
    assert_eq!(parse_reply(&reply), RpcReply::RpcMismatch { xid: 20, low: 2, high: 2 });
    still_served(&s);
}

#[test]
fn several_calls_in_flight_on_one_connection() {
    let (_export, s) = server();
    let mut bytes = Vec::new();
    for xid in 100..132u32 {
        bytes.extend(frame(&call_msg(xid, MOUNT_PROGRAM, 3, 0, CRED_NONE, &[])));
    }
    let mut stream = std::net::TcpStream::connect((s.addr(), s.mount_port)).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_millis(IO_TIMEOUT_MS))).expect("timeout");
    std::io::Write::write_all(&mut stream, &bytes).expect("send");
    let mut xids: Vec<u32> = (0..32)
        .map(|_| match parse_reply(&read_record(&mut stream).expect("reply")) {
            RpcReply::Accepted { xid, stat: SUCCESS, .. } => xid,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    xids.sort_unstable();
    assert_eq!(xids, (100..132).collect::<Vec<_>>());
}

/// The root handle of `/export`, from a raw MNT over TCP.
fn root_fh(s: &TestServer) -> Vec<u8> {
    let mut args = Vec::new();
    put_opaque(&mut args, b"/export");
    let reply =
        tcp_call(s.mount_port, &call_msg(1, MOUNT_PROGRAM, 3, 1, (1, &auth_sys_body(0, 0, &[])), &args)).expect("MNT");
    let RpcReply::Accepted { stat: SUCCESS, body, .. } = parse_reply(&reply) else { panic!("MNT refused") };
    let w = words(&body);
    assert_eq!(w[0], 0, "MNT3_OK");
    let len = w[1] as usize;
    body[8..8 + len].to_vec()
}

#[test]
fn retransmitted_remove_gets_the_cached_reply() {
    let export = tempdir("drc");
    std::fs::write(export.path().join("victim"), b"x").expect("write");
    let s = TestServer::start(export.path(), "*(rw,insecure,no_root_squash)");
    let fh = root_fh(&s);
    let mut args = Vec::new();
    put_opaque(&mut args, &fh);
    put_opaque(&mut args, b"victim");
    let cred = auth_sys_body(0, 0, &[]);
    let remove = |xid: u32| {
        let reply =
            tcp_call(s.nfs_port, &call_msg(xid, NFS_PROGRAM, 3, 12, (1, &cred), &args)).expect("REMOVE answered");
        match parse_reply(&reply) {
            RpcReply::Accepted { stat: SUCCESS, body, .. } => body,
            other => panic!("{other:?}"),
        }
    };
    let first = remove(0xd0c);
    assert_eq!(words(&first)[0], 0, "NFS3_OK");
    assert!(!export.path().join("victim").exists());
    // Same client, xid, procedure and arguments, on a new connection: the original reply.
    assert_eq!(remove(0xd0c), first, "a retransmission is answered from the DRC");
    // A new request (another xid) really runs: the file is gone.
    assert_eq!(words(&remove(0xd0d))[0], 2, "NFS3ERR_NOENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_drops_every_connection() {
    init_tracing();
    let export = tempdir("close-all");
    let state = tempdir("close-all-state");
    let node =
        hanfs_server::node::start(test_config(export.path(), "*(rw,insecure)", state.path())).await.expect("start");
    let ports = node.ports();
    let conns = &node.services().rpc.conns;
    let mut streams = Vec::new();
    for (port, prog, vers) in
        [(ports.nfs, NFS_PROGRAM, 3), (ports.mount, MOUNT_PROGRAM, 3), (ports.portmap, 100_000, 2)]
    {
        let mut st = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await.expect("connect");
        // One answered call each, so the connection is certainly registered.
        let msg = frame(&call_msg(1, prog, vers, 0, CRED_NONE, &[]));
        tokio::io::AsyncWriteExt::write_all(&mut st, &msg).await.expect("send");
        let mut reply = [0u8; 28];
        tokio::io::AsyncReadExt::read_exact(&mut st, &mut reply).await.expect("reply");
        streams.push(st);
    }
    assert_eq!(conns.count(), 3);
    conns.close_all();
    for mut st in streams {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(
            std::time::Duration::from_millis(IO_TIMEOUT_MS),
            tokio::io::AsyncReadExt::read(&mut st, &mut buf),
        )
        .await
        .expect("closed within the timeout");
        assert!(matches!(n, Ok(0) | Err(_)), "server side closed");
    }
    for _ in 0..100 {
        if conns.count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(conns.count(), 0);
    // New connections are still accepted: close_all is not a shutdown.
    let port = ports.mount;
    tokio::task::spawn_blocking(move || assert_serves_null(port, MOUNT_PROGRAM, 3)).await.expect("served");
    node.stop().await;
}
