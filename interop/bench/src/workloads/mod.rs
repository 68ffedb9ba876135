//! The workloads. Each takes a `Session` (or `inflight::Lanes`, or a
//! `Target` to open its own), a parent directory handle and a `Budget`,
//! cleans up what it created, and returns `MetricLine`s. Names are prefixed
//! so runs never collide. `meta`: one call in flight, CREATE/SETATTR/
//! RENAME/REMOVE, LOOKUP, GETATTR, READDIRPLUS; `inflight`: the same calls
//! with many in flight; `data`: sequential WRITE+COMMIT and READ (warm and
//! cold), `data_inflight` the same with many in flight; `locks`: NLM
//! LOCK+UNLOCK pairs (one owner, then many at once).

pub mod data;
pub mod data_inflight;
pub mod inflight;
pub mod locks;
pub mod meta;

/// `complete=1` when the loop ran its full count, else 0 (deadline hit).
pub fn complete_flag(done: u64, wanted: u64) -> u8 {
    u8::from(done >= wanted)
}
