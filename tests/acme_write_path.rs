//! One write path for issuance, under faults. acme-serve runs as a child
//! process on an intermediate whose keys are in a SoftHSM token, and is
//! made to fail between signing and storing a certificate:
//!
//! - the final write fails (`KEYRITE_FAIL_AT=issuance:store-certificate`,
//!   as a full disk would): the signed certificate is already kept beside
//!   its reserved serial, the client gets `serverInternal`, and the
//!   issuance is completed from it: the order turns valid with that very
//!   certificate, and the log records it;
//! - the process dies right after the signature (`KEYRITE_CRASH_AT=
//!   issuance:after-sign`, an abort: no destructor, no flush, as `kill -9`):
//!   the serial was stored before the signer was called; after a restart
//!   the issuance is failed cleanly (the order invalid, the serial retired
//!   and logged), no order stays `processing`, and the server issues again.

mod acme_support;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use acme_support::*;
use common::{keyrite, p, stderr, stdout, IntermediateHost};
use keyrite::acme::model::{IssuanceState, OrderStatus};
use keyrite::acme::store::{sqlite::SqliteStore, Store};
use keyrite::profile::Profile;
use serde_json::{json, Value};

const PIN_VAR: &str = "KEYRITE_TEST_WRITE_PATH_PIN";
const PIN: &str = "write-path-pin-1618";
/// What the tests order: an IP identifier, so no DNS is needed.
const NAME: &str = "127.0.0.1";

fn host() -> IntermediateHost {
    let template = Profile::from_toml_str(TEST_INTERMEDIATE, "test-intermediate").expect("test template");
    IntermediateHost::installed("write-hsm", PIN_VAR, PIN, "write-e1", "keyrite Write Path Test Issuing CA", &template)
        .0
}

/// acme-serve on the host's issuer with its database in `dir`, listening
/// on `port` (a restart keeps it: account and order URLs stay valid),
/// http-01 validated on `http01`, a 2 s finalize deadline, and `env` set.
fn serve(
    host: &IntermediateHost,
    dir: &Path,
    run: &str,
    (port, http01): (u16, u16),
    env: &[(&str, &str)],
) -> AcmeServeProcess {
    let ready = dir.join(format!("ready-{run}.json"));
    let log = dir.join(format!("acme-serve-{run}.log"));
    let mut cmd = host.keyrite();
    cmd.envs(env.iter().copied())
        .args(["acme-serve", "--issuer", "issuer/issuer.toml", "--env", "env.toml"])
        .args(["--db", p(&dir.join("acme.sqlite"))])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--tls-name", "127.0.0.1", "--http01-port", &http01.to_string()])
        .args(["--allow-ip-range", "127.0.0.0/8", "--finalize-deadline", "2s"])
        .args(["--ready-file", p(&ready)]);
    AcmeServeProcess::spawn(cmd, &ready, &log).unwrap_or_else(|log| panic!("{log}"))
}

fn client(host: &IntermediateHost, server: &AcmeServeProcess) -> Client {
    let pem = std::fs::read(host.root_pem()).expect("root.pem");
    let (_, root_der) = pem_rfc7468::decode_vec(&pem).expect("root pem");
    let base = server.directory.strip_suffix("/acme/directory").expect("directory URL").to_string();
    Client::new(&root_der, server.listen, base)
}

/// Finalizes a ready order, tolerating a server that dies on the way.
async fn try_finalize(c: &Client, dir: &Path, a: &Account, order: &Value) -> Result<Response, String> {
    let (_, pem) = p256_with_pem();
    let csr = openssl_csr(dir, &pem, &["-subj", "/", "-addext", &format!("subjectAltName=IP:{NAME}")]);
    let fin = c.path_of(order["finalize"].as_str().expect("finalize"));
    let payload = json!({"csr": b64(&csr)}).to_string();
    let body = jws(&a.key, Some(&a.kid), &c.nonce().await, &c.url(&fin), payload.as_bytes());
    let bytes = serde_json::to_vec(&body).expect("json");
    c.try_request("POST", &fin, &[("content-type", "application/jose+json")], bytes).await
}

/// Polls the order until `done` holds, for at most `limit`.
async fn poll_order(c: &Client, a: &Account, order_url: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let t0 = Instant::now();
    loop {
        let o = c.post_as(a, &c.path_of(order_url), b"").await.json();
        if done(&o) {
            return o;
        }
        assert!(t0.elapsed() < limit, "the order is still {o} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn export(dir: &Path, name: &str) -> String {
    let out = dir.join(name);
    let o = keyrite()
        .args(["acme", "issuance-log", "export", "--db", p(&dir.join("acme.sqlite")), "--out", p(&out)])
        .output()
        .expect("run");
    assert!(o.status.success(), "export: {}{}", stdout(&o), stderr(&o));
    std::fs::read_to_string(out).expect("export")
}

fn order_id(order_url: &str) -> String {
    order_url.rsplit('/').next().expect("id").to_string()
}

/// The final write fails after the signature: the certificate is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_after_signing_keeps_the_certificate_and_completes_the_order() {
    let host = host();
    let dir = tempfile::tempdir().expect("dir");
    let (http01, tokens, responder_task) = responder().await;
    let ports = (free_port(), http01);
    let mut server = serve(&host, dir.path(), "faulty", ports, &[("KEYRITE_FAIL_AT", "issuance:store-certificate")]);
    let c = client(&host, &server);
    let a = c.new_account(Key::es256()).await;
    let (order_url, order) = c.ready_order(&a, &tokens, &[NAME]).await;
    let r = try_finalize(&c, dir.path(), &a, &order).await.expect("an answer");
    r.assert_problem("serverInternal", 500);

    // Before anything completes it: the signed certificate is in the store,
    // beside the serial reserved for it before signing.
    let store = SqliteStore::open(&dir.path().join("acme.sqlite")).expect("open the store beside the server");
    let pending = store.stale_issuances(i64::MAX).expect("issuances");
    let id = order_id(&order_url);
    let stored = pending.iter().find(|s| s.issuance.order_id.as_deref() == Some(&id)).cloned().expect("reserved");
    let (issuance, der) = (stored.issuance, stored.certificate_der);
    assert_eq!(issuance.state, IssuanceState::Pending);
    let signed = der.expect("the signed certificate is kept beside its serial");
    let summary = keyrite::profile::certificate_summary(&signed).expect("a certificate");
    assert_eq!(summary.serial_hex, issuance.serial_hex);
    assert_eq!(store.order(&id).expect("order").expect("exists").status, OrderStatus::Processing);

    // Completed once its deadline has passed: the order turns valid with
    // that very certificate (not a second signature).
    let done = poll_order(&c, &a, &order_url, Duration::from_secs(30), |o| o["status"] != "processing").await;
    assert_eq!(done["status"], "valid", "{done}");
    assert_eq!(download(&c, &a, &order_url).await, signed);
    let after = store.issuance(&issuance.serial_hex).expect("issuance").expect("kept");
    assert_eq!(after.issuance.state, IssuanceState::Issued);
    server.stop();
    responder_task.abort();

    let log = export(dir.path(), "faulty.jsonl");
    let line = log.lines().find(|l| l.contains("certificate-issued") && l.contains(&issuance.serial_hex));
    let entry: Value = serde_json::from_str(line.expect("the certificate is in the issuance log")).expect("json");
    assert_eq!(entry["details"]["completed_after_interruption"], true);
    assert_eq!(entry["outputs"][0]["sha256"], keyrite::words::sha256_hex(&signed));
}

/// The process dies between signing and storing; a restart resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_signing_fails_the_order_cleanly_at_restart_and_retires_the_serial() {
    let host = host();
    let dir = tempfile::tempdir().expect("dir");
    let (http01, tokens, responder_task) = responder().await;
    let ports = (free_port(), http01);
    let mut server = serve(&host, dir.path(), "crashing", ports, &[("KEYRITE_CRASH_AT", "issuance:after-sign")]);
    let c = client(&host, &server);
    let a = c.new_account(Key::es256()).await;
    let (order_url, order) = c.ready_order(&a, &tokens, &[NAME]).await;
    let answer = try_finalize(&c, dir.path(), &a, &order).await;
    assert!(answer.is_err(), "the server answered instead of crashing: {:?}", answer.map(|r| r.json()));
    let status = server.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "the crash point aborts: {status}");
    assert!(server.log().contains("crash point issuance:after-sign"), "{}", server.log());

    // Left behind: the order processing, its serial reserved before the
    // signature, and no certificate stored.
    let id = order_id(&order_url);
    let (serial, order_state) = {
        let store = SqliteStore::open(&dir.path().join("acme.sqlite")).expect("store");
        let pending = store.stale_issuances(i64::MAX).expect("issuances");
        let stored = pending.into_iter().find(|s| s.issuance.order_id.as_deref() == Some(&id)).expect("reserved");
        assert!(stored.certificate_der.is_none(), "nothing was stored after the signature");
        (stored.issuance.serial_hex, store.order(&id).expect("order").expect("exists").status)
    };
    assert_eq!(order_state, OrderStatus::Processing);

    // Restart, without the crash point.
    let started = Instant::now();
    let mut server = serve(&host, dir.path(), "restarted", ports, &[]);
    let c = client(&host, &server);
    let done = poll_order(&c, &a, &order_url, Duration::from_secs(30), |o| o["status"] != "processing").await;
    eprintln!("interrupted issuance resolved {:?} after the restart", started.elapsed());
    assert_eq!(done["status"], "invalid", "{done}");
    assert_eq!(done["error"]["type"], "urn:ietf:params:acme:error:serverInternal");
    let detail = done["error"]["detail"].as_str().expect("detail");
    assert!(detail.contains(&serial) && detail.contains("retired"), "{detail}");
    {
        let store = SqliteStore::open(&dir.path().join("acme.sqlite")).expect("store");
        let stored = store.issuance(&serial).expect("issuance").expect("the serial is never forgotten");
        assert_eq!(stored.issuance.state, IssuanceState::Abandoned);
        let aid = a.kid.rsplit('/').next().expect("account id").to_string();
        for o in store.orders_of(&aid).expect("orders") {
            let o = store.order(&o).expect("order").expect("exists");
            assert_ne!(o.status, OrderStatus::Processing, "order {} stays processing", o.id);
        }
    }

    // The server issues again, with a new serial.
    let (order_url, order) = c.ready_order(&a, &tokens, &[NAME]).await;
    assert_eq!(finalize_with_csr(&c, dir.path(), &a, &order, &[NAME]).await.status, 200);
    let leaf = download(&c, &a, &order_url).await;
    let new_serial = keyrite::profile::certificate_summary(&leaf).expect("leaf").serial_hex;
    assert_ne!(new_serial, serial);
    server.stop();
    responder_task.abort();

    // The log tells the auditor the retired serial may have been signed.
    let log = export(dir.path(), "crashed.jsonl");
    let line = log.lines().find(|l| l.contains("issuance-abandoned") && l.contains(&serial));
    let entry: Value = serde_json::from_str(line.expect("the retired serial is in the issuance log")).expect("json");
    assert_eq!(entry["details"]["order"], id.as_str());
    assert!(log.contains(&new_serial));
    let ok = keyrite()
        .args(["audit", "verify", p(&dir.path().join("crashed.jsonl")), "--allow-open"])
        .args(["--audit-key-sha256", &host.audit_key_sha256()])
        .output()
        .expect("run");
    assert!(ok.status.success(), "audit verify: {}{}", stdout(&ok), stderr(&ok));
}
