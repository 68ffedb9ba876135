//! Peer authentication and encryption with the cluster secret: the Noise
//! protocol framework (the `snow` crate), pattern `NOISE_PARAMS` =
//! `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`.
//!
//! - The pre-shared key is HKDF-SHA256 (RFC 5869) of the cluster secret file's
//!   bytes (any length from `SECRET_BYTES_MIN`) with a fixed label, so admins
//!   keep one secret file.
//! - The prologue binds `PROLOGUE_LABEL`, the protocol magic and the cluster
//!   name: a peer of another cluster or protocol version derives other keys.
//! - Each side's node id travels encrypted in its handshake payload. The
//!   client checks that the server is the node it meant to reach.
//!
//! Wire (each a length-prefixed frame of at most `HANDSHAKE_FRAME_BYTES_MAX`):
//! 1. client → server: `MAGIC`, then Noise message 1 (`-> psk, e`) whose
//!    payload is `Hello { node_id }`.
//! 2. server → client: `ACCEPT` and Noise message 2 (`<- e, ee`) whose payload
//!    is `Welcome { node_id }`; or `REFUSED` alone when message 1 did not
//!    decrypt (another secret or cluster name), so the client can say so.
//!
//! Afterwards every frame is Noise transport messages (`secure::SecureStream`).
//! A server learns that a client holds the secret from message 1 (its
//! payload decrypts only with the PSK); a replayed message 1 gets nowhere,
//! as the transport keys also need the client's ephemeral private key. A
//! client learns the same of the server from message 2. Wrong secret, wrong
//! cluster, a wrong magic (not a hanfs peer, or hanfs before this protocol)
//! and a server that is not the node expected are `PermissionDenied`; a frame
//! that is not the protocol's is `InvalidData`; the connection closing is
//! whatever I/O error that gave. Tag comparisons are snow's (constant time).

use std::io;
use std::path::Path;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use super::secure::SecureStream;
use super::{read_frame, write_frame, HANDSHAKE_FRAME_BYTES_MAX};
use crate::types::{decode, encode, NodeId};

/// Fewest bytes a cluster secret may have.
pub const SECRET_BYTES_MIN: usize = 16;
/// Most bytes read from a secret file.
pub const SECRET_BYTES_MAX: u64 = 4 * 1024;
/// The Noise protocol of the peer transport.
pub const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// First bytes of every client connection: this protocol's version. The HMAC
/// transport before it sent `OLD_MAGIC`.
const MAGIC: [u8; 8] = *b"HANFSNZ2";
const OLD_MAGIC: [u8; 8] = *b"HANFSRP1";
/// Bound into the Noise handshake hash with `MAGIC` and the cluster name.
const PROLOGUE_LABEL: &[u8] = b"hanfs peer transport";
/// HKDF salt and info for the PSK.
const PSK_SALT: &[u8] = b"hanfs cluster secret";
const PSK_INFO: &[u8] = b"Noise_NNpsk0 psk v1";
/// Bytes of the PSK Noise takes.
const PSK_BYTES: usize = 32;
/// Server's first byte of message 2: accepted, Noise message follows.
const ACCEPT: u8 = 0;
/// Server's first (only) byte of message 2: message 1 did not decrypt.
const REFUSED: u8 = 1;

/// The shared cluster secret, kept only as the Noise PSK derived from it.
#[derive(Clone)]
pub struct ClusterSecret {
    psk: [u8; PSK_BYTES],
}

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
        Ok(Self { psk: hkdf_sha256(PSK_SALT, trimmed, PSK_INFO) })
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
}

/// HKDF-SHA256 (RFC 5869) with one block of output: extract, then expand.
fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; PSK_BYTES] {
    let hmac = |key: &[u8], parts: &[&[u8]]| -> [u8; PSK_BYTES] {
        // HMAC takes keys of any length: this cannot fail.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else { unreachable!("HMAC key length") };
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    };
    let prk = hmac(salt, &[ikm]);
    hmac(&prk, &[info, &[1u8]])
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    node_id: NodeId,
}

#[derive(Debug, Serialize, Deserialize)]
struct Welcome {
    node_id: NodeId,
}

fn refused(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg.into())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// The Noise handshake state for one side, keyed and bound to `cluster`.
fn noise(secret: &ClusterSecret, cluster: &str, initiator: bool) -> io::Result<snow::HandshakeState> {
    let mut prologue = Vec::with_capacity(PROLOGUE_LABEL.len() + MAGIC.len() + 8 + cluster.len());
    prologue.extend_from_slice(PROLOGUE_LABEL);
    prologue.extend_from_slice(&MAGIC);
    prologue.extend_from_slice(&(cluster.len() as u64).to_be_bytes());
    prologue.extend_from_slice(cluster.as_bytes());
    let setup = || -> Result<snow::HandshakeState, snow::Error> {
        let builder = snow::Builder::new(NOISE_PARAMS.parse()?).psk(0, &secret.psk)?.prologue(&prologue)?;
        if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
    };
    setup().map_err(|e| io::Error::other(format!("noise setup: {e}")))
}

/// Noise handshake message with a bincode payload, after `prefix`.
fn write_handshake<T: Serialize>(hs: &mut snow::HandshakeState, prefix: &[u8], msg: &T) -> io::Result<Vec<u8>> {
    let payload = encode(msg, HANDSHAKE_FRAME_BYTES_MAX).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut out = vec![0u8; HANDSHAKE_FRAME_BYTES_MAX as usize];
    let (head, body) = out.split_at_mut(prefix.len());
    head.copy_from_slice(prefix);
    let len = hs.write_message(&payload, body).map_err(|e| io::Error::other(format!("noise handshake: {e}")))?;
    out.truncate(prefix.len() + len);
    Ok(out)
}

/// Read a Noise handshake message and decode its payload; `None` if it does
/// not decrypt (another key or prologue).
fn read_handshake<T: serde::de::DeserializeOwned>(
    hs: &mut snow::HandshakeState,
    message: &[u8],
) -> io::Result<Option<T>> {
    let mut payload = vec![0u8; HANDSHAKE_FRAME_BYTES_MAX as usize];
    let Ok(len) = hs.read_message(message, &mut payload) else { return Ok(None) };
    let payload = payload.get(..len).unwrap_or_default();
    decode(payload, HANDSHAKE_FRAME_BYTES_MAX).map(Some).map_err(|e| invalid(format!("handshake payload: {e}")))
}

fn into_transport<S>(stream: S, hs: snow::HandshakeState) -> io::Result<SecureStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let noise = hs.into_transport_mode().map_err(|e| io::Error::other(format!("noise handshake: {e}")))?;
    Ok(SecureStream::new(stream, noise))
}

/// Client side of the handshake, as node `node_id` to node `expected_peer`.
/// Fails with `PermissionDenied` if the server refuses us, cannot prove it
/// has the secret, or is another node.
pub async fn client_handshake<S>(
    mut stream: S,
    secret: &ClusterSecret,
    cluster: &str,
    node_id: NodeId,
    expected_peer: NodeId,
) -> io::Result<SecureStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hs = noise(secret, cluster, true)?;
    let first = write_handshake(&mut hs, &MAGIC, &Hello { node_id })?;
    write_frame(&mut stream, &first, HANDSHAKE_FRAME_BYTES_MAX).await?;
    let second = read_frame(&mut stream, HANDSHAKE_FRAME_BYTES_MAX).await?;
    let welcome: Welcome = match second.split_first() {
        Some((&ACCEPT, message)) => read_handshake(&mut hs, message)?
            .ok_or_else(|| refused("peer failed to prove the cluster secret (its handshake did not decrypt)"))?,
        Some((&REFUSED, _)) => {
            return Err(refused("peer refused us: it has another cluster secret or cluster name"));
        }
        _ => return Err(invalid("peer's handshake answer is not the hanfs Noise protocol")),
    };
    if welcome.node_id != expected_peer {
        return Err(refused(format!("peer is node {}, not node {expected_peer}", welcome.node_id)));
    }
    into_transport(stream, hs)
}

/// Server side of the handshake, as node `node_id`. Returns the
/// authenticated peer's node id.
pub async fn server_handshake<S>(
    mut stream: S,
    secret: &ClusterSecret,
    cluster: &str,
    node_id: NodeId,
) -> io::Result<(NodeId, SecureStream<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = read_frame(&mut stream, HANDSHAKE_FRAME_BYTES_MAX).await?;
    let Some((magic, message)) = first.split_first_chunk::<8>() else {
        return Err(refused("not a hanfs peer (frame shorter than the magic)"));
    };
    if *magic == OLD_MAGIC {
        return Err(refused("peer speaks the older HMAC transport: upgrade it to the same hanfs version"));
    }
    if *magic != MAGIC {
        return Err(refused("not a hanfs peer (bad magic)"));
    }
    let mut hs = noise(secret, cluster, false)?;
    let Some(hello) = read_handshake::<Hello>(&mut hs, message)? else {
        // Best effort: tell the peer why; the refusal stands either way.
        let _ = write_frame(&mut stream, &[REFUSED], HANDSHAKE_FRAME_BYTES_MAX).await;
        return Err(refused("peer's handshake did not decrypt: it has another cluster secret or cluster name"));
    };
    let second = write_handshake(&mut hs, &[ACCEPT], &Welcome { node_id })?;
    write_frame(&mut stream, &second, HANDSHAKE_FRAME_BYTES_MAX).await?;
    Ok((hello.node_id, into_transport(stream, hs)?))
}
