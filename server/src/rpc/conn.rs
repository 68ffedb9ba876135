//! Connection registry (skeleton; filled in by the RPC work).

#[derive(Default)]
pub struct ConnRegistry {}
