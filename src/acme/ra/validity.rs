//! One place decides a certificate's validity: the backdate, the default
//! and longest lifetimes, the ceilings of the account's EAB key and of the
//! order's profile, and the issuing CA's own window. newOrder checks what a
//! client asks for against it; finalize and the server's own certificate
//! take their dates from it.

use time::{Duration, OffsetDateTime};

use crate::acme::problem::Problem;
use crate::profile::Profile;

/// How far before "now" a certificate starts when its order names no start:
/// clients with a slow clock must not see a certificate from the future.
pub const BACKDATE: Duration = Duration::minutes(1);

/// How far in the past and the future an order's notBefore may lie.
const NOT_BEFORE_PAST: i64 = 300;
const NOT_BEFORE_FUTURE: i64 = 86_400;

/// The issuing CA's own validity: no certificate may start before it
/// (when only the backdate would) or end after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuerWindow {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A certificate's validity, decided before anything is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The longest lifetime (seconds) an order may ask for: the server's, the
/// account's EAB key's and the profile's, whichever is least.
pub fn ceiling(server_max: i64, eab_max: Option<i64>, profile_max: Option<i64>) -> i64 {
    [Some(server_max), eab_max, profile_max].into_iter().flatten().min().unwrap_or(0)
}

/// newOrder: the notBefore/notAfter a client asks for are applied within
/// policy or refused, never silently ignored (checklist 27).
pub fn check_requested(
    now: i64,
    not_before: Option<i64>,
    not_after: Option<i64>,
    max_lifetime: i64,
    issuer: &IssuerWindow,
) -> Result<(), Problem> {
    let start = not_before.unwrap_or(now);
    if not_before.is_some_and(|nb| nb < now - NOT_BEFORE_PAST || nb > now + NOT_BEFORE_FUTURE) {
        return Err(Problem::malformed("notBefore must lie between 5 minutes ago and one day ahead"));
    }
    if let Some(na) = not_after {
        if na <= start || na - start > max_lifetime {
            return Err(Problem::malformed(format!(
                "notAfter must be after notBefore and at most {max_lifetime}s later"
            )));
        }
        if na > issuer.not_after.unix_timestamp() {
            return Err(Problem::malformed("notAfter is later than the issuing CA's own expiry"));
        }
    }
    Ok(())
}

/// The default start: backdated, but never before the issuer's own start
/// (it would be, just after the intermediate was installed). Only the
/// backdate is moved; a start an order asked for is never changed.
fn backdated(now: OffsetDateTime, issuer: &IssuerWindow) -> OffsetDateTime {
    let start = now - BACKDATE;
    if start < issuer.not_before && issuer.not_before - start <= BACKDATE {
        issuer.not_before
    } else {
        start
    }
}

/// finalize: the order's own dates when it named them; otherwise a backdated
/// start and the profile's (or the server's default) lifetime, capped by the
/// account's EAB key (an explicit notAfter was already held to it at
/// newOrder).
pub fn for_order(
    now: OffsetDateTime,
    order_not_before: Option<i64>,
    order_not_after: Option<i64>,
    lifetime: Duration,
    eab_max: Option<i64>,
    issuer: &IssuerWindow,
) -> Validity {
    let not_before = order_not_before
        .and_then(|nb| OffsetDateTime::from_unix_timestamp(nb).ok())
        .unwrap_or_else(|| backdated(now, issuer));
    let not_after = order_not_after
        .and_then(|na| OffsetDateTime::from_unix_timestamp(na).ok())
        .unwrap_or(not_before + lifetime - Duration::seconds(1));
    let not_after = match eab_max {
        Some(max) => not_after.min(not_before + Duration::seconds(max) - Duration::seconds(1)),
        None => not_after,
    };
    Validity { not_before, not_after }
}

/// The server's own HTTPS certificate: backdated, for `lifetime` or the
/// template's default validity.
pub fn for_server(
    now: OffsetDateTime,
    lifetime: Option<Duration>,
    template: &Profile,
    issuer: &IssuerWindow,
) -> Validity {
    let not_before = backdated(now, issuer);
    let not_after = match lifetime {
        Some(l) => not_before + l,
        None => template.not_after_for(not_before),
    };
    Validity { not_before, not_after }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).expect("time")
    }

    #[test]
    fn the_backdate_moves_to_the_issuers_start_and_nothing_else_does() {
        let issuer = IssuerWindow { not_before: at(1_000_030), not_after: at(9_000_000) };
        let day = Duration::days(1);
        // Just after the intermediate's start: the backdate stops at it.
        let v = for_order(at(1_000_060), None, None, day, None, &issuer);
        assert_eq!(v.not_before, at(1_000_030));
        // Later: a plain minute.
        let v = for_order(at(2_000_000), None, None, day, None, &issuer);
        assert_eq!(v.not_before, at(1_999_940));
        assert_eq!(v.not_after, at(1_999_940 + 86_399));
        // A start the order asked for is kept, even before the issuer's.
        let v = for_order(at(1_000_060), Some(1_000_000), None, day, None, &issuer);
        assert_eq!(v.not_before, at(1_000_000));
        // The EAB ceiling caps the default lifetime.
        let v = for_order(at(2_000_000), None, None, day, Some(3600), &issuer);
        assert_eq!(v.not_after, at(1_999_940 + 3599));
        let leaf =
            Profile::from_toml_str(include_str!("../../../templates/tls-leaf.toml"), "tls-leaf").expect("template");
        let s = for_server(at(2_000_000), Some(Duration::seconds(93)), &leaf, &issuer);
        assert_eq!((s.not_before, s.not_after), (at(1_999_940), at(2_000_033)));
    }

    #[test]
    fn requested_dates_are_applied_within_policy_or_refused() {
        let issuer = IssuerWindow { not_before: at(0), not_after: at(10_000_000) };
        let now = 1_000_000;
        assert!(check_requested(now, None, Some(now + 3600), 7200, &issuer).is_ok());
        assert!(check_requested(now, None, Some(now + 7201), 7200, &issuer).is_err());
        assert!(check_requested(now, Some(now - 301), None, 7200, &issuer).is_err());
        assert!(check_requested(now, Some(now + 86_401), None, 7200, &issuer).is_err());
        assert!(check_requested(now, None, Some(now), 7200, &issuer).is_err());
        assert!(check_requested(9_999_000, None, Some(10_000_001), 7200, &issuer).is_err());
        assert_eq!(ceiling(100, Some(50), None), 50);
        assert_eq!(ceiling(100, None, Some(70)), 70);
    }
}
