//! The workloads. Each takes a `Session` (or a `Target` to open its own),
//! a parent directory handle and a `Budget`, cleans up what it created, and
//! returns `MetricLine`s. Names are prefixed so runs never collide.
//! `meta`: CREATE/REMOVE, LOOKUP, READDIRPLUS; `getattr`: concurrent
//! GETATTR throughput; `data`: sequential WRITE+COMMIT and READ; `locks`:
//! NLM LOCK+UNLOCK pairs (one owner, then many at once).

pub mod data;
pub mod getattr;
pub mod locks;
pub mod meta;

/// `complete=1` when the loop ran its full count, else 0 (deadline hit).
pub fn complete_flag(done: u64, wanted: u64) -> u8 {
    u8::from(done >= wanted)
}
