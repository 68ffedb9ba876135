//! ONC RPC (RFC 5531): record marking (`record`), call headers and replies
//! (`msg`), AUTH_NONE/AUTH_SYS (`auth`), one dispatch path through the program
//! tables with the duplicate-request-cache hook (`dispatch`), TCP connections
//! and their registry (`conn`), and the TCP/UDP listeners (`listener`).
//! Programs plug in through `program`; argument decoding uses `xdr`.

pub mod auth;
pub mod conn;
pub mod dispatch;
pub mod listener;
pub mod msg;
pub mod program;
pub mod record;
pub mod xdr;
