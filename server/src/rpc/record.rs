//! Record marking (RFC 5531 §11): a TCP record is one or more fragments, each
//! preceded by a 4-byte header whose top bit marks the last fragment and whose
//! low 31 bits give the fragment length.
//!
//! Parsing is two-stage, as in mini-redis' `frame.rs`: `check` walks the
//! fragment headers already buffered and decides whether a whole record is
//! present, without copying; only then is the record assembled. Every length is
//! checked against the record bound before anything is allocated. `Incomplete`
//! (wait for more bytes) is distinct from `Oversize`/`Malformed` (close the
//! connection).

use bytes::{Buf, BytesMut};

/// Default largest record: a 1 MiB WRITE plus room for its headers.
pub const RECORD_BYTES_MAX: u32 = 1024 * 1024 + 64 * 1024;
/// Top bit of a fragment header: this is the record's last fragment.
pub const FRAGMENT_LAST_FLAG: u32 = 0x8000_0000;
/// Low 31 bits of a fragment header: the fragment length.
pub const FRAGMENT_LENGTH_MASK: u32 = 0x7FFF_FFFF;
/// Fragment header size.
pub const FRAGMENT_HEADER_BYTES: usize = 4;
/// More fragments than this in one record is treated as malformed (a stream of
/// empty fragments would otherwise cost work without progress).
pub const RECORD_FRAGMENTS_MAX: u32 = 1024;

// A 1 MiB WRITE with its headers fits, and the bound fits one fragment's length.
const _: () = assert!(RECORD_BYTES_MAX >= 1024 * 1024 + 4096);
const _: () = assert!(RECORD_BYTES_MAX <= FRAGMENT_LENGTH_MASK);
const _: () = assert!(RECORD_FRAGMENTS_MAX > 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Not enough buffered bytes for a whole record yet: read more.
    Incomplete,
    /// The record's total length exceeds the bound: close the connection.
    Oversize { len: u64, max: u32 },
    /// The fragment structure is unacceptable: close the connection.
    Malformed,
}

/// Decide whether `buf` starts with a whole record of at most `max` bytes.
/// Returns the number of buffered bytes (headers included) the record occupies.
pub fn check(buf: &[u8], max: u32) -> Result<usize, RecordError> {
    let mut pos: usize = 0;
    let mut total: u64 = 0;
    let mut fragments: u32 = 0;
    loop {
        let Some(header) = buf.get(pos..pos + FRAGMENT_HEADER_BYTES) else {
            return Err(RecordError::Incomplete);
        };
        let word = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let len = word & FRAGMENT_LENGTH_MASK;
        fragments += 1;
        if fragments > RECORD_FRAGMENTS_MAX {
            return Err(RecordError::Malformed);
        }
        total += u64::from(len);
        if total > u64::from(max) {
            return Err(RecordError::Oversize { len: total, max });
        }
        pos += FRAGMENT_HEADER_BYTES + len as usize;
        if buf.len() < pos {
            return Err(RecordError::Incomplete);
        }
        if word & FRAGMENT_LAST_FLAG != 0 {
            return Ok(pos);
        }
    }
}

/// Take one whole record out of `buf` (after `check` said it is there),
/// concatenating its fragments. Returns `None` if none is complete yet.
pub fn parse(buf: &mut BytesMut, max: u32) -> Result<Option<Vec<u8>>, RecordError> {
    let used = match check(buf, max) {
        Ok(used) => used,
        Err(RecordError::Incomplete) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut record = Vec::with_capacity(used);
    let mut consumed = 0;
    while consumed < used {
        let word = buf.get_u32();
        let len = (word & FRAGMENT_LENGTH_MASK) as usize;
        record.extend_from_slice(&buf[..len]);
        buf.advance(len);
        consumed += FRAGMENT_HEADER_BYTES + len;
    }
    Ok(Some(record))
}

/// Frame `body` as one record of a single fragment.
pub fn frame(body: &[u8]) -> Result<Vec<u8>, RecordError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| *l <= FRAGMENT_LENGTH_MASK)
        .ok_or(RecordError::Oversize { len: body.len() as u64, max: FRAGMENT_LENGTH_MASK })?;
    let mut out = Vec::with_capacity(FRAGMENT_HEADER_BYTES + body.len());
    out.extend_from_slice(&(len | FRAGMENT_LAST_FLAG).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(data: &[u8], last: bool) -> Vec<u8> {
        let mut word = data.len() as u32;
        if last {
            word |= FRAGMENT_LAST_FLAG;
        }
        let mut out = word.to_be_bytes().to_vec();
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn single_fragment_round_trip() {
        let framed = frame(b"hello").unwrap();
        let mut buf = BytesMut::from(&framed[..]);
        assert_eq!(parse(&mut buf, 64).unwrap(), Some(b"hello".to_vec()));
        assert!(buf.is_empty());
    }

    #[test]
    fn multi_fragment_record_is_concatenated() {
        let mut bytes = fragment(b"ab", false);
        bytes.extend(fragment(b"", false));
        bytes.extend(fragment(b"cde", true));
        bytes.extend(fragment(b"next", true));
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(parse(&mut buf, 64).unwrap(), Some(b"abcde".to_vec()));
        assert_eq!(parse(&mut buf, 64).unwrap(), Some(b"next".to_vec()));
        assert_eq!(parse(&mut buf, 64).unwrap(), None);
    }

    #[test]
    fn truncated_record_is_incomplete_not_malformed() {
        let bytes = fragment(b"abcdef", true);
        for cut in 0..bytes.len() {
            assert_eq!(check(&bytes[..cut], 64), Err(RecordError::Incomplete), "cut at {cut}");
        }
        // A first fragment complete but the last one missing.
        let bytes = fragment(b"ab", false);
        assert_eq!(check(&bytes, 64), Err(RecordError::Incomplete));
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let header = (FRAGMENT_LAST_FLAG | FRAGMENT_LENGTH_MASK).to_be_bytes();
        assert_eq!(
            check(&header, RECORD_BYTES_MAX),
            Err(RecordError::Oversize { len: u64::from(FRAGMENT_LENGTH_MASK), max: RECORD_BYTES_MAX })
        );
        // Fragments that are each small but add up past the bound.
        let mut bytes = fragment(&[0; 40], false);
        bytes.extend(fragment(&[0; 40], true));
        assert!(matches!(check(&bytes, 64), Err(RecordError::Oversize { len: 80, .. })));
    }

    #[test]
    fn endless_empty_fragments_are_malformed() {
        let mut bytes = Vec::new();
        for _ in 0..=RECORD_FRAGMENTS_MAX {
            bytes.extend(fragment(b"", false));
        }
        assert_eq!(check(&bytes, 64), Err(RecordError::Malformed));
    }
}
