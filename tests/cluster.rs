//! Issue 4's cluster tests: three real `hanfs-server run --config` processes
//! (storage 1, storage 2, witness 3) on loopback, the "VIP" modelled as a
//! loopback service address that only the active node binds. `harness` owns
//! the process cluster (configs, start, init, status, kill -9, restart, wipe);
//! the other modules are the scenarios of issue 4 item 8: handles, rmtab, DRC
//! and verifier across a kill -9 failover (`failover`), fencing of a
//! partitioned leader (`partition`), one or two nodes down and a rejoin from an
//! empty disk (`degraded`), an entry only the witness holds when the active
//! dies (`relay`), the graceful switchover and init refusals
//! (`switchover`), a CREATE and a REMOVE whose active died between executing
//! and recording them (`exactly_once`), and `locks` answered on every node
//! (`locks`); NLM locks across failover (`nlm`), classic vs transparent
//! lock recovery (`nlm_classic`), `stats` and `/metrics` on every member
//! (`stats`), an export on the wrong filesystem refused (`wrong_disk`), no
//! false failover under a CPU hog, NFS load and snapshot builds (`load`),
//! a killed node rejoining on a slow disk without deposing the active
//! (`rejoin`), and what the operator reads across failovers: promotion times,
//! `serving`, peer log lines (`operator`); peer traffic encrypted, a
//! tampered peer frame refused (`peer_traffic`); exports added on the
//! passive served at once and after a failover, removed ones refused
//! (`exports`). Cluster tests run one at a time
//! (`harness::serial`).

mod harness;

mod degraded;
mod exactly_once;
mod exports;
mod failover;
mod load;
mod locks;
mod nlm;
mod nlm_classic;
mod operator;
mod partition;
mod peer_traffic;
mod rejoin;
mod relay;
mod stats;
mod switchover;
mod wrong_disk;
