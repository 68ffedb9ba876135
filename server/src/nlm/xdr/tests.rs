//! Tests for the NLM v4 codec; `round_trip` and `words` are shared with
//! `nsm::xdr`'s tests.

use super::*;
use crate::rpc::xdr::DecodeError;

/// Big-endian words, for hand-built wire bytes.
pub(crate) fn words(ws: &[u32]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// Encode `value`, decode it back, check that every strict prefix is
/// `Truncated` and that 4 trailing bytes are `Trailing`; return the bytes.
pub(crate) fn round_trip<T: Xdr + PartialEq + std::fmt::Debug>(value: T) -> Vec<u8> {
    let bytes = to_bytes(&value);
    assert_eq!(bytes.len() % 4, 0, "{value:?}");
    assert_eq!(from_bytes::<T>(&bytes).as_ref(), Ok(&value));
    for cut in 0..bytes.len() {
        let got = from_bytes::<T>(&bytes[..cut]);
        assert!(matches!(got, Err(XdrError::Truncated { .. })), "prefix {cut} of {value:?}: {got:?}");
    }
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(from_bytes::<T>(&long), Err(XdrError::Trailing { count: 4 }));
    bytes
}

fn obj(b: &[u8]) -> NetObj {
    NetObj::new(b.to_vec()).unwrap()
}

fn lock() -> Nlm4Lock {
    Nlm4Lock {
        caller_name: CallerName::new(b"client1".to_vec()).unwrap(),
        fh: Nlm4Fh::new(vec![0xfe; 28]).unwrap(),
        oh: obj(b"1234@client1"),
        svid: 4321,
        l_offset: 1 << 40,
        l_len: 0,
    }
}

fn holder() -> Nlm4Holder {
    Nlm4Holder { exclusive: true, svid: -7, oh: obj(b"owner"), l_offset: 10, l_len: u64::MAX }
}

fn share() -> Nlm4Share {
    Nlm4Share {
        caller_name: CallerName::new(b"pc".to_vec()).unwrap(),
        fh: Nlm4Fh::new(vec![1; 64]).unwrap(),
        oh: obj(b""),
        mode: Fsh4Mode::DenyWrite,
        access: Fsh4Access::ReadWrite,
    }
}

#[test]
fn every_type_round_trips() {
    round_trip(Nlm4Stats::DeniedGracePeriod);
    round_trip(Fsh4Mode::DenyReadWrite);
    round_trip(Fsh4Access::None);
    round_trip(holder());
    round_trip(lock());
    round_trip(Nlm4TestArgs { cookie: obj(b"c1"), exclusive: true, alock: lock() });
    round_trip(Nlm4LockArgs {
        cookie: obj(&[9; 32]),
        block: true,
        exclusive: false,
        alock: lock(),
        reclaim: true,
        state: 3,
    });
    round_trip(Nlm4CancArgs { cookie: obj(b""), block: false, exclusive: true, alock: lock() });
    round_trip(Nlm4UnlockArgs { cookie: obj(b"abc"), alock: lock() });
    round_trip(Nlm4TestRes { cookie: obj(b"t"), stat: Nlm4TestRply::denied(holder()) });
    round_trip(Nlm4TestRes { cookie: obj(b"t"), stat: Nlm4TestRply::not_denied(Nlm4Stats::Granted).unwrap() });
    round_trip(Nlm4Res { cookie: obj(b"r"), stat: Nlm4Stats::Blocked });
    round_trip(share());
    round_trip(Nlm4ShareArgs { cookie: obj(b"s"), share: share(), reclaim: false });
    round_trip(Nlm4ShareRes { cookie: obj(b"s"), stat: Nlm4Stats::Granted, sequence: -2 });
    round_trip(Nlm4Notify { name: NotifyName::new(vec![b'h'; LM_MAXNAMELEN]).unwrap(), state: 5 });
}

#[test]
fn every_stat_value() {
    for v in 0..=9 {
        let s = Nlm4Stats::from_u32(v).unwrap();
        assert_eq!(to_bytes(&s), words(&[v]));
    }
    assert_eq!(from_bytes::<Nlm4Stats>(&words(&[10])), Err(XdrError::BadValue { field: "Nlm4Stats", value: 10 }));
    assert_eq!(Fsh4Mode::from_u32(4), None);
    assert_eq!(Fsh4Access::from_u32(4), None);
}

/// An `nlm4_lockargs` built word by word from the XNFS layout.
#[test]
fn lockargs_layout() {
    let mut b = words(&[2]); // cookie<>: length 2
    b.extend_from_slice(b"ab\0\0");
    b.extend_from_slice(&words(&[1, 0])); // block TRUE, exclusive FALSE
    b.extend_from_slice(&words(&[5])); // caller_name<1024>
    b.extend_from_slice(b"host1\0\0\0");
    b.extend_from_slice(&words(&[4, 0xdead_beef])); // fh<>
    b.extend_from_slice(&words(&[0])); // oh<>: empty
    b.extend_from_slice(&words(&[0xffff_ffff])); // svid -1
    b.extend_from_slice(&words(&[0, 100, 1, 0])); // l_offset 100, l_len 1 << 32
    b.extend_from_slice(&words(&[0, 7])); // reclaim FALSE, state 7
    let want = Nlm4LockArgs {
        cookie: obj(b"ab"),
        block: true,
        exclusive: false,
        alock: Nlm4Lock {
            caller_name: CallerName::new(b"host1".to_vec()).unwrap(),
            fh: Nlm4Fh::new(vec![0xde, 0xad, 0xbe, 0xef]).unwrap(),
            oh: obj(b""),
            svid: -1,
            l_offset: 100,
            l_len: 1 << 32,
        },
        reclaim: false,
        state: 7,
    };
    assert_eq!(from_bytes::<Nlm4LockArgs>(&b), Ok(want.clone()));
    assert_eq!(round_trip(want), b);
}

/// `nlm4_testres`: DENIED carries a holder, any other status nothing.
#[test]
fn testres_layout() {
    let granted = Nlm4TestRes { cookie: obj(b"xyz"), stat: Nlm4TestRply::not_denied(Nlm4Stats::Granted).unwrap() };
    let mut want = words(&[3]);
    want.extend_from_slice(b"xyz\0");
    want.extend_from_slice(&words(&[0]));
    assert_eq!(round_trip(granted), want);

    let h = Nlm4Holder { exclusive: false, svid: 12, oh: obj(b"o"), l_offset: 5, l_len: 6 };
    let denied = Nlm4TestRes { cookie: obj(b""), stat: Nlm4TestRply::denied(h.clone()) };
    let mut want = words(&[0, 1, 0, 12, 1]);
    want.extend_from_slice(b"o\0\0\0");
    want.extend_from_slice(&words(&[0, 5, 0, 6]));
    assert_eq!(round_trip(denied.clone()), want);
    assert_eq!(denied.stat.stat(), Nlm4Stats::Denied);
    assert_eq!(denied.stat.holder(), Some(&h));
    assert_eq!(Nlm4TestRply::not_denied(Nlm4Stats::Denied), None);
}

#[test]
fn res_shareres_notify_layout() {
    let mut want = words(&[1]);
    want.extend_from_slice(b"k\0\0\0");
    want.extend_from_slice(&words(&[4]));
    assert_eq!(round_trip(Nlm4Res { cookie: obj(b"k"), stat: Nlm4Stats::DeniedGracePeriod }), want);
    want.extend_from_slice(&words(&[0xffff_ffff]));
    let shareres = Nlm4ShareRes { cookie: obj(b"k"), stat: Nlm4Stats::DeniedGracePeriod, sequence: -1 };
    assert_eq!(round_trip(shareres), want);
    let mut want = words(&[4]);
    want.extend_from_slice(b"node");
    want.extend_from_slice(&words(&[3]));
    assert_eq!(round_trip(Nlm4Notify { name: NotifyName::new(b"node".to_vec()).unwrap(), state: 3 }), want);
}

/// Lengths are checked against their bound before anything is read or copied:
/// a length of 0xFFFFFFF0 over a few bytes is `TooLong`, not `Truncated`.
#[test]
fn huge_lengths_fail_on_the_bound() {
    let huge = words(&[0xFFFF_FFF0, 1, 2]);
    let too_long = |field| XdrError::TooLong { field, len: 0xFFFF_FFF0, max: MAXNETOBJ_SZ };
    assert_eq!(from_bytes::<Nlm4Res>(&huge), Err(too_long("cookie")));
    assert_eq!(from_bytes::<Nlm4TestArgs>(&huge), Err(too_long("cookie")));
    // The same in the owner handle, deep inside a lock.
    let mut b = to_bytes(&lock());
    let oh_at = 4 + 8 + 4 + 28; // caller_name "client1", fh 28 bytes
    b.truncate(oh_at);
    b.extend_from_slice(&words(&[0xFFFF_FFF0, 0, 0]));
    assert_eq!(from_bytes::<Nlm4Lock>(&b), Err(too_long("oh")));
    // Within the bound but past the end of the input: Truncated.
    assert_eq!(from_bytes::<NetObj>(&words(&[1000, 0])), Err(XdrError::Truncated { field: "opaque" }));
}

fn lock_with(caller_name: &[u8], fh: &[u8]) -> Vec<u8> {
    let mut b = words(&[caller_name.len() as u32]);
    put_fixed(&mut b, caller_name);
    put_u32(&mut b, fh.len() as u32);
    put_fixed(&mut b, fh);
    b.extend_from_slice(&words(&[0, 1, 0, 0, 0, 0])); // oh, svid, l_offset, l_len
    b
}

#[test]
fn caller_name_is_checked() {
    let fh = [1u8; 8];
    assert!(from_bytes::<Nlm4Lock>(&lock_with(&[b'a'; LM_MAXSTRLEN], &fh)).is_ok());
    assert_eq!(
        from_bytes::<Nlm4Lock>(&lock_with(&[b'a'; LM_MAXSTRLEN + 1], &fh)),
        Err(XdrError::TooLong { field: "caller_name", len: 1025, max: LM_MAXSTRLEN })
    );
    assert_eq!(from_bytes::<Nlm4Lock>(&lock_with(b"ho\0st", &fh)), Err(XdrError::Nul { field: "caller_name" }));
    assert!(from_bytes::<Nlm4Lock>(&lock_with(b"", &fh)).is_ok());
    assert!(CallerName::new(b"a\0".to_vec()).is_err());
    assert!(CallerName::new(vec![b'a'; LM_MAXSTRLEN + 1]).is_err());
}

#[test]
fn fh_over_64_bytes_is_rejected() {
    assert!(from_bytes::<Nlm4Lock>(&lock_with(b"h", &[1; NLM4_FH_BYTES_MAX])).is_ok());
    assert_eq!(
        from_bytes::<Nlm4Lock>(&lock_with(b"h", &[1; NLM4_FH_BYTES_MAX + 1])),
        Err(XdrError::TooLong { field: "fh", len: 65, max: NLM4_FH_BYTES_MAX })
    );
    assert!(Nlm4Fh::new(vec![0; NLM4_FH_BYTES_MAX + 1]).is_err());
}

#[test]
fn netobj_bounds() {
    assert!(NetObj::new(vec![0; MAXNETOBJ_SZ]).is_ok());
    assert!(NetObj::new(vec![0; MAXNETOBJ_SZ + 1]).is_err());
    let mut b = words(&[MAXNETOBJ_SZ as u32 + 1]);
    b.extend_from_slice(&[0; MAXNETOBJ_SZ + 4]);
    assert!(matches!(from_bytes::<Nlm4Res>(&b), Err(XdrError::TooLong { field: "cookie", .. })));
    let notify_long = [words(&[LM_MAXNAMELEN as u32 + 1]), vec![b'n'; 1028], words(&[1])].concat();
    assert!(matches!(from_bytes::<Nlm4Notify>(&notify_long), Err(XdrError::TooLong { field: "name", .. })));
}

#[test]
fn bools_and_enums_are_checked() {
    let mut b = words(&[0, 2]); // empty cookie, exclusive = 2
    b.extend_from_slice(&to_bytes(&lock()));
    assert_eq!(from_bytes::<Nlm4TestArgs>(&b), Err(XdrError::BadValue { field: "exclusive", value: 2 }));
    let mut s = to_bytes(&share());
    let len = s.len();
    s[len - 8..len - 4].copy_from_slice(&4u32.to_be_bytes()); // mode = 4
    assert_eq!(from_bytes::<Nlm4Share>(&s), Err(XdrError::BadValue { field: "mode", value: 4 }));
    assert_eq!(from_bytes::<Nlm4Res>(&words(&[0, 10])), Err(XdrError::BadValue { field: "stat", value: 10 }));
}

#[test]
fn errors_map_to_rpc_decode_errors() {
    assert_eq!(DecodeError::from(XdrError::Truncated { field: "x" }), DecodeError::Truncated);
    assert_eq!(DecodeError::from(XdrError::TooLong { field: "x", len: 2, max: 1 }), DecodeError::TooLong);
    assert_eq!(DecodeError::from(XdrError::Nul { field: "x" }), DecodeError::BadValue);
    assert_eq!(DecodeError::from(XdrError::Trailing { count: 4 }), DecodeError::BadValue);
}
