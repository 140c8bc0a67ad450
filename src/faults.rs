//! Crash points and injected failures, for testing what a power cut or a
//! failing write leaves behind.
//!
//! The offline CA's promise is that `kill -9` at any step leaves a CA
//! directory `keyrite ca verify` accepts, with no serial or CRL number lost
//! or reused; acme-serve's is that no order stays `processing` and no
//! signed certificate goes unrecorded. Timing a real kill to land between
//! two particular writes is luck; instead the state-changing steps name
//! their crash points, and a test sets `KEYRITE_CRASH_AT=<point>` to have
//! the process abort there (SIGABRT: no destructors, no flushing, the same
//! as a kill). A step that must survive a failing write names a failure
//! point too: with `KEYRITE_FAIL_AT=<point>` that write fails as a full
//! disk would. Without the variables a point costs one environment lookup.

/// The environment variable that names the point to crash at.
pub const CRASH_AT: &str = "KEYRITE_CRASH_AT";

/// The environment variable that names the write to fail (one point, or
/// several separated by commas).
pub const FAIL_AT: &str = "KEYRITE_FAIL_AT";

/// Aborts the process if `KEYRITE_CRASH_AT` names this point.
pub fn point(name: &str) {
    if std::env::var_os(CRASH_AT).is_some_and(|v| v == name) {
        eprintln!("keyrite: crash point {name}: aborting as asked by {CRASH_AT}");
        std::process::abort();
    }
}

/// Whether `KEYRITE_FAIL_AT` asks the write named `name` to fail.
pub fn fails(name: &str) -> bool {
    std::env::var(FAIL_AT).is_ok_and(|v| v.split(',').any(|p| p.trim() == name))
}
