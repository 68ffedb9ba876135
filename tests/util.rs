//! util tests (to be written).
