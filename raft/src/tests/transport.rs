//! The encrypted transport frame by frame: two `SecureStream`s joined through
//! a relay in the test that sees (and can change) every frame on the wire.
//! Payloads of every chunking case (sealed inline and on the blocking
//! pool, sent both ways) arrive intact and never in clear; a
//! flipped byte, a replayed, reordered or truncated frame is refused; the
//! handshake refuses another node, an old-protocol peer, another secret.

use tokio::io::{duplex, AsyncWriteExt, DuplexStream};

use super::harness::{secret, CLUSTER, SECRET};
use crate::network::auth::{client_handshake, server_handshake, ClusterSecret};
use crate::network::secure::{
    sealed_len, SecureStream, CHUNK_DATA_BYTES_MAX, NOISE_TAG_BYTES, SEALED_FRAME_BYTES_MAX, SEAL_INLINE_BYTES_MAX,
};
use crate::network::{read_frame, write_frame, PEER_FRAME_BYTES_MAX};
use crate::types::NodeId;

/// Buffer of each in-memory pipe: larger than any frame these tests send.
const PIPE_BYTES: usize = 1024 * 1024;
/// Node ids of the two ends.
const CLIENT: NodeId = 7;
const SERVER: NodeId = 1;

/// Both ends of an authenticated connection and the relay between them:
/// `to_server` carries the client's frames, `to_client` the server's.
struct Link {
    client: SecureStream<DuplexStream>,
    server: SecureStream<DuplexStream>,
    /// Relay side facing the client (frames from it arrive here).
    from_client: DuplexStream,
    /// Relay side facing the server.
    to_server: DuplexStream,
}

impl Link {
    /// The next frame the client sent, as it is on the wire (without its length).
    async fn take_from_client(&mut self) -> Vec<u8> {
        read_frame(&mut self.from_client, SEALED_FRAME_BYTES_MAX).await.expect("client frame")
    }

    async fn give_to_server(&mut self, frame: &[u8]) {
        write_frame(&mut self.to_server, frame, SEALED_FRAME_BYTES_MAX).await.expect("relay to server");
    }
}

async fn link_with(client_secret: &ClusterSecret, expected: NodeId) -> std::io::Result<Link> {
    let (client_end, mut from_client) = duplex(PIPE_BYTES);
    let (mut to_server, server_end) = duplex(PIPE_BYTES);
    let server_secret = secret(SECRET);
    let server = server_handshake(server_end, &server_secret, CLUSTER, SERVER);
    let client = client_handshake(client_end, client_secret, CLUSTER, CLIENT, expected);
    let relay = async {
        // Message 1 to the server, message 2 back to the client.
        let (mut to_client, mut from_server) = (&mut from_client, &mut to_server);
        let first = read_frame(&mut to_client, SEALED_FRAME_BYTES_MAX).await.expect("message 1");
        write_frame(&mut from_server, &first, SEALED_FRAME_BYTES_MAX).await.expect("relay message 1");
        if let Ok(second) = read_frame(&mut from_server, SEALED_FRAME_BYTES_MAX).await {
            write_frame(&mut to_client, &second, SEALED_FRAME_BYTES_MAX).await.expect("relay message 2");
        }
    };
    let (server, client, ()) = tokio::join!(server, client, relay);
    let (peer, server) = server?;
    assert_eq!(peer, CLIENT, "the server learns the client's node id");
    Ok(Link { client: client?, server, from_client, to_server })
}

async fn link() -> Link {
    link_with(&secret(SECRET), SERVER).await.expect("handshake")
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn payloads_of_every_chunking_case_arrive_intact_and_never_in_clear() {
    let mut l = link().await;
    let marker = b"a-file-name-that-must-not-show.txt";
    let sizes = [
        0,
        1,
        200,
        SEAL_INLINE_BYTES_MAX - NOISE_TAG_BYTES - 1,
        SEAL_INLINE_BYTES_MAX - NOISE_TAG_BYTES,
        SEAL_INLINE_BYTES_MAX,
        CHUNK_DATA_BYTES_MAX - 1,
        CHUNK_DATA_BYTES_MAX,
        CHUNK_DATA_BYTES_MAX + 1,
        3 * CHUNK_DATA_BYTES_MAX + 5,
    ];
    for len in sizes {
        let mut sent = payload(len);
        if len >= marker.len() {
            sent[..marker.len()].copy_from_slice(marker);
        }
        l.client.send(&sent).await.expect("send");
        let wire = l.take_from_client().await;
        assert_eq!(wire.len(), sealed_len(len), "sealed length of a {len}-byte payload");
        assert!(!wire.windows(marker.len()).any(|w| w == marker), "plaintext on the wire");
        l.give_to_server(&wire).await;
        assert_eq!(l.server.recv().await.expect("recv"), sent, "{len} bytes");
    }
    // The other direction has its own keys and counter.
    for answer in [payload(10), payload(200_000)] {
        l.server.send(&answer).await.expect("send answer");
        let wire = read_frame(&mut l.to_server, SEALED_FRAME_BYTES_MAX).await.expect("server frame");
        write_frame(&mut l.from_client, &wire, SEALED_FRAME_BYTES_MAX).await.expect("relay to client");
        assert_eq!(l.client.recv().await.expect("recv answer"), answer);
    }
}

#[test]
fn the_largest_frame_fits_its_bounds() {
    assert_eq!(sealed_len(0), 17);
    assert_eq!(sealed_len(CHUNK_DATA_BYTES_MAX), 65_535);
    assert_eq!(sealed_len(CHUNK_DATA_BYTES_MAX + 1), 65_535 + 18);
    const { assert!(SEALED_FRAME_BYTES_MAX > PEER_FRAME_BYTES_MAX) };
    assert_eq!(SEALED_FRAME_BYTES_MAX as usize, sealed_len(PEER_FRAME_BYTES_MAX as usize));
}

#[tokio::test]
async fn a_payload_over_the_bound_is_refused_before_sealing() {
    let mut l = link().await;
    let too_big = vec![0u8; PEER_FRAME_BYTES_MAX as usize + 1];
    let err = l.client.send(&too_big).await.expect_err("over the bound");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

/// Flip one byte at `at(frame length)` of a two-chunk frame: refused.
async fn flipped_byte_is_refused(at: fn(usize) -> usize) {
    let mut l = link().await;
    l.client.send(&payload(CHUNK_DATA_BYTES_MAX + 100)).await.expect("send");
    let mut wire = l.take_from_client().await;
    let i = at(wire.len());
    wire[i] ^= 0x01;
    l.give_to_server(&wire).await;
    let err = l.server.recv().await.expect_err("a tampered frame was accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn a_flipped_byte_anywhere_is_refused() {
    flipped_byte_is_refused(|_| 0).await;
    flipped_byte_is_refused(|len| len / 3).await;
    flipped_byte_is_refused(|_| 65_535).await;
    flipped_byte_is_refused(|len| len - 1).await;
}

#[tokio::test]
async fn a_replayed_frame_is_refused() {
    let mut l = link().await;
    l.client.send(b"append entries").await.expect("send");
    let wire = l.take_from_client().await;
    l.give_to_server(&wire).await;
    assert_eq!(l.server.recv().await.expect("first copy"), b"append entries");
    l.give_to_server(&wire).await;
    assert!(l.server.recv().await.is_err(), "a replayed frame was accepted");
}

#[tokio::test]
async fn reordered_frames_are_refused() {
    let mut l = link().await;
    l.client.send(b"first").await.expect("send");
    l.client.send(b"second").await.expect("send");
    let first = l.take_from_client().await;
    let second = l.take_from_client().await;
    l.give_to_server(&second).await;
    l.give_to_server(&first).await;
    assert!(l.server.recv().await.is_err(), "a frame out of order was accepted");
}

#[tokio::test]
async fn a_frame_cut_at_a_chunk_boundary_is_refused() {
    let mut l = link().await;
    l.client.send(&payload(2 * CHUNK_DATA_BYTES_MAX)).await.expect("send");
    let wire = l.take_from_client().await;
    // Only the first (full) chunk, framed on its own: it decrypts, but its
    // flag says the payload goes on.
    l.give_to_server(&wire[..65_535]).await;
    let err = l.server.recv().await.expect_err("a truncated payload was accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
}

#[tokio::test]
async fn a_server_that_is_another_node_is_refused() {
    let err = link_with(&secret(SECRET), 2).await.err().expect("node 1 answering for node 2 was accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("node 1, not node 2"), "{err}");
}

#[tokio::test]
async fn another_secret_is_refused_and_secrets_of_any_length_work() {
    let err = link_with(&secret(b"0123456789abcdef-wrong-secret"), SERVER).await.err().expect("a wrong secret");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    // 16 bytes and 4 KiB: both derive a 32-byte key.
    for len in [16, 4096] {
        let s = vec![b'k'; len];
        let (client_end, server_end) = duplex(PIPE_BYTES);
        let (ks, kc) = (secret(&s), secret(&s));
        let (server, client) = tokio::join!(
            server_handshake(server_end, &ks, CLUSTER, SERVER),
            client_handshake(client_end, &kc, CLUSTER, CLIENT, SERVER)
        );
        server.expect("server with a {len}-byte secret");
        client.expect("client with a {len}-byte secret");
    }
}

#[tokio::test]
async fn a_peer_of_the_old_hmac_protocol_is_refused_with_a_reason() {
    let (mut client_end, server_end) = duplex(PIPE_BYTES);
    let key = secret(SECRET);
    let server = tokio::spawn(async move { server_handshake(server_end, &key, CLUSTER, SERVER).await.map(|_| ()) });
    // The old `Hello` began with its magic.
    let mut old_hello = b"HANFSRP1".to_vec();
    old_hello.extend_from_slice(&[0u8; 40]);
    write_frame(&mut client_end, &old_hello, SEALED_FRAME_BYTES_MAX).await.expect("write");
    client_end.flush().await.expect("flush");
    let err = server.await.expect("join").expect_err("an old peer was accepted");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("older HMAC transport"), "{err}");
}
