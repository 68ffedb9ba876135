//! readdir tests (to be written).
