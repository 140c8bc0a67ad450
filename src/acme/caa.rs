//! CAA (RFC 8659) with the account and method bindings of RFC 8657.
//!
//! Checked when a DNS identifier's challenge has passed, and only when the
//! operator names the identities this CA answers to (`--caa-identity`): an
//! internal zone rarely has CAA records, but where a team has written
//! `0 issue "acme.corp.example; accounturi=…"`, issuing anyway would
//! defeat the one control the domain owner has over which CA (and which
//! account, and which validation method) may issue for it.
//!
//! The relevant record set is the first non-empty one found climbing from
//! the name towards the root. An `issuewild` set governs wildcards when
//! present. A critical record with a property this server does not know
//! refuses issuance (RFC 8659 §4.1). A failed lookup refuses too: a CA that
//! cannot read CAA must not guess.

use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

/// One CAA record as read from DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaaRecord {
    pub critical: bool,
    pub tag: String,
    pub value: Vec<u8>,
}

/// Who is asking, to match the records' parameters against.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The issuer domain names this CA answers to.
    pub identities: &'a [String],
    pub wildcard: bool,
    /// The ACME account URL (RFC 8657 `accounturi`).
    pub account_uri: &'a str,
    /// The challenge type that validated the name (RFC 8657 `validationmethods`).
    pub method: &'a str,
}

/// Decides over the relevant record set of `name`; the error says why not.
pub fn decide(name: &str, records: &[CaaRecord], req: &Request<'_>) -> Result<(), String> {
    if let Some(r) = records.iter().find(|r| r.critical && !is_known(&r.tag)) {
        return Err(format!(
            "the CAA record set of {name} has a critical property {:?} this CA does not understand",
            r.tag
        ));
    }
    let wild: Vec<&CaaRecord> = records.iter().filter(|r| r.tag.eq_ignore_ascii_case("issuewild")).collect();
    let relevant: Vec<&CaaRecord> = if req.wildcard && !wild.is_empty() {
        wild
    } else {
        records.iter().filter(|r| r.tag.eq_ignore_ascii_case("issue")).collect()
    };
    if relevant.is_empty() {
        return Ok(());
    }
    let mut why = Vec::new();
    for r in relevant {
        match matches(r, req) {
            Ok(()) => return Ok(()),
            Err(w) => why.push(w),
        }
    }
    Err(format!("CAA records of {name} do not allow this issuance: {}", why.join("; ")))
}

fn is_known(tag: &str) -> bool {
    ["issue", "issuewild", "iodef"].iter().any(|t| t.eq_ignore_ascii_case(tag))
}

/// `issuer-domain-name *(";" key "=" value)` (RFC 8659 §4.2).
fn matches(r: &CaaRecord, req: &Request<'_>) -> Result<(), String> {
    let text = String::from_utf8_lossy(&r.value);
    let mut parts = text.split(';');
    let issuer = parts.next().unwrap_or("").trim();
    if issuer.is_empty() {
        return Err("an empty issuer allows no CA".into());
    }
    let issuer = issuer.trim_end_matches('.');
    if !req.identities.iter().any(|i| i.trim_end_matches('.').eq_ignore_ascii_case(issuer)) {
        return Err(format!("{issuer:?} is another CA"));
    }
    for param in parts.map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').map(|(k, v)| (k.trim(), v.trim())).unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("accounturi") && value != req.account_uri {
            return Err(format!("{issuer:?} is bound to another account ({value})"));
        }
        if key.eq_ignore_ascii_case("validationmethods")
            && !value.split(',').map(str::trim).any(|m| m.eq_ignore_ascii_case(req.method))
        {
            return Err(format!("{issuer:?} allows the validation methods {value} only, not {}", req.method));
        }
    }
    Ok(())
}

/// Finds the relevant record set of `name` (without `*.`): the first
/// non-empty one climbing towards the root. Empty if there is none.
pub async fn relevant_set(
    resolver: &TokioResolver,
    name: &str,
    timeout: std::time::Duration,
) -> Result<(String, Vec<CaaRecord>), String> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    for i in 0..labels.len() {
        let candidate = labels[i..].join(".");
        // Fully qualified, so no search domain is appended.
        let lookup = tokio::time::timeout(timeout, resolver.lookup(format!("{candidate}."), RecordType::CAA))
            .await
            .map_err(|_| format!("the CAA lookup of {candidate} timed out"))?;
        let records: Vec<CaaRecord> = match lookup {
            Ok(l) => l
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::CAA(c) => {
                        Some(CaaRecord { critical: c.issuer_critical, tag: c.tag.clone(), value: c.value.clone() })
                    }
                    _ => None,
                })
                .collect(),
            Err(e) if e.is_no_records_found() => Vec::new(),
            Err(e) => return Err(format!("the CAA lookup of {candidate} failed: {e}")),
        };
        if !records.is_empty() {
            return Ok((candidate, records));
        }
    }
    Ok((name.to_string(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(critical: bool, tag: &str, value: &str) -> CaaRecord {
        CaaRecord { critical, tag: tag.into(), value: value.as_bytes().to_vec() }
    }

    fn req<'a>(ids: &'a [String], wildcard: bool, method: &'a str) -> Request<'a> {
        Request { identities: ids, wildcard, account_uri: "https://acme/acct/A", method }
    }

    #[test]
    fn rfc_8659_and_8657_decisions() {
        let ids = ["acme.corp.example".to_string()];
        let ok =
            |records: &[CaaRecord], wildcard: bool, method: &str| decide("n", records, &req(&ids, wildcard, method));
        assert!(ok(&[], false, "http-01").is_ok(), "no records: any CA");
        assert!(ok(&[rec(false, "iodef", "mailto:x@y")], false, "http-01").is_ok(), "no issue property");
        assert!(ok(&[rec(false, "issue", "ACME.corp.example.")], false, "http-01").is_ok());
        assert!(ok(&[rec(false, "issue", "other.example")], false, "http-01").is_err());
        assert!(ok(&[rec(false, "issue", ";")], false, "http-01").is_err(), "no CA at all");
        // Several records: any one that allows is enough.
        let two = [rec(false, "issue", "other.example"), rec(false, "issue", "acme.corp.example")];
        assert!(ok(&two, false, "http-01").is_ok());
        // issuewild governs wildcards, and only them.
        let wild = [rec(false, "issue", "acme.corp.example"), rec(false, "issuewild", ";")];
        assert!(ok(&wild, false, "dns-01").is_ok());
        assert!(ok(&wild, true, "dns-01").is_err());
        // RFC 8657 parameters.
        let bound = [rec(false, "issue", "acme.corp.example; accounturi=https://acme/acct/B")];
        assert!(ok(&bound, false, "http-01").unwrap_err().contains("another account"));
        let bound = [rec(false, "issue", "acme.corp.example; accounturi=https://acme/acct/A")];
        assert!(ok(&bound, false, "http-01").is_ok());
        let methods = [rec(false, "issue", "acme.corp.example; validationmethods=dns-01,tls-alpn-01")];
        assert!(ok(&methods, false, "http-01").unwrap_err().contains("dns-01,tls-alpn-01"));
        assert!(ok(&methods, false, "tls-alpn-01").is_ok());
        // An unknown critical property stops everything; a non-critical one does not.
        let critical = [rec(true, "tbs", "x"), rec(false, "issue", "acme.corp.example")];
        assert!(ok(&critical, false, "http-01").unwrap_err().contains("critical property"));
        let harmless = [rec(false, "tbs", "x"), rec(false, "issue", "acme.corp.example")];
        assert!(ok(&harmless, false, "http-01").is_ok());
    }
}
