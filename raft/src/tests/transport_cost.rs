//! What the authenticated transport costs per round trip: a pair of
//! connected `SecureStream`s on loopback, one side echoing, timed over
//! payload sizes from a heartbeat to a full frame. A measurement, not a
//! check: `cargo test -p hanfs-raft transport_cost -- --ignored --nocapture`.

use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};

use super::harness::{secret, CLUSTER, SECRET};
use crate::network::auth::{client_handshake, server_handshake};

/// Payload sizes timed: a heartbeat-sized request, an AppendEntries of a few
/// DRC records, a 64 KiB batch, a 1 MiB snapshot chunk.
const SIZES_BYTES: [usize; 4] = [200, 2 * 1024, 64 * 1024, 1024 * 1024];
/// Round trips per size (fewer for the large ones).
const ROUNDS_SMALL: u32 = 2_000;
const ROUNDS_LARGE: u32 = 50;
/// Connections set up to time the handshake.
const HANDSHAKES: u32 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement that prints figures; run by hand with --ignored --nocapture"]
async fn transport_cost_round_trip_and_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        for _ in 0..=HANDSHAKES {
            let (stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            let (_, mut conn) = server_handshake(stream, &secret(SECRET), CLUSTER, 1).await.expect("server handshake");
            // Echo until the client hangs up.
            while let Ok(frame) = conn.recv().await {
                if conn.send(&frame).await.is_err() {
                    break;
                }
            }
        }
    });
    let started = Instant::now();
    for _ in 0..HANDSHAKES {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        drop(client_handshake(stream, &secret(SECRET), CLUSTER, 7, 1).await.expect("client handshake"));
    }
    let per_handshake_us = started.elapsed().as_micros() / u128::from(HANDSHAKES);
    println!("transport_cost: connect+handshake {per_handshake_us} us");
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut conn = client_handshake(stream, &secret(SECRET), CLUSTER, 7, 1).await.expect("client handshake");
    for size in SIZES_BYTES {
        let payload = vec![0x5au8; size];
        let rounds = if size > 4096 { ROUNDS_LARGE } else { ROUNDS_SMALL };
        let started = Instant::now();
        for _ in 0..rounds {
            conn.send(&payload).await.expect("send");
            let echo = conn.recv().await.expect("recv");
            assert_eq!(echo.len(), size);
        }
        let per_round_us = started.elapsed().as_micros() / u128::from(rounds);
        println!("transport_cost: {size} bytes round trip {per_round_us} us");
    }
    drop(conn);
    server.await.expect("server task");
}
