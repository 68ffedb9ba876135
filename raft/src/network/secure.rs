//! An encrypted peer connection after the Noise handshake (`auth`).
//!
//! Every frame on the wire is one length-prefixed frame (`write_frame`)
//! holding one or more Noise transport messages (ChaChaPoly; the nonce is
//! each direction's message counter, so a dropped, replayed or reordered
//! message fails to decrypt). A Noise message carries at most 65535 bytes,
//! so a payload is cut into chunks: each chunk's plaintext is up to
//! `CHUNK_DATA_BYTES_MAX` payload bytes and then one flag byte (`CHUNK_MORE`
//! or `CHUNK_LAST`), and every chunk but the last fills a whole Noise message. The flag
//! is encrypted with the chunk, so where a payload ends is authenticated too:
//! a frame cut short or two frames spliced into one are refused.
//! `PEER_FRAME_BYTES_MAX` bounds the plaintext payload; `SEALED_FRAME_BYTES_MAX`
//! is what that costs on the wire. Any failure (a frame over the bound, a
//! chunk that does not decrypt, a misplaced last flag) is an `InvalidData`
//! error and the caller drops the connection: nothing of that frame reaches
//! Raft. Frames over `SEAL_INLINE_BYTES_MAX` are sealed and opened on tokio's
//! blocking pool, not on the runtime's threads.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{read_frame, write_frame, PEER_FRAME_BYTES_MAX};

/// Largest Noise message (the Noise specification's limit).
pub const NOISE_MESSAGE_BYTES_MAX: usize = 65_535;
/// The ChaChaPoly tag on every Noise message.
pub const NOISE_TAG_BYTES: usize = 16;
/// Payload bytes in one full chunk: a Noise message less its tag and flag.
pub const CHUNK_DATA_BYTES_MAX: usize = NOISE_MESSAGE_BYTES_MAX - NOISE_TAG_BYTES - 1;
/// Flag byte of a chunk followed by more chunks of the same payload.
const CHUNK_MORE: u8 = 0;
/// Flag byte of a payload's last chunk.
const CHUNK_LAST: u8 = 1;
/// Bytes on the wire (inside the length prefix) for a payload of
/// `PEER_FRAME_BYTES_MAX` bytes.
pub const SEALED_FRAME_BYTES_MAX: u64 = sealed_len(PEER_FRAME_BYTES_MAX as usize) as u64;

const _: () = assert!(SEALED_FRAME_BYTES_MAX <= u32::MAX as u64);

/// Bytes a payload of `len` bytes takes once sealed: one chunk per
/// `CHUNK_DATA_BYTES_MAX` bytes (at least one), each with a flag and a tag.
pub const fn sealed_len(len: usize) -> usize {
    let chunks = if len == 0 { 1 } else { len.div_ceil(CHUNK_DATA_BYTES_MAX) };
    len + chunks * (1 + NOISE_TAG_BYTES)
}

fn bad_frame(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Frames with a payload (sending) or sealed length (receiving) above this
/// are sealed and opened on tokio's blocking pool: a snapshot chunk or a
/// large batch costs milliseconds of ChaChaPoly, which must not hold a Raft
/// runtime thread (heartbeats and lease checks share those threads).
pub const SEAL_INLINE_BYTES_MAX: usize = 64 * 1024;

/// An authenticated, encrypted connection to a peer (`auth::client_handshake`
/// or `auth::server_handshake` made it). If a `send` or `recv` is cancelled
/// while its frame is on the blocking pool, the cipher state goes with it and
/// every later call fails: drop the connection (every caller does on a
/// cancelled call anyway).
pub struct SecureStream<S = TcpStream> {
    stream: S,
    noise: Option<Box<snow::TransportState>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> SecureStream<S> {
    pub(crate) fn new(stream: S, noise: snow::TransportState) -> Self {
        Self { stream, noise: Some(Box::new(noise)) }
    }

    /// Encrypt `payload` (at most `PEER_FRAME_BYTES_MAX` bytes) and send it
    /// as one frame.
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let sealed = if payload.len() > SEAL_INLINE_BYTES_MAX {
            let payload = payload.to_vec();
            self.offload(move |noise| seal(noise, &payload)).await?
        } else {
            seal(self.cipher()?, payload)?
        };
        write_frame(&mut self.stream, &sealed, SEALED_FRAME_BYTES_MAX).await
    }

    /// Receive one frame and decrypt it; `InvalidData` if it does not
    /// authenticate.
    pub async fn recv(&mut self) -> io::Result<Vec<u8>> {
        let frame = read_frame(&mut self.stream, SEALED_FRAME_BYTES_MAX).await?;
        if frame.len() > SEAL_INLINE_BYTES_MAX {
            self.offload(move |noise| open(noise, &frame)).await
        } else {
            open(self.cipher()?, &frame)
        }
    }

    fn cipher(&mut self) -> io::Result<&mut snow::TransportState> {
        self.noise.as_deref_mut().ok_or_else(lost)
    }

    /// Run `f` on the cipher state on the blocking pool.
    async fn offload<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut snow::TransportState) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let mut noise = self.noise.take().ok_or_else(lost)?;
        let (noise, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut noise);
            (noise, result)
        })
        .await
        .map_err(io::Error::other)?;
        self.noise = Some(noise);
        result
    }
}

fn lost() -> io::Error {
    io::Error::other("peer connection's cipher state was lost with a cancelled call")
}

/// Encrypt `payload` into the chunks of one frame.
pub(crate) fn seal(noise: &mut snow::TransportState, payload: &[u8]) -> io::Result<Vec<u8>> {
    if payload.len() as u64 > PEER_FRAME_BYTES_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "peer payload over PEER_FRAME_BYTES_MAX"));
    }
    let mut sealed = vec![0u8; sealed_len(payload.len())];
    let mut plain = Vec::with_capacity(payload.len().min(CHUNK_DATA_BYTES_MAX) + 1);
    let mut at = 0usize;
    let mut chunks = payload.chunks(CHUNK_DATA_BYTES_MAX).peekable();
    // An empty payload is one chunk with no data.
    let mut first = true;
    while first || chunks.peek().is_some() {
        first = false;
        let data = chunks.next().unwrap_or_default();
        plain.clear();
        plain.extend_from_slice(data);
        plain.push(if chunks.peek().is_some() { CHUNK_MORE } else { CHUNK_LAST });
        let out = sealed.get_mut(at..).ok_or_else(|| io::Error::other("sealed frame shorter than computed"))?;
        at += noise.write_message(&plain, out).map_err(|e| io::Error::other(format!("noise encrypt: {e}")))?;
    }
    if at != sealed.len() {
        return Err(io::Error::other("sealed frame length differs from sealed_len"));
    }
    Ok(sealed)
}

/// Decrypt the chunks of one frame into its payload (in place: each chunk's
/// plaintext lands where its data goes, and its flag is cut off).
pub(crate) fn open(noise: &mut snow::TransportState, frame: &[u8]) -> io::Result<Vec<u8>> {
    if frame.is_empty() {
        return Err(bad_frame("empty peer frame"));
    }
    let mut payload = Vec::with_capacity(frame.len());
    let mut chunks = frame.chunks(NOISE_MESSAGE_BYTES_MAX).peekable();
    while let Some(chunk) = chunks.next() {
        let at = payload.len();
        payload.resize(at + chunk.len(), 0);
        let out = payload.get_mut(at..).unwrap_or_default();
        let len = noise
            .read_message(chunk, out)
            .map_err(|_| bad_frame("peer frame failed authentication (tampered, replayed or reordered)"))?;
        let flag_at = (at + len).checked_sub(1).filter(|&i| i >= at).ok_or_else(|| bad_frame("empty chunk"))?;
        let flag = payload.get(flag_at).copied().unwrap_or(CHUNK_MORE);
        payload.truncate(flag_at);
        let last = chunks.peek().is_none();
        if flag != if last { CHUNK_LAST } else { CHUNK_MORE } {
            return Err(bad_frame("peer frame's chunks do not end where its payload ends"));
        }
    }
    Ok(payload)
}
