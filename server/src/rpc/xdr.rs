//! A bounded XDR reader for decoding call arguments.
//!
//! `nfs3_types`' own `Unpack` for opaques allocates the length read from the wire
//! before checking that the bytes exist, so argument decoding goes through this
//! reader instead: every length is checked against both an explicit maximum and
//! the bytes actually remaining, before anything is allocated. Results are
//! encoded with `nfs3_types`' `Pack`, which has no such problem.

/// Decoding failed: the program answers GARBAGE_ARGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the next item needs.
    Truncated,
    /// A length is over its limit.
    TooLong,
    /// An enum discriminant or bool has no meaning.
    BadValue,
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let hi = self.u32()? as u64;
        let lo = self.u32()? as u64;
        Ok((hi << 32) | lo)
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadValue),
        }
    }

    /// Fixed-length opaque (`opaque x[n]`), padded to 4 bytes.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let s = self.take(n)?;
        self.take(pad(n))?;
        Ok(s)
    }

    /// Variable-length opaque (`opaque x<max>`), borrowed from the record.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong);
        }
        self.fixed(len)
    }

    /// Fail unless every byte has been consumed (trailing garbage is an error).
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(DecodeError::BadValue)
        }
    }
}

fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Encode any `nfs3_types` value into a fresh buffer.
pub fn encode<T: nfs3_types::xdr_codec::Pack>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.packed_size());
    // Writing into a Vec cannot fail; a Pack error here is a bug in the value.
    value.pack(&mut out).expect("packing into a Vec<u8> never fails");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_length_is_checked_before_allocation() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
        assert_eq!(r.opaque(usize::MAX), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[0, 0, 0, 65]);
        assert_eq!(r.opaque(64), Err(DecodeError::TooLong));
    }

    #[test]
    fn opaque_padding() {
        let mut r = Reader::new(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 7]);
        assert_eq!(r.opaque(8).unwrap(), b"abc");
        assert_eq!(r.u32().unwrap(), 7);
        assert!(r.finish().is_ok());
    }

    #[test]
    fn bool_rejects_other_values() {
        let mut r = Reader::new(&[0, 0, 0, 2]);
        assert_eq!(r.bool(), Err(DecodeError::BadValue));
    }
}
