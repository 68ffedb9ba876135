//! The byte encoding of commands (log entries) and of whole-state snapshots.
//! The only place that uses bincode, so the encoding can be swapped here alone.
//!
//! Format: one version byte, then bincode 1.3 with its default options
//! (varint integers, little endian, trailing bytes rejected). Decoding reads
//! from a slice, so it never reads past the input, and serde caps the
//! preallocation of any length prefix.

use bincode::Options;

use crate::command::Command;
use crate::error::InvariantError;
use crate::limits::COMMAND_BYTES_MAX;
use crate::State;

const COMMAND_FORMAT_V1: u8 = 1;
/// The state before the connection table (`conns.rs`): still decoded, with
/// no connections recorded.
const SNAPSHOT_FORMAT_V1: u8 = 1;
/// The state with its connection table, exports registered only: still
/// decoded, every export unserved and the table unseeded (the next node to
/// serve seeds it from its config).
const SNAPSHOT_FORMAT_V2: u8 = 2;
/// Exports served live (`ExportSet`/`ExportRemove`, `exports.rs`).
const SNAPSHOT_FORMAT_V3: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty input")]
    Empty,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("encoded command of {bytes} bytes exceeds {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::Error),
    #[error("snapshot violates an invariant: {0}")]
    Invalid(#[from] InvariantError),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
}

/// Encodes one command; refuses anything `decode_command` would refuse for size.
pub fn encode_command(cmd: &Command) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![COMMAND_FORMAT_V1];
    options().with_limit(COMMAND_BYTES_MAX).serialize_into(&mut out, cmd)?;
    let bytes = out.len() as u64;
    if bytes > COMMAND_BYTES_MAX {
        return Err(CodecError::TooLarge { bytes, max: COMMAND_BYTES_MAX });
    }
    Ok(out)
}

/// Exact length of `encode_command(cmd)`, without building it.
pub fn encoded_len(cmd: &Command) -> u64 {
    // Cannot fail without a size limit; saturate so a caller's bound check refuses it.
    options().serialized_size(cmd).map_or(u64::MAX, |n| n.saturating_add(1))
}

pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != COMMAND_FORMAT_V1 {
        return Err(CodecError::Version(version));
    }
    if bytes.len() as u64 > COMMAND_BYTES_MAX {
        return Err(CodecError::TooLarge { bytes: bytes.len() as u64, max: COMMAND_BYTES_MAX });
    }
    Ok(options().with_limit(COMMAND_BYTES_MAX).deserialize(body)?)
}

/// Encodes a whole state. Serializing our types into a Vec cannot fail (no
/// size limit, every sequence has a known length); should it ever, the empty
/// result is refused by `decode_state`, so the fault surfaces at load.
pub(crate) fn encode_state(state: &State) -> Vec<u8> {
    let mut out = vec![SNAPSHOT_FORMAT_V3];
    match options().serialize_into(&mut out, state) {
        Ok(()) => out,
        Err(e) => {
            debug_assert!(false, "snapshot encoding failed: {e}");
            Vec::new()
        }
    }
}

/// Decodes a snapshot's bytes. Invariants are checked by `State::from_snapshot`.
pub(crate) fn decode_state(bytes: &[u8]) -> Result<State, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        SNAPSHOT_FORMAT_V3 => Ok(options().deserialize(body)?),
        SNAPSHOT_FORMAT_V2 => Ok(options().deserialize::<StateV2>(body)?.try_into()?),
        SNAPSHOT_FORMAT_V1 => Ok(options().deserialize::<StateV1>(body)?.try_into()?),
        _ => Err(CodecError::Version(version)),
    }
}

/// `State` as format 2 encoded it (the export table registrations only).
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StateV2 {
    epoch: u64,
    exports: crate::exports::ExportsV2,
    handle_key: Option<[u8; crate::command::HANDLE_KEY_BYTES]>,
    rmtab: crate::rmtab::Rmtab,
    drc: crate::drc::Drc,
    last_promotion: Option<crate::command::Promotion>,
    nlm: crate::locks::NlmState,
    conns: crate::conns::Conns,
}

impl TryFrom<StateV2> for State {
    type Error = InvariantError;
    fn try_from(v2: StateV2) -> Result<State, InvariantError> {
        let StateV2 { epoch, exports, handle_key, rmtab, drc, last_promotion, nlm, conns } = v2;
        let exports = exports.try_into()?;
        Ok(State { epoch, exports, handle_key, rmtab, drc, last_promotion, nlm, conns })
    }
}

/// `State` as format 1 encoded it (the same fields, in order, without `conns`).
#[derive(serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct StateV1 {
    epoch: u64,
    exports: crate::exports::ExportsV2,
    handle_key: Option<[u8; crate::command::HANDLE_KEY_BYTES]>,
    rmtab: crate::rmtab::Rmtab,
    drc: crate::drc::Drc,
    last_promotion: Option<crate::command::Promotion>,
    nlm: crate::locks::NlmState,
}

impl TryFrom<StateV1> for State {
    type Error = InvariantError;
    fn try_from(v1: StateV1) -> Result<State, InvariantError> {
        let StateV1 { epoch, exports, handle_key, rmtab, drc, last_promotion, nlm } = v1;
        let exports = exports.try_into()?;
        Ok(State { epoch, exports, handle_key, rmtab, drc, last_promotion, nlm, conns: Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{test_fs, DrcKey};

    fn sample_state() -> State {
        let mut s = State::default();
        let cmds = [
            Command::RegisterExport { export_id: 3, path: "/srv/a".into(), fs: test_fs() },
            Command::ExportSet {
                export_id: 3,
                path: "/srv/a".into(),
                spec: crate::command::ExportSpec { dir: "/disk/a".into(), clients: "*(rw)".into() },
            },
            Command::ExportSet {
                export_id: 4,
                path: "/srv/b".into(),
                spec: crate::command::ExportSpec { dir: "/disk/b".into(), clients: "10.0.0.0/8".into() },
            },
            Command::ExportRemove { export_id: 4 },
            Command::Batch(vec![Command::SetHandleKey { key: [9; 32] }]),
            Command::Mount { client: "10.0.0.9".into(), path: "/srv/a".into() },
            Command::BumpEpoch,
            Command::DrcInsert {
                key: DrcKey {
                    client: "10.0.0.9".into(),
                    xid: 5,
                    prog: 100003,
                    vers: 3,
                    proc_: 8,
                    args_sum: 9,
                    cred: crate::command::DrcCred::Sys { uid: 1000, gid: 100 },
                },
                reply: vec![1, 2, 3],
                now_ms: 77,
            },
            Command::DrcIntent {
                key: DrcKey {
                    client: "10.0.0.9".into(),
                    xid: 6,
                    prog: 100003,
                    vers: 3,
                    proc_: 8,
                    args_sum: 9,
                    cred: crate::command::DrcCred::None,
                },
                now_ms: 78,
            },
            Command::ConnOpen {
                conn: crate::command::TcpConn {
                    client: std::net::SocketAddr::from(([10, 0, 0, 9], 901)),
                    server: std::net::SocketAddr::from(([10, 0, 0, 100], 2049)),
                },
            },
        ];
        for cmd in &cmds {
            assert!(s.apply(cmd).is_ok());
        }
        s
    }

    #[test]
    fn command_roundtrip() {
        let cmd = Command::Batch(vec![Command::BumpEpoch, Command::UnmountAll { client: "x".into() }]);
        let bytes = encode_command(&cmd).ok();
        assert_eq!(bytes.as_ref().map(|b| b.len() as u64), Some(encoded_len(&cmd)));
        assert_eq!(bytes.as_deref().map(decode_command).and_then(Result::ok), Some(cmd));
    }

    #[test]
    fn bad_command_bytes_are_errors() {
        assert!(matches!(decode_command(&[]), Err(CodecError::Empty)));
        assert!(matches!(decode_command(&[9, 0]), Err(CodecError::Version(9))));
        assert!(matches!(decode_command(&[COMMAND_FORMAT_V1, 200, 200, 200]), Err(CodecError::Bincode(_))));
        // A Vec length prefix claiming 2^60 elements must not allocate it.
        let mut huge = vec![COMMAND_FORMAT_V1, 0];
        huge.push(0xff);
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode_command(&huge).is_err());
        // Trailing bytes are refused.
        let mut trailing = encode_command(&Command::BumpEpoch).unwrap_or_default();
        trailing.push(0);
        assert!(decode_command(&trailing).is_err());
    }

    #[test]
    fn snapshot_roundtrip_and_rejects_garbage() {
        let s = sample_state();
        let bytes = s.to_snapshot();
        let back = State::from_snapshot(&bytes);
        assert_eq!(back.ok(), Some(s));
        assert!(State::from_snapshot(&[]).is_err());
        assert!(State::from_snapshot(&bytes[..bytes.len() / 2]).is_err());
        assert!(State::from_snapshot(&[SNAPSHOT_FORMAT_V3 + 1]).is_err());
    }

    /// `s` as the older formats saw it: exports registered, none served.
    fn registered_only(s: &State) -> State {
        let exports = crate::exports::Exports::try_from(crate::exports::ExportsV2::from(&s.exports));
        State { exports: exports.unwrap_or_default(), ..s.clone() }
    }

    #[test]
    fn a_format_2_snapshot_loads_with_exports_registered_and_unseeded() {
        let s = sample_state();
        assert!(s.exports_seeded());
        let v2 = StateV2 {
            epoch: s.epoch,
            exports: crate::exports::ExportsV2::from(&s.exports),
            handle_key: s.handle_key,
            rmtab: s.rmtab.clone(),
            drc: s.drc.clone(),
            last_promotion: s.last_promotion,
            nlm: s.nlm.clone(),
            conns: s.conns.clone(),
        };
        let mut bytes = vec![SNAPSHOT_FORMAT_V2];
        assert!(options().serialize_into(&mut bytes, &v2).is_ok());
        let back = State::from_snapshot(&bytes).ok();
        assert_eq!(back.as_ref(), Some(&registered_only(&s)));
        let back = back.unwrap_or_default();
        assert!(!back.exports_seeded());
        assert_eq!(back.export_fs(3), s.export_fs(3));
        assert_eq!(back.served_exports().count(), 0);
    }

    #[test]
    fn a_format_1_snapshot_loads_without_connections() {
        let s = sample_state();
        let v1 = StateV1 {
            epoch: s.epoch,
            exports: crate::exports::ExportsV2::from(&s.exports),
            handle_key: s.handle_key,
            rmtab: s.rmtab.clone(),
            drc: s.drc.clone(),
            last_promotion: s.last_promotion,
            nlm: s.nlm.clone(),
        };
        let mut bytes = vec![SNAPSHOT_FORMAT_V1];
        assert!(options().serialize_into(&mut bytes, &v1).is_ok());
        let without_conns = State { conns: Default::default(), ..registered_only(&s) };
        assert_eq!(State::from_snapshot(&bytes).ok(), Some(without_conns));
    }
}
