//! The `shares` room (being built).
