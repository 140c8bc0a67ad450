//! ACME Renewal Information (RFC 9773): the `renewalInfo` resource, the
//! suggested window (within [2/3, 5/6) of the lifetime, spread per
//! certificate, in the past for a revoked certificate or a changed issuer),
//! and `replaces` on newOrder (once per certificate, own certificates only).

mod acme_support;

use acme_support::*;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn ts(v: &serde_json::Value) -> i64 {
    OffsetDateTime::parse(v.as_str().expect("date"), &Rfc3339).expect("RFC 3339").unix_timestamp()
}

/// GETs the renewal information of `der`, following the directory.
async fn renewal_info(h: &Harness, der: &[u8]) -> (i64, i64, Response) {
    let d = h.client.request("GET", "/acme/directory", &[], vec![]).await.json();
    let base = h.path_of(d["renewalInfo"].as_str().expect("renewalInfo"));
    let r = h.client.request("GET", &format!("{base}/{}", cert_id(der)), &[], vec![]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let w = r.json()["suggestedWindow"].clone();
    (ts(&w["start"]), ts(&w["end"]), r)
}

#[tokio::test]
async fn directory_advertises_renewal_info_and_unknown_cert_ids_are_refused() {
    let h = start(1, 1).await;
    let d = h.client.request("GET", "/acme/directory", &[], vec![]).await.json();
    assert_eq!(d["renewalInfo"], h.client.url("/acme/renewal-info"), "{d}");
    // Well-formed, but nothing was issued with it.
    let r = h.client.request("GET", "/acme/renewal-info/AQID.AIdl", &[], vec![]).await;
    r.assert_problem("malformed", 404);
    let r = h.client.request("GET", "/acme/renewal-info/not-a-cert-id", &[], vec![]).await;
    r.assert_problem("malformed", 400);
    let r = h.client.request("GET", "/acme/renewal-info/AQI=.AIdl", &[], vec![]).await;
    r.assert_problem("malformed", 400);
    h.shutdown().await;
}

#[tokio::test]
async fn windows_lie_in_the_lifetime_are_spread_and_revocation_means_now() {
    let (port, tokens, responder_task) = responder().await;
    let h = start(port, 1).await;
    let a = h.new_account(Key::es256()).await;
    let first = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;
    let second = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;

    let mut windows = Vec::new();
    for der in [&first, &second] {
        let s = keyrite::profile::certificate_summary(der).expect("summary");
        let (nb, na) = (s.not_before.unix_timestamp(), s.not_after.unix_timestamp());
        let life = na - nb;
        let (start, end, r) = renewal_info(&h, der).await;
        assert!(start < end, "{start} .. {end}");
        assert!(start >= nb + life * 2 / 3, "window starts before 2/3 of the lifetime");
        assert!(end <= nb + life * 5 / 6 + 1, "window ends after 5/6 of the lifetime");
        assert_eq!(r.header("retry-after").as_deref(), Some("21600"));
        windows.push((start, end));
    }
    // Same lifetime, different serials: different windows (1 in 7200 to collide).
    assert_ne!(windows[0], windows[1], "no per-certificate spread");

    // Revoked: the window is already over.
    let r = h.post_as(&a, "/acme/revoke-cert", json!({"certificate": b64(&first)}).to_string().as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (start, end, _) = renewal_info(&h, &first).await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!(start < end && end <= now, "revoked: {start} .. {end}, now {now}");
    // The other certificate is unaffected.
    assert_eq!(renewal_info(&h, &second).await.0, windows[1].0);
    responder_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn replaces_once_only_own_certificates_and_survives_a_new_issuer() {
    let (port, tokens, responder_task) = responder().await;
    let mut h = start(port, 1).await;
    let a = h.new_account(Key::es256()).await;
    let b = h.new_account(Key::es256()).await;
    let der = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;
    let id = cert_id(&der);

    // Another account may not replace it.
    order_replacing(&h, &b, &["a.acme.test"], json!({"replaces": id})).await.assert_problem("unauthorized", 403);
    // Not a certID; a certID nothing was issued with.
    order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": "nope"})).await.assert_problem("malformed", 400);
    order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": "AQID.AIdl"})).await.assert_problem("malformed", 400);
    // No identifier in common.
    order_replacing(&h, &a, &["b.acme.test"], json!({"replaces": id})).await.assert_problem("malformed", 400);

    // Once: the order echoes it.
    let r = order_replacing(&h, &a, &["a.acme.test", "b.acme.test"], json!({"replaces": id})).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["replaces"], id.as_str());
    let again = order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": id})).await;
    again.assert_problem("alreadyReplaced", 409);

    // A replacement order that fails (here: its authorization deactivated)
    // no longer blocks: the renewal can be retried.
    let failed = r.json();
    let authz = h.path_of(failed["authorizations"][0].as_str().expect("authz"));
    let d = h.post_as(&a, &authz, br#"{"status":"deactivated"}"#).await;
    assert_eq!(d.status, 200, "{}", String::from_utf8_lossy(&d.body));
    let failed_path = h.path_of(&r.header("location").expect("location"));
    assert_eq!(h.post_as(&a, &failed_path, b"").await.json()["status"], "invalid");
    let retry = order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": id})).await;
    assert_eq!(retry.status, 201, "{}", String::from_utf8_lossy(&retry.body));
    order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": id})).await.assert_problem("alreadyReplaced", 409);

    // A restart with another intermediate: the replacement is remembered,
    // and ARI tells the holder of the old-issuer certificate to renew now.
    // Same base URL (as behind a load balancer), so the account URLs hold.
    let base = h.client.base.clone();
    let dir = std::mem::replace(&mut h.dir, tempfile::tempdir().expect("tempdir"));
    h.shutdown().await;
    let mut pki = Pki::new();
    let server = start_with(&mut pki, dir.path(), port, 1, Some(base)).await.expect("restart");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    let h = Harness { pki, server, dir, client };
    order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": id})).await.assert_problem("alreadyReplaced", 409);
    let (start, end, _) = renewal_info(&h, &der).await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    assert!(start < end && end <= now, "issuer changed: {start} .. {end}, now {now}");
    responder_task.abort();
    h.shutdown().await;
}

/// What an ARI-aware client does: poll the window, and once inside it (or
/// past it) order a replacement naming the old certificate.
#[tokio::test]
async fn ari_aware_renewal_flow() {
    let (port, tokens, responder_task) = responder().await;
    let h = start(port, 1).await;
    let a = h.new_account(Key::es256()).await;
    let old = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;

    let (start, end, r) = renewal_info(&h, &old).await;
    let retry: i64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    let now = OffsetDateTime::now_utc().unix_timestamp();
    // RFC 9773 §4.2: pick a time uniformly in the window; renew if it has
    // passed, else sleep until min(pick, now + Retry-After). This test
    // cannot wait 16 hours, so it checks the schedule and renews anyway.
    let pick = start + (end - start) / 2;
    assert!(pick > now && retry > 0, "a fresh certificate is not due yet");

    let new = issue(&h, &a, &tokens, &["a.acme.test"], json!({"replaces": cert_id(&old)})).await;
    assert_ne!(cert_id(&new), cert_id(&old));
    // The new certificate has its own window, in its future (its spread
    // offset may put it before or after the old one's); the old one cannot
    // be replaced twice.
    let (ns, ne, _) = renewal_info(&h, &new).await;
    assert!(ns > now && ne > ns);
    order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": cert_id(&old)}))
        .await
        .assert_problem("alreadyReplaced", 409);
    // The replacement order remembers what it replaced.
    let orders_path = h.path_of(&format!("{}/orders", a.kid));
    let list = h.post_as(&a, &orders_path, b"").await.json();
    let mut echoed = 0;
    for o in list["orders"].as_array().expect("orders") {
        let o = h.post_as(&a, &h.path_of(o.as_str().expect("url")), b"").await.json();
        if o["replaces"] == cert_id(&old).as_str() {
            echoed += 1;
            assert_eq!(o["status"], "valid");
        }
    }
    assert_eq!(echoed, 1);
    responder_task.abort();
    h.shutdown().await;
}
