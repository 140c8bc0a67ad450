//! Rate limits: what stops one runaway client from starving the others.
//!
//! Each limit is a rate (`count` per `period`) enforced with the generic
//! cell rate algorithm (GCRA): one number per key, the "theoretical arrival
//! time" (TAT). A request at `t` is allowed if `max(TAT, t) + interval` is at
//! most `period` ahead of `t`; it then moves the TAT there. That gives a
//! burst of `count` followed by one request per `period / count`, needs no
//! timers, and tells a refused client exactly how long to wait, which is
//! what `Retry-After` carries.
//!
//! A key whose TAT has passed is the same as no key, so the table is pruned
//! on the housekeeping schedule and holds only keys that were busy within
//! one period. The state lives in this process: with several instances
//! behind a load balancer each enforces its share (the shared store is the
//! place for a global table, beside the used nonces).
//!
//! Renewals inside their ARI window are never limited (the WFE does not ask),
//! so 50,000 servers renewing on schedule cannot lock themselves out.

use std::collections::HashMap;
use std::sync::Mutex;

pub use crate::config::rate_limits::{LimitName, Limits, Rate, Subject};

/// A refused request: which limit, and how long until it would pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub limit: LimitName,
    pub subject: Subject,
    pub rate: Rate,
    pub retry_after_ms: u64,
}

impl Denied {
    /// Whole seconds, rounded up (never 0: a client told to wait 0 s spins).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }

    pub fn detail(&self) -> String {
        let who = match &self.subject {
            Subject::Identifier(i) => format!(" ({i})"),
            _ => String::new(),
        };
        format!(
            "too many {}{who}: the limit {} is {}; retry after {} s",
            self.limit.what(),
            self.limit.name(),
            self.rate.describe(),
            self.retry_after_secs()
        )
    }
}

/// The GCRA table, keyed by limit and subject.
pub struct Limiter {
    limits: Limits,
    tats: Mutex<HashMap<(LimitName, String), u64>>,
}

impl Limiter {
    pub fn new(limits: Limits) -> Self {
        Limiter { limits, tats: Mutex::new(HashMap::new()) }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Spends one request under every `(limit, subject)` at once, or none:
    /// an order refused for its third identifier must not use up the
    /// account's allowance. On refusal, the longest wait is reported.
    pub fn spend(&self, now_ms: u64, requests: &[(LimitName, Subject)]) -> Result<(), Denied> {
        // Rates are resolved before the table is locked, and a request no
        // limit applies to (every request, with requests_per_ip off) never
        // takes the lock at all.
        let limited: Vec<(&LimitName, &Subject, Rate)> = requests
            .iter()
            .filter_map(|(limit, subject)| self.limits.rate_for(*limit, subject).map(|rate| (limit, subject, rate)))
            .collect();
        if limited.is_empty() {
            return Ok(());
        }
        let mut tats = self.tats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut updates = Vec::with_capacity(limited.len());
        let mut worst: Option<Denied> = None;
        for (limit, subject, rate) in limited {
            let key = (*limit, subject.key());
            let tat = tats.get(&key).copied().unwrap_or(now_ms).max(now_ms);
            let next = tat.saturating_add(rate.interval_ms());
            let allowed_until = now_ms.saturating_add(rate.period_ms());
            if next > allowed_until {
                let wait = next - allowed_until;
                if worst.as_ref().is_none_or(|w| wait > w.retry_after_ms) {
                    worst = Some(Denied { limit: *limit, subject: subject.clone(), rate, retry_after_ms: wait });
                }
            } else {
                updates.push((key, next));
            }
        }
        if let Some(denied) = worst {
            return Err(denied);
        }
        for (key, next) in updates {
            tats.insert(key, next);
        }
        Ok(())
    }

    /// Drops keys whose allowance is full again; returns how many.
    pub fn prune(&self, now_ms: u64) -> usize {
        let mut tats = self.tats.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = tats.len();
        tats.retain(|_, tat| *tat > now_ms);
        before - tats.len()
    }

    pub fn tracked_keys(&self) -> usize {
        self.tats.lock().map(|t| t.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five_per_hour() -> Limits {
        Limits { new_orders_per_account: Some(Rate { count: 5, period_secs: 3600 }), ..Limits::unlimited() }
    }

    #[test]
    fn a_burst_of_count_then_one_per_interval() {
        let l = Limiter::new(five_per_hour());
        let a = [(LimitName::NewOrdersPerAccount, Subject::Account("a".into()))];
        let t = 1_000_000_000;
        for _ in 0..5 {
            l.spend(t, &a).expect("within the burst");
        }
        let denied = l.spend(t, &a).expect_err("sixth refused");
        assert_eq!(denied.retry_after_ms, 720_000);
        assert_eq!(denied.retry_after_secs(), 720);
        assert!(denied.detail().contains("new_orders_per_account is 5 per 1h"), "{}", denied.detail());
        // Another account has its own allowance.
        l.spend(t, &[(LimitName::NewOrdersPerAccount, Subject::Account("b".into()))]).expect("b unaffected");
        // One interval later, exactly one more.
        l.spend(t + 720_000, &a).expect("refilled one");
        assert!(l.spend(t + 720_000, &a).is_err());
        // Once every key's allowance is full again, pruning empties the table.
        assert_eq!(l.prune(t + 3_600_000 + 720_000), 2);
        assert_eq!(l.tracked_keys(), 0);
    }

    #[test]
    fn all_or_nothing_across_subjects() {
        let limits = Limits {
            new_orders_per_account: Some(Rate { count: 10, period_secs: 60 }),
            new_orders_per_identifier: Some(Rate { count: 1, period_secs: 60 }),
            ..Limits::unlimited()
        };
        let l = Limiter::new(limits);
        let t = 5_000;
        let order = |name: &str| {
            vec![
                (LimitName::NewOrdersPerAccount, Subject::Account("a".into())),
                (LimitName::NewOrdersPerIdentifier, Subject::Identifier(name.into())),
            ]
        };
        l.spend(t, &order("x.example")).expect("first");
        let d = l.spend(t, &order("x.example")).expect_err("identifier exhausted");
        assert_eq!(d.limit, LimitName::NewOrdersPerIdentifier);
        // The refused order spent nothing from the account: nine more fit.
        for i in 0..9 {
            l.spend(t, &order(&format!("n{i}.example"))).expect("account allowance intact");
        }
        assert_eq!(l.spend(t, &order("last.example")).expect_err("account").limit, LimitName::NewOrdersPerAccount);
    }
}
