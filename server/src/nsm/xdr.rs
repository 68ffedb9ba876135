//! NSM v1 wire types (X/Open XNFS chapter 11, nfs-utils `sm_inter.x`) with
//! checked decoders and encoders, on the codec in `nlm::xdr` (same bounds
//! discipline: every length checked before anything is copied, strings
//! without NUL, trailing bytes rejected by `from_bytes`).
//!
//! `state` is `int` in the spec and `i32` here. `my_prog`, `my_vers` and
//! `my_proc` are `int` in the spec too but name an RPC program, version and
//! procedure, which RFC 5531 makes unsigned, so they are `u32` (the same bits).

use crate::nlm::xdr::{put_fixed, put_i32, put_u32, xdr_enum, BoundedName, Decoder, Xdr, XdrError};

/// Longest host name in NSM, in bytes (`SM_MAXSTRLEN`).
pub const SM_MAXSTRLEN: usize = 1024;
/// Size of the opaque `priv` a registrant gets back in its callback, in bytes.
pub const SM_PRIV_BYTES: usize = 16;
// A caller_name that NLM accepted can be monitored under the same name.
const _: () = assert!(crate::nlm::xdr::LM_MAXSTRLEN <= SM_MAXSTRLEN);

/// `string<SM_MAXSTRLEN>`: a host name.
pub type SmString = BoundedName<SM_MAXSTRLEN>;

/// `sm_name`: the SM_STAT argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmName {
    pub mon_name: SmString,
}

impl Xdr for SmName {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(SmName { mon_name: SmString::decode_field(d, "mon_name")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.mon_name.encode(out);
    }
}

/// `my_id`: who to call back (host, program, version, procedure) when a
/// monitored host's state changes; also the SM_UNMON_ALL argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MyId {
    pub my_name: SmString,
    pub my_prog: u32,
    pub my_vers: u32,
    pub my_proc: u32,
}

impl Xdr for MyId {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(MyId {
            my_name: SmString::decode_field(d, "my_name")?,
            my_prog: d.u32("my_prog")?,
            my_vers: d.u32("my_vers")?,
            my_proc: d.u32("my_proc")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.my_name.encode(out);
        put_u32(out, self.my_prog);
        put_u32(out, self.my_vers);
        put_u32(out, self.my_proc);
    }
}

/// `mon_id`: the host to monitor and who to tell; the SM_UNMON argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonId {
    pub mon_name: SmString,
    pub my_id: MyId,
}

impl Xdr for MonId {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(MonId { mon_name: SmString::decode_field(d, "mon_name")?, my_id: MyId::decode(d)? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.mon_name.encode(out);
        self.my_id.encode(out);
    }
}

/// `mon`: the SM_MON argument. `private` is XDR `priv`, returned unchanged
/// in the callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mon {
    pub mon_id: MonId,
    pub private: [u8; SM_PRIV_BYTES],
}

impl Xdr for Mon {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Mon { mon_id: MonId::decode(d)?, private: d.fixed::<SM_PRIV_BYTES>("priv")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.mon_id.encode(out);
        put_fixed(out, &self.private);
    }
}

xdr_enum! {
    /// `res`: whether NSM agreed to monitor.
    SmRes {
        StatSucc = 0,
        StatFail = 1,
    }
}

/// `sm_stat_res`: the SM_STAT and SM_MON reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmStatRes {
    pub res_stat: SmRes,
    /// This host's NSM state number.
    pub state: i32,
}

impl Xdr for SmStatRes {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(SmStatRes { res_stat: SmRes::decode_field(d, "res_stat")?, state: d.i32("state")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.res_stat.encode(out);
        put_i32(out, self.state);
    }
}

/// `sm_stat`: the SM_UNMON and SM_UNMON_ALL reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmStat {
    pub state: i32,
}

impl Xdr for SmStat {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(SmStat { state: d.i32("state")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_i32(out, self.state);
    }
}

/// `stat_chge`: the SM_NOTIFY argument, sent by a host's statd when it
/// (re)starts: its name and new state number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatChge {
    pub mon_name: SmString,
    pub state: i32,
}

impl Xdr for StatChge {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(StatChge { mon_name: SmString::decode_field(d, "mon_name")?, state: d.i32("state")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.mon_name.encode(out);
        put_i32(out, self.state);
    }
}

/// `status`: the callback NSM makes to a registrant's `my_prog`/`my_vers`/
/// `my_proc` when a monitored host changes state, with the registrant's `priv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmStatus {
    pub mon_name: SmString,
    pub state: i32,
    pub private: [u8; SM_PRIV_BYTES],
}

impl Xdr for SmStatus {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(SmStatus {
            mon_name: SmString::decode_field(d, "mon_name")?,
            state: d.i32("state")?,
            private: d.fixed::<SM_PRIV_BYTES>("priv")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.mon_name.encode(out);
        put_i32(out, self.state);
        put_fixed(out, &self.private);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlm::xdr::from_bytes;
    use crate::nlm::xdr::tests::{round_trip, words};

    fn name(s: &str) -> SmString {
        SmString::new(s.as_bytes().to_vec()).unwrap()
    }

    fn my_id() -> MyId {
        MyId { my_name: name("server"), my_prog: 100_021, my_vers: 4, my_proc: 16 }
    }

    #[test]
    fn every_type_round_trips() {
        round_trip(SmName { mon_name: name("client1") });
        round_trip(my_id());
        round_trip(MonId { mon_name: name("client1"), my_id: my_id() });
        round_trip(Mon { mon_id: MonId { mon_name: name("c"), my_id: my_id() }, private: [7; SM_PRIV_BYTES] });
        round_trip(SmStatRes { res_stat: SmRes::StatFail, state: 3 });
        round_trip(SmStat { state: -1 });
        round_trip(StatChge { mon_name: name(""), state: 5 });
        round_trip(SmStatus { mon_name: name("abcd"), state: 7, private: [1; SM_PRIV_BYTES] });
    }

    #[test]
    fn mon_layout() {
        let mon = Mon {
            mon_id: MonId {
                mon_name: name("cl"),
                my_id: MyId { my_name: name("srv"), my_prog: 1, my_vers: 2, my_proc: 3 },
            },
            private: *b"0123456789abcdef",
        };
        let mut want = words(&[2]);
        want.extend_from_slice(b"cl\0\0");
        want.extend_from_slice(&words(&[3]));
        want.extend_from_slice(b"srv\0");
        want.extend_from_slice(&words(&[1, 2, 3]));
        want.extend_from_slice(b"0123456789abcdef");
        assert_eq!(round_trip(mon), want);
    }

    #[test]
    fn notify_and_status_layout() {
        let mut want = words(&[5]);
        want.extend_from_slice(b"host1\0\0\0");
        want.extend_from_slice(&words(&[9]));
        assert_eq!(round_trip(StatChge { mon_name: name("host1"), state: 9 }), want);
        want.extend_from_slice(&[0xaa; 16]);
        assert_eq!(round_trip(SmStatus { mon_name: name("host1"), state: 9, private: [0xaa; 16] }), want);
        assert_eq!(round_trip(SmStatRes { res_stat: SmRes::StatSucc, state: 3 }), words(&[0, 3]));
    }

    #[test]
    fn bad_input_is_rejected() {
        // A huge name length fails on the bound, before any copy.
        let huge = words(&[0xFFFF_FFF0, 0]);
        assert_eq!(
            from_bytes::<SmName>(&huge),
            Err(XdrError::TooLong { field: "mon_name", len: 0xFFFF_FFF0, max: SM_MAXSTRLEN })
        );
        let mut long = words(&[1025]);
        long.extend_from_slice(&[b'a'; 1028]);
        assert!(matches!(from_bytes::<SmName>(&long), Err(XdrError::TooLong { len: 1025, .. })));
        let mut max = words(&[1024]);
        max.extend_from_slice(&[b'a'; 1024]);
        assert!(from_bytes::<SmName>(&max).is_ok());
        let mut nul = words(&[3]);
        nul.extend_from_slice(b"a\0b\0");
        assert_eq!(from_bytes::<SmName>(&nul), Err(XdrError::Nul { field: "mon_name" }));
        assert_eq!(from_bytes::<SmStatRes>(&words(&[2, 1])), Err(XdrError::BadValue { field: "res_stat", value: 2 }));
        assert!(SmString::new(vec![b'x'; SM_MAXSTRLEN + 1]).is_err());
    }
}
