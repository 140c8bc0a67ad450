//! ACME objects and their state machines (RFC 8555 §7.1.6).
//!
//! Objects are stored whole (the store serializes them); each carries a
//! `version` so that concurrent updates from several instances are detected
//! by the store instead of silently overwriting one another.

use serde::{Deserialize, Serialize};

use super::identifier::Identifier;
use super::problem::ProblemDocument;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountStatus {
    Valid,
    Deactivated,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    /// The account key's RFC 7638 canonical JWK.
    pub jwk: serde_json::Value,
    pub thumbprint: String,
    pub status: AccountStatus,
    pub contact: Vec<String>,
    pub created_at: i64,
    pub version: i64,
    /// The External Account Binding key this account was created with; its
    /// policy applies to every order (absent in accounts from before EAB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eab_kid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Ready,
    Processing,
    Valid,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub account_id: String,
    pub status: OrderStatus,
    pub expires: i64,
    pub identifiers: Vec<Identifier>,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub authz_ids: Vec<String>,
    pub error: Option<ProblemDocument>,
    pub certificate_id: Option<String>,
    pub created_at: i64,
    pub version: i64,
    /// The profile the order asked for (or the default profile's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// RFC 9773 §5: the certID of the certificate this order replaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzStatus {
    Pending,
    Valid,
    Invalid,
    Deactivated,
    Expired,
    Revoked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChallengeType {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "dns-01")]
    Dns01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl ChallengeType {
    pub fn name(self) -> &'static str {
        match self {
            ChallengeType::Http01 => "http-01",
            ChallengeType::Dns01 => "dns-01",
            ChallengeType::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStatus {
    Pending,
    Processing,
    Valid,
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    pub id: String,
    pub kind: ChallengeType,
    pub token: String,
    pub status: ChallengeStatus,
    pub validated: Option<i64>,
    pub error: Option<ProblemDocument>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authorization {
    pub id: String,
    pub account_id: String,
    pub order_id: String,
    /// The base identifier (no `*.`).
    pub identifier: Identifier,
    pub wildcard: bool,
    pub status: AuthzStatus,
    pub expires: i64,
    pub challenges: Vec<Challenge>,
    pub version: i64,
}

impl Authorization {
    /// The status a client sees now: a pending or valid authorization past
    /// its expiry is expired.
    pub fn effective_status(&self, now: i64) -> AuthzStatus {
        match self.status {
            AuthzStatus::Pending | AuthzStatus::Valid if now >= self.expires => AuthzStatus::Expired,
            s => s,
        }
    }
}

impl Order {
    /// Recomputes a pending order's status from its authorizations and the
    /// clock (RFC 8555 §7.1.6). Returns whether it changed.
    pub fn refresh(&mut self, authzs: &[Authorization], now: i64) -> bool {
        let before = self.status;
        match self.status {
            OrderStatus::Pending | OrderStatus::Ready if now >= self.expires => self.status = OrderStatus::Invalid,
            OrderStatus::Pending => {
                let statuses: Vec<AuthzStatus> = authzs.iter().map(|a| a.effective_status(now)).collect();
                if statuses.iter().any(|s| !matches!(s, AuthzStatus::Pending | AuthzStatus::Valid)) {
                    self.status = OrderStatus::Invalid;
                } else if statuses.len() == self.authz_ids.len() && statuses.iter().all(|s| *s == AuthzStatus::Valid) {
                    self.status = OrderStatus::Ready;
                }
            }
            _ => {}
        }
        before != self.status
    }
}

/// An issued certificate, committed before any client sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertRecord {
    pub id: String,
    pub account_id: String,
    pub order_id: String,
    pub serial_hex: String,
    pub der: Vec<u8>,
    /// The leaf followed by the issuer chain, PEM.
    pub chain_pem: String,
    /// The identifiers the certificate names (as ordered).
    pub identifiers: Vec<Identifier>,
    /// RFC 7638 thumbprint of the certificate's public key, for revocation
    /// by that key.
    pub key_thumbprint: String,
    pub not_after: i64,
    pub revoked_reason: Option<u8>,
    pub revoked_at: Option<i64>,
}

/// What a reserved serial is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuanceKind {
    /// A leaf for an ACME order.
    Order,
    /// The server's own HTTPS certificate.
    ServerTls,
}

impl IssuanceKind {
    pub fn name(self) -> &'static str {
        match self {
            IssuanceKind::Order => "order",
            IssuanceKind::ServerTls => "server-tls",
        }
    }
}

/// Where a reserved serial stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IssuanceState {
    /// Reserved and stored; the signer may be working on it.
    Pending,
    /// Signed and stored: the certificate is recorded and logged.
    Issued,
    /// Never completed: the serial is retired (never reused) and logged,
    /// and no certificate with it was ever handed out.
    Abandoned,
}

impl IssuanceState {
    pub fn name(self) -> &'static str {
        match self {
            IssuanceState::Pending => "pending",
            IssuanceState::Issued => "issued",
            IssuanceState::Abandoned => "abandoned",
        }
    }
}

/// A serial and what it will be signed for, stored durably before the
/// signer is called (Boulder stores its serials before signing too): a
/// serial that may have been signed is then never reused and never
/// forgotten, and an interrupted issuance can be resolved by any instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issuance {
    /// The serial, lower-case hex as it is encoded in the certificate.
    pub serial_hex: String,
    pub kind: IssuanceKind,
    /// The order and account of an ACME issuance.
    pub order_id: Option<String>,
    pub account_id: Option<String>,
    /// The names the certificate will carry.
    pub identifiers: Vec<Identifier>,
    /// The order's profile name, if it named one.
    pub profile: Option<String>,
    /// The validity decided for it (Unix seconds).
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 (hex) of the subject public key (the CSR's).
    pub spki_sha256: String,
    pub state: IssuanceState,
    pub created_at: i64,
    /// After this (Unix seconds) the signer refuses the job, so an issuance
    /// still pending is dead wherever it started.
    pub deadline: i64,
}

/// RFC 3339 text for a Unix time (the ACME wire format for dates).
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The random number generator failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the random number generator failed")]
pub struct RngFailure;

fn random_b64(len: usize) -> Result<String, RngFailure> {
    let mut b = vec![0u8; len];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| RngFailure)?;
    Ok(super::jws::b64_encode(&b))
}

/// A fresh object id (128 random bits, base64url): the last part of the
/// object's URL.
pub fn random_id() -> Result<String, RngFailure> {
    random_b64(16)
}

/// A fresh challenge token (256 random bits, base64url; RFC 8555 §8.1 asks
/// for at least 128).
pub fn random_token() -> Result<String, RngFailure> {
    random_b64(32)
}
