//! End to end with a real ACME client: instant-acme (aws-lc-rs build)
//! creates an account, orders `a.acme.test`, answers http-01 from a
//! responder on a loopback port, finalizes, downloads, and revokes. openssl
//! then judges the chain. Names resolve through the server's static host map
//! (see `acme_support`), so nothing leaves 127.0.0.1.

mod acme_support;

use std::process::Command;

use acme_support::*;
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
    RevocationReason, RevocationRequest,
};
use std::time::Duration;

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).output().expect("the openssl binary is required");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_acme_http01_issue_verify_revoke() {
    let (port, tokens, responder_task) = responder().await;
    let h = start(port, 1).await;
    let dir = h.dir.path().to_path_buf();
    let root_pem = dir.join("root.pem");
    std::fs::write(&root_pem, &h.pki.root.pem).expect("write root");
    std::fs::write(dir.join("int.pem"), &h.pki.intermediate.pem).expect("write int");

    let (account, _credentials) = Account::builder_with_root(&root_pem)
        .expect("client")
        .create(
            &NewAccount {
                contact: &["mailto:ops@acme.test"],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            h.server.directory_url(),
            None,
        )
        .await
        .expect("account created");

    let ids = [Identifier::Dns("a.acme.test".into())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.expect("order");
    assert_eq!(order.state().status, OrderStatus::Pending);
    let mut authzs = order.authorizations();
    while let Some(result) = authzs.next().await {
        let mut authz = result.expect("authz");
        assert_eq!(authz.status, AuthorizationStatus::Pending);
        let mut challenge = authz.challenge(ChallengeType::Http01).expect("http-01 offered");
        tokens
            .lock()
            .expect("lock")
            .insert(challenge.token.clone(), challenge.key_authorization().as_str().to_string());
        challenge.set_ready().await.expect("challenge accepted");
    }
    let retry = RetryPolicy::new().initial_delay(Duration::from_millis(100)).timeout(Duration::from_secs(20));
    let status = order.poll_ready(&retry).await.expect("order polled");
    assert_eq!(status, OrderStatus::Ready);
    let _key_pem = order.finalize().await.expect("finalized");
    let chain = order.poll_certificate(&retry).await.expect("certificate");
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "leaf + intermediate:\n{chain}");

    let leaf_pem = chain.split_inclusive("-----END CERTIFICATE-----\n").next().expect("leaf").to_string();
    let leaf_path = dir.join("leaf.pem");
    std::fs::write(&leaf_path, &leaf_pem).expect("write leaf");
    let p = |n: &str| dir.join(n).to_str().expect("utf-8").to_string();
    let (ok, out) = openssl(&["verify", "-CAfile", &p("root.pem"), "-untrusted", &p("int.pem"), &p("leaf.pem")]);
    assert!(ok && out.contains(": OK"), "{out}");
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", &p("leaf.pem")]);
    assert!(ok, "{text}");
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.contains("X509v3 Key Usage")).expect("key usage present");
    assert_eq!(lines.next().map(str::trim), Some("Digital Signature"), "{text}");
    assert!(text.contains("DNS:a.acme.test"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");

    // Revoke by the owning account, then again: alreadyRevoked.
    let der = pem_rfc7468::decode_vec(leaf_pem.as_bytes()).expect("pem").1;
    let cert = rustls::pki_types::CertificateDer::from(der);
    account
        .revoke(&RevocationRequest { certificate: &cert, reason: Some(RevocationReason::Superseded) })
        .await
        .expect("revoked");
    let again = account.revoke(&RevocationRequest { certificate: &cert, reason: None }).await;
    let err = again.expect_err("second revocation refused").to_string();
    assert!(err.contains("alreadyRevoked"), "{err}");

    h.shutdown().await;
    responder_task.abort();
}
