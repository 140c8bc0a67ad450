//! Managed External Account Binding (RFC 8555 §7.3.4): hand-made EAB JWS
//! against a real server, each refusal with its exact problem type, and the
//! key's policy applied to the bound account's orders.

mod acme_support;

use acme_support::*;
use aws_lc_rs::hmac;
use keyrite::acme::eab::{self, EabPolicy};
use keyrite::acme::store::{create_eab_key, sqlite::SqliteStore, Store};
use keyrite::secret::Secret;
use serde_json::{json, Value};

async fn eab_harness() -> Harness {
    start_harness(|c| {
        c.issuance.require_eab = true;
        c.issuance.names.allowed_dns_suffixes.push("corp.example".into());
    })
    .await
}

fn store(h: &Harness) -> SqliteStore {
    SqliteStore::open(&h.dir.path().join("acme.sqlite")).expect("store")
}

fn mint(h: &Harness, policy: EabPolicy, multi_use: bool, expires_at: Option<i64>) -> (String, Secret) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (k, s) = create_eab_key(&store(h), policy, expires_at, multi_use, "test".into(), now).expect("mint");
    (k.kid, s)
}

/// An EAB JWS with an explicit header and payload.
fn binding_with(alg: hmac::Algorithm, header: &Value, payload: &[u8], mac_key: &[u8]) -> Value {
    let protected = b64(&serde_json::to_vec(header).expect("header"));
    let payload = b64(payload);
    let tag = hmac::sign(&hmac::Key::new(alg, mac_key), format!("{protected}.{payload}").as_bytes());
    let _ = alg;
    json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())})
}

fn binding(h: &Harness, key: &Key, kid: &str, mac: &Secret) -> Value {
    let header = json!({"alg": "HS256", "kid": kid, "url": h.client.url("/acme/new-account")});
    binding_with(hmac::HMAC_SHA256, &header, key.jwk().to_string().as_bytes(), mac.expose())
}

async fn new_account_with(h: &Harness, key: &Key, eab: Option<Value>) -> Response {
    let c = &h.client;
    let mut payload = json!({"termsOfServiceAgreed": true});
    if let Some(b) = eab {
        payload["externalAccountBinding"] = b;
    }
    let body = jws(key, None, &c.nonce().await, &c.url("/acme/new-account"), payload.to_string().as_bytes());
    c.post("/acme/new-account", &body).await
}

async fn bound_account(h: &Harness, kid: &str, mac: &Secret) -> Account {
    let key = Key::es256();
    let r = new_account_with(h, &key, Some(binding(h, &key, kid, mac))).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    Account { kid: r.header("location").expect("location"), key }
}

async fn order(h: &Harness, a: &Account, names: &[&str]) -> Response {
    let ids: Vec<Value> = names.iter().map(|n| json!({"type": "dns", "value": n})).collect();
    h.post_as(a, "/acme/new-order", json!({"identifiers": ids}).to_string().as_bytes()).await
}

#[tokio::test]
async fn eab_required_and_verified() {
    let h = eab_harness().await;
    let d = h.client.request("GET", "/acme/directory", &[], vec![]).await.json();
    assert_eq!(d["meta"]["externalAccountRequired"], json!(true), "{d}");

    // No binding.
    new_account_with(&h, &Key::es256(), None).await.assert_problem("externalAccountRequired", 403);

    let (kid, mac) = mint(&h, EabPolicy::default(), false, None);
    let url = h.client.url("/acme/new-account");
    let key = Key::es256();
    let jwk = key.jwk().to_string();

    // Wrong MAC, unknown kid.
    let wrong = Secret::new(vec![7u8; 32]);
    new_account_with(&h, &key, Some(binding(&h, &key, &kid, &wrong))).await.assert_problem("unauthorized", 403);
    new_account_with(&h, &key, Some(binding(&h, &key, "kr-nope", &mac))).await.assert_problem("unauthorized", 403);
    // Inner url differs, nonce present, not a MAC alg, no kid.
    let bad_headers = [
        json!({"alg": "HS256", "kid": kid, "url": h.client.url("/acme/new-order")}),
        json!({"alg": "HS256", "kid": kid, "url": url, "nonce": "abc"}),
        json!({"alg": "ES256", "kid": kid, "url": url}),
        json!({"alg": "none", "kid": kid, "url": url}),
        json!({"alg": "HS256", "url": url}),
    ];
    for header in &bad_headers {
        let b = binding_with(hmac::HMAC_SHA256, header, jwk.as_bytes(), mac.expose());
        new_account_with(&h, &key, Some(b)).await.assert_problem("malformed", 400);
    }
    // Payload is another key than the outer JWS's.
    let other = Key::es256();
    let header = json!({"alg": "HS256", "kid": kid, "url": url});
    let b = binding_with(hmac::HMAC_SHA256, &header, other.jwk().to_string().as_bytes(), mac.expose());
    new_account_with(&h, &key, Some(b)).await.assert_problem("malformed", 400);
    // Not a JWS at all.
    new_account_with(&h, &key, Some(json!("x"))).await.assert_problem("malformed", 400);

    // None of that bound the key: the right binding works, with HS512 too.
    let header = json!({"alg": "HS512", "kid": kid, "url": url});
    let b = binding_with(hmac::HMAC_SHA512, &header, jwk.as_bytes(), mac.expose());
    let r = new_account_with(&h, &key, Some(b)).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // The same account key again: the existing account, no second binding.
    let again = new_account_with(&h, &key, None).await;
    assert_eq!(again.status, 200);
    // A single-use key binds one account only.
    let second = Key::es256();
    let r = new_account_with(&h, &second, Some(binding(&h, &second, &kid, &mac))).await;
    r.assert_problem("unauthorized", 403);
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("already bound")), "{}", r.json());
    // Nothing secret in a problem.
    let hmac_text = b64(mac.expose());
    assert!(!String::from_utf8_lossy(&r.body).contains(&hmac_text));

    // A multi-use key binds several.
    let (multi, multi_mac) = mint(&h, EabPolicy::default(), true, None);
    bound_account(&h, &multi, &multi_mac).await;
    bound_account(&h, &multi, &multi_mac).await;
    let keys = store(&h).eab_keys().expect("keys");
    assert_eq!(keys.iter().find(|k| k.kid == multi).map(|k| k.bound_accounts), Some(2));
    h.shutdown().await;
}

#[tokio::test]
async fn revoked_or_expired_key_creates_no_account() {
    let h = eab_harness().await;
    let (kid, mac) = mint(&h, EabPolicy::default(), true, None);
    let early = bound_account(&h, &kid, &mac).await;
    assert!(store(&h).revoke_eab_key(&kid, 1).expect("revoke"));
    assert!(!store(&h).revoke_eab_key(&kid, 2).expect("second revoke is a no-op"));
    let key = Key::es256();
    new_account_with(&h, &key, Some(binding(&h, &key, &kid, &mac))).await.assert_problem("unauthorized", 403);
    // The account bound before the revocation gets no more certificates.
    order(&h, &early, &["a.acme.test"]).await.assert_problem("unauthorized", 403);

    let past = time::OffsetDateTime::now_utc().unix_timestamp() - 10;
    let (old, old_mac) = mint(&h, EabPolicy::default(), false, Some(past));
    let key = Key::es256();
    let r = new_account_with(&h, &key, Some(binding(&h, &key, &old, &old_mac))).await;
    r.assert_problem("unauthorized", 403);
    assert!(r.json()["detail"].as_str().is_some_and(|d| d.contains("expired")));
    h.shutdown().await;
}

#[tokio::test]
async fn bound_account_inherits_the_key_policy() {
    let h = eab_harness().await;
    let policy = EabPolicy {
        dns_suffixes: vec![eab::normalize_suffix("*.team-a.corp.example")],
        wildcards: false,
        max_lifetime_secs: Some(3600),
        ..EabPolicy::default()
    };
    let (kid, mac) = mint(&h, policy, false, None);
    let a = bound_account(&h, &kid, &mac).await;

    let r = order(&h, &a, &["www.team-a.corp.example"]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let r = order(&h, &a, &["www.team-b.corp.example"]).await;
    r.assert_problem("rejectedIdentifier", 400);
    let subs = r.json()["subproblems"].as_array().cloned().unwrap_or_default();
    assert_eq!(subs.len(), 1, "{}", r.json());
    assert_eq!(subs[0]["identifier"]["value"], "www.team-b.corp.example");
    assert_eq!(subs[0]["type"], "urn:ietf:params:acme:error:rejectedIdentifier");

    // Two refusals, one per identifier; the allowed name is not among them.
    let r = order(&h, &a, &["ok.team-a.corp.example", "*.team-a.corp.example", "team-a.corp.example"]).await;
    r.assert_problem("rejectedIdentifier", 400);
    let subs = r.json()["subproblems"].as_array().cloned().unwrap_or_default();
    let refused: Vec<&str> = subs.iter().filter_map(|s| s["identifier"]["value"].as_str()).collect();
    assert_eq!(refused, vec!["*.team-a.corp.example", "team-a.corp.example"]);

    // Lifetime beyond the key's ceiling is refused, not trimmed.
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).expect("fmt");
    let payload = json!({
        "identifiers": [{"type": "dns", "value": "x.team-a.corp.example"}],
        "notAfter": fmt(now + time::Duration::hours(2)),
    });
    h.post_as(&a, "/acme/new-order", payload.to_string().as_bytes()).await.assert_problem("malformed", 400);

    // An account without a key policy (EAB optional here) is unaffected.
    let free = start_harness(|c| c.issuance.names.allowed_dns_suffixes.push("corp.example".into())).await;
    let acct = free.new_account(Key::es256()).await;
    assert_eq!(order(&free, &acct, &["www.team-b.corp.example"]).await.status, 201);
    free.shutdown().await;
    h.shutdown().await;
}

#[tokio::test]
async fn default_lifetime_is_capped_by_the_key() {
    let (port, tokens, responder_task) = responder().await;
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let server =
        start_configured(&mut pki, dir.path(), port, 1, |c| c.issuance.require_eab = true).await.expect("start");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    let h = Harness { pki, server, dir, client };
    let (kid, mac) = mint(&h, EabPolicy { max_lifetime_secs: Some(2 * 3600), ..EabPolicy::default() }, false, None);
    let a = bound_account(&h, &kid, &mac).await;
    let (order_url, order) = h.ready_order(&a, &tokens, &["a.acme.test"]).await;
    let (key, pem) = p256_with_pem();
    drop(key);
    let csr =
        openssl_csr(h.dir.path(), &pem, &["-subj", "/CN=a.acme.test", "-addext", "subjectAltName=DNS:a.acme.test"]);
    let fin = h.path_of(order["finalize"].as_str().expect("finalize"));
    let r = h.post_as(&a, &fin, json!({"csr": b64(&csr)}).to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let o = h.post_as(&a, &h.path_of(&order_url), b"").await.json();
    let cert_path = h.path_of(o["certificate"].as_str().expect("certificate"));
    let chain = h.post_as(&a, &cert_path, b"").await.body;
    let der = pem_rfc7468::decode_vec(
        String::from_utf8_lossy(&chain).split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf").as_bytes(),
    )
    .expect("pem")
    .1;
    let s = keyrite::profile::certificate_summary(&der).expect("summary");
    let life = s.not_after.unix_timestamp() - s.not_before.unix_timestamp();
    assert!(life < 2 * 3600, "lifetime {life}s exceeds the key's 2 h");
    responder_task.abort();
    h.shutdown().await;
}
