//! newAccount, account updates, the account's orders, and key changes.

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::verify::{jws_problem, KeyMode, Verified};
use super::{json_response, ClientIp, Shared, Wfe};
use crate::acme::jws::{Jwk, Jws, JwsError};
use crate::acme::model::Account;
use crate::acme::problem::{Problem, ProblemType};
use crate::acme::ra::{KeyChange, NewAccount};

fn account_json(s: &Wfe, a: &Account) -> Value {
    json!({
        "status": a.status,
        "contact": a.contact,
        "orders": s.url(&format!("/acme/acct/{}/orders", a.id)),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAccountPayload {
    #[serde(default)]
    contact: Vec<String>,
    #[serde(default)]
    terms_of_service_agreed: bool,
    #[serde(default)]
    only_return_existing: bool,
    external_account_binding: Option<Value>,
}

pub async fn new_account(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let client = req.extensions().get::<ClientIp>().map(|c| c.0);
    let v = s.verify(req, KeyMode::Jwk).await?;
    let p: NewAccountPayload = v.payload()?;
    let outer_url = v.jws.header.url.clone().unwrap_or_default();
    let request = NewAccount {
        contact: p.contact,
        terms_of_service_agreed: p.terms_of_service_agreed,
        only_return_existing: p.only_return_existing,
        external_account_binding: p.external_account_binding,
    };
    let terms_required = s.meta.terms_of_service.is_some();
    let (account, created) = s.ra.new_account(&v.key, request, &outer_url, client, terms_required).await?;
    let loc = s.url(&format!("/acme/acct/{}", account.id));
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json_response(status, Some(&loc), &[], &account_json(&s, &account)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountUpdate {
    status: Option<String>,
    contact: Option<Vec<String>>,
    #[serde(rename = "termsOfServiceAgreed")]
    _tos: Option<bool>,
}

fn own_account<'a>(v: &'a Verified, id: &str) -> Result<&'a Account, Problem> {
    let a = v.account()?;
    if a.id != id {
        return Err(Problem::unauthorized("the request's account does not own this resource"));
    }
    Ok(a)
}

pub async fn account(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    let a = own_account(&v, &id)?.clone();
    let loc = s.url(&format!("/acme/acct/{}", a.id));
    if v.jws.payload.is_empty() {
        return Ok(json_response(StatusCode::OK, Some(&loc), &[], &account_json(&s, &a)));
    }
    let u: AccountUpdate = v.payload()?;
    let a = s.ra.update_account(a, u.status.as_deref(), u.contact).await?;
    Ok(json_response(StatusCode::OK, Some(&loc), &[], &account_json(&s, &a)))
}

pub async fn account_orders(
    State(s): State<Shared>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    v.post_as_get()?;
    let a = own_account(&v, &id)?;
    let ids = s.ra.orders_of(a).await?;
    let urls: Vec<String> = ids.iter().map(|o| s.url(&format!("/acme/order/{o}"))).collect();
    Ok(json_response(StatusCode::OK, None, &[], &json!({ "orders": urls })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChangeInner {
    account: String,
    old_key: Value,
}

/// RFC 8555 §7.3.5 with Boulder's `validKeyRollover` checks: the inner JWS
/// is verified here (it is request verification); the swap is the RA's.
pub async fn key_change(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let inner = Jws::parse(&v.jws.payload).map_err(jws_problem)?;
    let Some(new_key) = inner.header.jwk.clone() else {
        return Err(Problem::malformed("inner JWS must carry the new key as `jwk`"));
    };
    if inner.header.kid.is_some() {
        return Err(Problem::malformed("inner JWS must not carry a `kid`"));
    }
    if inner.header.nonce.is_some() {
        return Err(Problem::malformed("inner JWS must not carry a `nonce`"));
    }
    if inner.header.url != v.jws.header.url {
        return Err(Problem::malformed("inner JWS `url` differs from the outer one"));
    }
    new_key.check_quality().map_err(jws_problem)?;
    inner.verify(&new_key).map_err(|e| match e {
        JwsError::BadSignature => Problem::malformed("inner JWS signature does not verify"),
        other => jws_problem(other),
    })?;
    let payload: KeyChangeInner = serde_json::from_slice(&inner.payload)
        .map_err(|_| Problem::malformed("inner payload must be {account, oldKey}"))?;
    let kid = s.url(&format!("/acme/acct/{}", a.id));
    if payload.account != kid {
        return Err(Problem::malformed("inner `account` is not the outer `kid`"));
    }
    let old = Jwk::from_json(&payload.old_key).map_err(jws_problem)?;
    if old.thumbprint() != v.key.thumbprint() {
        return Err(Problem::malformed("`oldKey` is not the account's current key"));
    }
    match s.ra.change_key(&a, &new_key).await {
        Ok(updated) => Ok(json_response(StatusCode::OK, Some(&kid), &[], &account_json(&s, &updated))),
        Err(KeyChange::Refused(p)) => Err(p),
        Err(KeyChange::TakenBy(other)) => {
            let loc = s.url(&format!("/acme/acct/{other}"));
            let mut resp =
                Problem::new(ProblemType::Malformed, StatusCode::CONFLICT, "the new key belongs to another account")
                    .into_response();
            if let Ok(l) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, l);
            }
            Ok(resp)
        }
    }
}
