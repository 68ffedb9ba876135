//! Why `State::apply` refused a command. A refused command changes nothing.

/// What is wrong with a handle entry's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    /// A non-root entry has an empty name.
    Empty,
    /// Longer than `NAME_BYTES_MAX`.
    TooLong,
    /// Contains `/`.
    Slash,
    /// Contains NUL.
    Nul,
    /// `.` or `..`, which never name an object of their own.
    Dot,
    /// The export root (`ino == parent_ino`) must have an empty name.
    RootNamed,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("batch nested deeper than {max}")]
    BatchTooDeep { max: u32 },
    #[error("handle {export_id}/{ino}: bad name: {reason:?}")]
    HandleName { export_id: u32, ino: u64, reason: NameError },
    #[error("handle {export_id}/{ino}: export not registered")]
    HandleExportUnknown { export_id: u32, ino: u64 },
    #[error("handle table full ({max} entries)")]
    HandlesFull { max: u64 },
    #[error("export {export_id} is already registered as {existing:?}")]
    ExportIdConflict { export_id: u32, existing: String },
    #[error("export path {path:?} is already registered as export {existing_id}")]
    ExportPathConflict { path: String, existing_id: u32 },
    #[error("export path invalid (empty, NUL, or too long)")]
    ExportPathInvalid,
    #[error("export table full ({max} exports)")]
    ExportsFull { max: u64 },
    #[error("client name invalid (empty, NUL, or too long)")]
    ClientInvalid,
    #[error("mount path invalid (empty, NUL, or too long)")]
    MountPathInvalid,
    #[error("rmtab full ({max} rows)")]
    RmtabFull { max: u64 },
    #[error("DRC reply of {bytes} bytes exceeds {max}")]
    DrcReplyTooLarge { bytes: u64, max: u64 },
    #[error("epoch overflow")]
    EpochOverflow,
}
