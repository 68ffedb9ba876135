//! ONC RPC (RFC 5531): record marking, TCP and UDP transport, AUTH_SYS,
//! dispatch through the program tables, and the duplicate-request-cache hook.

pub mod conn;
pub mod program;
pub mod xdr;
