//! The directory, new nonces, what wraps every response (a fresh nonce,
//! `Cache-Control`, the index link), the per-IP request limit, and the
//! answers for unknown paths and methods.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::{ClientIp, Shared};
use crate::acme::clock::ClockExt;
use crate::acme::problem::{Problem, ProblemType};
use crate::profile::Profile;

/// Wraps every response, errors and 404s included: a fresh nonce
/// (nginx-acme#47), `Cache-Control: no-store`, and the directory link.
pub async fn response_headers(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let is_directory = req.uri().path() == "/acme/directory";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let now = u64::try_from(s.clock.unix()).unwrap_or(0);
    if let Ok(v) = HeaderValue::from_str(&s.nonces.issue(now)) {
        h.insert("replay-nonce", v);
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if !is_directory {
        if let Ok(v) = HeaderValue::from_str(&format!("<{}>;rel=\"index\"", s.url("/acme/directory"))) {
            h.append(header::LINK, v);
        }
    }
    resp
}

/// `requests_per_ip`, for every request (inside the response layer, so a
/// refusal still carries a fresh nonce).
pub async fn limit_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>().copied() {
        if let Err(p) = s.ra.spend_request(ip) {
            return p.into_response();
        }
    }
    next.run(req).await
}

pub async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(ProblemType::Malformed, StatusCode::METHOD_NOT_ALLOWED, "method not allowed for this resource")
}

/// What `meta.profiles` says about a profile: generated from the template,
/// so it cannot drift from what is issued.
fn profile_description(p: &Profile) -> String {
    let ekus: Vec<&str> = p.extended_key_usage().iter().map(|e| e.name()).collect();
    let hours = |d: time::Duration| d.whole_hours();
    format!(
        "{} certificate, {} h by default, at most {} h",
        ekus.join(" + "),
        hours(p.validity()),
        hours(p.max_validity())
    )
}

pub async fn directory(State(s): State<Shared>) -> Response {
    let settings = s.ra.settings();
    let mut meta = json!({ "externalAccountRequired": settings.require_eab });
    if let Some(t) = &s.meta.terms_of_service {
        meta["termsOfService"] = json!(t);
    }
    if let Some(w) = &s.meta.website {
        meta["website"] = json!(w);
    }
    if !settings.profiles.is_empty() {
        let m: serde_json::Map<String, Value> =
            settings.profiles.iter().map(|(n, p)| (n.clone(), json!(profile_description(p)))).collect();
        meta["profiles"] = Value::Object(m);
    }
    let body = json!({
        "newNonce": s.url("/acme/new-nonce"),
        "newAccount": s.url("/acme/new-account"),
        "newOrder": s.url("/acme/new-order"),
        "revokeCert": s.url("/acme/revoke-cert"),
        "keyChange": s.url("/acme/key-change"),
        "renewalInfo": s.url("/acme/renewal-info"),
        "meta": meta,
    });
    axum::Json(body).into_response()
}

/// RFC 8555 §7.2: HEAD answers 200, GET 204; the nonce comes from the
/// response layer.
pub async fn new_nonce(method: Method) -> Response {
    let status = if method == Method::HEAD { StatusCode::OK } else { StatusCode::NO_CONTENT };
    status.into_response()
}
