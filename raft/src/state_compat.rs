//! TEMPORARY compile shim, deleted once `hanfs-state` (being written on main)
//! exports `State::apply`, `State::to_snapshot` and `State::from_snapshot`.
//! Inherent methods win over trait methods, so when they land this trait is
//! simply unused. Until then the state machine has no tables to change.

use hanfs_state::{Command, State};

pub trait StateApi: Sized {
    fn apply(&mut self, cmd: &Command) -> Result<(), String>;
    fn to_snapshot(&self) -> Vec<u8>;
    fn from_snapshot(bytes: &[u8]) -> Result<Self, String>;
}

impl StateApi for State {
    fn apply(&mut self, _cmd: &Command) -> Result<(), String> {
        Ok(())
    }
    fn to_snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn from_snapshot(_bytes: &[u8]) -> Result<Self, String> {
        Ok(State::default())
    }
}
