//! The one clock of acme-serve.
//!
//! Every time the server reads (nonce windows, rate-limit arrival times,
//! order and authorization expiry, certificate validity, CRL dates, log
//! timestamps) comes from one [`Clock`], handed to each component when the
//! server starts. Tests can give the server a clock that runs ahead; nothing
//! inside reads the system time on its own.

use std::sync::Arc;

use time::OffsetDateTime;

/// A source of the current time, UTC.
pub trait Clock: Send + Sync {
    /// Now, to the nanosecond the system offers.
    fn now(&self) -> OffsetDateTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock shared by every component of one server.
pub type SharedClock = Arc<dyn Clock>;

/// The system clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The readings the server needs, all from one `now()`.
pub trait ClockExt {
    /// Now, truncated to the whole second (certificates and ACME dates
    /// carry whole seconds).
    fn now_second(&self) -> OffsetDateTime;
    /// Unix seconds.
    fn unix(&self) -> i64;
    /// Unix milliseconds (the rate limiter's unit), never negative.
    fn unix_ms(&self) -> u64;
}

impl<C: Clock + ?Sized> ClockExt for C {
    fn now_second(&self) -> OffsetDateTime {
        let now = self.now();
        now.replace_nanosecond(0).unwrap_or(now)
    }

    fn unix(&self) -> i64 {
        self.now().unix_timestamp()
    }

    fn unix_ms(&self) -> u64 {
        u64::try_from(self.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }
}

/// A `std::time::Duration` as a `time::Duration`, saturating.
pub fn span(d: std::time::Duration) -> time::Duration {
    time::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2))
}

/// A `std::time::Duration` in whole seconds, saturating.
pub fn secs(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(OffsetDateTime);

    impl Clock for Fixed {
        fn now(&self) -> OffsetDateTime {
            self.0
        }
    }

    #[test]
    fn one_now_in_every_unit() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("time");
        let c = Fixed(t);
        assert_eq!(c.unix(), 1_700_000_000);
        assert_eq!(c.unix_ms(), 1_700_000_000_123);
        assert_eq!(c.now_second().unix_timestamp(), 1_700_000_000);
        assert_eq!(c.now_second().nanosecond(), 0);
    }
}
