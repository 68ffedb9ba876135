//! Cross-crate integration tests. One binary, one module per topic; shared
//! helpers live in `util.rs` only.

mod util;

mod caps;
mod cluster;
mod exactly_once;
mod exports_live;
mod fuzz_replay;
mod fuzz_seeds;
mod handles;
mod hostnames;
mod limits;
mod limits_memory;
mod locks;
mod malformed;
mod metrics;
mod mount;
mod nfs3_ops;
mod nlm;
mod nlm_classic;
mod nlm_ofd;
mod perms;
mod portmap;
mod quickstart;
mod readdir;
mod tickle;
mod tools;
mod vip;
mod vip_device;
