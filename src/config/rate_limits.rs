//! The rate limits file of acme-serve (`--rate-limits`, see
//! `docs/acme-operations.md`): which limits apply, at which rate, and the
//! overrides for some accounts, addresses or names. Parsed strictly (unknown
//! keys refused, every error naming its field) into [`Limits`], which the
//! server's limiter (`acme::ratelimit`) enforces.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::values::{ip_in, parse_cidr, parse_secs};

/// The limits an operator can set, by their name in the limits file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    /// newAccount requests that create an account, per client IP.
    NewAccountsPerIp,
    /// newOrder requests, per account.
    NewOrdersPerAccount,
    /// newOrder requests naming an identifier, per identifier (a wildcard
    /// counts as its base name).
    NewOrdersPerIdentifier,
    /// Every request to the ACME API, per client IP. Off by default: behind
    /// a load balancer every client has the balancer's address.
    RequestsPerIp,
}

impl LimitName {
    pub fn name(self) -> &'static str {
        match self {
            LimitName::NewAccountsPerIp => "new_accounts_per_ip",
            LimitName::NewOrdersPerAccount => "new_orders_per_account",
            LimitName::NewOrdersPerIdentifier => "new_orders_per_identifier",
            LimitName::RequestsPerIp => "requests_per_ip",
        }
    }

    pub fn what(self) -> &'static str {
        match self {
            LimitName::NewAccountsPerIp => "new accounts from this address",
            LimitName::NewOrdersPerAccount => "new orders from this account",
            LimitName::NewOrdersPerIdentifier => "new orders for this identifier",
            LimitName::RequestsPerIp => "requests from this address",
        }
    }
}

/// `count` requests per `period_secs`, bursting up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period_secs: u64,
}

impl Rate {
    pub fn period_ms(self) -> u64 {
        self.period_secs.saturating_mul(1000)
    }

    pub fn interval_ms(self) -> u64 {
        (self.period_ms() / u64::from(self.count.max(1))).max(1)
    }

    pub fn describe(self) -> String {
        format!("{} per {}", self.count, describe_secs(self.period_secs))
    }
}

fn describe_secs(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Who a limit is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Ip(IpAddr),
    Account(String),
    /// An identifier's value, lower-case, without a leading `*.`.
    Identifier(String),
}

impl Subject {
    pub fn key(&self) -> String {
        match self {
            Subject::Ip(ip) => ip.to_string(),
            Subject::Account(a) => a.clone(),
            Subject::Identifier(i) => i.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Account(String),
    IpRange(IpAddr, u8),
    DnsSuffix(String),
}

impl Matcher {
    fn matches(&self, subject: &Subject) -> bool {
        match (self, subject) {
            (Matcher::Account(a), Subject::Account(b)) => a == b,
            (Matcher::IpRange(net, len), Subject::Ip(ip)) => ip_in(ip, net, *len),
            (Matcher::IpRange(net, len), Subject::Identifier(v)) => {
                v.parse::<IpAddr>().is_ok_and(|ip| ip_in(&ip, net, *len))
            }
            (Matcher::DnsSuffix(s), Subject::Identifier(v)) => {
                v == s || v.strip_suffix(s.as_str()).is_some_and(|head| head.ends_with('.'))
            }
            _ => false,
        }
    }
}

/// An exception for some accounts, addresses or names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    limit: LimitName,
    matcher: Matcher,
    /// `None`: unlimited.
    rate: Option<Rate>,
}

/// Every limit; `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub new_accounts_per_ip: Option<Rate>,
    pub new_orders_per_account: Option<Rate>,
    pub new_orders_per_identifier: Option<Rate>,
    pub requests_per_ip: Option<Rate>,
    /// Pending authorizations one account may hold at once.
    pub max_pending_authorizations: Option<u64>,
    /// First match wins, in file order.
    pub overrides: Vec<Override>,
}

impl Default for Limits {
    /// Generous for an internal CA: a server renewing daily never comes near
    /// them, a client stuck in a loop hits them within minutes.
    fn default() -> Self {
        Limits {
            new_accounts_per_ip: Some(Rate { count: 100, period_secs: 3600 }),
            new_orders_per_account: Some(Rate { count: 300, period_secs: 3 * 3600 }),
            new_orders_per_identifier: Some(Rate { count: 50, period_secs: 24 * 3600 }),
            requests_per_ip: None,
            max_pending_authorizations: Some(1000),
            overrides: Vec::new(),
        }
    }
}

impl Limits {
    /// No limit at all (tests and benchmarks that measure something else).
    pub fn unlimited() -> Self {
        Limits {
            new_accounts_per_ip: None,
            new_orders_per_account: None,
            new_orders_per_identifier: None,
            requests_per_ip: None,
            max_pending_authorizations: None,
            overrides: Vec::new(),
        }
    }

    fn base(&self, limit: LimitName) -> Option<Rate> {
        match limit {
            LimitName::NewAccountsPerIp => self.new_accounts_per_ip,
            LimitName::NewOrdersPerAccount => self.new_orders_per_account,
            LimitName::NewOrdersPerIdentifier => self.new_orders_per_identifier,
            LimitName::RequestsPerIp => self.requests_per_ip,
        }
    }

    /// The rate that applies to `subject` under `limit`.
    pub fn rate_for(&self, limit: LimitName, subject: &Subject) -> Option<Rate> {
        match self.overrides.iter().find(|o| o.limit == limit && o.matcher.matches(subject)) {
            Some(o) => o.rate,
            None => self.base(limit),
        }
    }

    /// Reads a limits file (see `docs/acme-operations.md`); what it leaves out
    /// keeps its default.
    pub fn load(path: &Path) -> Result<Limits, RateLimitError> {
        let file = |problem: String| RateLimitError::File { path: path.display().to_string(), problem };
        let text = std::fs::read_to_string(path).map_err(|e| file(format!("cannot read: {e}")))?;
        Self::from_toml_str(&text).map_err(|e| file(e.to_string()))
    }

    pub fn from_toml_str(text: &str) -> Result<Limits, RateLimitError> {
        let raw: RawLimits = toml::from_str(text).map_err(|e| RateLimitError::Syntax(e.message().to_string()))?;
        let mut limits = Limits::default();
        let sections = [
            (LimitName::NewAccountsPerIp, &raw.new_accounts_per_ip, &mut limits.new_accounts_per_ip),
            (LimitName::NewOrdersPerAccount, &raw.new_orders_per_account, &mut limits.new_orders_per_account),
            (LimitName::NewOrdersPerIdentifier, &raw.new_orders_per_identifier, &mut limits.new_orders_per_identifier),
            (LimitName::RequestsPerIp, &raw.requests_per_ip, &mut limits.requests_per_ip),
        ];
        for (name, section, slot) in sections {
            if let Some(r) = section {
                *slot = r.rate(name.name())?;
            }
        }
        if let Some(n) = raw.max_pending_authorizations {
            limits.max_pending_authorizations = (n > 0).then_some(n);
        }
        for (i, o) in raw.overrides.iter().enumerate() {
            let field = format!("override #{} ({})", i + 1, o.limit.name());
            let matchers = [o.account.is_some(), o.ip_range.is_some(), o.dns_suffix.is_some()];
            if matchers.iter().filter(|m| **m).count() != 1 {
                return Err(RateLimitError::Field {
                    field,
                    problem: "name exactly one of account, ip_range, dns_suffix".into(),
                });
            }
            let matcher = if let Some(a) = &o.account {
                // The account URL is what operators see in logs; keep the id.
                let id = a.rsplit('/').next().unwrap_or(a).to_string();
                if !matches!(o.limit, LimitName::NewOrdersPerAccount) || id.is_empty() {
                    return Err(RateLimitError::Field {
                        field,
                        problem: "`account` applies to new_orders_per_account only".into(),
                    });
                }
                Matcher::Account(id)
            } else if let Some(r) = &o.ip_range {
                let (ip, len) = parse_cidr(r)
                    .map_err(|p| RateLimitError::Field { field: field.clone(), problem: format!("ip_range {p}") })?;
                if matches!(o.limit, LimitName::NewOrdersPerAccount) {
                    return Err(RateLimitError::Field {
                        field,
                        problem: "`ip_range` does not apply to accounts".into(),
                    });
                }
                Matcher::IpRange(ip, len)
            } else {
                let s = o.dns_suffix.clone().unwrap_or_default();
                let s = s.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
                if !matches!(o.limit, LimitName::NewOrdersPerIdentifier) || s.is_empty() {
                    return Err(RateLimitError::Field {
                        field,
                        problem: "`dns_suffix` applies to new_orders_per_identifier only".into(),
                    });
                }
                Matcher::DnsSuffix(s)
            };
            let rate = o.rate.rate(&field)?;
            limits.overrides.push(Override { limit: o.limit, matcher, rate });
        }
        Ok(limits)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    count: Option<u32>,
    period: Option<String>,
    #[serde(default)]
    unlimited: bool,
}

impl RawRate {
    fn rate(&self, field: &str) -> Result<Option<Rate>, RateLimitError> {
        let err = |problem: &str| RateLimitError::Field { field: field.to_string(), problem: problem.into() };
        match (self.unlimited, self.count, &self.period) {
            (true, None, None) => Ok(None),
            (true, _, _) => Err(err("`unlimited = true` takes no count or period")),
            (false, Some(count), Some(period)) => {
                if count == 0 {
                    return Err(err("count must be at least 1 (to turn the limit off, write unlimited = true)"));
                }
                let period_secs = parse_period(period).map_err(|p| err(&p))?;
                Ok(Some(Rate { count, period_secs }))
            }
            _ => Err(err("give both count and period (e.g. count = 300, period = \"3h\"), or unlimited = true")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    limit: LimitName,
    account: Option<String>,
    ip_range: Option<String>,
    dns_suffix: Option<String>,
    #[serde(flatten)]
    rate: RawRate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    new_accounts_per_ip: Option<RawRate>,
    new_orders_per_account: Option<RawRate>,
    new_orders_per_identifier: Option<RawRate>,
    requests_per_ip: Option<RawRate>,
    max_pending_authorizations: Option<u64>,
    #[serde(default, rename = "override")]
    overrides: Vec<RawOverride>,
}

/// `30s`, `15m`, `3h`, `7d`.
fn parse_period(text: &str) -> Result<u64, String> {
    let secs = parse_secs(text).map_err(|p| format!("period {p}"))?;
    if secs == 0 || secs > 366 * 86_400 {
        return Err(format!("period {text:?} must be between 1s and 366d"));
    }
    Ok(secs)
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// The file cannot be read, or one of the errors below, with its path.
    #[error("rate limits file {path}: {problem}")]
    File { path: String, problem: String },
    /// Not TOML, or a key the format does not have.
    #[error("not valid TOML: {0}")]
    Syntax(String),
    /// A limit or override breaks a rule; `field` names it.
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_and_overrides() {
        let text = r#"
            max_pending_authorizations = 20
            [new_orders_per_account]
            count = 5
            period = "1h"
            [requests_per_ip]
            count = 50
            period = "1s"
            [new_accounts_per_ip]
            unlimited = true

            [[override]]
            limit = "new_orders_per_account"
            account = "https://acme.example/acme/acct/BIG"
            count = 1000
            period = "1h"

            [[override]]
            limit = "requests_per_ip"
            ip_range = "10.0.0.0/8"
            unlimited = true

            [[override]]
            limit = "new_orders_per_identifier"
            dns_suffix = "ci.corp.example"
            count = 500
            period = "1d"
        "#;
        let l = Limits::from_toml_str(text).expect("parses");
        assert_eq!(l.max_pending_authorizations, Some(20));
        assert_eq!(l.new_accounts_per_ip, None);
        let acct = |a: &str| Subject::Account(a.into());
        assert_eq!(l.rate_for(LimitName::NewOrdersPerAccount, &acct("BIG")).map(|r| r.count), Some(1000));
        assert_eq!(l.rate_for(LimitName::NewOrdersPerAccount, &acct("small")).map(|r| r.count), Some(5));
        let ip = |s: &str| Subject::Ip(s.parse().expect("ip"));
        assert_eq!(l.rate_for(LimitName::RequestsPerIp, &ip("10.1.2.3")), None);
        assert_eq!(l.rate_for(LimitName::RequestsPerIp, &ip("192.0.2.1")).map(|r| r.count), Some(50));
        let id = |s: &str| Subject::Identifier(s.into());
        assert_eq!(l.rate_for(LimitName::NewOrdersPerIdentifier, &id("a.ci.corp.example")).map(|r| r.count), Some(500));
        assert_eq!(l.rate_for(LimitName::NewOrdersPerIdentifier, &id("xci.corp.example")).map(|r| r.count), Some(50));
    }

    /// The example in the operators' guide is a file that loads.
    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/acme-operations.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let len = doc[start..].find("```").expect("block end");
        let l = Limits::from_toml_str(&doc[start..start + len]).expect("the documented example parses");
        assert_eq!(l.overrides.len(), 3);
        assert_eq!(l.requests_per_ip, Some(Rate { count: 50, period_secs: 1 }));
        let big = Subject::Account("2Qm1xS0sHkTc3b9Vd1fXwg".into());
        assert_eq!(l.rate_for(LimitName::NewOrdersPerAccount, &big).map(|r| r.count), Some(5000));
    }

    /// The benchmarks' file turns every limit off.
    #[test]
    fn the_benchmark_file_is_unlimited() {
        let l = Limits::from_toml_str(include_str!("../../benches/no-limits.toml")).expect("parses");
        assert_eq!(l, Limits::unlimited());
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("[new_orders_per_account]\ncount = 5\n", "give both count and period"),
            ("[new_orders_per_account]\ncount = 0\nperiod = \"1h\"\n", "count must be at least 1"),
            ("[new_orders_per_account]\ncount = 5\nperiod = \"1y\"\n", "not a duration"),
            ("[new_orders_per_account]\ncount = 5\nperiod = \"1h\"\nburst = 3\n", "unknown field"),
            (
                "[[override]]\nlimit = \"new_orders_per_account\"\nip_range = \"10.0.0.0/8\"\nunlimited = true\n",
                "does not apply to accounts",
            ),
            ("[[override]]\nlimit = \"requests_per_ip\"\nunlimited = true\n", "exactly one of"),
            ("[[override]]\nlimit = \"requests_per_ip\"\nip_range = \"10.0.0.0/40\"\nunlimited = true\n", "ip_range"),
            ("[[override]]\nlimit = \"orders\"\n", "unknown variant"),
        ];
        for (text, want) in cases {
            let err = Limits::from_toml_str(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
