//! Identifier syntax (RFC 8555 §7.1.4, RFC 8738) and the issuance policy.
//!
//! Syntax follows Boulder's `policy/pa.go`: a DNS identifier is at most 253
//! bytes of LDH labels of 1 to 63 bytes, lower case, no trailing dot, valid
//! punycode in `xn--` labels, at most one wildcard and only as the whole
//! leftmost label, and never something that parses as an IP address. An IP
//! identifier must be in canonical text form and carry no IPv6 zone.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub use crate::config::acme::{ip_in, parse_cidr, NamePolicy};

/// An ACME identifier as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// An identifier that passed the syntax checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Checked {
    /// A DNS name without the wildcard prefix, and whether it had one.
    Dns {
        name: String,
        wildcard: bool,
    },
    Ip(IpAddr),
}

impl Checked {
    /// The identifier an authorization is for (RFC 8555 §7.1.4: the base
    /// name, the wildcard shown by the `wildcard` field).
    pub fn authz_identifier(&self) -> Identifier {
        match self {
            Checked::Dns { name, .. } => Identifier { kind: "dns".into(), value: name.clone() },
            Checked::Ip(ip) => Identifier { kind: "ip".into(), value: ip.to_string() },
        }
    }

    /// The identifier as ordered (with `*.` for a wildcard).
    pub fn order_identifier(&self) -> Identifier {
        match self {
            Checked::Dns { name, wildcard: true } => Identifier { kind: "dns".into(), value: format!("*.{name}") },
            other => other.authz_identifier(),
        }
    }

    pub fn is_wildcard(&self) -> bool {
        matches!(self, Checked::Dns { wildcard: true, .. })
    }
}

/// Why an identifier was refused; maps to `malformed`/`rejectedIdentifier`/
/// `unsupportedIdentifier` in the WFE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentifierError {
    /// The identifier's type is neither `dns` nor `ip`.
    #[error("identifier type {0:?} is not supported (use dns or ip)")]
    Unsupported(String),
    /// The value is not a valid name or address; the text says why.
    #[error("{0}")]
    Syntax(String),
    /// Valid, but outside what this CA (or the account's EAB key) issues for.
    #[error("{0}")]
    Policy(String),
}

/// Checks an identifier's syntax; returns the normalized form.
pub fn check_syntax(id: &Identifier) -> Result<Checked, IdentifierError> {
    match id.kind.as_str() {
        "dns" => check_dns(&id.value),
        "ip" => check_ip(&id.value),
        other => Err(IdentifierError::Unsupported(other.to_string())),
    }
}

fn syntax(msg: impl Into<String>) -> IdentifierError {
    IdentifierError::Syntax(msg.into())
}

fn check_ip(value: &str) -> Result<Checked, IdentifierError> {
    if value.contains('%') {
        return Err(syntax(format!("IP identifier {value:?} carries an IPv6 zone, which a certificate cannot name")));
    }
    let ip: IpAddr = value.parse().map_err(|_| syntax(format!("{value:?} is not an IP address")))?;
    if ip.to_string() != value {
        return Err(syntax(format!("IP identifier {value:?} is not in canonical form (use {ip})")));
    }
    Ok(Checked::Ip(ip))
}

fn check_dns(value: &str) -> Result<Checked, IdentifierError> {
    if value.is_empty() {
        return Err(syntax("DNS identifier is empty"));
    }
    if value.parse::<IpAddr>().is_ok() || value.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(syntax(format!("{value:?} is an IP address; order it as an \"ip\" identifier")));
    }
    let (wildcard, name) = match value.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    if name.contains('*') {
        return Err(syntax(format!("{value:?}: a wildcard may only be the whole leftmost label")));
    }
    if value.len() > 253 {
        return Err(syntax(format!("DNS name of {} bytes is longer than 253", value.len())));
    }
    if name.ends_with('.') {
        return Err(syntax(format!("{value:?} ends with a dot")));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(syntax(format!("{value:?} is not lower case")));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err(syntax(format!("{value:?} has a single label; a certificate needs a qualified name")));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(syntax(format!("{value:?} has an empty label")));
        }
        if label.len() > 63 {
            return Err(syntax(format!("{value:?} has a label longer than 63 bytes")));
        }
        if !label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(syntax(format!("{value:?} has characters other than letters, digits and hyphens")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(syntax(format!("{value:?} has a label starting or ending with a hyphen")));
        }
        // "ab--" labels are reserved for IDNA (RFC 5891 §4.2.3.1); only
        // well-formed punycode A-labels may use them.
        if label.len() >= 4 && &label[2..4] == "--" {
            if !label.starts_with("xn--") {
                return Err(syntax(format!("{value:?} has a reserved label {label:?}")));
            }
            let (unicode, result) = idna::domain_to_unicode(label);
            let roundtrip = idna::domain_to_ascii_strict(&unicode).ok();
            if result.is_err() || roundtrip.as_deref() != Some(*label) {
                return Err(syntax(format!("{value:?} has a label {label:?} that is not valid punycode")));
            }
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(syntax(format!("{value:?} has an all-numeric top-level label")));
    }
    Ok(Checked::Dns { name: name.to_string(), wildcard })
}

/// Checks a syntactically valid identifier against the server's name
/// policy.
pub fn check_policy(policy: &NamePolicy, id: &Checked) -> Result<(), IdentifierError> {
    match id {
        Checked::Dns { name, wildcard } => {
            if *wildcard && !policy.allow_wildcards {
                return Err(IdentifierError::Policy("wildcard names are not issued here".into()));
            }
            // "." (an empty suffix) allows every name: the sandbox's policy,
            // which leaves the decision to its resolver.
            let ok = policy.allowed_dns_suffixes.iter().any(|s| {
                let s = s.trim_start_matches('.');
                s.is_empty() || name == s || name.strip_suffix(s).is_some_and(|head| head.ends_with('.'))
            });
            if !ok {
                return Err(IdentifierError::Policy(format!("{name} is outside the names this CA issues for")));
            }
        }
        Checked::Ip(ip) => {
            if !policy.allowed_ip_ranges.iter().any(|(net, len)| ip_in(ip, net, *len)) {
                return Err(IdentifierError::Policy(format!("{ip} is outside the addresses this CA issues for")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(v: &str) -> Result<Checked, IdentifierError> {
        check_syntax(&Identifier { kind: "dns".into(), value: v.into() })
    }

    #[test]
    fn dns_rules() {
        assert!(dns("a.acme.test").is_ok());
        assert_eq!(dns("*.acme.test"), Ok(Checked::Dns { name: "acme.test".into(), wildcard: true }));
        for bad in [
            "",
            "acme",
            "a..b.test",
            "a.b.test.",
            "A.test",
            "a_b.test",
            "-a.test",
            "a-.test",
            "*.*.test",
            "a.*.test",
            "x*.test",
            "127.0.0.1",
            "ab--c.test",
            "xn--zz.test",
            "a.123",
        ] {
            assert!(dns(bad).is_err(), "{bad:?} accepted");
        }
        assert!(dns(&format!("{}.test", "a".repeat(64))).is_err());
        assert!(dns(&format!("{}.test", "a".repeat(63))).is_ok());
        assert!(dns("xn--bcher-kva.test").is_ok());
    }

    #[test]
    fn ip_rules() {
        let ip = |v: &str| check_syntax(&Identifier { kind: "ip".into(), value: v.into() });
        assert!(ip("10.0.0.1").is_ok());
        assert!(ip("::1").is_ok());
        assert!(ip("0:0::1").is_err());
        assert!(ip("fe80::1%eth0").is_err());
        assert!(ip("010.0.0.1").is_err());
    }

    #[test]
    fn ranges() {
        let net: IpAddr = "10.0.0.0".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(ip_in(&"10.1.2.3".parse().unwrap_or(net), &net, 8));
        assert!(!ip_in(&"11.1.2.3".parse().unwrap_or(net), &net, 8));
        let p = NamePolicy { allowed_dns_suffixes: vec!["acme.test".into()], ..NamePolicy::default() };
        let dns = |n: &str| Checked::Dns { name: n.into(), wildcard: false };
        assert!(check_policy(&p, &dns("a.acme.test")).is_ok());
        assert!(check_policy(&p, &dns("acme.test")).is_ok());
        assert!(check_policy(&p, &dns("xacme.test")).is_err());
    }
}
