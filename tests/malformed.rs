//! malformed tests (to be written).
