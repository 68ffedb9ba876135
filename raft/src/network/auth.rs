//! Peer authentication with the cluster secret.
//!
//! Handshake (mutual, HMAC-SHA256 from the `hmac` + `sha2` crates):
//! 1. client → server `Hello`: magic, cluster name, client node id, client nonce.
//! 2. server → client `Challenge`: server nonce and the server's proof
//!    `HMAC(secret, "server" | cluster | node id | client nonce | server nonce)`.
//! 3. client checks the server's proof (a client never talks to a server that
//!    lacks the secret), then sends `Proof`: the same MAC with label "client".
//! 4. server checks it (constant time) and answers `Verdict`. A wrong proof or
//!    a different cluster name is refused, logged, and the connection closed.
//!
//! Afterwards each frame is `payload | HMAC(session_key, seq | payload)`, with a
//! separate key and sequence counter per direction, so frames cannot be
//! forged, reordered or replayed into an authenticated connection.
//! The transport is not encrypted: Raft entries are visible on the wire.

use std::io;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::net::TcpStream;

use super::{read_frame, write_frame, HANDSHAKE_FRAME_BYTES_MAX, PEER_FRAME_BYTES_MAX};
use crate::types::{decode, encode, NodeId};

type HmacSha256 = Hmac<Sha256>;

/// Fewest bytes a cluster secret may have.
pub const SECRET_BYTES_MIN: usize = 16;
/// Most bytes read from a secret file.
pub const SECRET_BYTES_MAX: u64 = 4 * 1024;
const NONCE_BYTES: usize = 32;
const TAG_BYTES: usize = 32;
const MAGIC: [u8; 8] = *b"HANFSRP1";

/// The shared cluster secret.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cluster secret file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("cluster secret file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error("cluster secret file {path} is larger than {SECRET_BYTES_MAX} bytes")]
    TooLong { path: String },
    #[error("cluster secret must be at least {SECRET_BYTES_MIN} bytes (after trimming whitespace)")]
    TooShort,
}

impl ClusterSecret {
    pub fn new(bytes: &[u8]) -> Result<Self, SecretError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < SECRET_BYTES_MIN {
            return Err(SecretError::TooShort);
        }
        Ok(Self(trimmed.to_vec()))
    }

    /// Read the secret from `path`, which must not be group/other readable.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let io_err = |source| SecretError::Io { path: shown.clone(), source };
        let meta = std::fs::metadata(path).map_err(io_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretError::Permissions { path: shown, mode });
        }
        if meta.len() > SECRET_BYTES_MAX {
            return Err(SecretError::TooLong { path: shown });
        }
        let bytes = std::fs::read(path).map_err(io_err)?;
        Self::new(&bytes)
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    magic: [u8; 8],
    cluster: String,
    node_id: NodeId,
    nonce: [u8; NONCE_BYTES],
}

#[derive(Debug, Serialize, Deserialize)]
enum Challenge {
    Accept {
        nonce: [u8; NONCE_BYTES],
        proof: [u8; TAG_BYTES],
    },
    /// Refused before any proof (wrong magic or cluster name).
    Refused {
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Proof {
    Proof([u8; TAG_BYTES]),
    /// The server's proof did not verify: the client hangs up, saying why.
    Abort,
}

#[derive(Debug, Serialize, Deserialize)]
enum Verdict {
    Ok,
    Refused,
}

struct Transcript<'a> {
    cluster: &'a str,
    node_id: NodeId,
    client_nonce: &'a [u8; NONCE_BYTES],
    server_nonce: &'a [u8; NONCE_BYTES],
}

impl Transcript<'_> {
    fn mac(&self, secret: &ClusterSecret, label: &[u8]) -> HmacSha256 {
        let mut mac = secret.mac();
        mac.update(label);
        mac.update(&(self.cluster.len() as u64).to_be_bytes());
        mac.update(self.cluster.as_bytes());
        mac.update(&self.node_id.to_be_bytes());
        mac.update(self.client_nonce);
        mac.update(self.server_nonce);
        mac
    }

    fn proof(&self, secret: &ClusterSecret, label: &[u8]) -> [u8; TAG_BYTES] {
        self.mac(secret, label).finalize().into_bytes().into()
    }

    fn verify(&self, secret: &ClusterSecret, label: &[u8], proof: &[u8; TAG_BYTES]) -> bool {
        self.mac(secret, label).verify_slice(proof).is_ok()
    }

    fn session(&self, secret: &ClusterSecret, client_side: bool) -> SecureStreamKeys {
        let c2s = self.proof(secret, b"hanfs-peer key c2s");
        let s2c = self.proof(secret, b"hanfs-peer key s2c");
        if client_side {
            SecureStreamKeys { send: c2s, recv: s2c }
        } else {
            SecureStreamKeys { send: s2c, recv: c2s }
        }
    }
}

struct SecureStreamKeys {
    send: [u8; TAG_BYTES],
    recv: [u8; TAG_BYTES],
}

/// An authenticated connection: every frame carries a MAC over its sequence
/// number and payload.
pub struct SecureStream {
    stream: TcpStream,
    keys: SecureStreamKeys,
    send_seq: u64,
    recv_seq: u64,
}

fn refused(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg.into())
}

fn frame_tag(key: &[u8; TAG_BYTES], seq: u64, payload: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&seq.to_be_bytes());
    mac.update(payload);
    mac
}

impl SecureStream {
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let tag = frame_tag(&self.keys.send, self.send_seq, payload).finalize().into_bytes();
        self.send_seq += 1;
        let mut frame = Vec::with_capacity(payload.len() + TAG_BYTES);
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&tag);
        write_frame(&mut self.stream, &frame, PEER_FRAME_BYTES_MAX).await
    }

    pub async fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut frame = read_frame(&mut self.stream, PEER_FRAME_BYTES_MAX).await?;
        let body_len = frame
            .len()
            .checked_sub(TAG_BYTES)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "peer frame shorter than its MAC"))?;
        let tag = frame.split_off(body_len);
        frame_tag(&self.keys.recv, self.recv_seq, &frame)
            .verify_slice(&tag)
            .map_err(|_| refused("peer frame MAC mismatch"))?;
        self.recv_seq += 1;
        Ok(frame)
    }
}

async fn send_small<T: Serialize>(stream: &mut TcpStream, msg: &T) -> io::Result<()> {
    let bytes = encode(msg, HANDSHAKE_FRAME_BYTES_MAX).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    write_frame(stream, &bytes, HANDSHAKE_FRAME_BYTES_MAX).await
}

async fn recv_small<T: serde::de::DeserializeOwned>(stream: &mut TcpStream) -> io::Result<T> {
    let bytes = read_frame(stream, HANDSHAKE_FRAME_BYTES_MAX).await?;
    decode(&bytes, HANDSHAKE_FRAME_BYTES_MAX).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn nonce() -> [u8; NONCE_BYTES] {
    let mut n = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut n);
    n
}

/// Client side of the handshake. Fails with `PermissionDenied` if the server
/// refuses us or cannot prove it has the secret.
pub async fn client_handshake(
    mut stream: TcpStream,
    secret: &ClusterSecret,
    cluster: &str,
    node_id: NodeId,
) -> io::Result<SecureStream> {
    let client_nonce = nonce();
    send_small(&mut stream, &Hello { magic: MAGIC, cluster: cluster.to_string(), node_id, nonce: client_nonce })
        .await?;
    let (server_nonce, server_proof) = match recv_small::<Challenge>(&mut stream).await? {
        Challenge::Accept { nonce, proof } => (nonce, proof),
        Challenge::Refused { reason } => return Err(refused(format!("peer refused us: {reason}"))),
    };
    let t = Transcript { cluster, node_id, client_nonce: &client_nonce, server_nonce: &server_nonce };
    if !t.verify(secret, b"hanfs-peer server", &server_proof) {
        // Best effort, so the server can log the refusal too.
        let _ = send_small(&mut stream, &Proof::Abort).await;
        return Err(refused("peer failed to prove the cluster secret"));
    }
    send_small(&mut stream, &Proof::Proof(t.proof(secret, b"hanfs-peer client"))).await?;
    match recv_small::<Verdict>(&mut stream).await? {
        Verdict::Ok => {}
        Verdict::Refused => return Err(refused("peer rejected our proof of the cluster secret")),
    }
    let keys = t.session(secret, true);
    Ok(SecureStream { stream, keys, send_seq: 0, recv_seq: 0 })
}

/// Server side of the handshake. Returns the authenticated peer's node id.
pub async fn server_handshake(
    mut stream: TcpStream,
    secret: &ClusterSecret,
    cluster: &str,
) -> io::Result<(NodeId, SecureStream)> {
    let hello: Hello = recv_small(&mut stream).await?;
    if hello.magic != MAGIC {
        return Err(refused("not a hanfs peer (bad magic)"));
    }
    if hello.cluster != cluster {
        let reason = format!("wrong cluster {:?} (this is {cluster:?})", hello.cluster);
        // Best effort: tell the peer why; the refusal stands either way.
        let _ = send_small(&mut stream, &Challenge::Refused { reason: reason.clone() }).await;
        return Err(refused(reason));
    }
    let server_nonce = nonce();
    let t = Transcript { cluster, node_id: hello.node_id, client_nonce: &hello.nonce, server_nonce: &server_nonce };
    let proof = t.proof(secret, b"hanfs-peer server");
    send_small(&mut stream, &Challenge::Accept { nonce: server_nonce, proof }).await?;
    let client_proof = match recv_small::<Proof>(&mut stream).await? {
        Proof::Proof(proof) => proof,
        Proof::Abort => {
            return Err(refused(format!("node {} does not share our cluster secret", hello.node_id)));
        }
    };
    if !t.verify(secret, b"hanfs-peer client", &client_proof) {
        let _ = send_small(&mut stream, &Verdict::Refused).await;
        return Err(refused(format!("node {} failed to prove the cluster secret", hello.node_id)));
    }
    send_small(&mut stream, &Verdict::Ok).await?;
    let keys = t.session(secret, false);
    Ok((hello.node_id, SecureStream { stream, keys, send_seq: 0, recv_seq: 0 }))
}
