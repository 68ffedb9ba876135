//! NLM v4 wire types (X/Open XNFS chapter 10, `nlm4_prot.x`) with checked
//! decoders and infallible encoders. The codec they are built on (`codec`,
//! re-exported here) is shared with `nsm::xdr`.
//!
//! Why not `nfs3_types`' `#[derive(XdrCodec)]`: the derive has no length
//! bounds, and the `Unpack` it generates allocates a wire length before
//! checking that the bytes exist (see `rpc::xdr`). A derived type would carry
//! that unchecked decoder with it. So every type here implements [`Xdr`] by
//! hand: decoding goes through the project's bounded `rpc::xdr::Reader`, and every
//! length is checked against its named bound and against the bytes remaining
//! before anything is copied.
//!
//! Variable-length fields are [`BoundedBytes`] (opaque) and [`BoundedName`]
//! (string) with the bound in the type, so a value that exists is within its
//! bound and encoding cannot produce what a decoder would reject.
//!
//! Decisions:
//! - A string (caller_name, notify name, NSM mon_name/my_name) must not contain
//!   a NUL byte: C peers (statd, lockd) would see a shorter name, so one host
//!   could alias another. UTF-8 is not required (XDR strings are bytes); an
//!   empty name is accepted here and left to the handlers.
//! - `fh` is bounded at [`NLM4_FH_BYTES_MAX`] (64, NFS3_FHSIZE), not at the
//!   netobj's 1024: no handle this server issues is longer, so a longer one is
//!   garbage rather than NLM4_STALE_FH (Linux lockd likewise rejects handles
//!   over its own NFS_MAXFHSIZE, 128).
//! - The cookie is bounded at [`MAXNETOBJ_SZ`] as the spec says (Linux lockd
//!   takes only 32 bytes; no client needs more, but the spec allows 1024).
//! - [`from_bytes`] rejects trailing bytes, like `nfs3::xdr::decode_all`.
//!   Padding bytes are skipped unchecked, like `rpc::xdr::Reader`.
//! - `svid`, `state` and `sequence` are `int32` in the spec and `i32` here.

mod codec;

pub(crate) use codec::xdr_enum;
pub use codec::{
    from_bytes, put_bool, put_fixed, put_i32, put_u32, put_u64, to_bytes, BoundedBytes, BoundedName, Decoder, Xdr,
    XdrError,
};

/// Longest `caller_name` in bytes (XNFS `LM_MAXSTRLEN`).
pub const LM_MAXSTRLEN: usize = 1024;
/// Longest `nlm4_notify.name` (FREE_ALL) in bytes (XNFS `LM_MAXNAMELEN`).
pub const LM_MAXNAMELEN: usize = 1025;
/// Longest `netobj` (cookie, owner handle) in bytes (XNFS `MAXNETOBJ_SZ`).
pub const MAXNETOBJ_SZ: usize = 1024;
/// Longest file handle in an NLM call, in bytes (NFS3_FHSIZE).
pub const NLM4_FH_BYTES_MAX: usize = 64;
const _: () = assert!(NLM4_FH_BYTES_MAX == crate::vfs::handle::FH_BYTES_MAX);
const _: () = assert!(NLM4_FH_BYTES_MAX <= MAXNETOBJ_SZ);
const _: () = assert!(LM_MAXSTRLEN < LM_MAXNAMELEN);

/// `netobj`: cookies and owner handles.
pub type NetObj = BoundedBytes<MAXNETOBJ_SZ>;
/// The file handle in `nlm4_lock` / `nlm4_share` (a netobj, bounded tighter).
pub type Nlm4Fh = BoundedBytes<NLM4_FH_BYTES_MAX>;
/// `caller_name`.
pub type CallerName = BoundedName<LM_MAXSTRLEN>;
/// `nlm4_notify.name`.
pub type NotifyName = BoundedName<LM_MAXNAMELEN>;

xdr_enum! {
    /// `nlm4_stats`.
    Nlm4Stats {
        Granted = 0,
        Denied = 1,
        DeniedNolocks = 2,
        Blocked = 3,
        DeniedGracePeriod = 4,
        Deadlck = 5,
        Rofs = 6,
        StaleFh = 7,
        Fbig = 8,
        Failed = 9,
    }
}

xdr_enum! {
    /// `fsh4_mode`: what a DOS share denies to others.
    Fsh4Mode {
        DenyNone = 0,
        DenyRead = 1,
        DenyWrite = 2,
        DenyReadWrite = 3,
    }
}

xdr_enum! {
    /// `fsh4_access`: what a DOS share itself wants.
    Fsh4Access {
        None = 0,
        Read = 1,
        Write = 2,
        ReadWrite = 3,
    }
}

/// `nlm4_holder`: the lock that blocks a TEST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4Holder {
    pub exclusive: bool,
    pub svid: i32,
    pub oh: NetObj,
    pub l_offset: u64,
    pub l_len: u64,
}

impl Xdr for Nlm4Holder {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4Holder {
            exclusive: d.bool("exclusive")?,
            svid: d.i32("svid")?,
            oh: NetObj::decode_field(d, "oh")?,
            l_offset: d.u64("l_offset")?,
            l_len: d.u64("l_len")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_bool(out, self.exclusive);
        put_i32(out, self.svid);
        self.oh.encode(out);
        put_u64(out, self.l_offset);
        put_u64(out, self.l_len);
    }
}

/// `nlm4_lock`: who asks (caller_name, oh, svid) for which range of which file.
/// `l_len` 0 means "to the end of the file".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4Lock {
    pub caller_name: CallerName,
    pub fh: Nlm4Fh,
    pub oh: NetObj,
    pub svid: i32,
    pub l_offset: u64,
    pub l_len: u64,
}

impl Xdr for Nlm4Lock {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4Lock {
            caller_name: CallerName::decode_field(d, "caller_name")?,
            fh: Nlm4Fh::decode_field(d, "fh")?,
            oh: NetObj::decode_field(d, "oh")?,
            svid: d.i32("svid")?,
            l_offset: d.u64("l_offset")?,
            l_len: d.u64("l_len")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.caller_name.encode(out);
        self.fh.encode(out);
        self.oh.encode(out);
        put_i32(out, self.svid);
        put_u64(out, self.l_offset);
        put_u64(out, self.l_len);
    }
}

/// `nlm4_testargs`: TEST, TEST_MSG, GRANTED and GRANTED_MSG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4TestArgs {
    pub cookie: NetObj,
    pub exclusive: bool,
    pub alock: Nlm4Lock,
}

impl Xdr for Nlm4TestArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4TestArgs {
            cookie: NetObj::decode_field(d, "cookie")?,
            exclusive: d.bool("exclusive")?,
            alock: Nlm4Lock::decode(d)?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        put_bool(out, self.exclusive);
        self.alock.encode(out);
    }
}

/// `nlm4_lockargs`: LOCK, LOCK_MSG and NM_LOCK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4LockArgs {
    pub cookie: NetObj,
    pub block: bool,
    pub exclusive: bool,
    pub alock: Nlm4Lock,
    pub reclaim: bool,
    /// The caller's NSM state number.
    pub state: i32,
}

impl Xdr for Nlm4LockArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4LockArgs {
            cookie: NetObj::decode_field(d, "cookie")?,
            block: d.bool("block")?,
            exclusive: d.bool("exclusive")?,
            alock: Nlm4Lock::decode(d)?,
            reclaim: d.bool("reclaim")?,
            state: d.i32("state")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        put_bool(out, self.block);
        put_bool(out, self.exclusive);
        self.alock.encode(out);
        put_bool(out, self.reclaim);
        put_i32(out, self.state);
    }
}

/// `nlm4_cancargs`: CANCEL and CANCEL_MSG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4CancArgs {
    pub cookie: NetObj,
    pub block: bool,
    pub exclusive: bool,
    pub alock: Nlm4Lock,
}

impl Xdr for Nlm4CancArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4CancArgs {
            cookie: NetObj::decode_field(d, "cookie")?,
            block: d.bool("block")?,
            exclusive: d.bool("exclusive")?,
            alock: Nlm4Lock::decode(d)?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        put_bool(out, self.block);
        put_bool(out, self.exclusive);
        self.alock.encode(out);
    }
}

/// `nlm4_unlockargs`: UNLOCK and UNLOCK_MSG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4UnlockArgs {
    pub cookie: NetObj,
    pub alock: Nlm4Lock,
}

impl Xdr for Nlm4UnlockArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4UnlockArgs { cookie: NetObj::decode_field(d, "cookie")?, alock: Nlm4Lock::decode(d)? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        self.alock.encode(out);
    }
}

/// `nlm4_testrply`: a union on `nlm4_stats` where only NLM4_DENIED carries a
/// body (the holder). The fields are private so that a holder is present
/// exactly when the status is `Denied`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4TestRply {
    stat: Nlm4Stats,
    holder: Option<Nlm4Holder>,
}

impl Nlm4TestRply {
    pub fn denied(holder: Nlm4Holder) -> Self {
        Nlm4TestRply { stat: Nlm4Stats::Denied, holder: Some(holder) }
    }
    /// Any status but `Denied` (which needs a holder): `None` for `Denied`.
    pub fn not_denied(stat: Nlm4Stats) -> Option<Self> {
        (stat != Nlm4Stats::Denied).then_some(Nlm4TestRply { stat, holder: None })
    }
    pub fn stat(&self) -> Nlm4Stats {
        self.stat
    }
    pub fn holder(&self) -> Option<&Nlm4Holder> {
        self.holder.as_ref()
    }
}

impl Xdr for Nlm4TestRply {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        let stat = Nlm4Stats::decode_field(d, "stat")?;
        let holder = if stat == Nlm4Stats::Denied { Some(Nlm4Holder::decode(d)?) } else { None };
        Ok(Nlm4TestRply { stat, holder })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.stat.encode(out);
        if let Some(holder) = &self.holder {
            holder.encode(out);
        }
    }
}

/// `nlm4_testres`: the TEST reply and the TEST_RES argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4TestRes {
    pub cookie: NetObj,
    pub stat: Nlm4TestRply,
}

impl Xdr for Nlm4TestRes {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4TestRes { cookie: NetObj::decode_field(d, "cookie")?, stat: Nlm4TestRply::decode(d)? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        self.stat.encode(out);
    }
}

/// `nlm4_res` (its `nlm4_stat` wrapper flattened): the LOCK, CANCEL, UNLOCK,
/// GRANTED and NM_LOCK reply, and the LOCK_RES ... GRANTED_RES argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4Res {
    pub cookie: NetObj,
    pub stat: Nlm4Stats,
}

impl Xdr for Nlm4Res {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4Res { cookie: NetObj::decode_field(d, "cookie")?, stat: Nlm4Stats::decode_field(d, "stat")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        self.stat.encode(out);
    }
}

/// `nlm4_share`: a DOS share reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4Share {
    pub caller_name: CallerName,
    pub fh: Nlm4Fh,
    pub oh: NetObj,
    pub mode: Fsh4Mode,
    pub access: Fsh4Access,
}

impl Xdr for Nlm4Share {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4Share {
            caller_name: CallerName::decode_field(d, "caller_name")?,
            fh: Nlm4Fh::decode_field(d, "fh")?,
            oh: NetObj::decode_field(d, "oh")?,
            mode: Fsh4Mode::decode_field(d, "mode")?,
            access: Fsh4Access::decode_field(d, "access")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.caller_name.encode(out);
        self.fh.encode(out);
        self.oh.encode(out);
        self.mode.encode(out);
        self.access.encode(out);
    }
}

/// `nlm4_shareargs`: SHARE and UNSHARE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4ShareArgs {
    pub cookie: NetObj,
    pub share: Nlm4Share,
    pub reclaim: bool,
}

impl Xdr for Nlm4ShareArgs {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4ShareArgs {
            cookie: NetObj::decode_field(d, "cookie")?,
            share: Nlm4Share::decode(d)?,
            reclaim: d.bool("reclaim")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        self.share.encode(out);
        put_bool(out, self.reclaim);
    }
}

/// `nlm4_shareres`: the SHARE and UNSHARE reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4ShareRes {
    pub cookie: NetObj,
    pub stat: Nlm4Stats,
    pub sequence: i32,
}

impl Xdr for Nlm4ShareRes {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4ShareRes {
            cookie: NetObj::decode_field(d, "cookie")?,
            stat: Nlm4Stats::decode_field(d, "stat")?,
            sequence: d.i32("sequence")?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.cookie.encode(out);
        self.stat.encode(out);
        put_i32(out, self.sequence);
    }
}

/// `nlm4_notify`: the FREE_ALL argument (a host and its new NSM state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nlm4Notify {
    pub name: NotifyName,
    pub state: i32,
}

impl Xdr for Nlm4Notify {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Ok(Nlm4Notify { name: NotifyName::decode_field(d, "name")?, state: d.i32("state")? })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.name.encode(out);
        put_i32(out, self.state);
    }
}

#[cfg(test)]
pub(crate) mod tests;
