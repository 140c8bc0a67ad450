//! External Account Binding (RFC 8555 §7.3.4), managed: MAC keys minted by
//! `keyrite acme eab create`, each carrying a policy that the account bound
//! with it inherits and that every order of that account is checked against.
//!
//! The MAC secret is kept in the server's store because the server must
//! verify with it; it lives in memory only as a [`Secret`], is shown once
//! (at creation) and never enters a log line, a problem document or `Debug`.

use std::net::IpAddr;

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::identifier::{ip_in, Checked};
use super::jws::{b64_decode, Jwk};
use super::model::RngFailure;
use crate::secret::Secret;

/// What an account bound with a key may be issued.
///
/// Every list narrows the server's own policy; an empty list narrows
/// nothing (the server's policy alone applies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EabPolicy {
    /// `team-a.corp.example` allows that name and everything under it;
    /// `*.team-a.corp.example` only names strictly under it.
    #[serde(default)]
    pub dns_suffixes: Vec<String>,
    /// `(network, prefix length)`.
    #[serde(default)]
    pub ip_ranges: Vec<(IpAddr, u8)>,
    #[serde(default = "yes")]
    pub wildcards: bool,
    /// Profile names the account may order; empty allows every profile.
    #[serde(default)]
    pub profiles: Vec<String>,
    /// The longest certificate lifetime, seconds.
    #[serde(default)]
    pub max_lifetime_secs: Option<i64>,
}

fn yes() -> bool {
    true
}

// Not derived: a policy that says nothing allows wildcards, as the server does.
impl Default for EabPolicy {
    fn default() -> Self {
        EabPolicy {
            dns_suffixes: Vec::new(),
            ip_ranges: Vec::new(),
            wildcards: true,
            profiles: Vec::new(),
            max_lifetime_secs: None,
        }
    }
}

/// A managed EAB key as stored (the MAC secret is stored beside it, never
/// in this document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EabKey {
    pub kid: String,
    pub policy: EabPolicy,
    pub created_at: i64,
    /// After this, the key binds no new account.
    pub expires_at: Option<i64>,
    /// A multi-use key may bind several accounts (one per team member's
    /// machine, say); a single-use key binds exactly one, as RFC 8555
    /// §7.3.4 describes.
    pub multi_use: bool,
    /// Revocation binds no new account and stops issuance for the accounts
    /// already bound: it is how a team is cut off.
    pub revoked_at: Option<i64>,
    /// Accounts bound so far.
    pub bound_accounts: u32,
    /// A free-form label for the operator (team, ticket).
    #[serde(default)]
    pub note: String,
}

impl EabKey {
    /// Why this key cannot bind another account now, if it cannot.
    pub fn binding_refusal(&self, now: i64) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("the external account key is revoked")
        } else if self.expires_at.is_some_and(|e| now >= e) {
            Some("the external account key has expired")
        } else if !self.multi_use && self.bound_accounts > 0 {
            Some("the external account key is already bound to an account")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EabError {
    /// The binding is not a well-formed EAB JWS (→ `malformed`).
    #[error("{0}")]
    Malformed(String),
    /// Well formed, but not acceptable (→ `unauthorized`).
    #[error("{0}")]
    Unauthorized(String),
}

fn malformed(m: impl Into<String>) -> EabError {
    EabError::Malformed(m.into())
}

/// An `externalAccountBinding` value, parsed but not yet verified.
pub struct Binding {
    pub kid: String,
    alg: hmac::Algorithm,
    signing_input: Vec<u8>,
    mac: Vec<u8>,
}

impl Binding {
    /// Parses the flattened JWS and checks everything that needs no key:
    /// an HS256/384/512 `alg`, a `kid`, no `nonce`, `url` equal to the outer
    /// JWS's, and a payload that is the outer JWS's `jwk`.
    pub fn parse(value: &Value, outer_url: &str, outer_jwk: &Jwk) -> Result<Binding, EabError> {
        let Value::Object(obj) = value else {
            return Err(malformed("externalAccountBinding is not a JWS object"));
        };
        if let Some(extra) = obj.keys().find(|k| !matches!(k.as_str(), "protected" | "payload" | "signature")) {
            return Err(malformed(format!("externalAccountBinding: unexpected JWS member {extra:?}")));
        }
        let text = |k: &str| match obj.get(k) {
            Some(Value::String(s)) => Ok(s.as_str()),
            _ => Err(malformed(format!("externalAccountBinding: `{k}` is missing or not a string"))),
        };
        let (protected_b64, payload_b64, sig_b64) = (text("protected")?, text("payload")?, text("signature")?);
        let b64 = |field: &str, t: &str| {
            b64_decode(field, t).map_err(|_| malformed(format!("externalAccountBinding: {field} is not base64url")))
        };
        let mac = b64("signature", sig_b64)?;
        let protected = b64("protected", protected_b64)?;
        let payload = b64("payload", payload_b64)?;
        let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&protected) else {
            return Err(malformed("externalAccountBinding: protected header is not a JSON object"));
        };
        let alg = match h.get("alg").and_then(Value::as_str) {
            Some("HS256") => hmac::HMAC_SHA256,
            Some("HS384") => hmac::HMAC_SHA384,
            Some("HS512") => hmac::HMAC_SHA512,
            other => {
                return Err(malformed(format!(
                    "externalAccountBinding: alg {other:?} is not a MAC algorithm (use HS256, HS384 or HS512)"
                )))
            }
        };
        if h.contains_key("nonce") {
            return Err(malformed("externalAccountBinding must not carry a `nonce`"));
        }
        if h.contains_key("crit") {
            return Err(malformed("externalAccountBinding: `crit` extensions are not supported"));
        }
        if h.get("url").and_then(Value::as_str) != Some(outer_url) {
            return Err(malformed("externalAccountBinding `url` differs from the outer JWS's"));
        }
        let kid = match h.get("kid") {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            _ => return Err(malformed("externalAccountBinding has no `kid`")),
        };
        let inner_jwk: Value =
            serde_json::from_slice(&payload).map_err(|_| malformed("externalAccountBinding payload is not a JWK"))?;
        let inner = Jwk::from_json(&inner_jwk)
            .map_err(|_| malformed("externalAccountBinding payload is not an acceptable JWK"))?;
        if inner != *outer_jwk {
            return Err(malformed("externalAccountBinding payload is not the account key of the outer JWS"));
        }
        Ok(Binding { kid, alg, signing_input: format!("{protected_b64}.{payload_b64}").into_bytes(), mac })
    }

    /// Checks the MAC in constant time.
    pub fn verify(&self, secret: &Secret) -> Result<(), EabError> {
        let key = hmac::Key::new(self.alg, secret.expose());
        hmac::verify(&key, &self.signing_input, &self.mac)
            .map_err(|_| EabError::Unauthorized("externalAccountBinding MAC does not verify".into()))
    }
}

/// Normalizes a suffix as the CLI takes it (`*.x`, `.x` or `x`, any case).
pub fn normalize_suffix(s: &str) -> String {
    let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
    match lower.strip_prefix("*.") {
        Some(rest) => format!("*.{}", rest.trim_start_matches('.')),
        None => lower.trim_start_matches('.').to_string(),
    }
}

fn dns_allowed(name: &str, suffix: &str) -> bool {
    match suffix.strip_prefix("*.") {
        Some(base) => name.ends_with(&format!(".{base}")),
        None => name == suffix || name.ends_with(&format!(".{suffix}")),
    }
}

impl EabPolicy {
    /// Why `id` is outside this policy, if it is.
    pub fn check(&self, id: &Checked) -> Result<(), String> {
        match id {
            Checked::Dns { name, wildcard } => {
                if *wildcard && !self.wildcards {
                    return Err("this account's external account key does not allow wildcards".into());
                }
                // A wildcard covers `name`'s children, so it must lie under the
                // suffix just as a child would.
                let probe = if *wildcard { format!("x.{name}") } else { name.clone() };
                if !self.dns_suffixes.is_empty() && !self.dns_suffixes.iter().any(|s| dns_allowed(&probe, s)) {
                    return Err(format!(
                        "{} is outside the names this account's external account key allows ({})",
                        Checked::order_identifier(id).value,
                        self.dns_suffixes.join(", ")
                    ));
                }
                if self.dns_suffixes.is_empty() && !self.ip_ranges.is_empty() {
                    return Err("this account's external account key allows IP addresses only".into());
                }
                Ok(())
            }
            Checked::Ip(ip) => {
                if !self.ip_ranges.is_empty() && !self.ip_ranges.iter().any(|(net, len)| ip_in(ip, net, *len)) {
                    return Err(format!("{ip} is outside the addresses this account's external account key allows"));
                }
                if self.ip_ranges.is_empty() && !self.dns_suffixes.is_empty() {
                    return Err("this account's external account key allows DNS names only".into());
                }
                Ok(())
            }
        }
    }

    /// A short human description, for `eab list`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.dns_suffixes.is_empty() {
            parts.push(format!("dns={}", self.dns_suffixes.join(",")));
        }
        if !self.ip_ranges.is_empty() {
            let r: Vec<String> = self.ip_ranges.iter().map(|(n, l)| format!("{n}/{l}")).collect();
            parts.push(format!("ip={}", r.join(",")));
        }
        if !self.wildcards {
            parts.push("no-wildcards".into());
        }
        if !self.profiles.is_empty() {
            parts.push(format!("profiles={}", self.profiles.join(",")));
        }
        if let Some(l) = self.max_lifetime_secs {
            parts.push(format!("max-lifetime={l}s"));
        }
        if parts.is_empty() {
            "server policy".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Mints a key: a random kid and a 256-bit MAC secret. The caller stores
/// them together (`Store::insert_eab_key`); the secret is shown once, for
/// the operator to hand over.
pub fn mint(
    policy: EabPolicy,
    expires_at: Option<i64>,
    multi_use: bool,
    note: String,
    now: i64,
) -> Result<(EabKey, Secret), RngFailure> {
    let mut id = [0u8; 12];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| RngFailure)?;
    let mut mac = zeroize::Zeroizing::new(vec![0u8; 32]);
    aws_lc_rs::rand::fill(mac.as_mut_slice()).map_err(|_| RngFailure)?;
    let secret = Secret::new(mac.to_vec());
    let key = EabKey {
        kid: format!("kr-{}", super::jws::b64_encode(&id)),
        policy,
        created_at: now,
        expires_at,
        multi_use,
        revoked_at: None,
        bound_accounts: 0,
        note,
    };
    Ok((key, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns(n: &str) -> Checked {
        match n.strip_prefix("*.") {
            Some(b) => Checked::Dns { name: b.into(), wildcard: true },
            None => Checked::Dns { name: n.into(), wildcard: false },
        }
    }

    #[test]
    fn acme_eab_policy_suffixes_wildcards_ranges() {
        let p = EabPolicy {
            dns_suffixes: vec![normalize_suffix("*.Team-A.corp.example.")],
            wildcards: false,
            ..EabPolicy::default()
        };
        assert_eq!(p.dns_suffixes, vec!["*.team-a.corp.example".to_string()]);
        assert!(p.check(&dns("www.team-a.corp.example")).is_ok());
        assert!(p.check(&dns("team-a.corp.example")).is_err());
        assert!(p.check(&dns("www.team-b.corp.example")).is_err());
        assert!(p.check(&dns("*.team-a.corp.example")).is_err());
        assert!(p.check(&Checked::Ip("10.0.0.1".parse().unwrap())).is_err());
        let q = EabPolicy { ip_ranges: vec![("10.1.0.0".parse().unwrap(), 16)], ..EabPolicy::default() };
        assert!(q.check(&Checked::Ip("10.1.2.3".parse().unwrap())).is_ok());
        assert!(q.check(&Checked::Ip("10.2.0.1".parse().unwrap())).is_err());
        assert!(q.check(&dns("a.example.com")).is_err());
        assert!(EabPolicy::default().check(&dns("*.anything.example")).is_ok());
    }

    #[test]
    fn acme_eab_binding_refusals() {
        let mut k = EabKey {
            kid: "k".into(),
            policy: EabPolicy::default(),
            created_at: 0,
            expires_at: Some(100),
            multi_use: false,
            revoked_at: None,
            bound_accounts: 0,
            note: String::new(),
        };
        assert_eq!(k.binding_refusal(50), None);
        assert!(k.binding_refusal(100).is_some());
        k.expires_at = None;
        k.bound_accounts = 1;
        assert!(k.binding_refusal(50).is_some());
        k.multi_use = true;
        assert_eq!(k.binding_refusal(50), None);
        k.revoked_at = Some(1);
        assert!(k.binding_refusal(50).is_some());
    }
}
