//! The web front end: axum handlers for every ACME resource, and the one
//! request-verification path all POSTs share (checklist 2–18).
//!
//! The order of checks in [`verify`] matters: everything that can be judged
//! from the request alone comes first, the signature is verified before the
//! nonce is redeemed (so a forged request cannot burn a client's nonce), and
//! the payload is read only after both.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::ari::{self, CertId, RenewNow};
use super::ca::{check_csr, LeafRequest, SignerHandle};
use super::crl::CrlPublisher;
use super::eab::{Binding, EabError, EabKey, EabPolicy};
use super::identifier::{check_syntax, Checked, Identifier, IdentifierError, Policy};
use super::jws::{b64_decode, Jwk, Jws, JwsError};
use super::model::*;
use super::nonce::{NonceError, NonceService};
use super::problem::{Problem, ProblemType, Subproblem};
use super::ratelimit::{self, Denied, LimitName, Limiter, Subject};
use super::store::{Store, StoreError};
use super::va::Validator;
use crate::profile::Profile;

/// Boulder's `maxRequestSize`.
pub const MAX_BODY: usize = 50_000;
const JOSE: &str = "application/jose+json";

/// Everything a handler needs; shared by all requests.
pub struct AppState {
    pub base: String,
    pub store: Arc<dyn Store>,
    pub nonces: NonceService,
    pub policy: Policy,
    pub default_lifetime: time::Duration,
    pub max_lifetime: time::Duration,
    pub order_lifetime: time::Duration,
    pub authz_valid_lifetime: time::Duration,
    pub validator: Arc<Validator>,
    pub signer: SignerHandle,
    pub chain_pem: String,
    pub leaf_profile: Profile,
    pub terms_of_service: Option<String>,
    pub website: Option<String>,
    pub require_eab: bool,
    /// The intermediate's notAfter (Unix seconds): no order may reach past it.
    pub issuer_not_after: i64,
    pub profiles: Vec<(String, Profile)>,
    pub default_profile: Option<String>,
    /// The current intermediate's subjectKeyIdentifier (see [`super::ari`]).
    pub issuer_key_id: Vec<u8>,
    /// Where the ARI window starts, as a fraction of the lifetime.
    pub ari_window_start: f64,
    pub limiter: Limiter,
    /// The leaves' CRL, when this instance publishes it.
    pub crl: Option<Arc<CrlPublisher>>,
    /// How long past their expiry orders and authorizations are kept.
    pub purge_grace_secs: i64,
}

/// The TCP peer's address, attached to each request by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub std::net::IpAddr);

pub type Shared = Arc<AppState>;

impl AppState {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }
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

fn random_id() -> Result<String, Problem> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 16];
    SystemRandom::new().fill(&mut b).map_err(|_| Problem::internal("rng", &"random id"))?;
    Ok(super::jws::b64_encode(&b))
}

fn random_token() -> Result<String, Problem> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).map_err(|_| Problem::internal("rng", &"random token"))?;
    Ok(super::jws::b64_encode(&b))
}

/// Runs a store call on the blocking pool.
async fn db_raw<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<Result<T, StoreError>, Problem> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref())).await.map_err(|e| Problem::internal("store task", &e))
}

async fn db<T: Send + 'static>(
    s: &Shared,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Problem> {
    db_raw(s, f).await?.map_err(|e| Problem::internal("store", &e))
}

// ---------------------------------------------------------------- headers

/// Wraps every response, errors and 404s included: a fresh nonce
/// (nginx-acme#47), `Cache-Control: no-store`, and the directory link.
pub async fn response_headers(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let is_directory = req.uri().path() == "/acme/directory";
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&s.nonces.issue(now_u64())) {
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

fn rate_limited(d: Denied) -> Problem {
    tracing::info!(limit = d.limit.name(), subject = ?d.subject, wait_ms = d.retry_after_ms, "rate limited");
    Problem::rate_limited(d.detail(), d.retry_after_secs())
}

/// `requests_per_ip`, for every request (inside the response layer, so a
/// refusal still carries a fresh nonce).
pub async fn limit_requests(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(ClientIp(ip)) = req.extensions().get::<ClientIp>().copied() {
        if let Err(d) = s.limiter.spend(ratelimit::now_ms(), &[(LimitName::RequestsPerIp, Subject::Ip(ip))]) {
            return rate_limited(d).into_response();
        }
    }
    next.run(req).await
}

fn now_u64() -> u64 {
    u64::try_from(now()).unwrap_or(0)
}

pub async fn not_found() -> Problem {
    Problem::not_found("no such resource")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(ProblemType::Malformed, StatusCode::METHOD_NOT_ALLOWED, "method not allowed for this resource")
}

// ---------------------------------------------------------------- directory, nonce

pub async fn directory(State(s): State<Shared>) -> Response {
    let mut meta = json!({ "externalAccountRequired": s.require_eab });
    if let Some(t) = &s.terms_of_service {
        meta["termsOfService"] = json!(t);
    }
    if let Some(w) = &s.website {
        meta["website"] = json!(w);
    }
    if !s.profiles.is_empty() {
        let m: serde_json::Map<String, Value> =
            s.profiles.iter().map(|(n, p)| (n.clone(), json!(profile_description(p)))).collect();
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

// ---------------------------------------------------------------- verification

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyMode {
    /// newAccount: an embedded `jwk` only.
    Jwk,
    /// revokeCert: either.
    Either,
    /// Everything else: `kid` only.
    Kid,
}

struct Verified {
    jws: Jws,
    key: Jwk,
    account: Option<Account>,
}

impl Verified {
    fn account(&self) -> Result<&Account, Problem> {
        self.account.as_ref().ok_or_else(|| Problem::malformed("this request needs a `kid`"))
    }

    fn post_as_get(&self) -> Result<(), Problem> {
        if self.jws.payload.is_empty() {
            Ok(())
        } else {
            Err(Problem::malformed("POST-as-GET requests must have an empty payload"))
        }
    }

    fn payload<T: DeserializeOwned>(&self) -> Result<T, Problem> {
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

fn jws_problem(e: JwsError) -> Problem {
    match e {
        JwsError::Malformed(m) => Problem::malformed(m),
        JwsError::BadAlgorithm(m) => Problem::bad_signature_algorithm(m),
        JwsError::BadKey(m) => Problem::bad_public_key(m),
        JwsError::BadSignature => Problem::malformed("JWS signature does not verify"),
    }
}

async fn read_body(body: Body) -> Result<Bytes, Problem> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        Problem::new(ProblemType::Malformed, StatusCode::PAYLOAD_TOO_LARGE, "request body is larger than 50000 bytes")
    })
}

async fn verify(s: &Shared, req: Request, mode: KeyMode) -> Result<Verified, Problem> {
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
        return Err(Problem::malformed("a request must not carry a Replay-Nonce header; the nonce goes in the JWS"));
    }
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()) {
        if len > MAX_BODY {
            return Err(Problem::new(
                ProblemType::Malformed,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than 50000 bytes",
            ));
        }
    }
    let body = read_body(body).await?;
    let jws = Jws::parse(&body).map_err(jws_problem)?;

    // The URL the client signed must be this very URL (RFC 8555 §6.4).
    let expected_url = s.url(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or_else(|| parts.uri.path()));
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
            let prefix = s.url("/acme/acct/");
            let Some(id) = kid.strip_prefix(&prefix).filter(|id| !id.is_empty() && !id.contains('/')) else {
                return Err(Problem::new(
                    ProblemType::AccountDoesNotExist,
                    StatusCode::BAD_REQUEST,
                    "`kid` is not an account URL of this server",
                ));
            };
            let id = id.to_string();
            let account = db(s, move |st| st.account(&id)).await?.ok_or_else(|| {
                Problem::new(ProblemType::AccountDoesNotExist, StatusCode::BAD_REQUEST, "no account with this `kid`")
            })?;
            if account.status != AccountStatus::Valid {
                return Err(Problem::unauthorized(format!("account is {:?}", account.status).to_lowercase()));
            }
            let key = Jwk::from_json(&account.jwk).map_err(|e| Problem::internal("stored account key", &e))?;
            (key, Some(account))
        }
    };

    // Signature first, nonce second (Boulder's validJWSForKey).
    jws.verify(&key).map_err(jws_problem)?;

    let nonce = jws.header.nonce.as_deref().ok_or_else(|| Problem::bad_nonce(NonceError::Missing.to_string()))?;
    let valid = s.nonces.check(nonce, now_u64()).map_err(|e| Problem::bad_nonce(e.to_string()))?;
    let expires = i64::try_from(valid.expires_at).unwrap_or(i64::MAX);
    let fresh = db(s, move |st| st.redeem_nonce(&valid.id, expires)).await?;
    if !fresh {
        return Err(Problem::bad_nonce(NonceError::Used.to_string()));
    }
    Ok(Verified { jws, key, account })
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

// ---------------------------------------------------------------- accounts

fn account_json(s: &AppState, a: &Account) -> Value {
    json!({
        "status": a.status,
        "contact": a.contact,
        "orders": s.url(&format!("/acme/acct/{}/orders", a.id)),
    })
}

/// RFC 8555 §7.3: mailto: only, one address, no header fields.
fn check_contacts(contacts: &[String]) -> Result<(), Problem> {
    let invalid = |m: String| Problem::new(ProblemType::InvalidContact, StatusCode::BAD_REQUEST, m);
    if contacts.len() > 10 {
        return Err(invalid("at most 10 contacts".into()));
    }
    for c in contacts {
        let Some(addr) = c.strip_prefix("mailto:") else {
            return Err(Problem::new(
                ProblemType::UnsupportedContact,
                StatusCode::BAD_REQUEST,
                format!("contact {c:?}: only mailto: is supported"),
            ));
        };
        let mut parts = addr.split('@');
        let (local, domain, extra) = (parts.next(), parts.next(), parts.next());
        let ok = matches!((local, domain, extra), (Some(l), Some(d), None) if !l.is_empty() && !d.is_empty())
            && !addr.contains(['?', ',', ' ', '<', '>', '%'])
            && addr.len() <= 254
            && domain.is_some_and(|d| {
                check_syntax(&Identifier { kind: "dns".into(), value: d.to_ascii_lowercase() }).is_ok()
            });
        if !ok {
            return Err(invalid(format!("contact {c:?} is not a single plain e-mail address")));
        }
    }
    Ok(())
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

fn eab_problem(e: EabError) -> Problem {
    match e {
        EabError::Malformed(m) => Problem::malformed(m),
        EabError::Unauthorized(m) => Problem::unauthorized(m),
    }
}

/// RFC 8555 §7.3.4: checks the binding's structure, then its MAC with the
/// named key, then that the key may still bind. Returns the key's id.
async fn check_binding(s: &Shared, v: &Verified, binding: &Value) -> Result<String, Problem> {
    let outer_url = v.jws.header.url.clone().unwrap_or_default();
    let b = Binding::parse(binding, &outer_url, &v.key).map_err(eab_problem)?;
    let kid = b.kid.clone();
    let Some((key, secret)) = db(s, move |st| st.eab_key(&kid)).await? else {
        return Err(Problem::unauthorized("unknown external account key"));
    };
    b.verify(&secret).map_err(eab_problem)?;
    drop(secret);
    if let Some(why) = key.binding_refusal(now()) {
        return Err(Problem::unauthorized(why));
    }
    Ok(key.kid)
}

/// The EAB key an account is bound to, if any. A key revoked (or gone)
/// since binding stops the account's issuance.
async fn account_eab(s: &Shared, a: &Account) -> Result<Option<EabKey>, Problem> {
    let Some(kid) = a.eab_kid.clone() else { return Ok(None) };
    match db(s, move |st| st.eab_key(&kid)).await? {
        Some((key, _secret)) if key.revoked_at.is_none() => Ok(Some(key)),
        _ => Err(Problem::unauthorized("the external account key this account is bound to has been revoked")),
    }
}

pub async fn new_account(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let client = req.extensions().get::<ClientIp>().copied();
    let v = verify(&s, req, KeyMode::Jwk).await?;
    let p: NewAccountPayload = v.payload()?;
    let thumbprint = v.key.thumbprint();
    let tp = thumbprint.clone();
    if let Some(existing) = db(&s, move |st| st.account_by_thumbprint(&tp)).await? {
        if existing.status != AccountStatus::Valid {
            return Err(Problem::unauthorized("the account of this key is deactivated"));
        }
        let loc = s.url(&format!("/acme/acct/{}", existing.id));
        return Ok(json_response(StatusCode::OK, Some(&loc), &[], &account_json(&s, &existing)));
    }
    if p.only_return_existing {
        return Err(Problem::new(ProblemType::AccountDoesNotExist, StatusCode::BAD_REQUEST, "no account for this key"));
    }
    if s.terms_of_service.is_some() && !p.terms_of_service_agreed {
        return Err(Problem::new(
            ProblemType::UserActionRequired,
            StatusCode::FORBIDDEN,
            "agree to the terms of service (termsOfServiceAgreed)",
        ));
    }
    check_contacts(&p.contact)?;
    if let Some(ClientIp(ip)) = client {
        s.limiter
            .spend(ratelimit::now_ms(), &[(LimitName::NewAccountsPerIp, Subject::Ip(ip))])
            .map_err(rate_limited)?;
    }
    let eab_kid = match &p.external_account_binding {
        Some(b) => Some(check_binding(&s, &v, b).await?),
        None if s.require_eab => {
            return Err(Problem::new(
                ProblemType::ExternalAccountRequired,
                StatusCode::FORBIDDEN,
                "this server requires an external account binding (externalAccountBinding)",
            ))
        }
        None => None,
    };
    let account = Account {
        id: random_id()?,
        jwk: v.key.to_value(),
        thumbprint,
        status: AccountStatus::Valid,
        contact: p.contact,
        created_at: now(),
        version: 0,
        eab_kid,
    };
    let a = account.clone();
    let inserted = match a.eab_kid.clone() {
        Some(kid) => db_raw(&s, move |st| st.insert_account_bound(&a, &kid, now())).await?,
        None => db_raw(&s, move |st| st.insert_account(&a)).await?,
    };
    match inserted {
        Ok(()) => {}
        Err(StoreError::Refused(why)) => return Err(Problem::unauthorized(why)),
        // Lost a race with the same key: answer with the winner.
        Err(StoreError::Conflict(_)) => {
            return Err(Problem::malformed("an account for this key was just created; retry"))
        }
        Err(e) => return Err(Problem::internal("insert account", &e)),
    }
    tracing::info!(account = %account.id, eab = account.eab_kid.as_deref().unwrap_or("-"), "account created");
    let loc = s.url(&format!("/acme/acct/{}", account.id));
    Ok(json_response(StatusCode::CREATED, Some(&loc), &[], &account_json(&s, &account)))
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
    let v = verify(&s, req, KeyMode::Kid).await?;
    let mut a = own_account(&v, &id)?.clone();
    let loc = s.url(&format!("/acme/acct/{}", a.id));
    if v.jws.payload.is_empty() {
        return Ok(json_response(StatusCode::OK, Some(&loc), &[], &account_json(&s, &a)));
    }
    let u: AccountUpdate = v.payload()?;
    match u.status.as_deref() {
        None => {}
        Some("deactivated") => a.status = AccountStatus::Deactivated,
        Some(other) => return Err(Problem::malformed(format!("account status {other:?} cannot be requested"))),
    }
    if let Some(contact) = u.contact {
        check_contacts(&contact)?;
        a.contact = contact;
    }
    let updated = a.clone();
    match db_raw(&s, move |st| st.update_account(&updated)).await? {
        Ok(()) => {}
        Err(StoreError::Stale) => return Err(Problem::malformed("the account changed concurrently; retry")),
        Err(e) => return Err(Problem::internal("update account", &e)),
    }
    Ok(json_response(StatusCode::OK, Some(&loc), &[], &account_json(&s, &a)))
}

pub async fn account_orders(
    State(s): State<Shared>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    v.post_as_get()?;
    let a = own_account(&v, &id)?.clone();
    let ids = db(&s, move |st| st.orders_of(&a.id)).await?;
    let urls: Vec<String> = ids.iter().map(|o| s.url(&format!("/acme/order/{o}"))).collect();
    Ok(json_response(StatusCode::OK, None, &[], &json!({ "orders": urls })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyChangeInner {
    account: String,
    old_key: Value,
}

/// RFC 8555 §7.3.5 with Boulder's `validKeyRollover` checks.
pub async fn key_change(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
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
    let new_tp = new_key.thumbprint();
    if new_tp == a.thumbprint {
        return Err(Problem::malformed("the new key is the current key"));
    }
    let tp = new_tp.clone();
    if let Some(other) = db(&s, move |st| st.account_by_thumbprint(&tp)).await? {
        let loc = s.url(&format!("/acme/acct/{}", other.id));
        let mut resp =
            Problem::new(ProblemType::Malformed, StatusCode::CONFLICT, "the new key belongs to another account")
                .into_response();
        if let Ok(l) = HeaderValue::from_str(&loc) {
            resp.headers_mut().insert(header::LOCATION, l);
        }
        return Ok(resp);
    }
    let mut updated = a.clone();
    updated.jwk = new_key.to_value();
    updated.thumbprint = new_tp;
    let u = updated.clone();
    match db_raw(&s, move |st| st.update_account(&u)).await? {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(Problem::new(
                ProblemType::Malformed,
                StatusCode::CONFLICT,
                "the new key belongs to another account",
            ))
        }
        Err(StoreError::Stale) => return Err(Problem::malformed("the account changed concurrently; retry")),
        Err(e) => return Err(Problem::internal("key change", &e)),
    }
    tracing::info!(account = %a.id, "account key changed");
    Ok(json_response(StatusCode::OK, Some(&kid), &[], &account_json(&s, &updated)))
}

// ---------------------------------------------------------------- orders

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

fn order_json(s: &AppState, o: &Order) -> Value {
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

/// Syntax, the server's policy, then the account's EAB policy.
fn identifier_problems(s: &AppState, ids: &[Identifier], eab: Option<&EabPolicy>) -> Result<Vec<Checked>, Problem> {
    if ids.is_empty() {
        return Err(Problem::malformed("an order needs at least one identifier"));
    }
    if ids.len() > s.policy.max_identifiers {
        return Err(Problem::new(
            ProblemType::RejectedIdentifier,
            StatusCode::BAD_REQUEST,
            format!("an order may hold at most {} identifiers", s.policy.max_identifiers),
        ));
    }
    let mut checked: Vec<Checked> = Vec::new();
    let mut subs = Vec::new();
    for id in ids {
        let result = check_syntax(id).and_then(|c| s.policy.check(&c).map(|()| c)).and_then(|c| match eab {
            Some(p) => p.check(&c).map(|()| c).map_err(IdentifierError::Policy),
            None => Ok(c),
        });
        match result {
            Ok(c) => {
                if !checked.contains(&c) {
                    checked.push(c);
                }
            }
            Err(e) => {
                let kind = match e {
                    IdentifierError::Unsupported(_) => ProblemType::UnsupportedIdentifier,
                    IdentifierError::Syntax(_) | IdentifierError::Policy(_) => ProblemType::RejectedIdentifier,
                };
                subs.push((kind, Subproblem { kind: kind.urn(), detail: e.to_string(), identifier: Some(id.clone()) }));
            }
        }
    }
    if subs.is_empty() {
        return Ok(checked);
    }
    let first = subs[0].0;
    let kind = if subs.iter().all(|(k, _)| *k == first) { first } else { ProblemType::Compound };
    let detail = if subs.len() == 1 {
        subs[0].1.detail.clone()
    } else {
        format!("{} identifiers were refused; see subproblems", subs.len())
    };
    Err(Problem::new(kind, StatusCode::BAD_REQUEST, detail)
        .with_subproblems(subs.into_iter().map(|(_, p)| p).collect()))
}

pub async fn new_order(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let p: NewOrderPayload = v.payload()?;
    let eab = account_eab(&s, &a).await?;
    let eab_policy = eab.as_ref().map(|k| &k.policy);
    let checked = identifier_problems(&s, &p.identifiers, eab_policy)?;
    let profile_name = match p.profile.clone() {
        Some(name) if s.profile(&name).is_none() => {
            return Err(Problem::new(
                ProblemType::InvalidProfile,
                StatusCode::BAD_REQUEST,
                if s.profiles.is_empty() {
                    "this server offers no profiles".to_string()
                } else {
                    format!("no profile {name:?}; see meta.profiles in the directory")
                },
            ))
        }
        Some(name) => Some(name),
        None => s.default_profile.clone(),
    };
    if let Some(allowed) = eab_policy.map(|p| &p.profiles).filter(|l| !l.is_empty()) {
        let name = profile_name.as_deref().unwrap_or("");
        if !allowed.iter().any(|a| a == name) {
            return Err(Problem::new(
                ProblemType::InvalidProfile,
                StatusCode::BAD_REQUEST,
                format!("this account may order the profiles {} only", allowed.join(", ")),
            ));
        }
    }
    let profile_max = profile_name.as_deref().and_then(|n| s.profile(n)).map(|p| p.max_validity().whole_seconds());
    let max_lifetime =
        [Some(s.max_lifetime.whole_seconds()), eab_policy.and_then(|p| p.max_lifetime_secs), profile_max]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(0);
    let t = now();
    let not_before = p.not_before.as_deref().map(|x| parse_time("notBefore", x)).transpose()?;
    let not_after = p.not_after.as_deref().map(|x| parse_time("notAfter", x)).transpose()?;
    // Checklist 27: apply within policy, or refuse; never silently ignore.
    let start = not_before.unwrap_or(t);
    if not_before.is_some_and(|nb| nb < t - 300 || nb > t + 86_400) {
        return Err(Problem::malformed("notBefore must lie between 5 minutes ago and one day ahead"));
    }
    if let Some(na) = not_after {
        if na <= start || na - start > max_lifetime {
            return Err(Problem::malformed(format!(
                "notAfter must be after notBefore and at most {max_lifetime}s later"
            )));
        }
        if na > s.issuer_not_after {
            return Err(Problem::malformed("notAfter is later than the issuing CA's own expiry"));
        }
    }
    let replaced = match p.replaces.as_deref() {
        Some(cert_id) => Some(check_replaces(&s, &a, cert_id, &checked).await?),
        None => None,
    };
    // RFC 9773: a renewal inside its window is what the server asked for;
    // limiting it would punish the clients that behave best.
    let renewal_in_window = match &replaced {
        Some((cert, id)) => suggested_window(&s, cert, id)?.start <= t,
        None => false,
    };
    if !renewal_in_window {
        check_order_limits(&s, &a, &checked, t).await?;
    }
    let replaced = replaced.map(|(cert, _)| cert);
    let expires = t + s.order_lifetime.whole_seconds();
    let order_id = random_id()?;
    let mut authzs = Vec::new();
    for c in &checked {
        let kinds: &[ChallengeType] = match c {
            Checked::Dns { wildcard: true, .. } => &[ChallengeType::Dns01],
            Checked::Dns { .. } => &[ChallengeType::Http01, ChallengeType::Dns01, ChallengeType::TlsAlpn01],
            Checked::Ip(_) => &[ChallengeType::Http01, ChallengeType::TlsAlpn01],
        };
        let mut challenges = Vec::new();
        for k in kinds {
            challenges.push(Challenge {
                id: random_id()?,
                kind: *k,
                token: random_token()?,
                status: ChallengeStatus::Pending,
                validated: None,
                error: None,
            });
        }
        authzs.push(Authorization {
            id: random_id()?,
            account_id: a.id.clone(),
            order_id: order_id.clone(),
            identifier: c.authz_identifier(),
            wildcard: c.is_wildcard(),
            status: AuthzStatus::Pending,
            expires,
            challenges,
            version: 0,
        });
    }
    let order = Order {
        id: order_id,
        account_id: a.id.clone(),
        status: OrderStatus::Pending,
        expires,
        identifiers: checked.iter().map(Checked::order_identifier).collect(),
        not_before,
        not_after,
        authz_ids: authzs.iter().map(|z| z.id.clone()).collect(),
        error: None,
        certificate_id: None,
        created_at: t,
        version: 0,
        profile: profile_name,
        replaces: p.replaces.clone(),
    };
    let (o, z) = (order.clone(), authzs);
    match replaced {
        None => db(&s, move |st| st.insert_order(&o, &z)).await?,
        Some(cert) => match db_raw(&s, move |st| st.insert_order_replacing(&o, &z, &cert.id, t)).await? {
            Ok(()) => {}
            Err(StoreError::AlreadyReplaced(_)) => return Err(already_replaced()),
            Err(e) => return Err(Problem::internal("insert order", &e)),
        },
    }
    let loc = s.url(&format!("/acme/order/{}", order.id));
    Ok(json_response(StatusCode::CREATED, Some(&loc), &[], &order_json(&s, &order)))
}

/// The pending-authorization cap, then the order rates for the account and
/// each identifier, spent together or not at all.
async fn check_order_limits(s: &Shared, a: &Account, checked: &[Checked], t: i64) -> Result<(), Problem> {
    if let Some(max) = s.limiter.limits().max_pending_authorizations {
        let aid = a.id.clone();
        let pending = db(s, move |st| st.pending_authzs(&aid, t)).await?;
        let adding = u64::try_from(checked.len()).unwrap_or(u64::MAX);
        if pending.saturating_add(adding) > max {
            return Err(Problem::rate_limited(
                format!(
                    "this account holds {pending} pending authorizations and may hold at most {max}; \
                     complete or deactivate some before ordering more"
                ),
                60,
            ));
        }
    }
    let mut spend = vec![(LimitName::NewOrdersPerAccount, Subject::Account(a.id.clone()))];
    for c in checked {
        let id = c.authz_identifier();
        spend.push((LimitName::NewOrdersPerIdentifier, Subject::Identifier(id.value.to_ascii_lowercase())));
    }
    s.limiter.spend(ratelimit::now_ms(), &spend).map_err(rate_limited)
}

/// RFC 9773 §4.2: the window a certificate's holder is told to renew in.
fn suggested_window(s: &AppState, cert: &CertRecord, id: &CertId) -> Result<ari::Window, Problem> {
    let summary =
        crate::profile::certificate_summary(&cert.der).map_err(|e| Problem::internal("stored certificate", &e))?;
    let renew_now = if cert.revoked_at.is_some() {
        Some(RenewNow::Revoked)
    } else if id.key_id != s.issuer_key_id {
        Some(RenewNow::IssuerChanged)
    } else {
        None
    };
    Ok(ari::window(
        summary.not_before.unix_timestamp(),
        summary.not_after.unix_timestamp(),
        &id.serial,
        s.ari_window_start,
        renew_now,
        now(),
    ))
}

fn already_replaced() -> Problem {
    Problem::new(
        ProblemType::AlreadyReplaced,
        StatusCode::CONFLICT,
        "the certificate named in `replaces` has already been replaced by another order",
    )
}

/// Looks up the certificate a certID names: by serial, then the AKI must
/// match too (a serial alone could be another issuer's). `None` if unknown.
async fn cert_by_id(s: &Shared, id: &CertId) -> Result<Option<CertRecord>, Problem> {
    let serial = id.serial_hex();
    let Some(cert) = db(s, move |st| st.certificate_by_serial(&serial)).await? else { return Ok(None) };
    let stored = CertId::of_certificate(&cert.der).map_err(|e| Problem::internal("stored certificate", &e))?;
    Ok((stored == *id).then_some(cert))
}

/// RFC 9773 §5: the certificate must exist, belong to this account and
/// share an identifier with the new order.
async fn check_replaces(
    s: &Shared,
    a: &Account,
    cert_id: &str,
    checked: &[Checked],
) -> Result<(CertRecord, CertId), Problem> {
    let id = CertId::parse(cert_id).map_err(|e| Problem::malformed(format!("replaces: {e}")))?;
    let cert = cert_by_id(s, &id)
        .await?
        .ok_or_else(|| Problem::malformed("replaces: this server issued no certificate with that certID"))?;
    if cert.account_id != a.id {
        return Err(Problem::unauthorized("replaces: the certificate belongs to another account"));
    }
    let ordered: Vec<Identifier> = checked.iter().map(Checked::order_identifier).collect();
    if !cert.identifiers.iter().any(|i| ordered.contains(i)) {
        return Err(Problem::malformed("replaces: the order shares no identifier with the certificate it replaces"));
    }
    // Whether it is replaced already is decided by the store, atomically
    // with inserting the order.
    Ok((cert, id))
}

/// Loads an order the account owns and brings its status up to date.
async fn load_order(s: &Shared, account: &Account, id: String) -> Result<Order, Problem> {
    for _ in 0..5 {
        let oid = id.clone();
        let mut order = db(s, move |st| st.order(&oid)).await?.ok_or_else(|| Problem::not_found("no such order"))?;
        if order.account_id != account.id {
            return Err(Problem::unauthorized("the request's account does not own this order"));
        }
        let ids = order.authz_ids.clone();
        let authzs =
            db(s, move |st| ids.iter().filter_map(|i| st.authz(i).transpose()).collect::<Result<Vec<_>, _>>()).await?;
        if !order.refresh(&authzs, now()) {
            return Ok(order);
        }
        let o = order.clone();
        match db_raw(s, move |st| st.update_order(&o)).await? {
            Ok(()) => {
                order.version += 1;
                return Ok(order);
            }
            Err(StoreError::Stale) => continue,
            Err(e) => return Err(Problem::internal("update order", &e)),
        }
    }
    Err(Problem::internal("load order", &"too many concurrent updates"))
}

pub async fn order(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    v.post_as_get()?;
    let order = load_order(&s, v.account()?, id).await?;
    let busy = order.status == OrderStatus::Processing;
    Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[], &order_json(&s, &order))))
}

#[derive(Deserialize)]
struct FinalizePayload {
    csr: String,
}

pub async fn finalize(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let p: FinalizePayload = v.payload()?;
    let eab = account_eab(&s, &a).await?;
    let mut order = load_order(&s, &a, id).await?;
    let loc = s.url(&format!("/acme/order/{}", order.id));
    if order.status != OrderStatus::Ready {
        let why = if now() >= order.expires { "the order has expired" } else { "the order is not ready" };
        return Err(Problem::new(
            ProblemType::OrderNotReady,
            StatusCode::FORBIDDEN,
            format!("{why} (status {:?})", order.status).to_lowercase(),
        ));
    }
    let csr_der = b64_decode("csr", &p.csr).map_err(|_| Problem::bad_csr("csr is not unpadded base64url"))?;
    let profile = match order.profile.as_deref() {
        Some(name) => Some(
            s.profile(name)
                .cloned()
                .ok_or_else(|| Problem::internal("finalize", &format!("the order's profile {name:?} is gone")))?,
        ),
        None => None,
    };
    let checked = check_csr(&csr_der, &order.identifiers, &v.key, profile.as_ref().unwrap_or(&s.leaf_profile))?;

    // Claim the order (processing) so a second finalize cannot issue twice.
    order.status = OrderStatus::Processing;
    let claim = order.clone();
    match db_raw(&s, move |st| st.update_order(&claim)).await? {
        Ok(()) => order.version += 1,
        Err(StoreError::Stale) => {
            return Err(Problem::new(ProblemType::OrderNotReady, StatusCode::FORBIDDEN, "the order is being finalized"))
        }
        Err(e) => return Err(Problem::internal("claim order", &e)),
    }

    let t = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    let not_before = order
        .not_before
        .and_then(|nb| time::OffsetDateTime::from_unix_timestamp(nb).ok())
        .unwrap_or(t - time::Duration::minutes(1));
    let not_after = order.not_after.and_then(|na| time::OffsetDateTime::from_unix_timestamp(na).ok()).unwrap_or(
        not_before + profile.as_ref().map_or(s.default_lifetime, |p| p.validity()) - time::Duration::seconds(1),
    );
    // The EAB key's ceiling also bounds the default lifetime (an explicit
    // notAfter was already held to it at newOrder).
    let not_after = match eab.as_ref().and_then(|k| k.policy.max_lifetime_secs) {
        Some(max) => not_after.min(not_before + time::Duration::seconds(max) - time::Duration::seconds(1)),
        None => not_after,
    };
    let issued = s
        .signer
        .issue(LeafRequest { spki_der: checked.spki_der.clone(), sans: checked.sans, not_before, not_after, profile })
        .await;
    let issued = match issued {
        Ok(i) => i,
        Err(e) => {
            let problem = Problem::internal("issuance", &e);
            order.status = OrderStatus::Invalid;
            order.error = Some(problem.document());
            let o = order.clone();
            let _ = db_raw(&s, move |st| st.update_order(&o)).await;
            return Err(problem);
        }
    };
    let key_thumbprint = Jwk::from_spki_der(&checked.spki_der).map(|k| k.thumbprint()).unwrap_or_default();
    let cert = CertRecord {
        id: random_id()?,
        account_id: a.id.clone(),
        order_id: order.id.clone(),
        serial_hex: issued.serial_hex.clone(),
        chain_pem: format!("{}{}", issued.pem, s.chain_pem),
        der: issued.der,
        identifiers: order.identifiers.clone(),
        key_thumbprint,
        not_after: not_after.unix_timestamp(),
        revoked_reason: None,
        revoked_at: None,
    };
    order.status = OrderStatus::Valid;
    order.certificate_id = Some(cert.id.clone());
    let (c, o) = (cert.clone(), order.clone());
    // Committed before the client learns the certificate URL.
    db(&s, move |st| st.insert_certificate(&c, &o)).await?;
    tracing::info!(order = %order.id, serial = %cert.serial_hex, "certificate issued");
    Ok(json_response(StatusCode::OK, Some(&loc), &[], &order_json(&s, &order)))
}

// ---------------------------------------------------------------- authorizations and challenges

fn challenge_json(s: &AppState, authz_id: &str, c: &Challenge) -> Value {
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

fn authz_json(s: &AppState, z: &Authorization) -> Value {
    let mut v = json!({
        "identifier": z.identifier,
        "status": z.effective_status(now()),
        "expires": rfc3339(z.expires),
        "challenges": z.challenges.iter().map(|c| challenge_json(s, &z.id, c)).collect::<Vec<_>>(),
    });
    if z.wildcard {
        v["wildcard"] = json!(true);
    }
    v
}

async fn load_authz(s: &Shared, account: &Account, id: String) -> Result<Authorization, Problem> {
    let z = db(s, move |st| st.authz(&id)).await?.ok_or_else(|| Problem::not_found("no such authorization"))?;
    if z.account_id != account.id {
        return Err(Problem::unauthorized("the request's account does not own this authorization"));
    }
    Ok(z)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthzUpdate {
    status: String,
}

pub async fn authz(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let mut z = load_authz(&s, &a, id).await?;
    if !v.jws.payload.is_empty() {
        let u: AuthzUpdate = v.payload()?;
        if u.status != "deactivated" {
            return Err(Problem::malformed("only {\"status\": \"deactivated\"} may be requested"));
        }
        if !matches!(z.effective_status(now()), AuthzStatus::Pending | AuthzStatus::Valid) {
            return Err(Problem::malformed("only a pending or valid authorization can be deactivated"));
        }
        z.status = AuthzStatus::Deactivated;
        let u = z.clone();
        match db_raw(&s, move |st| st.update_authz(&u)).await? {
            Ok(()) => z.version += 1,
            Err(StoreError::Stale) => return Err(Problem::malformed("the authorization changed concurrently; retry")),
            Err(e) => return Err(Problem::internal("deactivate authz", &e)),
        }
    }
    let busy = z.challenges.iter().any(|c| c.status == ChallengeStatus::Processing);
    Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[], &authz_json(&s, &z))))
}

pub async fn challenge(
    State(s): State<Shared>,
    Path((authz_id, chall_id)): Path<(String, String)>,
    req: Request,
) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    let a = v.account()?.clone();
    let up = format!("<{}>;rel=\"up\"", s.url(&format!("/acme/authz/{authz_id}")));
    let mut z = load_authz(&s, &a, authz_id).await?;
    let idx =
        z.challenges.iter().position(|c| c.id == chall_id).ok_or_else(|| Problem::not_found("no such challenge"))?;
    let busy = z.challenges[idx].status == ChallengeStatus::Processing;
    if v.jws.payload.is_empty() {
        let body = challenge_json(&s, &z.id, &z.challenges[idx]);
        return Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[up], &body)));
    }
    let _: Value = v.payload()?;
    let status = z.challenges[idx].status;
    if status != ChallengeStatus::Pending {
        // Answering again is harmless: report where it stands.
        let body = challenge_json(&s, &z.id, &z.challenges[idx]);
        return Ok(retry_after_if(busy, json_response(StatusCode::OK, None, &[up], &body)));
    }
    if z.effective_status(now()) != AuthzStatus::Pending {
        return Err(Problem::malformed("the authorization is no longer pending"));
    }
    if z.challenges.iter().any(|c| c.status == ChallengeStatus::Processing) {
        return Err(Problem::malformed("another challenge of this authorization is being validated"));
    }
    z.challenges[idx].status = ChallengeStatus::Processing;
    let claim = z.clone();
    match db_raw(&s, move |st| st.update_authz(&claim)).await? {
        Ok(()) => z.version += 1,
        Err(StoreError::Stale) => {
            return Err(Problem::malformed("another challenge of this authorization is being validated"))
        }
        Err(e) => return Err(Problem::internal("claim challenge", &e)),
    }
    let body = challenge_json(&s, &z.id, &z.challenges[idx]);
    let key_authorization = format!("{}.{}", z.challenges[idx].token, a.thumbprint);
    tokio::spawn(run_validation(s.clone(), z.id.clone(), chall_id, key_authorization));
    Ok(retry_after_if(true, json_response(StatusCode::OK, None, &[up], &body)))
}

async fn run_validation(s: Shared, authz_id: String, chall_id: String, key_authorization: String) {
    let Ok(Ok(Some(z))) = db_raw(&s, {
        let id = authz_id.clone();
        move |st| st.authz(&id)
    })
    .await
    else {
        tracing::error!(authz = %authz_id, "authorization vanished before validation");
        return;
    };
    let Some(c) = z.challenges.iter().find(|c| c.id == chall_id).cloned() else { return };
    let mut result = s.validator.validate(c.kind, &z.identifier, &c.token, &key_authorization).await;
    if result.is_ok() {
        let account_uri = s.url(&format!("/acme/acct/{}", z.account_id));
        result = s.validator.check_caa(&z.identifier, z.wildcard, &account_uri, c.kind).await;
    }
    for _ in 0..10 {
        let id = authz_id.clone();
        let Ok(Ok(Some(mut z))) = db_raw(&s, move |st| st.authz(&id)).await else { return };
        let Some(c) = z.challenges.iter_mut().find(|c| c.id == chall_id) else { return };
        match &result {
            Ok(()) => {
                c.status = ChallengeStatus::Valid;
                c.validated = Some(now());
                z.status = AuthzStatus::Valid;
                z.expires = now() + s.authz_valid_lifetime.whole_seconds();
            }
            Err(p) => {
                c.status = ChallengeStatus::Invalid;
                c.error = Some(p.document());
                z.status = AuthzStatus::Invalid;
            }
        }
        let u = z.clone();
        match db_raw(&s, move |st| st.update_authz(&u)).await {
            Ok(Ok(())) => {
                tracing::info!(authz = %authz_id, valid = result.is_ok(), "validation finished");
                return;
            }
            Ok(Err(StoreError::Stale)) => continue,
            _ => {
                tracing::error!(authz = %authz_id, "could not record the validation result");
                return;
            }
        }
    }
}

// ---------------------------------------------------------------- certificates

pub async fn certificate(State(s): State<Shared>, Path(id): Path<String>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Kid).await?;
    v.post_as_get()?;
    let a = v.account()?.clone();
    let cert = db(&s, move |st| st.certificate(&id)).await?.ok_or_else(|| Problem::not_found("no such certificate"))?;
    if cert.account_id != a.id {
        return Err(Problem::unauthorized("the request's account does not own this certificate"));
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/pem-certificate-chain")], cert.chain_pem).into_response())
}

#[derive(Deserialize)]
struct RevokePayload {
    certificate: String,
    reason: Option<u8>,
}

/// RFC 8555 §7.6: by the issuing account, by an account authorized for
/// every name, or by the certificate's own key.
pub async fn revoke_cert(State(s): State<Shared>, req: Request) -> Result<Response, Problem> {
    let v = verify(&s, req, KeyMode::Either).await?;
    let p: RevokePayload = v.payload()?;
    let reason = p.reason.unwrap_or(0);
    // RFC 5280 §5.3.1 codes a subscriber may give; not caCompromise (2),
    // not the unused 7, not removeFromCRL (8), not aACompromise (10).
    if ![0u8, 1, 3, 4, 5, 9].contains(&reason) {
        return Err(Problem::new(
            ProblemType::BadRevocationReason,
            StatusCode::BAD_REQUEST,
            "revocation reason not allowed",
        ));
    }
    let der = b64_decode("certificate", &p.certificate).map_err(jws_problem)?;
    let summary =
        crate::profile::certificate_summary(&der).map_err(|_| Problem::malformed("certificate does not parse"))?;
    let serial = summary.serial_hex.clone();
    let cert = db(&s, move |st| st.certificate_by_serial(&serial))
        .await?
        .filter(|c| c.der == der)
        .ok_or_else(|| Problem::not_found("this server did not issue that certificate"))?;
    let authorized = match &v.account {
        None => v.key.thumbprint() == cert.key_thumbprint,
        Some(a) if a.id == cert.account_id => true,
        Some(a) => {
            let aid = a.id.clone();
            let valid = db(&s, move |st| st.valid_authzs_of(&aid, now())).await?;
            cert.identifiers.iter().all(|id| {
                let base = id.value.trim_start_matches("*.");
                valid.iter().any(|z| z.identifier.kind == id.kind && z.identifier.value == base)
            })
        }
    };
    if !authorized {
        return Err(Problem::unauthorized("not authorized to revoke this certificate"));
    }
    let id = cert.id.clone();
    let done = db(&s, move |st| st.revoke_certificate(&id, reason, now())).await?;
    if !done {
        return Err(Problem::new(
            ProblemType::AlreadyRevoked,
            StatusCode::BAD_REQUEST,
            "the certificate is already revoked",
        ));
    }
    tracing::info!(serial = %cert.serial_hex, reason, "certificate revoked");
    // The answer waits for the new CRL, so a client that revokes and then
    // fetches the CRL finds the certificate on it. The revocation itself is
    // committed either way; a failed CRL is retried on the next check.
    if let Some(crl) = &s.crl {
        if let Err(e) = crl.regenerate(&s.store, &s.signer).await {
            tracing::error!(error = %e, "leaf CRL not regenerated after a revocation; retrying on schedule");
        }
    }
    Ok(StatusCode::OK.into_response())
}

// ---------------------------------------------------------------- renewal information

/// RFC 9773 §4: an unauthenticated GET; the window is computed on each
/// request (see [`super::ari`] for the spread).
pub async fn renewal_info(State(s): State<Shared>, Path(cert_id): Path<String>) -> Result<Response, Problem> {
    let id = CertId::parse(&cert_id).map_err(|e| Problem::malformed(e.to_string()))?;
    let cert = cert_by_id(&s, &id).await?.ok_or_else(|| Problem::not_found("no certificate with this certID"))?;
    let w = suggested_window(&s, &cert, &id)?;
    let body = json!({ "suggestedWindow": { "start": rfc3339(w.start), "end": rfc3339(w.end) } });
    let mut resp = json_response(StatusCode::OK, None, &[], &body);
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(ari::RETRY_AFTER_SECS));
    Ok(resp)
}
