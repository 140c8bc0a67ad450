//! CAA (RFC 8659, with RFC 8657's accounturi and validationmethods): with
//! `caa_identities` set, a name whose CAA records name another CA, another
//! account or another validation method is refused with a `caa` problem
//! after its challenge passed; names under a record for this CA, or with no
//! records at all, are issued. The records come from a real DNS server on
//! loopback, read by the server's real resolver.

mod acme_support;

use acme_support::*;
use hickory_resolver::proto::rr::rdata::caa::{KeyValue, CAA};
use hickory_resolver::proto::rr::Name;
use serde_json::Value;
use std::str::FromStr;
use std::time::Duration;

const CA: &str = "ca.acme.test";

fn issue(issuer: Option<&str>, params: &[(&str, &str)]) -> CAA {
    let name = issuer.map(|i| Name::from_str(i).expect("issuer name"));
    CAA::new_issue(false, name, params.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect())
}

/// Orders `name`, answers http-01, and returns the authorization once it is
/// no longer pending.
async fn validate(h: &Harness, a: &Account, tokens: &Tokens, name: &str) -> Value {
    let (_, order) = h.new_order(a, &[name]).await;
    let authz_path = h.path_of(order["authorizations"][0].as_str().expect("authz"));
    let authz = h.post_as(a, &authz_path, b"").await.json();
    let ch = authz["challenges"].as_array().expect("challenges").iter().find(|c| c["type"] == "http-01").cloned();
    let ch = ch.expect("http-01");
    let token = ch["token"].as_str().expect("token").to_string();
    tokens.lock().expect("lock").insert(token.clone(), format!("{token}.{}", a.key.thumbprint()));
    let r = h.post_as(a, &h.path_of(ch["url"].as_str().expect("url")), b"{}").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    for _ in 0..100 {
        let z = h.post_as(a, &authz_path, b"").await.json();
        if z["status"] != "pending" {
            return z;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("authorization of {name} never left pending");
}

fn refused_for_caa(z: &Value) -> String {
    assert_eq!(z["status"], "invalid", "{z}");
    let ch = z["challenges"].as_array().expect("challenges").iter().find(|c| c["type"] == "http-01").cloned();
    let err = ch.expect("http-01")["error"].clone();
    assert_eq!(err["type"], "urn:ietf:params:acme:error:caa", "{z}");
    err["detail"].as_str().expect("detail").to_string()
}

#[tokio::test]
async fn caa_records_decide_which_ca_account_and_method_may_issue() {
    let dns = LoopbackDns::start("acme.test");
    let (port, tokens, responder_task) = responder().await;
    let h = start_harness(|c| {
        c.validation.http01_port = port;
        c.validation.resolver = Some(dns.addr);
        c.validation.caa_identities = vec![CA.into()];
    })
    .await;
    let a = h.new_account(Key::es256()).await;
    let b = h.new_account(Key::es256()).await;
    {
        let mut zone = dns.caa.lock().expect("caa");
        // The zone apex allows this CA; a.acme.test inherits it by climbing.
        zone.insert("acme.test".into(), vec![issue(Some(CA), &[])]);
        zone.insert("other.acme.test".into(), vec![issue(Some("someone-else.example"), &[])]);
        zone.insert("bound.acme.test".into(), vec![issue(Some(CA), &[("accounturi", &a.kid)])]);
        zone.insert("methods.acme.test".into(), vec![issue(Some(CA), &[("validationmethods", "dns-01")])]);
        zone.insert("nobody.acme.test".into(), vec![issue(None, &[])]);
    }
    assert_eq!(validate(&h, &a, &tokens, "a.acme.test").await["status"], "valid");
    assert_eq!(validate(&h, &a, &tokens, "bound.acme.test").await["status"], "valid");

    let why = refused_for_caa(&validate(&h, &a, &tokens, "other.acme.test").await);
    assert!(why.contains("someone-else.example"), "{why}");
    let why = refused_for_caa(&validate(&h, &b, &tokens, "bound.acme.test").await);
    assert!(why.contains("another account"), "{why}");
    let why = refused_for_caa(&validate(&h, &a, &tokens, "methods.acme.test").await);
    assert!(why.contains("dns-01") && why.contains("http-01"), "{why}");
    let why = refused_for_caa(&validate(&h, &a, &tokens, "nobody.acme.test").await);
    assert!(why.contains("allows no CA"), "{why}");
    responder_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn without_caa_identities_caa_is_not_consulted_and_with_them_a_resolver_is_required() {
    let dns = LoopbackDns::start("acme.test");
    dns.caa.lock().expect("caa").insert("acme.test".into(), vec![issue(Some("someone-else.example"), &[])]);
    let (port, tokens, responder_task) = responder().await;
    let h = start_harness(|c| {
        c.validation.http01_port = port;
        c.validation.resolver = Some(dns.addr);
    })
    .await;
    let a = h.new_account(Key::es256()).await;
    assert_eq!(validate(&h, &a, &tokens, "a.acme.test").await["status"], "valid");
    responder_task.abort();
    h.shutdown().await;

    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("dir");
    let err = start_configured(&mut pki, dir.path(), 1, 1, |c| c.validation.caa_identities = vec![CA.into()])
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("needs a DNS resolver"), "{err}");
}
