//! RFC 7807 problem documents with the ACME error types of RFC 8555 §6.7.
//!
//! Every error a client sees is one of these. Internal failures are logged
//! where they happen and reach the client as a bare `serverInternal`, so no
//! path, SQL or key material leaks. The `Replay-Nonce` header is added by the
//! WFE's response layer, which wraps every response, errors included.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::identifier::Identifier;

/// The ACME error types (`urn:ietf:params:acme:error:<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    AccountDoesNotExist,
    AlreadyReplaced,
    AlreadyRevoked,
    BadCsr,
    BadNonce,
    BadPublicKey,
    BadRevocationReason,
    BadSignatureAlgorithm,
    Caa,
    Compound,
    Connection,
    Dns,
    ExternalAccountRequired,
    IncorrectResponse,
    InvalidContact,
    InvalidProfile,
    Malformed,
    OrderNotReady,
    RateLimited,
    RejectedIdentifier,
    ServerInternal,
    Tls,
    Unauthorized,
    UnsupportedContact,
    UnsupportedIdentifier,
    UserActionRequired,
}

impl ProblemType {
    pub fn name(self) -> &'static str {
        match self {
            ProblemType::AccountDoesNotExist => "accountDoesNotExist",
            ProblemType::AlreadyReplaced => "alreadyReplaced",
            ProblemType::AlreadyRevoked => "alreadyRevoked",
            ProblemType::BadCsr => "badCSR",
            ProblemType::BadNonce => "badNonce",
            ProblemType::BadPublicKey => "badPublicKey",
            ProblemType::BadRevocationReason => "badRevocationReason",
            ProblemType::BadSignatureAlgorithm => "badSignatureAlgorithm",
            ProblemType::Caa => "caa",
            ProblemType::Compound => "compound",
            ProblemType::Connection => "connection",
            ProblemType::Dns => "dns",
            ProblemType::ExternalAccountRequired => "externalAccountRequired",
            ProblemType::IncorrectResponse => "incorrectResponse",
            ProblemType::InvalidContact => "invalidContact",
            ProblemType::InvalidProfile => "invalidProfile",
            ProblemType::Malformed => "malformed",
            ProblemType::OrderNotReady => "orderNotReady",
            ProblemType::RateLimited => "rateLimited",
            ProblemType::RejectedIdentifier => "rejectedIdentifier",
            ProblemType::ServerInternal => "serverInternal",
            ProblemType::Tls => "tls",
            ProblemType::Unauthorized => "unauthorized",
            ProblemType::UnsupportedContact => "unsupportedContact",
            ProblemType::UnsupportedIdentifier => "unsupportedIdentifier",
            ProblemType::UserActionRequired => "userActionRequired",
        }
    }

    pub fn urn(self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.name())
    }
}

/// One identifier's share of a compound problem (RFC 8555 §6.7.1).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Subproblem {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier: Option<Identifier>,
}

/// A problem document on its way to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemType,
    pub status: StatusCode,
    pub detail: String,
    pub subproblems: Vec<Subproblem>,
    /// For `badSignatureAlgorithm`: the algorithms the server accepts.
    pub algorithms: Option<Vec<&'static str>>,
    /// For `rateLimited`: seconds until the request would be allowed, sent
    /// as `Retry-After` (RFC 8555 §6.6).
    pub retry_after: Option<u64>,
}

/// The document as serialized, also stored inside challenges and orders.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ProblemDocument {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subproblems: Vec<Subproblem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
}

impl Problem {
    pub fn new(kind: ProblemType, status: StatusCode, detail: impl Into<String>) -> Self {
        Problem { kind, status, detail: detail.into(), subproblems: Vec::new(), algorithms: None, retry_after: None }
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, StatusCode::BAD_REQUEST, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthorized, StatusCode::FORBIDDEN, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Malformed, StatusCode::NOT_FOUND, detail)
    }

    pub fn bad_nonce(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::BadNonce, StatusCode::BAD_REQUEST, detail)
    }

    pub fn bad_public_key(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::BadPublicKey, StatusCode::BAD_REQUEST, detail)
    }

    pub fn bad_csr(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::BadCsr, StatusCode::BAD_REQUEST, detail)
    }

    pub fn bad_signature_algorithm(detail: impl Into<String>) -> Self {
        let mut p = Self::new(ProblemType::BadSignatureAlgorithm, StatusCode::BAD_REQUEST, detail);
        p.algorithms = Some(super::jws::ALLOWED_ALGORITHMS.to_vec());
        p
    }

    /// `rateLimited` (429) with the wait, rounded up to whole seconds.
    pub fn rate_limited(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(ProblemType::RateLimited, StatusCode::TOO_MANY_REQUESTS, detail);
        p.retry_after = Some(retry_after_secs.max(1));
        p
    }

    /// An internal failure: the cause is logged here, the client learns
    /// nothing about it.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(context, %cause, "internal error");
        Self::new(ProblemType::ServerInternal, StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
    }

    pub fn with_subproblems(mut self, subproblems: Vec<Subproblem>) -> Self {
        self.subproblems = subproblems;
        self
    }

    pub fn document(&self) -> ProblemDocument {
        ProblemDocument {
            kind: self.kind.urn(),
            detail: self.detail.clone(),
            status: self.status.as_u16(),
            subproblems: self.subproblems.clone(),
            algorithms: self.algorithms.as_ref().map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind.name(), self.status.as_u16(), self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.document()).unwrap_or_default();
        let mut resp = (self.status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        resp
    }
}
