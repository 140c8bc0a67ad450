//! Certificate download and revocation.

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::verify::{jws_problem, KeyMode};
use super::Shared;
use crate::acme::jws::b64_decode;
use crate::acme::problem::Problem;
use crate::acme::ra::Revoker;

pub async fn certificate(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Kid).await?;
    v.post_as_get()?;
    let cert = s.ra.certificate(v.account()?, id).await?;
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/pem-certificate-chain")], cert.chain_pem).into_response())
}

#[derive(Deserialize)]
struct RevokePayload {
    certificate: String,
    reason: Option<u8>,
}

/// RFC 8555 §7.6: by the issuing account, by an account authorized for
/// every name, or by the certificate's own key (the RA decides which).
pub async fn revoke_cert(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let v = s.verify(req, KeyMode::Either).await?;
    let p: RevokePayload = v.payload()?;
    let der = b64_decode("certificate", &p.certificate).map_err(jws_problem)?;
    let who = match v.account {
        Some(a) => Revoker::Account(a),
        None => Revoker::CertificateKey(v.key),
    };
    s.ra.revoke(who, der, p.reason).await?;
    Ok(StatusCode::OK.into_response())
}
