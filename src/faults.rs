//! Crash points for testing what a power cut leaves behind.
//!
//! The offline CA's promise is that `kill -9` at any step leaves a CA
//! directory `keyrite ca verify` accepts, with no serial or CRL number lost
//! or reused. Timing a real kill to land between two particular writes is
//! luck; instead the state-changing steps name their crash points, and a
//! test sets `KEYRITE_CRASH_AT=<point>` to have the process abort there
//! (SIGABRT: no destructors, no flushing, the same as a kill). Without the
//! variable a point costs one environment lookup.

/// The environment variable that names the point to crash at.
pub const CRASH_AT: &str = "KEYRITE_CRASH_AT";

/// Aborts the process if `KEYRITE_CRASH_AT` names this point.
pub fn point(name: &str) {
    if std::env::var_os(CRASH_AT).is_some_and(|v| v == name) {
        eprintln!("keyrite: crash point {name}: aborting as asked by {CRASH_AT}");
        std::process::abort();
    }
}
