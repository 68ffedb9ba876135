//! mount tests (to be written).
