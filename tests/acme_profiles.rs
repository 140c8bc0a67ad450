//! ACME profiles (draft-aaron-acme-profiles): advertised in `meta.profiles`,
//! chosen per order, unknown names refused with `invalidProfile`, and an
//! order's validity applied within the profile's bounds or refused.

mod acme_support;

use acme_support::*;
use serde_json::{json, Value};

async fn profile_harness(http01: u16) -> Harness {
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(&mut pki, dir.path(), http01, 1, |c| {
        c.issuance.profiles = vec![
            ("short".into(), template("leaf-short.toml")),
            ("mtls".into(), template("leaf-mtls.toml")),
            ("ip".into(), template("leaf-ip.toml")),
        ];
        c.issuance.default_profile = Some("short".into());
    })
    .await
    .expect("server starts");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    Harness { pki, server, dir, client }
}

fn fmt(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).expect("fmt")
}

async fn order_with(h: &Harness, a: &Account, extra: Value) -> Response {
    let mut payload = json!({"identifiers": [{"type": "dns", "value": "a.acme.test"}]});
    for (k, v) in extra.as_object().expect("object") {
        payload[k] = v.clone();
    }
    h.post_as(a, "/acme/new-order", payload.to_string().as_bytes()).await
}

#[tokio::test]
async fn profiles_advertised_chosen_and_bounded() {
    let h = profile_harness(1).await;
    let d = h.client.request("GET", "/acme/directory", &[], vec![]).await.json();
    let profiles = d["meta"]["profiles"].as_object().expect("meta.profiles");
    let mut names: Vec<&String> = profiles.keys().collect();
    names.sort();
    assert_eq!(names, ["ip", "mtls", "short"]);
    assert!(profiles["mtls"].as_str().is_some_and(|s| s.contains("client-auth")), "{d}");

    let a = h.new_account(Key::es256()).await;
    order_with(&h, &a, json!({"profile": "nope"})).await.assert_problem("invalidProfile", 400);

    let r = order_with(&h, &a, json!({"profile": "mtls"})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["profile"], "mtls");
    // No profile named: the default, shown as such.
    assert_eq!(order_with(&h, &a, json!({})).await.json()["profile"], "short");

    // short allows at most 24 h: 20 h is applied, 30 h refused.
    let now = time::OffsetDateTime::now_utc();
    let r = order_with(&h, &a, json!({"notAfter": fmt(now + time::Duration::hours(20))})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["notAfter"].is_string());
    order_with(&h, &a, json!({"notAfter": fmt(now + time::Duration::hours(30))}))
        .await
        .assert_problem("malformed", 400);
    // mtls allows 7 days.
    let r = order_with(&h, &a, json!({"profile": "mtls", "notAfter": fmt(now + time::Duration::hours(30))})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    h.shutdown().await;

    // A server without profiles refuses an order that names one.
    let plain = start(1, 1).await;
    let a = plain.new_account(Key::es256()).await;
    order_with(&plain, &a, json!({"profile": "short"})).await.assert_problem("invalidProfile", 400);
    plain.shutdown().await;
}

#[tokio::test]
async fn mtls_profile_certificate_has_server_and_client_auth() {
    let (port, tokens, responder_task) = responder().await;
    let h = profile_harness(port).await;
    let a = h.new_account(Key::es256()).await;
    let ids = json!({"identifiers": [{"type": "dns", "value": "a.acme.test"}], "profile": "mtls"});
    let r = h.post_as(&a, "/acme/new-order", ids.to_string().as_bytes()).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let order_url = r.header("location").expect("location");
    let order = r.json();
    for authz_url in order["authorizations"].as_array().expect("authzs") {
        let authz = h.post_as(&a, &h.path_of(authz_url.as_str().expect("url")), b"").await.json();
        let ch = authz["challenges"].as_array().expect("challenges").iter().find(|c| c["type"] == "http-01").cloned();
        let ch = ch.expect("http-01");
        let token = ch["token"].as_str().expect("token").to_string();
        tokens.lock().expect("lock").insert(token.clone(), format!("{token}.{}", a.key.thumbprint()));
        h.post_as(&a, &h.path_of(ch["url"].as_str().expect("url")), b"{}").await;
    }
    let path = h.path_of(&order_url);
    let mut ready = false;
    for _ in 0..100 {
        if h.post_as(&a, &path, b"").await.json()["status"] == "ready" {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "order never became ready");
    let (_, pem) = p256_with_pem();
    let csr = openssl_csr(h.dir.path(), &pem, &["-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test"]);
    let fin = h.path_of(order["finalize"].as_str().expect("finalize"));
    let r = h.post_as(&a, &fin, json!({"csr": b64(&csr)}).to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cert_url = h.post_as(&a, &path, b"").await.json()["certificate"].as_str().expect("certificate").to_string();
    let chain = h.post_as(&a, &h.path_of(&cert_url), b"").await.body;
    let leaf_file = h.dir.path().join("mtls.pem");
    let text = String::from_utf8_lossy(&chain).to_string();
    let end = "-----END CERTIFICATE-----";
    std::fs::write(&leaf_file, format!("{}\n", &text[..text.find(end).expect("leaf") + end.len()])).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["x509", "-in", leaf_file.to_str().expect("utf-8"), "-noout", "-text"])
        .output()
        .expect("openssl");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "EKUs of the mtls leaf:\n{shown}"
    );
    // The profile's default validity (72 h), not the server's 24 h.
    let der = pem_rfc7468::decode_vec(format!("{}\n", &text[..text.find(end).expect("leaf") + end.len()]).as_bytes())
        .expect("pem")
        .1;
    let s = keyrite::profile::certificate_summary(&der).expect("summary");
    let hours = (s.not_after - s.not_before).whole_hours();
    assert!((71..=72).contains(&hours), "validity {hours} h");
    responder_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn eab_key_limits_the_profiles() {
    let h = profile_harness(1).await;
    let st = keyrite::acme::store::sqlite::SqliteStore::open(&h.dir.path().join("acme.sqlite")).expect("store");
    let policy = keyrite::acme::eab::EabPolicy { profiles: vec!["mtls".into()], ..Default::default() };
    let (k, mac) = keyrite::acme::store::create_eab_key(&st, policy, None, false, String::new(), 0).expect("mint");
    let key = Key::es256();
    let url = h.client.url("/acme/new-account");
    let protected = b64(json!({"alg": "HS256", "kid": k.kid, "url": url}).to_string().as_bytes());
    let payload = b64(key.jwk().to_string().as_bytes());
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, mac.expose()),
        format!("{protected}.{payload}").as_bytes(),
    );
    let eab = json!({"protected": protected, "payload": payload, "signature": b64(tag.as_ref())});
    let body = json!({"termsOfServiceAgreed": true, "externalAccountBinding": eab});
    let r = h
        .client
        .post("/acme/new-account", &jws(&key, None, &h.client.nonce().await, &url, body.to_string().as_bytes()))
        .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let a = Account { kid: r.header("location").expect("location"), key };
    // The default profile (short) is not among the key's.
    order_with(&h, &a, json!({})).await.assert_problem("invalidProfile", 400);
    order_with(&h, &a, json!({"profile": "ip"})).await.assert_problem("invalidProfile", 400);
    assert_eq!(order_with(&h, &a, json!({"profile": "mtls"})).await.status, 201);
    h.shutdown().await;
}
