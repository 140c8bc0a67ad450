//! Request verification, the one path every POST takes (RFC 8555 §6,
//! checklist 2–18), apart from the handlers.
//!
//! The order follows Boulder's `wfe2/verify.go`: everything that can be
//! judged from the request alone comes first (content type, size, JWS
//! syntax, `url`), then the key (embedded `jwk`, or the account named by
//! `kid`, which must exist and be valid), then the signature, and only then
//! the nonce is redeemed: a forged request cannot burn a client's nonce.
//! The payload is read only after all of it.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Wfe, MAX_BODY};
use crate::acme::clock::ClockExt;
use crate::acme::jws::{Jwk, Jws, JwsError};
use crate::acme::model::{Account, AccountStatus};
use crate::acme::nonce::NonceError;
use crate::acme::problem::{Problem, ProblemType};
use crate::acme::store::blocking;

const JOSE: &str = "application/jose+json";

/// Which key a resource accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyMode {
    /// newAccount: an embedded `jwk` only.
    Jwk,
    /// revokeCert: either.
    Either,
    /// Everything else: `kid` only.
    Kid,
}

/// A request whose signature and nonce checked out.
pub(super) struct Verified {
    pub jws: Jws,
    pub key: Jwk,
    pub account: Option<Account>,
}

impl Verified {
    pub fn account(&self) -> Result<&Account, Problem> {
        self.account.as_ref().ok_or_else(|| Problem::malformed("this request needs a `kid`"))
    }

    pub fn post_as_get(&self) -> Result<(), Problem> {
        if self.jws.payload.is_empty() {
            Ok(())
        } else {
            Err(Problem::malformed("POST-as-GET requests must have an empty payload"))
        }
    }

    pub fn payload<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        let v: Value =
            serde_json::from_slice(&self.jws.payload).map_err(|_| Problem::malformed("payload is not JSON"))?;
        if !v.is_object() {
            return Err(Problem::malformed("payload is not a JSON object"));
        }
        // RFC 8555 removed ACMEv1's `resource`; a client sending it is
        // speaking the wrong protocol (Pebble's strict mode).
        if v.get("resource").is_some() {
            return Err(Problem::malformed("the ACMEv1 `resource` field is not accepted"));
        }
        serde_json::from_value(v).map_err(|e| Problem::malformed(format!("payload: {e}")))
    }
}

pub(super) fn jws_problem(e: JwsError) -> Problem {
    match e {
        JwsError::Malformed(m) => Problem::malformed(m),
        JwsError::BadAlgorithm(m) => Problem::bad_signature_algorithm(m),
        JwsError::BadKey(m) => Problem::bad_public_key(m),
        JwsError::BadSignature => Problem::malformed("JWS signature does not verify"),
    }
}

fn too_large() -> Problem {
    Problem::new(ProblemType::Malformed, StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than 50000 bytes")
}

async fn read_body(body: Body) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| too_large())
}

impl Wfe {
    /// Verifies a POST (see the module documentation); the account, when
    /// named by `kid`, comes back loaded.
    pub(super) async fn verify(&self, req: Request, mode: KeyMode) -> Result<Verified, Problem> {
        let (parts, body) = req.into_parts();
        let headers: &HeaderMap = &parts.headers;
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if content_type != Some(JOSE) {
            return Err(Problem::new(
                ProblemType::Malformed,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/jose+json",
            ));
        }
        if headers.contains_key("replay-nonce") {
            return Err(Problem::malformed(
                "a request must not carry a Replay-Nonce header; the nonce goes in the JWS",
            ));
        }
        if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()) {
            if len > MAX_BODY {
                return Err(too_large());
            }
        }
        let body = read_body(body).await?;
        let jws = Jws::parse(&body).map_err(jws_problem)?;

        // The URL the client signed must be this very URL (RFC 8555 §6.4).
        let expected_url = self.url(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or_else(|| parts.uri.path()));
        match &jws.header.url {
            None => return Err(Problem::malformed("JWS header has no `url`")),
            Some(u) if *u != expected_url => {
                return Err(Problem::unauthorized("JWS `url` does not match the request URL"));
            }
            Some(_) => {}
        }

        let (key, account) = match (&jws.header.jwk, &jws.header.kid) {
            (Some(_), Some(_)) => return Err(Problem::malformed("JWS header has both `jwk` and `kid`")),
            (None, None) => return Err(Problem::malformed("JWS header has neither `jwk` nor `kid`")),
            (Some(_), None) if mode == KeyMode::Kid => {
                return Err(Problem::malformed("this resource needs a `kid`, not an embedded `jwk`"));
            }
            (None, Some(_)) if mode == KeyMode::Jwk => {
                return Err(Problem::malformed("newAccount needs an embedded `jwk`, not a `kid`"));
            }
            (Some(jwk), None) => {
                jwk.check_quality().map_err(jws_problem)?;
                (jwk.clone(), None)
            }
            (None, Some(kid)) => {
                let account = self.account_of_kid(kid).await?;
                let key = Jwk::from_json(&account.jwk).map_err(|e| Problem::internal("stored account key", &e))?;
                (key, Some(account))
            }
        };

        // Signature first, nonce second (Boulder's validJWSForKey).
        jws.verify(&key).map_err(jws_problem)?;

        let nonce = jws.header.nonce.as_deref().ok_or_else(|| Problem::bad_nonce(NonceError::Missing.to_string()))?;
        let now = u64::try_from(self.clock.unix()).unwrap_or(0);
        let valid = self.nonces.check(nonce, now).map_err(|e| Problem::bad_nonce(e.to_string()))?;
        let expires = i64::try_from(valid.expires_at).unwrap_or(i64::MAX);
        let fresh = blocking(&self.store, move |st| st.redeem_nonce(&valid.id, expires))
            .await
            .map_err(|e| Problem::internal("store", &e))?;
        if !fresh {
            return Err(Problem::bad_nonce(NonceError::Used.to_string()));
        }
        Ok(Verified { jws, key, account })
    }

    /// The valid account a `kid` names.
    async fn account_of_kid(&self, kid: &str) -> Result<Account, Problem> {
        let prefix = self.url("/acme/acct/");
        let Some(id) = kid.strip_prefix(&prefix).filter(|id| !id.is_empty() && !id.contains('/')) else {
            return Err(Problem::new(
                ProblemType::AccountDoesNotExist,
                StatusCode::BAD_REQUEST,
                "`kid` is not an account URL of this server",
            ));
        };
        let id = id.to_string();
        let account = blocking(&self.store, move |st| st.account(&id))
            .await
            .map_err(|e| Problem::internal("store", &e))?
            .ok_or_else(|| {
                Problem::new(ProblemType::AccountDoesNotExist, StatusCode::BAD_REQUEST, "no account with this `kid`")
            })?;
        if account.status != AccountStatus::Valid {
            return Err(Problem::unauthorized(format!("account is {:?}", account.status).to_lowercase()));
        }
        Ok(account)
    }
}
