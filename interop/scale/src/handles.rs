//! The handle file the walk writes and the sample reads: an 8-byte magic,
//! then one record per entry: fileid (u64 little-endian), handle length
//! (one byte, at most `FH_BYTES_MAX`), the handle's bytes.

use std::fs::File;
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use crate::ScaleError;

/// First bytes of a handle file.
pub const MAGIC: &[u8; 8] = b"HSCALE01";
/// Largest NFSv3 file handle (RFC 1813 NFS3_FHSIZE).
pub const FH_BYTES_MAX: usize = 64;
/// Largest record: fileid, length byte, handle.
pub const RECORD_BYTES_MAX: u64 = 8 + 1 + FH_BYTES_MAX as u64;
/// Buffer of the writer and the reader.
const BUF_BYTES: usize = 1024 * 1024;

/// One saved entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub fileid: u64,
    pub fh: Vec<u8>,
}

/// Appends records; one per walk, shared by its tasks behind a mutex.
pub struct HandleWriter {
    path: PathBuf,
    out: BufWriter<File>,
    records: u64,
}

impl HandleWriter {
    pub fn create(path: &Path) -> Result<HandleWriter, ScaleError> {
        let file = File::create(path).map_err(|e| ScaleError::io(path, e))?;
        let mut out = BufWriter::with_capacity(BUF_BYTES, file);
        out.write_all(MAGIC).map_err(|e| ScaleError::io(path, e))?;
        Ok(HandleWriter { path: path.to_path_buf(), out, records: 0 })
    }

    /// Append one record; a handle over `FH_BYTES_MAX` is refused.
    pub fn push(&mut self, fileid: u64, fh: &[u8]) -> Result<(), ScaleError> {
        let len = u8::try_from(fh.len())
            .ok()
            .filter(|l| usize::from(*l) <= FH_BYTES_MAX)
            .ok_or_else(|| ScaleError::Limit(format!("a {}-byte handle (over {FH_BYTES_MAX})", fh.len())))?;
        let io = |e| ScaleError::io(&self.path, e);
        self.out.write_all(&fileid.to_le_bytes()).map_err(io)?;
        self.out.write_all(&[len]).map_err(io)?;
        self.out.write_all(fh).map_err(io)?;
        self.records += 1;
        Ok(())
    }

    /// Flush to disk; returns the record count.
    pub fn finish(mut self) -> Result<u64, ScaleError> {
        self.out.flush().map_err(|e| ScaleError::io(&self.path, e))?;
        Ok(self.records)
    }
}

/// Reads records in order.
pub struct HandleReader {
    path: PathBuf,
    inp: BufReader<File>,
}

impl HandleReader {
    pub fn open(path: &Path) -> Result<HandleReader, ScaleError> {
        let file = File::open(path).map_err(|e| ScaleError::io(path, e))?;
        let mut inp = BufReader::with_capacity(BUF_BYTES, file);
        let mut magic = [0u8; 8];
        inp.read_exact(&mut magic).map_err(|e| ScaleError::io(path, e))?;
        if &magic != MAGIC {
            return Err(ScaleError::BadHandleFile { path: path.to_path_buf(), detail: "wrong magic".into() });
        }
        Ok(HandleReader { path: path.to_path_buf(), inp })
    }

    fn bad(&self, detail: &str) -> ScaleError {
        ScaleError::BadHandleFile { path: self.path.clone(), detail: detail.to_string() }
    }

    /// The next record, `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Saved>, ScaleError> {
        let mut id = [0u8; 8];
        match self.inp.read_exact(&mut id) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(ScaleError::io(&self.path, e)),
        }
        let mut len = [0u8; 1];
        self.inp.read_exact(&mut len).map_err(|_| self.bad("truncated record"))?;
        let len = usize::from(len[0]);
        if len > FH_BYTES_MAX {
            return Err(self.bad("handle length over 64"));
        }
        let mut fh = vec![0u8; len];
        self.inp.read_exact(&mut fh).map_err(|_| self.bad("truncated handle"))?;
        Ok(Some(Saved { fileid: u64::from_le_bytes(id), fh }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let dir = std::env::temp_dir().join(format!("hanfs-scale-handles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("h.bin");
        let mut w = HandleWriter::create(&path).unwrap();
        w.push(7, &[1, 2, 3]).unwrap();
        w.push(u64::MAX, &[9; 64]).unwrap();
        assert!(w.push(1, &[0; 65]).is_err());
        assert_eq!(w.finish().unwrap(), 2);
        let mut r = HandleReader::open(&path).unwrap();
        assert_eq!(r.next_record().unwrap(), Some(Saved { fileid: 7, fh: vec![1, 2, 3] }));
        assert_eq!(r.next_record().unwrap(), Some(Saved { fileid: u64::MAX, fh: vec![9; 64] }));
        assert_eq!(r.next_record().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
