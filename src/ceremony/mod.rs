//! The `ceremony` room (being built).
