//! acme-serve's rate limits (a flood from one account is refused with 429
//! and Retry-After while another account goes on; renewals inside their ARI
//! window pass), the leaves' CRL over plain HTTP (checked with `openssl
//! verify -crl_check`), and housekeeping (expired orders, authorizations
//! and nonces go, certificates stay), and the renewal of the server's own
//! HTTPS certificate.

mod acme_support;
mod common;

use std::path::Path;
use std::time::Duration;

use acme_support::*;
use common::{openssl, p, stderr, stdout};
use keyrite::config::acme::CrlSettings as CrlConfig;
use keyrite::config::acme::TlsSettings;
use keyrite::config::rate_limits::{Limits, Rate};
use keyrite::profile::San;
use serde_json::json;

fn per_hour(count: u32) -> Option<Rate> {
    Some(Rate { count, period_secs: 3600 })
}

#[tokio::test]
async fn a_flood_from_one_account_gets_429_and_another_account_is_unaffected() {
    let (port, tokens, responder_task) = responder().await;
    let h = start_harness(|c| {
        c.validation.http01_port = port;
        c.rate_limits = Limits { new_orders_per_account: per_hour(5), ..Limits::unlimited() };
    })
    .await;
    let a = h.new_account(Key::es256()).await;
    let b = h.new_account(Key::es256()).await;
    // One certificate, then four more orders: five in all.
    let der = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;
    for _ in 0..4 {
        h.new_order(&a, &["b.acme.test"]).await;
    }
    let r = order_replacing(&h, &a, &["b.acme.test"], json!({})).await;
    r.assert_problem("rateLimited", 429);
    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().expect("seconds");
    // 5 per hour refills one every 720 s.
    assert!((700..=720).contains(&wait), "Retry-After {wait}");
    assert!(r.json()["detail"].as_str().expect("detail").contains("new_orders_per_account"), "{}", r.json());
    assert!(r.header("replay-nonce").is_some(), "a refusal still carries a nonce");

    // Another account is not touched by a's flood.
    h.new_order(&b, &["b.acme.test"]).await;

    // A renewal inside its ARI window passes the exhausted limit: a revoked
    // certificate's window is now.
    let rv = h.post_as(&a, "/acme/revoke-cert", json!({"certificate": b64(&der)}).to_string().as_bytes()).await;
    assert_eq!(rv.status, 200, "{}", String::from_utf8_lossy(&rv.body));
    let renewal = order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": cert_id(&der)})).await;
    assert_eq!(renewal.status, 201, "{}", String::from_utf8_lossy(&renewal.body));
    // Plain orders are still refused.
    order_replacing(&h, &a, &["a.acme.test"], json!({})).await.assert_problem("rateLimited", 429);
    responder_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn a_renewal_before_its_window_is_counted() {
    let (port, tokens, responder_task) = responder().await;
    let h = start_harness(|c| {
        c.validation.http01_port = port;
        c.rate_limits = Limits { new_orders_per_account: per_hour(1), ..Limits::unlimited() };
    })
    .await;
    let a = h.new_account(Key::es256()).await;
    let der = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;
    // Just issued: its window is hours away, so `replaces` is no pass.
    let early = order_replacing(&h, &a, &["a.acme.test"], json!({"replaces": cert_id(&der)})).await;
    early.assert_problem("rateLimited", 429);
    responder_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn identifiers_new_accounts_and_pending_authorizations_are_limited() {
    let h = start_harness(|c| {
        c.rate_limits = Limits {
            new_accounts_per_ip: per_hour(2),
            new_orders_per_identifier: per_hour(2),
            max_pending_authorizations: Some(4),
            ..Limits::unlimited()
        };
    })
    .await;
    let a = h.new_account(Key::es256()).await;
    let b = h.new_account(Key::es256()).await;
    // A third account from 127.0.0.1 is refused; an existing key still
    // finds its account (no new account is made).
    let c = &h.client;
    let key = Key::es256();
    let body = jws(&key, None, &c.nonce().await, &c.url("/acme/new-account"), br#"{"termsOfServiceAgreed":true}"#);
    let r = c.post("/acme/new-account", &body).await;
    r.assert_problem("rateLimited", 429);
    assert!(r.header("retry-after").is_some());
    let body = jws(&b.key, None, &c.nonce().await, &c.url("/acme/new-account"), br#"{"onlyReturnExisting":true}"#);
    assert_eq!(c.post("/acme/new-account", &body).await.status, 200);

    // Two orders name x; a third is refused, and names the identifier. The
    // refusal spends nothing: the account can still order y.
    h.new_order(&a, &["x.acme.test"]).await;
    h.new_order(&b, &["*.x.acme.test"]).await;
    let r = order_replacing(&h, &a, &["x.acme.test", "y.acme.test"], json!({})).await;
    r.assert_problem("rateLimited", 429);
    assert!(r.json()["detail"].as_str().expect("detail").contains("(x.acme.test)"), "{}", r.json());
    h.new_order(&a, &["y.acme.test"]).await;

    // a holds 2 pending authorizations (x, y); 3 more would pass 4.
    let r = order_replacing(&h, &a, &["p.acme.test", "q.acme.test", "r.acme.test"], json!({})).await;
    r.assert_problem("rateLimited", 429);
    assert!(r.json()["detail"].as_str().expect("detail").contains("pending authorizations"), "{}", r.json());
    h.new_order(&a, &["p.acme.test", "q.acme.test"]).await;
    h.shutdown().await;
}

#[tokio::test]
async fn every_request_per_ip_when_configured() {
    let h = start_harness(|c| {
        c.rate_limits = Limits { requests_per_ip: Some(Rate { count: 3, period_secs: 60 }), ..Limits::unlimited() };
    })
    .await;
    for _ in 0..3 {
        assert_eq!(h.client.request("GET", "/acme/directory", &[], vec![]).await.status, 200);
    }
    let r = h.client.request("GET", "/acme/directory", &[], vec![]).await;
    r.assert_problem("rateLimited", 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("20"));
    h.shutdown().await;
}

/// A leaf template whose CRL URL points at `port` on loopback.
fn leaf_with_crl(url: &str) -> keyrite::profile::Profile {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/tls-leaf.toml"))
        .expect("leaf template");
    keyrite::profile::Profile::from_toml_str(
        &text.replace("http://crl.example.com/issuing-e1.crl", url),
        "tls-leaf with a loopback CRL",
    )
    .expect("template")
}

async fn get_crl(url: &str) -> (u16, Vec<u8>, Option<String>) {
    let args = ["-sS", "-o", "-", "-w", "\n%{http_code} %{content_type}", url].map(String::from);
    let out = tokio::task::spawn_blocking(move || std::process::Command::new("curl").args(args).output())
        .await
        .expect("join")
        .expect("curl");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let body = out.stdout;
    let split = body.iter().rposition(|b| *b == b'\n').expect("trailer");
    let trailer = String::from_utf8_lossy(&body[split + 1..]).to_string();
    let (code, ctype) = trailer.split_once(' ').expect("code and type");
    (code.parse().expect("code"), body[..split].to_vec(), Some(ctype.to_string()).filter(|t| !t.is_empty()))
}

#[tokio::test]
async fn the_crl_is_served_at_the_template_url_and_lists_revocations_at_once() {
    common::require_tool("curl", "curl");
    let (port, tokens, responder_task) = responder().await;
    let crl_port = free_port();
    let url = format!("http://127.0.0.1:{crl_port}/leaves/e1.crl");
    let leaf_template = leaf_with_crl(&url);
    let h = start_harness(|c| {
        c.validation.http01_port = port;
        c.issuance.leaf_profile = leaf_template;
        c.crl = Some(CrlConfig::new(format!("127.0.0.1:{crl_port}").parse().expect("addr")));
    })
    .await;
    assert_eq!(h.server.crl_addr().map(|a| a.port()), Some(crl_port));
    let dir = h.dir.path().to_path_buf();
    let a = h.new_account(Key::es256()).await;
    let der = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;
    let leaf = dir.join("leaf.der");
    std::fs::write(&leaf, &der).expect("leaf");
    let leaf_pem = dir.join("leaf.pem");
    assert!(openssl(&["x509", "-inform", "DER", "-in", p(&leaf), "-out", p(&leaf_pem)]).status.success());
    let root = dir.join("root.pem");
    std::fs::write(&root, &h.pki.root.pem).expect("root");
    let int = dir.join("int.pem");
    std::fs::write(&int, &h.pki.intermediate.pem).expect("int");
    let verify = |crl: &Path| {
        openssl(&["verify", "-crl_check", "-CAfile", p(&root), "-untrusted", p(&int), "-CRLfile", p(crl), p(&leaf_pem)])
    };
    let to_pem = |der: &[u8], name: &str| {
        let d = dir.join(format!("{name}.der"));
        std::fs::write(&d, der).expect("crl");
        let pem = dir.join(format!("{name}.pem"));
        let o = openssl(&["crl", "-inform", "DER", "-in", p(&d), "-out", p(&pem)]);
        assert!(o.status.success(), "{}", stderr(&o));
        pem
    };

    let (code, before, ctype) = get_crl(&url).await;
    assert_eq!(code, 200);
    assert_eq!(ctype.as_deref(), Some("application/pkix-crl"));
    let before = to_pem(&before, "before");
    let ok = verify(&before);
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));

    // Other paths are not CRLs.
    assert_eq!(get_crl(&format!("http://127.0.0.1:{crl_port}/other.crl")).await.0, 404);

    let revoke = json!({"certificate": b64(&der), "reason": 4}).to_string();
    let rv = h.post_as(&a, "/acme/revoke-cert", revoke.as_bytes()).await;
    assert_eq!(rv.status, 200, "{}", String::from_utf8_lossy(&rv.body));
    // No waiting: the revocation answered after the CRL was remade.
    let (_, after, _) = get_crl(&url).await;
    let after = to_pem(&after, "after");
    let refused = verify(&after);
    let why = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(!refused.status.success() && why.contains("certificate revoked"), "{why}");
    let text = stdout(&openssl(&["crl", "-in", p(&after), "-noout", "-text"]));
    assert!(text.contains("Superseded"), "reason code on the entry:\n{text}");
    assert!(text.contains(&url), "issuingDistributionPoint:\n{text}");
    responder_task.abort();
    h.shutdown().await;
}

#[tokio::test]
async fn crl_configuration_mistakes_are_refused_at_start() {
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("dir");
    let listen = "127.0.0.1:0".parse().expect("addr");
    // The short profile has no CRL URL and is the only template served.
    let err = start_configured(&mut pki, dir.path(), 1, 1, |c| {
        c.issuance.leaf_profile = template("leaf-short.toml");
        c.crl = Some(CrlConfig::new(listen));
    })
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("no leaf template names a crl_distribution_points URL"), "{err}");

    let mut pki = Pki::new();
    let err = start_configured(&mut pki, dir.path(), 1, 1, |c| {
        let mut cc = CrlConfig::new(listen);
        cc.validity = Duration::from_secs(600);
        cc.refresh = Duration::from_secs(3600);
        c.crl = Some(cc);
    })
    .await
    .err()
    .expect("refused");
    assert!(err.to_string().contains("must be longer than its refresh interval"), "{err}");
}

#[tokio::test]
async fn housekeeping_purges_expired_orders_authorizations_and_nonces_but_keeps_certificates() {
    use keyrite::acme::store::{sqlite::SqliteStore, Store};
    let (port, tokens, responder_task) = responder().await;
    let h = start_harness(|c| c.validation.http01_port = port).await;
    let a = h.new_account(Key::es256()).await;
    let der = issue(&h, &a, &tokens, &["a.acme.test"], serde_json::Value::Null).await;
    let serial = keyrite::profile::certificate_summary(&der).expect("summary").serial_hex;
    let (pending_url, _) = h.new_order(&a, &["b.acme.test"]).await;

    // On schedule now, nothing is old enough: every order still answers.
    let purged = h.server.purge_now().await.expect("purge");
    assert_eq!((purged.orders, purged.authzs), (0, 0), "{purged:?}");
    assert_eq!(h.post_as(&a, &h.path_of(&pending_url), b"").await.status, 200);

    // The same pass a month from now (the store is shared, as between
    // instances): the unfinished order and both authorizations expired long
    // ago, every nonce too; the certificate and its valid order stay.
    let st = SqliteStore::open(&h.dir.path().join("acme.sqlite")).expect("store");
    let month = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
    let purged = st.purge_expired(month, 86_400).expect("purge");
    assert_eq!((purged.orders, purged.authzs), (1, 2), "{purged:?}");
    assert!(purged.nonces >= 8, "every request's nonce: {purged:?}");
    h.post_as(&a, &h.path_of(&pending_url), b"").await.assert_problem("malformed", 404);
    let kept = st.certificate_by_serial(&serial).expect("query").expect("kept");
    assert_eq!(kept.der, der);
    let valid_order = h.post_as(&a, &format!("/acme/order/{}", kept.order_id), b"").await;
    assert_eq!(valid_order.status, 200, "{}", String::from_utf8_lossy(&valid_order.body));
    assert_eq!(valid_order.json()["status"], "valid");
    assert_eq!(st.purge_expired(month, 86_400).expect("again").orders, 0);
    responder_task.abort();
    h.shutdown().await;
}

/// The serial of the certificate a fresh TLS connection to `addr` is given.
fn served_serial(addr: std::net::SocketAddr) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -serial"))
        .output()
        .expect("openssl s_client");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn the_servers_own_certificate_is_renewed_before_it_expires() {
    common::require_tool("openssl", "openssl");
    let h = start_harness(|c| {
        c.tls = TlsSettings::IssueAtStart {
            names: vec![San::Ip("127.0.0.1".parse().expect("ip"))],
            lifetime: Some(Duration::from_secs(93)),
        }
    })
    .await;
    let addr = h.server.local_addr();
    let first = tokio::task::spawn_blocking(move || served_serial(addr)).await.expect("join");
    let first_der = h.server.tls_leaf_der().expect("a leaf");
    let summary = keyrite::profile::certificate_summary(&first_der).expect("summary");
    assert_eq!(first, format!("serial={}", summary.serial_hex.to_uppercase()));
    // Backdated a minute and 93 s long: two thirds are gone 2 s from now.
    let mut renewed = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if h.server.tls_leaf_der().as_ref() != Some(&first_der) {
            renewed = h.server.tls_leaf_der();
            break;
        }
    }
    let renewed = renewed.expect("renewed within 5 s");
    let next = tokio::task::spawn_blocking(move || served_serial(addr)).await.expect("join");
    let s = keyrite::profile::certificate_summary(&renewed).expect("summary");
    assert_eq!(next, format!("serial={}", s.serial_hex.to_uppercase()), "new connections get the new certificate");
    assert_ne!(next, first);
    // ACME still works over the new certificate.
    assert_eq!(h.client.request("GET", "/acme/directory", &[], vec![]).await.status, 200);
    h.shutdown().await;
}
