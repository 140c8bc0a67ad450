//! `keyrite rehearse --serve`: the whole rehearsal, then acme-serve keeps
//! running as a sandbox, announced in rehearsal.json as soon as it is ready;
//! a client started afterwards, from another process, with its http-01
//! responder on the port the sandbox was told, gets a certificate that
//! openssl accepts under the rehearsal's root; SIGTERM stops it cleanly.
//! (certbot and lego against acme-serve are in `acme_clients.rs`.)

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kills the sandbox if the test fails before stopping it.
struct Sandbox(Child);

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn wait_for_json(path: &Path, sandbox: &mut Sandbox) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(bytes) = std::fs::read(path) {
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                return json;
            }
        }
        if let Ok(Some(status)) = sandbox.0.try_wait() {
            panic!("the sandbox exited early with {status}");
        }
        assert!(Instant::now() < deadline, "rehearsal.json did not appear in time");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_sandbox_serves_an_independent_client_until_it_is_stopped() {
    softhsm_module();
    let dir = tempfile::tempdir().expect("tempdir");
    let rehearsal = dir.path().join("r");
    let http01 = free_port();
    let mut sandbox = Sandbox(
        keyrite()
            .args(["rehearse", "--serve", "--dir"])
            .arg(&rehearsal)
            .args(["--http01-port", &http01.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rehearse --serve"),
    );
    let json = wait_for_json(&rehearsal.join("rehearsal.json"), &mut sandbox);
    let directory = json["acme_directory"].as_str().expect("acme_directory").to_string();
    let tls_ca = json["acme_tls_ca"].as_str().expect("acme_tls_ca").to_string();
    assert!(directory.starts_with("https://127.0.0.1:"), "{directory}");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let chain = runtime.block_on(async {
        let responder = keyrite::client::Http01Responder::start(([127, 0, 0, 1], http01).into())
            .await
            .expect("responder on the sandbox's http-01 port");
        let issued = issue(&directory, &tls_ca, &responder).await;
        responder.stop();
        issued
    });

    let leaf = dir.path().join("leaf.pem");
    std::fs::write(&leaf, &chain).expect("write leaf");
    let v = openssl(&[
        "verify",
        "-CAfile",
        json["root_cert"].as_str().expect("root"),
        "-untrusted",
        json["intermediate_cert"].as_str().expect("intermediate"),
        leaf.to_str().expect("utf8"),
    ]);
    assert!(v.status.success(), "openssl verify: {}{}", stdout(&v), stderr(&v));

    // SIGTERM: the sandbox shuts down cleanly.
    let pid = sandbox.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = sandbox.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the sandbox did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the sandbox exits 0 after SIGTERM, got {status}");
}

/// One issuance for 127.0.0.1 (an RFC 8738 "ip" identifier).
async fn issue(directory: &str, tls_ca: &str, responder: &keyrite::client::Http01Responder) -> String {
    let issued = keyrite::client::issue_one(directory, Path::new(tls_ca), &["127.0.0.1".to_string()], responder)
        .await
        .expect("certificate from the sandbox");
    assert!(issued.chain_pem.matches("BEGIN CERTIFICATE").count() >= 2, "{}", issued.chain_pem);
    issued.chain_pem
}
