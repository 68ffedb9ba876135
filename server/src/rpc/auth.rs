//! Call credentials: AUTH_NONE and AUTH_SYS (RFC 5531 appendix A). Anything
//! else is refused by the caller with AUTH_TOOWEAK; a malformed AUTH_SYS body
//! with AUTH_BADCRED.

use super::program::Cred;
use super::xdr::Reader;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;
/// RFC 5531: credential and verifier bodies are at most 400 bytes.
pub const AUTH_BODY_BYTES_MAX: usize = 400;
/// AUTH_SYS machine name limit (RFC 5531: `string machinename<255>`).
pub const MACHINE_NAME_BYTES_MAX: usize = 255;
/// AUTH_SYS supplementary groups limit (RFC 5531: `unsigned int gids<16>`).
pub const AUTH_SYS_GIDS_MAX: usize = 16;

/// Why a credential was refused; maps onto `auth_stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Malformed body (AUTH_BADCRED = 1).
    BadCred,
    /// Flavor we do not accept (AUTH_TOOWEAK = 5).
    TooWeak,
}

impl AuthError {
    pub fn auth_stat(self) -> u32 {
        match self {
            AuthError::BadCred => 1,
            AuthError::TooWeak => 5,
        }
    }
}

/// Turn a credential (flavor, body) into a `Cred`.
pub fn parse_cred(flavor: u32, body: &[u8]) -> Result<Cred, AuthError> {
    match flavor {
        AUTH_NONE => Ok(Cred::None),
        AUTH_SYS => parse_sys(body).ok_or(AuthError::BadCred),
        _ => Err(AuthError::TooWeak),
    }
}

fn parse_sys(body: &[u8]) -> Option<Cred> {
    let mut r = Reader::new(body);
    let _stamp = r.u32().ok()?;
    let machine = r.opaque(MACHINE_NAME_BYTES_MAX).ok()?;
    let uid = r.u32().ok()?;
    let gid = r.u32().ok()?;
    let count = r.u32().ok()? as usize;
    if count > AUTH_SYS_GIDS_MAX {
        return None;
    }
    let mut gids = Vec::with_capacity(count);
    for _ in 0..count {
        gids.push(r.u32().ok()?);
    }
    r.finish().ok()?;
    let machine = String::from_utf8_lossy(machine).into_owned();
    Some(Cred::Sys { uid, gid, gids, machine })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys_body(machine: &[u8], gids: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&7u32.to_be_bytes());
        b.extend_from_slice(&(machine.len() as u32).to_be_bytes());
        b.extend_from_slice(machine);
        b.resize(b.len() + (4 - machine.len() % 4) % 4, 0);
        b.extend_from_slice(&1000u32.to_be_bytes());
        b.extend_from_slice(&100u32.to_be_bytes());
        b.extend_from_slice(&gids.to_be_bytes());
        for g in 0..gids {
            b.extend_from_slice(&g.to_be_bytes());
        }
        b
    }

    #[test]
    fn auth_sys_parses() {
        let cred = parse_cred(AUTH_SYS, &sys_body(b"host", 2)).unwrap();
        assert_eq!(cred, Cred::Sys { uid: 1000, gid: 100, gids: vec![0, 1], machine: "host".into() });
    }

    #[test]
    fn auth_sys_limits() {
        assert!(parse_cred(AUTH_SYS, &sys_body(b"h", 16)).is_ok());
        assert_eq!(parse_cred(AUTH_SYS, &sys_body(b"h", 17)), Err(AuthError::BadCred));
        assert!(parse_cred(AUTH_SYS, &sys_body(&[b'a'; 255], 0)).is_ok());
        assert_eq!(parse_cred(AUTH_SYS, &sys_body(&[b'a'; 256], 0)), Err(AuthError::BadCred));
    }

    #[test]
    fn auth_sys_truncated_or_trailing_is_badcred() {
        let body = sys_body(b"host", 3);
        for cut in 0..body.len() {
            assert_eq!(parse_cred(AUTH_SYS, &body[..cut]), Err(AuthError::BadCred), "cut {cut}");
        }
        let mut long = body.clone();
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse_cred(AUTH_SYS, &long), Err(AuthError::BadCred));
    }

    #[test]
    fn other_flavors_are_too_weak() {
        assert_eq!(parse_cred(AUTH_NONE, &[]), Ok(Cred::None));
        assert_eq!(parse_cred(6, &[]), Err(AuthError::TooWeak));
        assert_eq!(parse_cred(3, &[]), Err(AuthError::TooWeak));
    }
}
