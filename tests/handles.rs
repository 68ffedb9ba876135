//! handles tests (to be written).
