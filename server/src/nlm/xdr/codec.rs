//! The small XDR codec NLM and NSM share: [`Decoder`] (the project's bounded
//! [`Reader`] with errors that name the field), the [`Xdr`] trait,
//! [`from_bytes`]/[`to_bytes`], bounded opaque and string types whose bound is
//! part of the type, and the `xdr_enum!` macro for C-like enums.

use crate::rpc::xdr::{DecodeError, Reader};

/// Why a value did not decode (or could not be built). `field` names the XDR
/// field; every variant means GARBAGE_ARGS for a call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum XdrError {
    #[error("{field}: input ends before the field does")]
    Truncated { field: &'static str },
    #[error("{field}: length {len} is over the {max}-byte bound")]
    TooLong { field: &'static str, len: u32, max: usize },
    #[error("{field}: {value} is not a valid value")]
    BadValue { field: &'static str, value: u32 },
    #[error("{field}: contains a NUL byte")]
    Nul { field: &'static str },
    #[error("{count} bytes left over after the value")]
    Trailing { count: usize },
}

impl From<XdrError> for DecodeError {
    fn from(e: XdrError) -> Self {
        match e {
            XdrError::Truncated { .. } => DecodeError::Truncated,
            XdrError::TooLong { .. } => DecodeError::TooLong,
            XdrError::BadValue { .. } | XdrError::Nul { .. } | XdrError::Trailing { .. } => DecodeError::BadValue,
        }
    }
}

/// The project's [`Reader`], with errors that name the field.
pub struct Decoder<'a> {
    r: Reader<'a>,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Decoder { r: Reader::new(buf) }
    }

    pub fn remaining(&self) -> usize {
        self.r.remaining()
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, XdrError> {
        self.r.u32().map_err(|_| XdrError::Truncated { field })
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, XdrError> {
        self.r.i32().map_err(|_| XdrError::Truncated { field })
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, XdrError> {
        self.r.u64().map_err(|_| XdrError::Truncated { field })
    }

    pub fn bool(&mut self, field: &'static str) -> Result<bool, XdrError> {
        match self.u32(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(XdrError::BadValue { field, value }),
        }
    }

    /// `opaque x[N]`: exactly N bytes plus padding.
    pub fn fixed<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], XdrError> {
        let bytes = self.r.fixed(N).map_err(|_| XdrError::Truncated { field })?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// `opaque x<max>`, borrowed: the length is checked against `max`, then
    /// against the bytes remaining, and nothing is allocated.
    pub fn opaque(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], XdrError> {
        let len = self.u32(field)?;
        if len as usize > max {
            return Err(XdrError::TooLong { field, len, max });
        }
        self.r.fixed(len as usize).map_err(|_| XdrError::Truncated { field })
    }
}

/// A type with an XDR encoding. Encoding into a `Vec` cannot fail: every
/// value that can be built is within its bounds.
pub trait Xdr: Sized {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError>;
    fn encode(&self, out: &mut Vec<u8>);
}

/// Decode `bytes` as one `T`; bytes left over are an error.
pub fn from_bytes<T: Xdr>(bytes: &[u8]) -> Result<T, XdrError> {
    let mut d = Decoder::new(bytes);
    let value = T::decode(&mut d)?;
    match d.remaining() {
        0 => Ok(value),
        count => Err(XdrError::Trailing { count }),
    }
}

/// Encode `value` into a fresh buffer.
pub fn to_bytes<T: Xdr>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn put_bool(out: &mut Vec<u8>, v: bool) {
    put_u32(out, u32::from(v));
}

/// Bytes followed by zero padding to a multiple of 4 (`opaque x[n]`).
pub fn put_fixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(out.len() + (4 - bytes.len() % 4) % 4, 0);
}

/// Length, bytes and padding (`opaque x<max>`). Only `BoundedBytes` and
/// `BoundedName` call it, whose bounds fit in a u32 (`BOUND_FITS`).
fn put_opaque(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    put_fixed(out, bytes);
}

/// `opaque<MAX>`: at most MAX bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct BoundedBytes<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// Every bound must fit the 32-bit XDR length (checked at compile time).
    const BOUND_FITS: () = assert!(MAX <= u32::MAX as usize);

    pub fn new(bytes: Vec<u8>) -> Result<Self, XdrError> {
        let () = Self::BOUND_FITS;
        check_len("value", bytes.len(), MAX)?;
        Ok(BoundedBytes(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
    /// Decode as the field `field`.
    pub fn decode_field(d: &mut Decoder<'_>, field: &'static str) -> Result<Self, XdrError> {
        let () = Self::BOUND_FITS;
        Ok(BoundedBytes(d.opaque(field, MAX)?.to_vec()))
    }
}

impl<const MAX: usize> Xdr for BoundedBytes<MAX> {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Self::decode_field(d, "opaque")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_opaque(out, &self.0);
    }
}

/// `string<MAX>`: at most MAX bytes, none of them NUL.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BoundedName<const MAX: usize>(Vec<u8>);

impl<const MAX: usize> BoundedName<MAX> {
    /// Every bound must fit the 32-bit XDR length (checked at compile time).
    const BOUND_FITS: () = assert!(MAX <= u32::MAX as usize);

    pub fn new(bytes: Vec<u8>) -> Result<Self, XdrError> {
        let () = Self::BOUND_FITS;
        check_name("value", &bytes, MAX)?;
        Ok(BoundedName(bytes))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
    /// For logs: the name as text, invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// Decode as the field `field`.
    pub fn decode_field(d: &mut Decoder<'_>, field: &'static str) -> Result<Self, XdrError> {
        let () = Self::BOUND_FITS;
        let raw = d.opaque(field, MAX)?;
        check_name(field, raw, MAX)?;
        Ok(BoundedName(raw.to_vec()))
    }
}

impl<const MAX: usize> std::fmt::Debug for BoundedName<MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl<const MAX: usize> Xdr for BoundedName<MAX> {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, XdrError> {
        Self::decode_field(d, "string")
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_opaque(out, &self.0);
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), XdrError> {
    if len > max {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        return Err(XdrError::TooLong { field, len, max });
    }
    Ok(())
}

fn check_name(field: &'static str, bytes: &[u8], max: usize) -> Result<(), XdrError> {
    check_len(field, bytes.len(), max)?;
    if bytes.contains(&0) {
        return Err(XdrError::Nul { field });
    }
    Ok(())
}

/// A C-like XDR enum: `$name` with the given discriminants; an unknown
/// discriminant is `BadValue`.
macro_rules! xdr_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $value,)+
        }

        impl $name {
            pub fn from_u32(value: u32) -> Option<Self> {
                match value {
                    $($value => Some($name::$variant),)+
                    _ => None,
                }
            }
            pub fn decode_field(
                d: &mut $crate::nlm::xdr::Decoder<'_>,
                field: &'static str,
            ) -> Result<Self, $crate::nlm::xdr::XdrError> {
                let value = d.u32(field)?;
                Self::from_u32(value).ok_or($crate::nlm::xdr::XdrError::BadValue { field, value })
            }
        }

        impl $crate::nlm::xdr::Xdr for $name {
            fn decode(d: &mut $crate::nlm::xdr::Decoder<'_>) -> Result<Self, $crate::nlm::xdr::XdrError> {
                Self::decode_field(d, stringify!($name))
            }
            fn encode(&self, out: &mut Vec<u8>) {
                $crate::nlm::xdr::put_u32(out, *self as u32);
            }
        }
    };
}
pub(crate) use xdr_enum;
