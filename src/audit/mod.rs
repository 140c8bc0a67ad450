//! The `audit` room (being built).
