//! hanfs-state: the replicated data model.
//!
//! Owns `Command` (every change to client-visible state), the deterministic
//! `State::apply`, and the tables it changes: exports (`exports.rs`: each
//! export's id, name, the filesystem it lives on, and what it is served as,
//! changed live), the key that authenticates file handles,
//! rmtab (`rmtab.rs`), the duplicate-request cache (`drc.rs`), the
//! write-verifier epoch, and the client TCP connections a new active tickles
//! after a failover (`conns.rs`). There is no table of objects: a file handle carries
//! the filesystem's own handle and resolves itself on any node. NLM locks, waiters, shares, lock hosts and
//! NSM monitors are `locks::NlmState`, changed by `Command::Nlm`. `apply`
//! returns an `Outcome` per command (`outcome.rs`): the lock table's decision
//! travels back through the commit to the handler that encodes its reply.
//! `codec.rs` is the only place that knows the byte encoding; `store.rs` is
//! the only I/O (its own log file and redb snapshot file). `invariants.rs`
//! says which consistency checks run when (cheap ones after every apply in
//! every build; the full walk
//! on snapshot load, and after every apply in tests and under the feature
//! `invariants`).
//!
//! Must never import another hanfs crate, tokio, or sockets, and `apply` must
//! never read a clock, draw randomness, or leak hash order.

mod apply;
mod codec;
mod command;
mod conns;
mod drc;
mod error;
mod exports;
mod invariants;
pub mod limits;
pub mod locks;
mod outcome;
mod rmtab;
mod store;

#[cfg(test)]
mod model_tests;

pub use codec::{decode_command, encode_command, encoded_len, CodecError};
pub use command::*;
pub use drc::{DrcEntry, DrcValue};
pub use error::{ApplyError, InvariantError, Table};
pub use limits::*;
pub use outcome::Outcome;
pub use store::{encode_record_into, record_at, sync_dir, Record, Store, StoreError, COMPACT_ENTRIES};

use serde::{Deserialize, Serialize};

use crate::conns::Conns;
use crate::drc::Drc;
use crate::exports::Exports;
use crate::rmtab::Rmtab;

/// The applied state machine. Change it only through `apply` (or `trial`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    epoch: u64,
    exports: Exports,
    /// Set once by the first active node (`Command::SetHandleKey`), then never changed.
    handle_key: Option<[u8; HANDLE_KEY_BYTES]>,
    rmtab: Rmtab,
    drc: Drc,
    last_promotion: Option<Promotion>,
    /// NLM locks, waiters, shares, lock hosts and NSM monitors.
    nlm: locks::NlmState,
    /// Client TCP connections of the active periods, for tickling (`conns.rs`).
    conns: Conns,
}

impl State {
    /// The key that authenticates file handles, once the first active node set it.
    pub fn handle_key(&self) -> Option<&[u8; HANDLE_KEY_BYTES]> {
        self.handle_key.as_ref()
    }

    /// The filesystem `export_id` was first served from.
    pub fn export_fs(&self, export_id: u32) -> Option<&FsIdentity> {
        self.exports.fs(export_id)
    }

    pub fn export_path(&self, export_id: u32) -> Option<&str> {
        self.exports.path(export_id)
    }

    /// The export id registered for exactly this path.
    pub fn export_id(&self, path: &str) -> Option<u32> {
        self.exports.id_of(path)
    }

    /// (export id, path) of every export the cluster ever knew, served or
    /// removed, ordered by id.
    pub fn exports(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.exports.iter()
    }

    /// The served exports: (id, name, spec), ordered by id.
    pub fn served_exports(&self) -> impl Iterator<Item = (u32, &str, &ExportSpec)> + '_ {
        self.exports.served()
    }

    /// What `export_id` is served as (`None`: not served).
    pub fn export_spec(&self, export_id: u32) -> Option<&ExportSpec> {
        self.exports.spec(export_id)
    }

    /// Whether the export table was ever seeded (`Command::ExportSet`): a
    /// node seeds it from its config only while it is not.
    pub fn exports_seeded(&self) -> bool {
        self.exports.seeded()
    }

    /// Counts changes to the export table: a serving node rebuilds its
    /// served view when it moves.
    pub fn exports_revision(&self) -> u64 {
        self.exports.revision()
    }

    /// The lowest export id above every id ever used (ids of removed
    /// exports are never given to another name); `None` when none is left.
    pub fn next_export_id(&self) -> Option<u32> {
        self.exports.next_id()
    }

    /// (client, path) rows, sorted by client then path.
    pub fn rmtab(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.rmtab.iter()
    }

    pub fn rmtab_len(&self) -> u64 {
        self.rmtab.len()
    }

    /// The last `RecordPromotion`, if any.
    pub fn last_promotion(&self) -> Option<Promotion> {
        self.last_promotion
    }

    /// The write-verifier epoch: 0 initially, +1 per `BumpEpoch`.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The cached reply for a retransmission of `key`, if still cached (None
    /// for an intent without a reply: see `drc_entry`). The window is
    /// enforced at insert time; callers that want a stricter age check use
    /// `drc_entry` and its `time_ms`.
    pub fn drc_get(&self, key: &DrcKey) -> Option<&[u8]> {
        self.drc.get(key).and_then(DrcEntry::reply)
    }

    /// The entry for `key`: its intent or its reply, with its age.
    pub fn drc_entry(&self, key: &DrcKey) -> Option<&DrcEntry> {
        self.drc.get(key)
    }

    pub fn drc_len(&self) -> u64 {
        self.drc.len()
    }

    /// Total bytes of cached replies.
    pub fn drc_bytes(&self) -> u64 {
        self.drc.bytes()
    }

    /// DRC keys in eviction order, oldest first.
    pub fn drc_keys_by_age(&self) -> impl Iterator<Item = &DrcKey> + '_ {
        self.drc.keys_by_age()
    }

    /// The recorded client TCP connections with the epoch each was recorded
    /// in, ordered by connection (see `Command::ConnOpen`).
    pub fn conns(&self) -> impl Iterator<Item = (&TcpConn, u64)> + '_ {
        self.conns.iter()
    }

    pub fn conns_len(&self) -> u64 {
        self.conns.len()
    }

    /// The NLM lock table and NSM monitor list (read-only: TEST, `locks`).
    pub fn nlm(&self) -> &locks::NlmState {
        &self.nlm
    }

    /// Encodes the whole state (see `codec.rs`).
    pub fn to_snapshot(&self) -> Vec<u8> {
        codec::encode_state(self)
    }

    /// Decodes a snapshot and checks every invariant before accepting it.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, CodecError> {
        let state = codec::decode_state(bytes)?;
        state.check_invariants().map_err(CodecError::Invalid)?;
        Ok(state)
    }
}
