//! Passthrough filesystem (skeleton; filled in by the NFSv3 work).

pub struct Vfs {}
