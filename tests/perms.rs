//! perms tests (to be written).
