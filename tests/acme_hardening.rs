//! One test per line of the protocol-hardening checklist
//! (`shared/research/acme-anchors.md` §b): hand-made JWS requests against a
//! real server on loopback, each asserting the exact problem type, HTTP
//! status and a fresh `Replay-Nonce`.

mod acme_support;

use acme_support::*;
use serde_json::{json, Value};

async fn harness() -> Harness {
    start(1, 1).await
}

#[tokio::test]
async fn new_nonce_head_200_get_204_no_store() {
    let h = harness().await;
    for (method, status) in [("HEAD", 200), ("GET", 204)] {
        let r = h.client.request(method, "/acme/new-nonce", &[], vec![]).await;
        assert_eq!(r.status, status);
        assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(r.header("replay-nonce").map(|n| n.len()), Some(48));
        assert!(r.header("link").is_some_and(|l| l.contains("rel=\"index\"")));
    }
    let a = h.client.nonce().await;
    let b = h.client.nonce().await;
    assert_ne!(a, b);
    let d = h.client.request("GET", "/acme/directory", &[], vec![]).await.json();
    assert!(d["meta"].is_object() && d["newAccount"].is_string() && d["keyChange"].is_string(), "{d}");
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_method_is_405_problem_and_unknown_path_404() {
    let h = harness().await;
    h.client.request("GET", "/acme/new-account", &[], vec![]).await.assert_problem("malformed", 405);
    h.client.request("GET", "/nope", &[], vec![]).await.assert_problem("malformed", 404);
    h.shutdown().await;
}

#[tokio::test]
async fn content_type_must_be_jose_json() {
    let h = harness().await;
    let key = Key::es256();
    let body = jws(&key, None, &h.client.nonce().await, &h.client.url("/acme/new-account"), b"{}");
    let r = h
        .client
        .request("POST", "/acme/new-account", &[("content-type", "application/json")], body.to_string().into_bytes())
        .await;
    r.assert_problem("malformed", 415);
    h.shutdown().await;
}

#[tokio::test]
async fn replay_nonce_request_header_is_refused() {
    let h = harness().await;
    let key = Key::es256();
    let n = h.client.nonce().await;
    let body = jws(&key, None, &n, &h.client.url("/acme/new-account"), b"{}");
    let r = h
        .client
        .request(
            "POST",
            "/acme/new-account",
            &[("content-type", "application/jose+json"), ("replay-nonce", &n)],
            body.to_string().into_bytes(),
        )
        .await;
    r.assert_problem("malformed", 400);
    h.shutdown().await;
}

#[tokio::test]
async fn body_over_50000_bytes_is_refused() {
    let h = harness().await;
    let key = Key::es256();
    let big = vec![b' '; 50_001];
    let payload = format!("{{\"x\":\"{}\"}}", String::from_utf8_lossy(&big));
    let body = jws(&key, None, &h.client.nonce().await, &h.client.url("/acme/new-account"), payload.as_bytes());
    h.client.post("/acme/new-account", &body).await.assert_problem("malformed", 413);
    h.shutdown().await;
}

#[tokio::test]
async fn only_flattened_jws() {
    let h = harness().await;
    let key = Key::es256();
    let good = jws(&key, None, &h.client.nonce().await, &h.client.url("/acme/new-account"), b"{}");
    let general = json!({"payload": good["payload"], "signatures": [{"protected": good["protected"], "signature": good["signature"]}]});
    h.client.post("/acme/new-account", &general).await.assert_problem("malformed", 400);
    let mut with_header = good.clone();
    with_header["header"] = json!({"kid": "x"});
    h.client.post("/acme/new-account", &with_header).await.assert_problem("malformed", 400);
    let mut empty_sig = good.clone();
    empty_sig["signature"] = json!("");
    h.client.post("/acme/new-account", &empty_sig).await.assert_problem("malformed", 400);
    h.shutdown().await;
}

#[tokio::test]
async fn alg_allow_list_none_and_hs256_refused() {
    let h = harness().await;
    let key = Key::es256();
    for alg in ["none", "HS256", "RS512", "PS256"] {
        let header = json!({"alg": alg, "nonce": h.client.nonce().await, "url": h.client.url("/acme/new-account"), "jwk": key.jwk()});
        let r = h.client.post("/acme/new-account", &jws_with_header(&key, &header, b"{}")).await;
        r.assert_problem("badSignatureAlgorithm", 400);
        assert!(r.json()["algorithms"].as_array().is_some_and(|a| a.contains(&json!("ES256"))));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn alg_must_match_key() {
    let h = harness().await;
    let key = Key::es256();
    let header = json!({"alg": "ES384", "nonce": h.client.nonce().await, "url": h.client.url("/acme/new-account"), "jwk": key.jwk()});
    h.client
        .post("/acme/new-account", &jws_with_header(&key, &header, b"{}"))
        .await
        .assert_problem("badSignatureAlgorithm", 400);
    let mut jwk = key.jwk();
    jwk["alg"] = json!("RS256");
    let header =
        json!({"alg": "ES256", "nonce": h.client.nonce().await, "url": h.client.url("/acme/new-account"), "jwk": jwk});
    h.client
        .post("/acme/new-account", &jws_with_header(&key, &header, b"{}"))
        .await
        .assert_problem("badSignatureAlgorithm", 400);
    h.shutdown().await;
}

#[tokio::test]
async fn jwk_xor_kid_and_jwk_only_where_allowed() {
    let h = harness().await;
    let acct = h.new_account(Key::es256()).await;
    let c = &h.client;
    let both = json!({"alg": "ES256", "nonce": c.nonce().await, "url": c.url("/acme/new-order"), "jwk": acct.key.jwk(), "kid": acct.kid});
    c.post("/acme/new-order", &jws_with_header(&acct.key, &both, b"{}")).await.assert_problem("malformed", 400);
    let neither = json!({"alg": "ES256", "nonce": c.nonce().await, "url": c.url("/acme/new-order")});
    c.post("/acme/new-order", &jws_with_header(&acct.key, &neither, b"{}")).await.assert_problem("malformed", 400);
    let jwk_on_order = jws(&acct.key, None, &c.nonce().await, &c.url("/acme/new-order"), b"{}");
    c.post("/acme/new-order", &jwk_on_order).await.assert_problem("malformed", 400);
    let kid_on_new_account = jws(&acct.key, Some(&acct.kid), &c.nonce().await, &c.url("/acme/new-account"), b"{}");
    c.post("/acme/new-account", &kid_on_new_account).await.assert_problem("malformed", 400);
    h.shutdown().await;
}

#[tokio::test]
async fn kid_must_be_a_stored_account_url_and_active() {
    let h = harness().await;
    let acct = h.new_account(Key::es256()).await;
    let c = &h.client;
    for kid in [format!("{}x", acct.kid), acct.kid.replace("https://", "http://"), c.url("/acme/acct/nope")] {
        let body = jws(&acct.key, Some(&kid), &c.nonce().await, &c.url("/acme/new-order"), b"{}");
        c.post("/acme/new-order", &body).await.assert_problem("accountDoesNotExist", 400);
    }
    let path = h.path_of(&acct.kid);
    let r = h.post_as(&acct, &path, br#"{"status":"deactivated"}"#).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "deactivated");
    h.post_as(&acct, "/acme/new-order", b"{}").await.assert_problem("unauthorized", 403);
    h.shutdown().await;
}

#[tokio::test]
async fn account_key_quality() {
    let h = harness().await;
    let c = &h.client;
    let key = Key::es256();
    let url = c.url("/acme/new-account");
    // RSA 1024 (fake modulus: quality is judged before the signature).
    let mut n = vec![0xc5u8; 128];
    n[127] = 0x01;
    let weak = json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"});
    let e3 = json!({"kty": "RSA", "n": b64(&[0xc5u8; 256]), "e": "Aw"});
    let mut off_curve = key.jwk();
    off_curve["y"] = json!(b64(&[1u8; 32]));
    let small_factor = {
        let mut n = vec![0xffu8; 256];
        // 0xff..ff (2048 bits) is divisible by 3 and 5.
        n[255] = 0xff;
        json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"})
    };
    for (alg, jwk) in [("RS256", weak), ("RS256", e3), ("ES256", off_curve), ("RS256", small_factor)] {
        let header = json!({"alg": alg, "nonce": c.nonce().await, "url": url, "jwk": jwk});
        c.post("/acme/new-account", &jws_with_header(&key, &header, b"{}")).await.assert_problem("badPublicKey", 400);
    }
    // Good keys of every accepted kind work.
    for k in [Key::rs256(aws_lc_rs::rsa::KeySize::Rsa2048), Key::es384(), Key::ed25519()] {
        h.new_account(k).await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn signature_checked_before_nonce_is_spent() {
    let h = harness().await;
    let c = &h.client;
    let key = Key::es256();
    let n = c.nonce().await;
    let url = c.url("/acme/new-account");
    let mut forged = jws(&key, None, &n, &url, b"{}");
    forged["signature"] = json!(b64(&[7u8; 64]));
    c.post("/acme/new-account", &forged).await.assert_problem("malformed", 400);
    // The same nonce still works for the genuine request.
    let r = c.post("/acme/new-account", &jws(&key, None, &n, &url, b"{}")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    h.shutdown().await;
}

#[tokio::test]
async fn nonces_single_use_present_and_authentic() {
    let h = harness().await;
    let c = &h.client;
    let key = Key::es256();
    let url = c.url("/acme/new-account");
    let n = c.nonce().await;
    assert_eq!(c.post("/acme/new-account", &jws(&key, None, &n, &url, b"{}")).await.status, 201);
    c.post("/acme/new-account", &jws(&key, None, &n, &url, b"{}")).await.assert_problem("badNonce", 400);
    let no_nonce = json!({"alg": "ES256", "url": url, "jwk": key.jwk()});
    c.post("/acme/new-account", &jws_with_header(&key, &no_nonce, b"{}")).await.assert_problem("badNonce", 400);
    let forged = format!("{}A", &n[..47]);
    let forged = if forged == n { format!("{}B", &n[..47]) } else { forged };
    c.post("/acme/new-account", &jws(&key, None, &forged, &url, b"{}")).await.assert_problem("badNonce", 400);
    c.post("/acme/new-account", &jws(&key, None, "short", &url, b"{}")).await.assert_problem("badNonce", 400);
    h.shutdown().await;
}

#[tokio::test]
async fn url_header_must_equal_request_url() {
    let h = harness().await;
    let c = &h.client;
    let key = Key::es256();
    let body = jws(&key, None, &c.nonce().await, &c.url("/acme/new-order"), b"{}");
    c.post("/acme/new-account", &body).await.assert_problem("unauthorized", 403);
    let body = jws(&key, None, &c.nonce().await, "https://evil.example/acme/new-account", b"{}");
    c.post("/acme/new-account", &body).await.assert_problem("unauthorized", 403);
    h.shutdown().await;
}

#[tokio::test]
async fn post_as_get_needs_empty_payload_and_payload_is_an_object() {
    let h = harness().await;
    let acct = h.new_account(Key::es256()).await;
    let (order_url, _) = h.new_order(&acct, &["a.acme.test"]).await;
    h.post_as(&acct, &h.path_of(&order_url), b"{}").await.assert_problem("malformed", 400);
    h.post_as(&acct, "/acme/new-order", b"[1]").await.assert_problem("malformed", 400);
    h.post_as(&acct, "/acme/new-order", br#"{"resource":"new-order","identifiers":[]}"#)
        .await
        .assert_problem("malformed", 400);
    let orders = h.post_as(&acct, &format!("{}/orders", h.path_of(&acct.kid)), b"").await;
    assert_eq!(orders.status, 200);
    assert_eq!(orders.json()["orders"], json!([order_url]));
    h.shutdown().await;
}

#[tokio::test]
async fn ownership_checked_on_order_authz_challenge_account() {
    let h = harness().await;
    let alice = h.new_account(Key::es256()).await;
    let mallory = h.new_account(Key::es256()).await;
    let (order_url, order) = h.new_order(&alice, &["a.acme.test"]).await;
    let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
    let authz = h.post_as(&alice, &h.path_of(&authz_url), b"").await.json();
    let chall_url = authz["challenges"][0]["url"].as_str().expect("chall").to_string();
    h.post_as(&mallory, &h.path_of(&order_url), b"").await.assert_problem("unauthorized", 403);
    h.post_as(&mallory, &format!("{}/finalize", h.path_of(&order_url)), br#"{"csr":"AA"}"#)
        .await
        .assert_problem("unauthorized", 403);
    h.post_as(&mallory, &h.path_of(&authz_url), b"").await.assert_problem("unauthorized", 403);
    h.post_as(&mallory, &h.path_of(&chall_url), b"{}").await.assert_problem("unauthorized", 403);
    h.post_as(&mallory, &h.path_of(&alice.kid), b"").await.assert_problem("unauthorized", 403);
    h.post_as(&mallory, &format!("{}/orders", h.path_of(&alice.kid)), b"").await.assert_problem("unauthorized", 403);
    h.shutdown().await;
}

#[tokio::test]
async fn one_challenge_processing_per_authorization() {
    // A listener that never answers keeps the first validation busy.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let h = start(port, port).await;
    let acct = h.new_account(Key::es256()).await;
    let (_, order) = h.new_order(&acct, &["a.acme.test"]).await;
    let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
    let authz = h.post_as(&acct, &h.path_of(&authz_url), b"").await.json();
    let urls: Vec<String> = authz["challenges"]
        .as_array()
        .expect("list")
        .iter()
        .map(|c| c["url"].as_str().expect("url").to_string())
        .collect();
    let types: Vec<&str> =
        authz["challenges"].as_array().expect("list").iter().map(|c| c["type"].as_str().expect("t")).collect();
    assert_eq!(types, ["http-01", "dns-01", "tls-alpn-01"]);
    let r = h.post_as(&acct, &h.path_of(&urls[0]), b"{}").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("processing")));
    h.post_as(&acct, &h.path_of(&urls[1]), b"{}").await.assert_problem("malformed", 400);
    // The failed validation (timeouts, retried) leaves it invalid with a problem.
    let mut last = Value::Null;
    for _ in 0..100 {
        last = h.post_as(&acct, &h.path_of(&authz_url), b"").await.json();
        if last["status"] == "invalid" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "invalid", "{last}");
    assert_eq!(last["challenges"][0]["error"]["type"], "urn:ietf:params:acme:error:connection", "{last}");
    drop(silent);
    h.shutdown().await;
}

#[tokio::test]
async fn identifier_syntax_and_policy() {
    let h = harness().await;
    let acct = h.new_account(Key::es256()).await;
    let order = |ids: Value| {
        let acct = &acct;
        let h = &h;
        async move { h.post_as(acct, "/acme/new-order", json!({"identifiers": ids}).to_string().as_bytes()).await }
    };
    for bad in [
        "a..acme.test",
        "A.acme.test",
        "a_b.acme.test",
        "*.*.acme.test",
        "a.*.acme.test",
        "x.acme.test.",
        "127.0.0.1",
        "xn--zz.acme.test",
        &format!("{}.acme.test", "a".repeat(64)),
    ] {
        let r = order(json!([{"type": "dns", "value": bad}])).await;
        r.assert_problem("rejectedIdentifier", 400);
        assert_eq!(r.json()["subproblems"][0]["identifier"]["value"], bad);
    }
    order(json!([{"type": "dns", "value": "a.example.com"}])).await.assert_problem("rejectedIdentifier", 400);
    order(json!([{"type": "ip", "value": "10.0.0.1"}])).await.assert_problem("rejectedIdentifier", 400);
    order(json!([{"type": "ip", "value": "fe80::1%eth0"}])).await.assert_problem("rejectedIdentifier", 400);
    order(json!([{"type": "email", "value": "a@acme.test"}])).await.assert_problem("unsupportedIdentifier", 400);
    let r = order(json!([{"type": "email", "value": "a@acme.test"}, {"type": "dns", "value": "a.example.com"}])).await;
    r.assert_problem("compound", 400);
    assert_eq!(r.json()["subproblems"].as_array().map(Vec::len), Some(2));
    order(json!([])).await.assert_problem("malformed", 400);
    let six: Vec<Value> = (0..6).map(|i| json!({"type": "dns", "value": format!("h{i}.acme.test")})).collect();
    order(Value::Array(six)).await.assert_problem("rejectedIdentifier", 400);

    // Wildcards get dns-01 only; IPs get http-01 and tls-alpn-01.
    let (_, o) = h.new_order(&acct, &["*.acme.test", "127.0.0.1"]).await;
    let mut seen = Vec::new();
    for z in o["authorizations"].as_array().expect("authzs") {
        let a = h.post_as(&acct, &h.path_of(z.as_str().expect("url")), b"").await.json();
        let types: Vec<String> = a["challenges"]
            .as_array()
            .expect("c")
            .iter()
            .map(|c| c["type"].as_str().unwrap_or("").to_string())
            .collect();
        seen.push((a["identifier"]["value"].as_str().unwrap_or("").to_string(), a["wildcard"].as_bool(), types));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("127.0.0.1".to_string(), None, vec!["http-01".to_string(), "tls-alpn-01".to_string()]),
            ("acme.test".to_string(), Some(true), vec!["dns-01".to_string()]),
        ]
    );
    h.shutdown().await;
}

#[tokio::test]
async fn new_account_contacts_and_only_return_existing() {
    let h = harness().await;
    let c = &h.client;
    let url = c.url("/acme/new-account");
    let key = Key::es256();
    c.post("/acme/new-account", &jws(&key, None, &c.nonce().await, &url, br#"{"onlyReturnExisting":true}"#))
        .await
        .assert_problem("accountDoesNotExist", 400);
    c.post("/acme/new-account", &jws(&key, None, &c.nonce().await, &url, br#"{"contact":["tel:+1555"]}"#))
        .await
        .assert_problem("unsupportedContact", 400);
    c.post("/acme/new-account", &jws(&key, None, &c.nonce().await, &url, br#"{"contact":["mailto:a@b@acme.test"]}"#))
        .await
        .assert_problem("invalidContact", 400);
    c.post(
        "/acme/new-account",
        &jws(&key, None, &c.nonce().await, &url, br#"{"contact":["mailto:a@acme.test?subject=x"]}"#),
    )
    .await
    .assert_problem("invalidContact", 400);
    let acct = h.new_account(key).await;
    let r = c
        .post("/acme/new-account", &jws(&acct.key, None, &c.nonce().await, &url, br#"{"onlyReturnExisting":true}"#))
        .await;
    assert_eq!((r.status, r.header("location")), (200, Some(acct.kid.clone())));
    h.shutdown().await;
}

#[tokio::test]
async fn key_change_rules() {
    let h = harness().await;
    let c = &h.client;
    let mut acct = h.new_account(Key::es256()).await;
    let other = h.new_account(Key::es256()).await;
    let url = c.url("/acme/key-change");
    let inner = |new: &Key, account: &str, old: &Key, url: &str| {
        let header = json!({"alg": new.alg(), "jwk": new.jwk(), "url": url});
        jws_with_header(new, &header, json!({"account": account, "oldKey": old.jwk()}).to_string().as_bytes())
    };
    // The new key belongs to another account: 409.
    let body = inner(&other.key, &acct.kid, &acct.key, &url);
    let r = h.post_as(&acct, "/acme/key-change", body.to_string().as_bytes()).await;
    r.assert_problem("malformed", 409);
    assert_eq!(r.header("location"), Some(other.kid.clone()));
    let new = Key::es256();
    // Inner url differs, account differs, oldKey wrong.
    let cases = [
        inner(&new, &acct.kid, &acct.key, &c.url("/acme/new-order")),
        inner(&new, &other.kid, &acct.key, &url),
        inner(&new, &acct.kid, &other.key, &url),
    ];
    for body in cases {
        h.post_as(&acct, "/acme/key-change", body.to_string().as_bytes()).await.assert_problem("malformed", 400);
    }
    let body = inner(&new, &acct.kid, &acct.key, &url);
    let r = h.post_as(&acct, "/acme/key-change", body.to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // The old key no longer works; the new one does.
    h.post_as(&acct, "/acme/new-order", b"{}").await.assert_problem("malformed", 400);
    acct.key = new;
    let (_, o) = h.new_order(&acct, &["a.acme.test"]).await;
    assert_eq!(o["status"], "pending");
    h.shutdown().await;
}

#[tokio::test]
async fn finalize_csr_checks_and_revocation_authorizations() {
    let (port, tokens, task) = responder().await;
    let h = start(port, 1).await;
    let dir = h.dir.path().to_path_buf();
    let (akey, akey_pem) = p256_with_pem();
    let acct = h.new_account(akey).await;
    let (order_url, order) = h.new_order(&acct, &["a.acme.test"]).await;
    let fin = format!("{}/finalize", h.path_of(&order_url));
    let (_, leaf_key_pem) = p256_with_pem();
    let good = openssl_csr(&dir, &leaf_key_pem, &["-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test"]);
    // Not ready yet.
    let csr_body = |der: &[u8]| json!({"csr": b64(der)}).to_string();
    h.post_as(&acct, &fin, csr_body(&good).as_bytes()).await.assert_problem("orderNotReady", 403);
    let _ = order;
    let (order_url, _) = h.ready_order(&acct, &tokens, &["a.acme.test"]).await;
    let fin = format!("{}/finalize", h.path_of(&order_url));
    let bad_csrs = [
        openssl_csr(&dir, &akey_pem, &["-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test"]),
        openssl_csr(&dir, &leaf_key_pem, &["-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test,DNS:b.acme.test"]),
        openssl_csr(&dir, &leaf_key_pem, &["-subj", "/", "-addext", "subjectAltName=DNS:b.acme.test"]),
        openssl_csr(
            &dir,
            &leaf_key_pem,
            &[
                "-subj",
                "/",
                "-addext",
                "subjectAltName=DNS:a.acme.test",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
            ],
        ),
        openssl_csr(&dir, &leaf_key_pem, &["-sha1", "-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test"]),
        openssl_csr(&dir, &leaf_key_pem, &["-subj", "/CN=c.acme.test", "-addext", "subjectAltName=DNS:a.acme.test"]),
        openssl_csr(
            &dir,
            &leaf_key_pem,
            &["-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test,email:x@acme.test"],
        ),
    ];
    for der in &bad_csrs {
        h.post_as(&acct, &fin, csr_body(der).as_bytes()).await.assert_problem("badCSR", 400);
    }
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    h.post_as(&acct, &fin, csr_body(&tampered).as_bytes()).await.assert_problem("badCSR", 400);
    // The good CSR, with a keyUsage extension the certificate must not copy.
    let with_ext = openssl_csr(
        &dir,
        &leaf_key_pem,
        &[
            "-subj",
            "/",
            "-addext",
            "subjectAltName=DNS:a.acme.test",
            "-addext",
            "keyUsage=critical,keyEncipherment,dataEncipherment",
        ],
    );
    let r = h.post_as(&acct, &fin, csr_body(&with_ext).as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cert_url = r.json()["certificate"].as_str().expect("certificate url").to_string();
    let dl = h.post_as(&acct, &h.path_of(&cert_url), b"").await;
    assert_eq!(dl.header("content-type").as_deref(), Some("application/pem-certificate-chain"));
    let chain = String::from_utf8(dl.body.clone()).expect("pem");
    let leaf_der =
        pem_rfc7468::decode_vec(chain.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf").as_bytes())
            .expect("pem")
            .1;
    let summary = keyrite::profile::certificate_summary(&leaf_der).expect("parses");
    let _ = summary;
    let p = dir.join("leaf.pem");
    std::fs::write(&p, chain.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf")).expect("write");
    let text = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in", p.to_str().expect("p")])
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(!text.contains("Key Encipherment") && !text.contains("Data Encipherment"), "{text}");
    // Finalize twice: the order is no longer ready.
    h.post_as(&acct, &fin, csr_body(&good).as_bytes()).await.assert_problem("orderNotReady", 403);
    // Certificate download by another account.
    let mallory = h.new_account(Key::es256()).await;
    h.post_as(&mallory, &h.path_of(&cert_url), b"").await.assert_problem("unauthorized", 403);

    // Revocation: bad reason; a stranger; by the certificate key; again.
    let revoke = |reason: Option<u8>| match reason {
        Some(r) => json!({"certificate": b64(&leaf_der), "reason": r}).to_string(),
        None => json!({"certificate": b64(&leaf_der)}).to_string(),
    };
    h.post_as(&acct, "/acme/revoke-cert", revoke(Some(2)).as_bytes()).await.assert_problem("badRevocationReason", 400);
    h.post_as(&acct, "/acme/revoke-cert", revoke(Some(7)).as_bytes()).await.assert_problem("badRevocationReason", 400);
    h.post_as(&mallory, "/acme/revoke-cert", revoke(None).as_bytes()).await.assert_problem("unauthorized", 403);
    let c = &h.client;
    let wrong_key = Key::es256();
    let by_wrong = jws(&wrong_key, None, &c.nonce().await, &c.url("/acme/revoke-cert"), revoke(None).as_bytes());
    c.post("/acme/revoke-cert", &by_wrong).await.assert_problem("unauthorized", 403);
    // Mallory validates a.acme.test herself: now authorized for every name.
    h.ready_order(&mallory, &tokens, &["a.acme.test"]).await;
    let r = h.post_as(&mallory, "/acme/revoke-cert", revoke(Some(4)).as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    h.post_as(&acct, "/acme/revoke-cert", revoke(None).as_bytes()).await.assert_problem("alreadyRevoked", 400);
    h.shutdown().await;
    task.abort();
}

#[tokio::test]
async fn revoke_by_certificate_key() {
    let (port, tokens, task) = responder().await;
    let h = start(port, 1).await;
    let dir = h.dir.path().to_path_buf();
    let acct = h.new_account(Key::es256()).await;
    let (order_url, _) = h.ready_order(&acct, &tokens, &["b.acme.test", "127.0.0.1"]).await;
    let (leaf_key, leaf_key_pem) = p256_with_pem();
    let csr =
        openssl_csr(&dir, &leaf_key_pem, &["-subj", "/", "-addext", "subjectAltName=DNS:b.acme.test,IP:127.0.0.1"]);
    let r = h
        .post_as(
            &acct,
            &format!("{}/finalize", h.path_of(&order_url)),
            json!({"csr": b64(&csr)}).to_string().as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cert_url = r.json()["certificate"].as_str().expect("url").to_string();
    let chain = String::from_utf8(h.post_as(&acct, &h.path_of(&cert_url), b"").await.body).expect("pem");
    let leaf_der =
        pem_rfc7468::decode_vec(chain.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf").as_bytes())
            .expect("pem")
            .1;
    let c = &h.client;
    let body = jws(
        &leaf_key,
        None,
        &c.nonce().await,
        &c.url("/acme/revoke-cert"),
        json!({"certificate": b64(&leaf_der), "reason": 1}).to_string().as_bytes(),
    );
    let r = c.post("/acme/revoke-cert", &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.header("replay-nonce").is_some());
    h.shutdown().await;
    task.abort();
}

#[tokio::test]
async fn authorization_deactivation_makes_order_invalid() {
    let h = harness().await;
    let acct = h.new_account(Key::es256()).await;
    let (order_url, order) = h.new_order(&acct, &["a.acme.test"]).await;
    let authz = h.path_of(order["authorizations"][0].as_str().expect("url"));
    h.post_as(&acct, &authz, br#"{"status":"valid"}"#).await.assert_problem("malformed", 400);
    let r = h.post_as(&acct, &authz, br#"{"status":"deactivated"}"#).await;
    assert_eq!(r.json()["status"], "deactivated");
    let o = h.post_as(&acct, &h.path_of(&order_url), b"").await.json();
    assert_eq!(o["status"], "invalid");
    h.shutdown().await;
}

/// Two instances on one database behind one external URL (a load balancer):
/// a nonce issued by one is redeemed by the other and then refused by both;
/// an account and a certificate made through one are served by the other;
/// and all of it survives a restart.
#[tokio::test]
async fn instances_share_nonces_and_state_and_restart_loses_nothing() {
    let (port, tokens, task) = responder().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "https://acme.internal".to_string();
    let mut pki_a = Pki::new();
    let mut pki_b = Pki::new();
    let a = start_with(&mut pki_a, dir.path(), port, 1, Some(base.clone())).await.expect("instance a");
    let b = start_with(&mut pki_b, dir.path(), port, 1, Some(base.clone())).await.expect("instance b");
    let ca = Client::new(&pki_a.root.der, a.local_addr(), base.clone());
    let cb = Client::new(&pki_b.root.der, b.local_addr(), base.clone());

    let key = Key::es256();
    let url = ca.url("/acme/new-account");
    let n = ca.nonce().await;
    let r = cb.post("/acme/new-account", &jws(&key, None, &n, &url, b"{}")).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let kid = r.header("location").expect("kid");
    ca.post("/acme/new-account", &jws(&key, None, &n, &url, b"{}")).await.assert_problem("badNonce", 400);
    let r = ca.post("/acme/new-account", &jws(&key, None, &ca.nonce().await, &url, b"{}")).await;
    assert_eq!((r.status, r.header("location")), (200, Some(kid.clone())));

    // Issue through instance A with the standard harness helpers.
    let h = Harness { pki: pki_a, server: a, dir, client: ca };
    let acct = Account { key, kid };
    let (order_url, _) = h.ready_order(&acct, &tokens, &["a.acme.test"]).await;
    let (_, leaf_pem) = p256_with_pem();
    let csr = openssl_csr(h.dir.path(), &leaf_pem, &["-subj", "/", "-addext", "subjectAltName=DNS:a.acme.test"]);
    let fin = format!("{}/finalize", h.path_of(&order_url));
    let r = h.post_as(&acct, &fin, json!({"csr": b64(&csr)}).to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let cert_path = h.path_of(r.json()["certificate"].as_str().expect("cert"));
    let chain_a = h.post_as(&acct, &cert_path, b"").await.body;

    // Instance B serves the same certificate.
    let hb_body = jws(&acct.key, Some(&acct.kid), &cb.nonce().await, &cb.url(&cert_path), b"");
    let chain_b = cb.post(&cert_path, &hb_body).await.body;
    assert_eq!(chain_a, chain_b);

    // Restart both: nothing is lost, and an old nonce is still single-use.
    let old_nonce = cb.nonce().await;
    let Harness { server: a, dir, .. } = h;
    a.shutdown().await;
    b.shutdown().await;
    let mut pki_c = Pki::new();
    let c = start_with(&mut pki_c, dir.path(), port, 1, Some(base.clone())).await.expect("restarted");
    let cc = Client::new(&pki_c.root.der, c.local_addr(), base.clone());
    let body = jws(&acct.key, Some(&acct.kid), &old_nonce, &cc.url(&cert_path), b"");
    let r = cc.post(&cert_path, &body).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.body, chain_a);
    let orders = jws(&acct.key, Some(&acct.kid), &cc.nonce().await, &format!("{}/orders", acct.kid), b"");
    let r = cc.post(&format!("{}/orders", acct.kid.strip_prefix(&base).expect("base")), &orders).await;
    assert_eq!(r.json()["orders"], json!([order_url]));
    c.shutdown().await;
    task.abort();
}
