//! RPC messages (RFC 5531 §9): decoding the call header with the bounded
//! `xdr::Reader`, and building every kind of reply.

use super::auth::{self, AUTH_BODY_BYTES_MAX};
use super::program::Cred;
use super::xdr::Reader;

pub const RPC_VERSION: u32 = 2;
pub const MSG_CALL: u32 = 0;
pub const MSG_REPLY: u32 = 1;
pub const MSG_ACCEPTED: u32 = 0;
pub const MSG_DENIED: u32 = 1;
pub const REJECT_RPC_MISMATCH: u32 = 0;
pub const REJECT_AUTH_ERROR: u32 = 1;
/// `auth_stat` AUTH_BADCRED.
pub const AUTH_BADCRED: u32 = 1;
/// `auth_stat` AUTH_BADVERF.
pub const AUTH_BADVERF: u32 = 2;

/// `accept_stat` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum AcceptStat {
    Success = 0,
    ProgUnavail = 1,
    ProgMismatch = 2,
    ProcUnavail = 3,
    GarbageArgs = 4,
    SystemErr = 5,
}

/// A decoded call header. The arguments start at `args_offset` in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHeader {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_: u32,
    pub cred: Cred,
    pub args_offset: usize,
}

/// Why a call header was not accepted, and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a call we can answer (shorter than xid + type, or not a CALL): no reply.
    Drop,
    /// rpcvers is not 2: MSG_DENIED RPC_MISMATCH(2, 2).
    RpcMismatch { xid: u32 },
    /// The header ends early: GARBAGE_ARGS.
    Garbage { xid: u32 },
    /// The credential or verifier is refused: MSG_DENIED AUTH_ERROR(stat).
    Auth { xid: u32, stat: u32 },
}

impl HeaderError {
    /// The reply message for this error, if any.
    pub fn reply(&self) -> Option<Vec<u8>> {
        match *self {
            HeaderError::Drop => None,
            HeaderError::RpcMismatch { xid } => Some(rpc_mismatch(xid)),
            HeaderError::Garbage { xid } => Some(accepted(xid, AcceptStat::GarbageArgs)),
            HeaderError::Auth { xid, stat } => Some(auth_error(xid, stat)),
        }
    }
}

/// Decode the header of one call record.
pub fn decode_call(record: &[u8]) -> Result<CallHeader, HeaderError> {
    let mut r = Reader::new(record);
    let xid = r.u32().map_err(|_| HeaderError::Drop)?;
    if r.u32().map_err(|_| HeaderError::Drop)? != MSG_CALL {
        return Err(HeaderError::Drop);
    }
    let garbage = |_| HeaderError::Garbage { xid };
    if r.u32().map_err(garbage)? != RPC_VERSION {
        return Err(HeaderError::RpcMismatch { xid });
    }
    let prog = r.u32().map_err(garbage)?;
    let vers = r.u32().map_err(garbage)?;
    let proc_ = r.u32().map_err(garbage)?;
    let badcred = |_| HeaderError::Auth { xid, stat: AUTH_BADCRED };
    let cred_flavor = r.u32().map_err(badcred)?;
    let cred_body = r.opaque(AUTH_BODY_BYTES_MAX).map_err(badcred)?;
    let badverf = |_| HeaderError::Auth { xid, stat: AUTH_BADVERF };
    let _verf_flavor = r.u32().map_err(badverf)?;
    let _verf_body = r.opaque(AUTH_BODY_BYTES_MAX).map_err(badverf)?;
    let cred = auth::parse_cred(cred_flavor, cred_body).map_err(|e| HeaderError::Auth { xid, stat: e.auth_stat() })?;
    Ok(CallHeader { xid, prog, vers, proc_, cred, args_offset: r.position() })
}

fn accepted_header(xid: u32, stat: AcceptStat, extra: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + extra);
    for word in [xid, MSG_REPLY, MSG_ACCEPTED, auth::AUTH_NONE, 0, stat as u32] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
}

/// A reply message as two parts sent back to back: the RPC reply header (or a
/// whole short message) and the procedure's result. They are kept apart so a
/// large result (a READ's data) is never copied just to put 24 bytes before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

impl Message {
    pub fn len(&self) -> usize {
        self.head.len().saturating_add(self.body.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The xid the message answers (0 if it is too short to have one).
    pub fn xid(&self) -> u32 {
        let mut b = self.head.iter().chain(self.body.iter()).copied();
        let mut word = [0u8; 4];
        for w in &mut word {
            *w = b.next().unwrap_or(0);
        }
        u32::from_be_bytes(word)
    }

    /// The two parts, in order.
    pub fn parts(&self) -> [&[u8]; 2] {
        [&self.head, &self.body]
    }

    /// The whole message in one buffer (a UDP datagram, a test).
    pub fn to_vec(&self) -> Vec<u8> {
        [self.head.as_slice(), self.body.as_slice()].concat()
    }
}

impl From<Vec<u8>> for Message {
    fn from(whole: Vec<u8>) -> Message {
        Message { head: whole, body: Vec::new() }
    }
}

/// MSG_ACCEPTED SUCCESS followed by the procedure's result `body`.
pub fn success(xid: u32, body: Vec<u8>) -> Message {
    Message { head: accepted_header(xid, AcceptStat::Success, 0), body }
}

/// MSG_ACCEPTED with a status that carries no data (PROG_UNAVAIL, PROC_UNAVAIL,
/// GARBAGE_ARGS, SYSTEM_ERR).
pub fn accepted(xid: u32, stat: AcceptStat) -> Vec<u8> {
    accepted_header(xid, stat, 0)
}

/// MSG_ACCEPTED PROG_MISMATCH with the supported version range.
pub fn prog_mismatch(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut out = accepted_header(xid, AcceptStat::ProgMismatch, 8);
    out.extend_from_slice(&low.to_be_bytes());
    out.extend_from_slice(&high.to_be_bytes());
    out
}

/// MSG_DENIED RPC_MISMATCH(2, 2).
pub fn rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    for word in [xid, MSG_REPLY, MSG_DENIED, REJECT_RPC_MISMATCH, RPC_VERSION, RPC_VERSION] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
}

/// MSG_DENIED AUTH_ERROR with `auth_stat`.
pub fn auth_error(xid: u32, stat: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    for word in [xid, MSG_REPLY, MSG_DENIED, REJECT_AUTH_ERROR, stat] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn decodes_a_null_call() {
        let rec = words(&[9, MSG_CALL, 2, 100003, 3, 0, 0, 0, 0, 0, 0xdead]);
        let h = decode_call(&rec).unwrap();
        assert_eq!((h.xid, h.prog, h.vers, h.proc_), (9, 100003, 3, 0));
        assert_eq!(h.cred, Cred::None);
        assert_eq!(h.args_offset, 40);
    }

    #[test]
    fn header_errors() {
        assert_eq!(decode_call(&words(&[9])), Err(HeaderError::Drop));
        assert_eq!(decode_call(&words(&[9, MSG_REPLY, 0])), Err(HeaderError::Drop));
        assert_eq!(
            decode_call(&words(&[9, MSG_CALL, 3, 1, 1, 0, 0, 0, 0, 0])),
            Err(HeaderError::RpcMismatch { xid: 9 })
        );
        assert_eq!(decode_call(&words(&[9, MSG_CALL, 2, 1])), Err(HeaderError::Garbage { xid: 9 }));
        // Credential longer than 400 bytes.
        assert_eq!(
            decode_call(&words(&[9, MSG_CALL, 2, 1, 1, 0, 1, 401])),
            Err(HeaderError::Auth { xid: 9, stat: AUTH_BADCRED })
        );
        // Verifier missing.
        assert_eq!(
            decode_call(&words(&[9, MSG_CALL, 2, 1, 1, 0, 0, 0])),
            Err(HeaderError::Auth { xid: 9, stat: AUTH_BADVERF })
        );
        // RPCSEC_GSS is refused as too weak for us to check.
        assert_eq!(
            decode_call(&words(&[9, MSG_CALL, 2, 1, 1, 0, 6, 0, 0, 0])),
            Err(HeaderError::Auth { xid: 9, stat: 5 })
        );
    }

    #[test]
    fn reply_layouts() {
        let m = success(5, vec![1, 2, 3, 4]);
        assert_eq!(m.to_vec(), [words(&[5, 1, 0, 0, 0, 0]), vec![1, 2, 3, 4]].concat());
        assert_eq!((m.xid(), m.len()), (5, 28));
        assert_eq!(Message::from(vec![0, 0, 1]).xid(), 256);
        assert_eq!(prog_mismatch(5, 3, 3), words(&[5, 1, 0, 0, 0, 2, 3, 3]));
        assert_eq!(accepted(5, AcceptStat::ProcUnavail), words(&[5, 1, 0, 0, 0, 3]));
        assert_eq!(rpc_mismatch(5), words(&[5, 1, 1, 0, 2, 2]));
        assert_eq!(auth_error(5, AUTH_BADCRED), words(&[5, 1, 1, 1, 1]));
    }
}
