//! hanfs-state: the replicated data model (skeleton; filled in by the state work).

mod command;
pub use command::*;

/// The applied state machine.
#[derive(Default, Debug)]
pub struct State {}
