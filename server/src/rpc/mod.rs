//! ONC RPC (RFC 5531), the transport for every program: record marking
//! (`record`), call headers and replies (`msg`), AUTH_NONE/AUTH_SYS (`auth`),
//! one dispatch path through the program tables with the duplicate-request
//! cache hook, the reply-time fence and the per-call counters of
//! `crate::metrics` (`dispatch`), TCP connections (`conn`, their reading
//! half `reader`) and their registry with the connection limits
//! (`registry`), the transport's limits (`limits`) and memory budgets
//! (`budget`), the TCP/UDP listeners (`listener`), what they all share
//! (`shared`: the in-progress set, the fence, the budgets), and outbound
//! calls to other hosts' programs (`client`). Programs plug in
//! through `program`, each with its own context type; argument decoding uses
//! `xdr`. Nothing here knows any program.

pub mod auth;
pub mod budget;
pub mod client;
pub mod conn;
pub mod dispatch;
pub mod limits;
pub mod listener;
pub mod msg;
pub mod program;
pub mod reader;
pub mod record;
pub mod registry;
pub mod shared;
pub mod xdr;
