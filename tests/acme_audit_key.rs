//! The intermediate host's audit key, which signs acme-serve's issuance log
//! and nothing else: `keyrite intermediate request` makes it on the token
//! beside the issuing key and prints the fingerprint an auditor pins;
//! install records it in `issuer.toml`; acme-serve refuses an issuer without
//! one, and one whose audit key is the CA key.

mod acme_support;
mod common;

use acme_support::{free_port, TEST_INTERMEDIATE};
use common::{p, stderr, stdout, IntermediateHost};
use keyrite::profile::Profile;

const PIN_VAR: &str = "KEYRITE_TEST_AUDIT_KEY_PIN";
const PIN: &str = "audit-key-pin-2236";

fn installed() -> IntermediateHost {
    let template = Profile::from_toml_str(TEST_INTERMEDIATE, "test-intermediate").expect("test template");
    IntermediateHost::installed("audit-hsm", PIN_VAR, PIN, "issuing-a1", "keyrite Audit Key Test CA", &template).0
}

/// acme-serve on the host's issuer.toml (`issuer`), expected to refuse.
fn refused(host: &IntermediateHost, issuer: &str) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let out = host
        .keyrite()
        .args(["acme-serve", "--issuer", issuer, "--env", "env.toml"])
        .args(["--db", p(&dir.path().join("acme.sqlite"))])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--allow-ip-range", "127.0.0.0/8"])
        .output()
        .expect("run acme-serve");
    assert!(!out.status.success(), "acme-serve started: {}", stdout(&out));
    assert!(!dir.path().join("acme.sqlite").exists(), "nothing is created before the issuer checks pass");
    stderr(&out)
}

#[test]
fn the_audit_key_is_made_on_the_token_pinned_in_issuer_toml_and_never_the_ca_key() {
    let host = IntermediateHost::new("audit-hsm", PIN_VAR, PIN);
    let out = host.request("issuing-a1", &["--subject-cn", "keyrite Audit Key Test CA", "--requester", "ops@host"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let printed = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("audit key SHA-256 "))
        .map(str::trim)
        .map(str::to_string)
        .expect("the audit key's fingerprint is printed for the paper record");
    let objs = host.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--token-label", "audit-hsm", "--list-objects"]);
    assert!(stdout(&objs).contains("issuing-a1-audit"), "the audit key is on the token: {}", stdout(&objs));
    let record = std::fs::read_to_string(host.path("issuer/request.json")).expect("request.json");
    assert!(record.contains(&printed), "request.json records the audit key: {record}");
    // The audit key is never in the request bundle that leaves the host.
    assert_eq!(common::list(&host.path("usb-request")), ["csr.pem", "manifest.json"]);
}

#[test]
fn acme_serve_refuses_an_issuer_without_an_audit_key_or_with_the_ca_key_as_audit_key() {
    let host = installed();
    let issuer = std::fs::read_to_string(host.path("issuer/issuer.toml")).expect("issuer.toml");
    let table: toml::Value = toml::from_str(&issuer).expect("toml");
    assert_eq!(table["audit_key_sha256"].as_str(), Some(host.audit_key_sha256().as_str()));

    // An issuer installed before audit keys: no issuance log checkpoints
    // could be signed, so the server does not start.
    let mut old = table.clone();
    let t = old.as_table_mut().expect("table");
    t.remove("audit_key");
    t.remove("audit_key_sha256");
    std::fs::write(host.path("issuer/old.toml"), toml::to_string(&old).expect("toml")).expect("write");
    let err = refused(&host, "issuer/old.toml");
    assert!(err.contains("audit_key") && err.contains("names no audit key"), "{err}");

    // The CA key named as the audit key (its recorded SHA-256 made to
    // match): refused, a key that signs certificates never vouches for the
    // record of them.
    let mut same = table.clone();
    let ca_uri = same["key"].clone();
    let ca_sha = keyrite::profile::certificate_summary(
        &pem_rfc7468::decode_vec(&std::fs::read(host.intermediate_pem()).expect("pem")).expect("pem").1,
    )
    .expect("summary")
    .spki_sha256
    .hex;
    let t = same.as_table_mut().expect("table");
    t.insert("audit_key".into(), ca_uri);
    t.insert("audit_key_sha256".into(), toml::Value::String(ca_sha));
    std::fs::write(host.path("issuer/same.toml"), toml::to_string(&same).expect("toml")).expect("write");
    let err = refused(&host, "issuer/same.toml");
    assert!(err.contains("is the issuing key"), "{err}");

    // The audit key replaced on the token after install: the recorded
    // fingerprint no longer matches.
    let mut other = table.clone();
    other.as_table_mut().expect("table").insert("audit_key_sha256".into(), toml::Value::String("ab".repeat(32)));
    std::fs::write(host.path("issuer/other.toml"), toml::to_string(&other).expect("toml")).expect("write");
    let err = refused(&host, "issuer/other.toml");
    assert!(err.contains("audit_key_sha256") && err.contains("was replaced"), "{err}");
}
