//! Renewal information (RFC 9773 §4): an unauthenticated GET.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::{json_response, Shared};
use crate::acme::ari;
use crate::acme::model::rfc3339;
use crate::acme::problem::Problem;

/// The window is computed on each request (see `acme::ari` for the spread).
pub async fn renewal_info(State(s): State<Shared>, Path(cert_id): Path<String>) -> Result<Response, Problem> {
    let w = s.ra.renewal_window(&cert_id).await?;
    let body = json!({ "suggestedWindow": { "start": rfc3339(w.start), "end": rfc3339(w.end) } });
    let mut resp = json_response(StatusCode::OK, None, &[], &body);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ari::RETRY_AFTER_SECS));
    Ok(resp)
}
