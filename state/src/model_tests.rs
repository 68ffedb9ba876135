//! Property tests: random command sequences against a simple model (filled in next).
