//! Authorizations (and their deactivation) and challenges.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use super::verify::KeyMode;
use super::{json_response, retry_after_if, Shared, Wfe};
use crate::acme::clock::ClockExt;
use crate::acme::model::{rfc3339, Authorization, Challenge, ChallengeStatus};
use crate::acme::problem::Problem;

fn challenge_json(s: &Wfe, authz_id: &str, c: &Challenge) -> Value {
    let mut v = json!({
        "type": c.kind,
        "url": s.url(&format!("/acme/chall/{authz_id}/{}", c.id)),
        "status": c.status,
        "token": c.token,
    });
    if let Some(t) = c.validated {
        v["validated"] = json!(rfc3339(t));
    }
    if let Some(e) = &c.error {
        v["error"] = json!(e);
    }
    v
}

fn authz_json(s: &Wfe, z: &Authorization) -> Value {
    let mut v = json!({
        "identifier": z.identifier,
        "status": z.effective_status(s.clock.unix()),
        "expires": rfc3339(z.expires),
        "challenges": z.challenges.iter().map(|c| challenge_json(s, &z.id, c)).collect::<Vec<_>>(),
    });
    if z.wildcard {
        v["wildcard"] = json!(true);
    }
    v
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthzUpdate {
    status: String,
}

pub async fn authz(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    let a = v.account()?;
    let mut z = s.ra.authz(a, id).await?;
    if !v.jws.payload.is_empty() {
        let u: AuthzUpdate = v.payload()?;
        if u.status != "deactivated" {
            return Err(Problem::malformed("only {\"status\": \"deactivated\"} may be requested"));
        }
        z = s.ra.deactivate_authz(z).await?;
    }
    let busy = z.challenges.iter().any(|c| c.status == ChallengeStatus::Processing);
    Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[], &authz_json(&s, &z))))
}

pub async fn challenge(
    State(s): State<Shared>,
    Path((authz_id, chall_id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    let a = v.account()?;
    let up = format!("<{}>;rel=\"up\"", s.url(&format!("/acme/authz/{authz_id}")));
    let z = s.ra.authz(a, authz_id).await?;
    let idx =
        z.challenges.iter().position(|c| c.id == chall_id).ok_or_else(|| Problem::not_found("no such challenge"))?;
    let busy = z.challenges[idx].status == ChallengeStatus::Processing;
    if v.jws.payload.is_empty() {
        let body = challenge_json(&s, &z.id, &z.challenges[idx]);
        return Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[up], &body)));
    }
    let _: Value = v.payload()?;
    if z.challenges[idx].status != ChallengeStatus::Pending {
        // Answering again is harmless: report where it stands.
        let body = challenge_json(&s, &z.id, &z.challenges[idx]);
        return Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[up], &body)));
    }
    let account_uri = s.url(&format!("/acme/acct/{}", a.id));
    let z = s.ra.respond_to_challenge(a, z, idx, account_uri).await?;
    let body = challenge_json(&s, &z.id, &z.challenges[idx]);
    Ok(retry_after_if(true, json_response(StatusCode::OK, None, &[up], &body)))
}
