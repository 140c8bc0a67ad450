//! newOrder, order polling and finalize.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::verify::KeyMode;
use super::{json_response, retry_after_if, Shared, Wfe};
use crate::acme::identifier::Identifier;
use crate::acme::jws::b64_decode;
use crate::acme::model::{rfc3339, Order, OrderStatus};
use crate::acme::problem::Problem;
use crate::acme::ra::NewOrder;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrderPayload {
    identifiers: Vec<Identifier>,
    not_before: Option<String>,
    not_after: Option<String>,
    profile: Option<String>,
    replaces: Option<String>,
}

fn parse_time(field: &str, v: &str) -> Result<i64, Problem> {
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| Problem::malformed(format!("{field} is not an RFC 3339 date")))
}

fn order_json(s: &Wfe, o: &Order) -> Value {
    let mut v = json!({
        "status": o.status,
        "expires": rfc3339(o.expires),
        "identifiers": o.identifiers,
        "authorizations": o.authz_ids.iter().map(|a| s.url(&format!("/acme/authz/{a}"))).collect::<Vec<_>>(),
        "finalize": s.url(&format!("/acme/order/{}/finalize", o.id)),
    });
    if let Some(nb) = o.not_before {
        v["notBefore"] = json!(rfc3339(nb));
    }
    if let Some(na) = o.not_after {
        v["notAfter"] = json!(rfc3339(na));
    }
    if let Some(e) = &o.error {
        v["error"] = json!(e);
    }
    if let Some(c) = &o.certificate_id {
        v["certificate"] = json!(s.url(&format!("/acme/cert/{c}")));
    }
    if let Some(p) = &o.profile {
        v["profile"] = json!(p);
    }
    if let Some(r) = &o.replaces {
        v["replaces"] = json!(r);
    }
    v
}

pub async fn new_order(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let p: NewOrderPayload = v.payload()?;
    let request = NewOrder {
        identifiers: p.identifiers,
        not_before: p.not_before.as_deref().map(|x| parse_time("notBefore", x)).transpose()?,
        not_after: p.not_after.as_deref().map(|x| parse_time("notAfter", x)).transpose()?,
        profile: p.profile,
        replaces: p.replaces,
    };
    let order = s.ra.new_order(&a, request).await?;
    let loc = s.url(&format!("/acme/order/{}", order.id));
    Ok(json_response(StatusCode::CREATED, Some(&loc), &[], &order_json(&s, &order)))
}

pub async fn order(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    v.post_as_get()?;
    let order = s.ra.load_order(v.account()?, id).await?;
    let busy = order.status == OrderStatus::Processing;
    Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[], &order_json(&s, &order))))
}

#[derive(Deserialize)]
struct FinalizePayload {
    csr: String,
}

pub async fn finalize(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let p: FinalizePayload = v.payload()?;
    let csr_der = b64_decode("csr", &p.csr).map_err(|_| Problem::bad_csr("csr is not unpadded base64url"))?;
    let order = s.ra.finalize(&a, &v.key, id, &csr_der).await?;
    let loc = s.url(&format!("/acme/order/{}", order.id));
    Ok(json_response(StatusCode::OK, Some(&loc), &[], &order_json(&s, &order)))
}
