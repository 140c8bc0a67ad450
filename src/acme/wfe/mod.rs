//! The web front end: HTTP and nothing else. Each request is verified
//! ([`verify`]: JWS, nonce, account, in Boulder's order), handed to the
//! registration authority (`acme::ra`) for every decision, and its answer
//! rendered as RFC 8555 JSON. Handlers are split by resource: the directory
//! and nonces ([`directory`]), accounts ([`account`]), orders ([`order`]),
//! authorizations and challenges ([`authz`]), certificates and revocation
//! ([`certificate`]) and renewal information ([`renewal`]).

mod account;
mod authz;
mod certificate;
mod directory;
mod order;
mod renewal;
mod verify;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde_json::Value;

use super::clock::SharedClock;
use super::nonce::NonceService;
use super::ra::Ra;
use super::store::Store;

/// Boulder's `maxRequestSize`.
pub const MAX_BODY: usize = 50_000;

/// What `meta` in the directory says besides the profiles.
#[derive(Debug, Clone, Default)]
pub struct DirectoryMeta {
    pub terms_of_service: Option<String>,
    pub website: Option<String>,
}

/// What the handlers share: the base URL, the nonce service, the store
/// (read by request verification), the registration authority and the
/// clock.
pub struct Wfe {
    base: String,
    nonces: NonceService,
    store: Arc<dyn Store>,
    ra: Ra,
    clock: SharedClock,
    meta: DirectoryMeta,
}

pub type Shared = Arc<Wfe>;

/// The TCP peer's address, attached to each request by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

impl Wfe {
    pub fn new(
        base: String,
        nonces: NonceService,
        store: Arc<dyn Store>,
        ra: Ra,
        clock: SharedClock,
        meta: DirectoryMeta,
    ) -> Self {
        Wfe { base, nonces, store, ra, clock, meta }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

/// The ACME API's routes, wrapped in the response-header and per-IP limit
/// layers.
pub fn router(state: Shared) -> Router {
    let p = |m: MethodRouter<Shared>| m.fallback(directory::method_not_allowed);
    Router::new()
        .route("/acme/directory", p(get(directory::directory)))
        // The bare path too: clients are often configured by hand, and
        // `https://host/directory` is what Pebble and step-ca users type.
        .route("/directory", p(get(directory::directory)))
        .route("/acme/new-nonce", p(get(directory::new_nonce).head(directory::new_nonce)))
        .route("/acme/new-account", p(post(account::new_account)))
        .route("/acme/acct/{id}", p(post(account::account)))
        .route("/acme/acct/{id}/orders", p(post(account::account_orders)))
        .route("/acme/key-change", p(post(account::key_change)))
        .route("/acme/new-order", p(post(order::new_order)))
        .route("/acme/order/{id}", p(post(order::order)))
        .route("/acme/order/{id}/finalize", p(post(order::finalize)))
        .route("/acme/authz/{id}", p(post(authz::authz)))
        .route("/acme/chall/{authz}/{chall}", p(post(authz::challenge)))
        .route("/acme/cert/{id}", p(post(certificate::certificate)))
        .route("/acme/revoke-cert", p(post(certificate::revoke_cert)))
        .route("/acme/renewal-info/{id}", p(get(renewal::renewal_info)))
        .fallback(directory::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), directory::limit_requests))
        .layer(axum::middleware::from_fn_with_state(state.clone(), directory::response_headers))
        .with_state(state)
}

fn json_response(status: StatusCode, location: Option<&str>, links: &[String], body: &Value) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    if let Some(loc) = location.and_then(|l| HeaderValue::from_str(l).ok()) {
        h.insert(header::LOCATION, loc);
    }
    for l in links {
        if let Ok(v) = HeaderValue::from_str(l) {
            h.append(header::LINK, v);
        }
    }
    resp
}

/// Seconds a client is told to wait before asking again about a challenge,
/// authorization or order still being worked on.
const RETRY_AFTER_SECS: u32 = 1;

/// Adds `Retry-After` when `busy`. RFC 8555 §8.2: the server MUST give its
/// retry state in the Retry-After header of challenge responses; without
/// one, clients guess (lego waits 5 s before its first poll).
fn retry_after_if(busy: bool, mut resp: Response) -> Response {
    if busy {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    resp
}
