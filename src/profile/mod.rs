//! The `profile` room (being built).
