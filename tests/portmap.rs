//! portmap tests (to be written).
