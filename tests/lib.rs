//! Helpers shared by the integration tests live in util.rs; this library is empty.
