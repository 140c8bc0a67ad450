//! The issuance log, as an auditor uses it: every certificate acme-serve
//! issues (the server's own HTTPS certificate included) and every
//! revocation is in it; `keyrite acme issuance-log export` writes it through
//! its latest signed checkpoint; `keyrite audit verify`, pinned to the
//! intermediate host's audit key, accepts the export and catches a changed
//! byte or a removed entry; and a later export extends an earlier one.

mod acme_support;
mod common;

use std::path::Path;

use acme_support::*;
use common::{keyrite, p, stderr, stdout};
use serde_json::{json, Value};

/// The export's entries, parsed.
fn entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("export")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn export(db: &Path, out: &Path) {
    let o = keyrite().args(["acme", "issuance-log", "export", "--db", p(db), "--out", p(out)]).output().expect("run");
    assert!(o.status.success(), "export: {}{}", stdout(&o), stderr(&o));
}

fn verify(log: &Path, audit_keys: &[&str]) -> std::process::Output {
    let mut c = keyrite();
    c.args(["audit", "verify", p(log), "--allow-open"]);
    for k in audit_keys {
        c.args(["--audit-key-sha256", k]);
    }
    c.output().expect("run keyrite audit verify")
}

fn serial_of(der: &[u8]) -> String {
    keyrite::profile::certificate_summary(der).expect("summary").serial_hex
}

fn sha256(der: &[u8]) -> String {
    keyrite::words::sha256_hex(der)
}

/// An operator's story: a leaf is issued and revoked, the server stops;
/// the auditor exports the log, verifies it pinned to the audit key and
/// finds every certificate the intermediate signed; an edited export and a
/// cut one are refused, naming the line.
#[tokio::test]
async fn an_issued_certificate_is_in_the_exported_log_and_audit_verify_catches_edits() {
    let (port, tokens, responder_task) = responder().await;
    let h = start_harness(|c| c.validation.http01_port = port).await;
    let a = h.new_account(Key::es256()).await;
    let leaf = issue(&h, &a, &tokens, &["a.acme.test"], Value::Null).await;
    let body = json!({"certificate": b64(&leaf), "reason": 4}).to_string();
    let r = h.post_as(&a, "/acme/revoke-cert", body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let server_leaf = h.server.tls_leaf_der().expect("the server's own certificate");
    let Harness { server, dir, pki, .. } = h;
    // A clean stop signs a last checkpoint over everything this run logged.
    server.shutdown().await;
    responder_task.abort();

    let out = dir.path().join("issuance-log.jsonl");
    export(&dir.path().join("acme.sqlite"), &out);
    let ok = verify(&out, &[&pki.audit_spki_sha256]);
    assert!(ok.status.success(), "audit verify: {}{}", stdout(&ok), stderr(&ok));
    assert!(stdout(&ok).contains(&pki.audit_spki_sha256), "{}", stdout(&ok));

    let log = entries(&out);
    let issued = |serial: &str| {
        log.iter().find(|e| e["event"] == "certificate-issued" && e["details"]["serial"] == serial).cloned()
    };
    // The order's leaf: its serial, names, key and certificate hash.
    let e = issued(&serial_of(&leaf)).expect("the leaf is in the log");
    assert_eq!(e["details"]["kind"], "order");
    assert_eq!(e["details"]["names"], json!(["dns:a.acme.test"]));
    assert_eq!(e["outputs"][0]["sha256"], sha256(&leaf));
    assert!(e["details"]["tbs_sha256"].as_str().is_some_and(|t| t.len() == 64));
    // The server's own certificate went the same way.
    let e = issued(&serial_of(&server_leaf)).expect("the server's certificate is in the log");
    assert_eq!(e["details"]["kind"], "server-tls");
    assert_eq!(e["outputs"][0]["sha256"], sha256(&server_leaf));
    // The revocation, with its reason and on whose authority.
    let rev = log.iter().find(|e| e["event"] == "certificate-revoked").expect("the revocation is in the log");
    assert_eq!(
        (rev["details"]["serial"].as_str(), rev["details"]["reason_code"].as_u64()),
        (Some(&*serial_of(&leaf)), Some(4))
    );
    assert_eq!(rev["details"]["authority"], "account");
    // The audit key, never the CA key, was announced; the export ends with
    // a checkpoint, so every entry is covered by a signature.
    assert_eq!(log[0]["event"], "audit-key-announced");
    assert_eq!(log[0]["details"]["spki_sha256"], pki.audit_spki_sha256.as_str());
    assert_eq!(log.last().expect("entries")["event"], "checkpoint");

    // A byte changed in the leaf's entry (its serial's last hex digit):
    // the chain breaks there and the line is named.
    let text = std::fs::read_to_string(&out).expect("export");
    let lines: Vec<&str> = text.lines().collect();
    let k = lines.iter().position(|l| l.contains("certificate-issued") && l.contains(&serial_of(&leaf))).expect("line");
    let serial = serial_of(&leaf);
    let last = serial.chars().last().expect("digit");
    let other = if last == '0' { '1' } else { '0' };
    let edited_serial = format!("{}{other}", &serial[..serial.len() - 1]);
    let mut edited = lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
    edited[k] = edited[k].replace(&serial, &edited_serial);
    let edited_path = dir.path().join("edited.jsonl");
    std::fs::write(&edited_path, edited.join("\n") + "\n").expect("write");
    let bad = verify(&edited_path, &[&pki.audit_spki_sha256]);
    assert!(!bad.status.success(), "an edited export passed: {}", stdout(&bad));
    assert!(stderr(&bad).contains(&format!("line {}", k + 1)), "the edited line is named: {}", stderr(&bad));

    // An entry removed (the revocation): the sequence breaks there.
    let r = lines.iter().position(|l| l.contains("certificate-revoked")).expect("revocation line");
    let mut cut: Vec<&str> = lines.clone();
    cut.remove(r);
    let cut_path = dir.path().join("cut.jsonl");
    std::fs::write(&cut_path, cut.join("\n") + "\n").expect("write");
    let bad = verify(&cut_path, &[&pki.audit_spki_sha256]);
    assert!(!bad.status.success(), "an export with an entry removed passed: {}", stdout(&bad));
    assert!(stderr(&bad).contains(&format!("line {}", r + 1)), "the gap is named: {}", stderr(&bad));

    // Pinned to another key (a CA key, say), the genuine export is refused.
    let ca_key = keyrite::profile::certificate_summary(&pki.intermediate.der).expect("summary").spki_sha256.hex;
    let bad = verify(&out, &[&ca_key]);
    assert!(!bad.status.success(), "checkpoints passed under a key that did not sign them: {}", stdout(&bad));
}

/// The server restarts on the same store and issues more: the next export
/// begins with every byte of the previous one (its checkpoints included),
/// and both verify.
#[tokio::test]
async fn successive_exports_extend_each_other() {
    let (port, tokens, responder_task) = responder().await;
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("dir");
    let configure = |c: &mut keyrite::config::acme::AcmeServeConfig| c.validation.http01_port = port;
    let server = start_configured(&mut pki, dir.path(), port, 1, configure).await.expect("start");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    let a = client.new_account(Key::es256()).await;
    let (order_url, order) = client.ready_order(&a, &tokens, &["a.acme.test"]).await;
    assert_eq!(finalize_with_csr(&client, dir.path(), &a, &order, &["a.acme.test"]).await.status, 200);
    let first_leaf = download(&client, &a, &order_url).await;
    server.shutdown().await;
    let db = dir.path().join("acme.sqlite");
    let first = dir.path().join("first.jsonl");
    export(&db, &first);

    let server = start_configured(&mut pki, dir.path(), port, 1, configure).await.expect("restart");
    let client = Client::new(&pki.root.der, server.local_addr(), server.base_url().to_string());
    let a = client.new_account(Key::es256()).await;
    let (order_url, order) = client.ready_order(&a, &tokens, &["b.acme.test"]).await;
    assert_eq!(finalize_with_csr(&client, dir.path(), &a, &order, &["b.acme.test"]).await.status, 200);
    let second_leaf = download(&client, &a, &order_url).await;
    // A checkpoint on demand (as the schedule would make one) while the
    // server runs: the export reads the store beside it.
    server.checkpoint_now().await.expect("checkpoint").expect("the log grew");
    let second = dir.path().join("second.jsonl");
    export(&db, &second);
    server.shutdown().await;
    responder_task.abort();

    let (a_bytes, b_bytes) = (std::fs::read(&first).expect("first"), std::fs::read(&second).expect("second"));
    assert!(b_bytes.len() > a_bytes.len() && b_bytes.starts_with(&a_bytes), "the second export extends the first");
    for log in [&first, &second] {
        let ok = verify(log, &[&pki.audit_spki_sha256]);
        assert!(ok.status.success(), "audit verify {}: {}{}", log.display(), stdout(&ok), stderr(&ok));
    }
    let text = std::fs::read_to_string(&second).expect("second");
    assert!(text.contains(&serial_of(&first_leaf)) && text.contains(&serial_of(&second_leaf)));
    // The same audit key across restarts: announced once.
    assert_eq!(text.matches("\"event\":\"audit-key-announced\"").count(), 1);

    // An export never overwrites a file.
    let o =
        keyrite().args(["acme", "issuance-log", "export", "--db", p(&db), "--out", p(&first)]).output().expect("run");
    assert!(!o.status.success() && stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&first).expect("first"), a_bytes);
}

/// Two instances on one database (as behind a load balancer) issue at the
/// same time: their entries form one chain, with no sequence number taken
/// twice, and the export verifies.
#[tokio::test]
async fn two_instances_sharing_a_store_write_one_chain() {
    let (port, tokens, responder_task) = responder().await;
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("dir");
    let base = format!("https://127.0.0.1:{}", free_port());
    let configure = |c: &mut keyrite::config::acme::AcmeServeConfig| c.external_url = Some(base.clone());
    let one = start_configured(&mut pki, dir.path(), port, 1, configure).await.expect("first instance");
    let two = start_configured(&mut pki, dir.path(), port, 1, configure).await.expect("second instance");
    let (c1, c2) = (
        Client::new(&pki.root.der, one.local_addr(), base.clone()),
        Client::new(&pki.root.der, two.local_addr(), base.clone()),
    );
    // Both flows in flight at once, one through each instance.
    let (l1, l2) = tokio::join!(
        issue_through(&c1, dir.path(), &tokens, "a.acme.test"),
        issue_through(&c2, dir.path(), &tokens, "b.acme.test")
    );
    let leaves = [l1, l2];
    one.shutdown().await;
    two.shutdown().await;
    responder_task.abort();

    let out = dir.path().join("shared.jsonl");
    export(&dir.path().join("acme.sqlite"), &out);
    let ok = verify(&out, &[&pki.audit_spki_sha256]);
    assert!(ok.status.success(), "audit verify: {}{}", stdout(&ok), stderr(&ok));
    let log = entries(&out);
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64), "one chain, no seq taken twice");
    }
    for leaf in &leaves {
        let serial = serial_of(leaf);
        assert!(log.iter().any(|e| e["event"] == "certificate-issued" && e["details"]["serial"] == serial));
    }
}

/// One whole issuance through `c`: account, order, http-01, finalize,
/// download.
async fn issue_through(c: &Client, dir: &Path, tokens: &Tokens, name: &str) -> Vec<u8> {
    let a = c.new_account(Key::es256()).await;
    let (order_url, order) = c.ready_order(&a, tokens, &[name]).await;
    assert_eq!(finalize_with_csr(c, dir, &a, &order, &[name]).await.status, 200);
    download(c, &a, &order_url).await
}
