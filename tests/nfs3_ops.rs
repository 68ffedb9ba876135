//! nfs3_ops tests (to be written).
