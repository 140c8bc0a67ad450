//! Real ACME clients (certbot and lego, from Debian) against a real
//! `keyrite acme-serve` child process on loopback over HTTPS, with its issuing
//! key in a SoftHSM token put there by the binary (`intermediate request`,
//! signed with the library as the offline root would, `intermediate
//! install`). Names resolve through a tiny authoritative DNS server in the
//! test (hickory's message codec over UDP) that answers A 127.0.0.1 for
//! everything under `acme.test`.
//!
//! Every issued chain must pass `openssl verify` against the root, and an EC
//! leaf must have Key Usage exactly "Digital Signature". A missing client
//! fails the test with the package to install; nothing is skipped.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{keyrite, openssl, require_tool, stderr, stdout, SoftHsm};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::profile::{issue, IssueRequest, Issued, IssuerRef, Profile};
use keyrite::transfer::csr::parse_csr;
use keyrite::transfer::{BundleKind, BundleWriter};
use time::OffsetDateTime;

const PIN_VAR: &str = "KEYRITE_TEST_ACME_PIN";
const PIN: &str = "acme-user-pin-2718";

/// The shipped intermediate template constrains names to example.com; the
/// clients ask for `acme.test` and 127.0.0.1, so the root signs with this.
const TEST_INTERMEDIATE: &str = r#"
kind = "intermediate-ca"
validity = "30d"
max_validity = "2922d"
key_usage = ["digital-signature", "key-cert-sign", "crl-sign"]
path_len = 0
extended_key_usage = ["server-auth", "client-auth"]
allowed_key_algorithms = ["ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096"]
[subject]
common_name = "keyrite ACME Clients Test Issuing CA"
organization = "keyrite Test"
"#;

fn template(name: &str) -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name)).expect("template")
}

fn serial() -> Vec<u8> {
    let mut s = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut s).expect("rng");
    s
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A free loopback TCP port: bound to port 0 and released. A child process
/// cannot be handed a listening socket, so this is the best there is; the
/// window between release and reuse is tiny on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

// ------------------------------------------------------------------ the CA

/// A SoftHSM token holding the intermediate key, the issuer directory the
/// binary installed, and the root that signed it.
struct Ca {
    hsm: SoftHsm,
    work: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        require_tool("openssl", "openssl");
        let hsm = SoftHsm::new();
        hsm.init_token("acme-hsm", "acme-so-pin-1414", PIN);
        let work = tempfile::tempdir().expect("work");
        let env = format!(
            "output_dir = \"issuer\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"acme-hsm\"\npin = {{ env = \"{PIN_VAR}\" }}\n",
            hsm.module.display()
        );
        std::fs::write(work.path().join("env.toml"), env).expect("env");
        let ca = Ca { hsm, work };

        let out = ca.run(&[
            "intermediate",
            "request",
            "--env",
            "env.toml",
            "--out",
            "usb-request",
            "--label",
            "acme-e1",
            "--subject-cn",
            "keyrite ACME Clients Test Issuing CA",
            "--subject-o",
            "keyrite Test",
            "--requester",
            "ops@acme-host",
        ]);
        assert!(out.status.success(), "intermediate request: {}{}", stdout(&out), stderr(&out));

        // The offline side, with the library.
        let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("root key");
        let root_t = template("root-ca.toml");
        let nb = OffsetDateTime::now_utc().replace_nanosecond(0).expect("whole second") - time::Duration::hours(1);
        let root = issue(
            &IssueRequest {
                profile: &root_t,
                subject: None,
                subject_spki: root_key.spki_der(),
                sans: vec![],
                serial: serial(),
                not_before: nb,
                not_after: root_t.not_after_for(nb),
                issuer: IssuerRef::SelfSigned,
            },
            &root_key,
        )
        .expect("root");
        let csr = parse_csr(&std::fs::read(ca.path("usb-request/csr.pem")).expect("csr")).expect("parse csr");
        let int_t = Profile::from_toml_str(TEST_INTERMEDIATE, "test-intermediate").expect("test template");
        csr.check_against(&int_t).expect("csr fits");
        let int: Issued = issue(
            &IssueRequest {
                profile: &int_t,
                subject: Some(csr.subject().clone()),
                subject_spki: csr.spki_der(),
                sans: vec![],
                serial: serial(),
                not_before: nb,
                not_after: int_t.not_after_for(nb),
                issuer: IssuerRef::Certificate { der: &root.der },
            },
            &root_key,
        )
        .expect("intermediate");
        let mut w = BundleWriter::create(&ca.path("usb-response")).expect("bundle");
        w.add("intermediate.pem", int.pem.as_bytes()).expect("int");
        w.add("chain.pem", format!("{}{}", int.pem, root.pem).as_bytes()).expect("chain");
        w.add("root.pem", root.pem.as_bytes()).expect("root");
        w.finish(BundleKind::IntermediateResponse, "acme clients test root", Default::default()).expect("finish");

        let out = ca.run(&[
            "intermediate",
            "install",
            "usb-response",
            "--env",
            "env.toml",
            "--root-sha256",
            &root.fingerprint.hex,
            "--out",
            "issuer",
        ]);
        assert!(out.status.success(), "intermediate install: {}{}", stdout(&out), stderr(&out));
        ca
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn run(&self, args: &[&str]) -> Output {
        keyrite()
            .current_dir(self.work.path())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env(PIN_VAR, PIN)
            .args(args)
            .output()
            .expect("run keyrite")
    }

    fn root_pem(&self) -> PathBuf {
        self.path("issuer/root.pem")
    }

    fn intermediate_pem(&self) -> PathBuf {
        self.path("issuer/intermediate.pem")
    }
}

// ------------------------------------------------------------------ DNS

/// An authoritative DNS server on 127.0.0.1 (UDP): A 127.0.0.1 for
/// `acme.test` and every name under it, TXT from `txt` (for dns-01), an
/// empty NOERROR for other types under `acme.test`, REFUSED elsewhere.
struct Dns {
    addr: SocketAddr,
    /// TXT answers for dns-01: one file per owner name (no trailing dot),
    /// one value a line, written by a client's hook script.
    txt_dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    fn start() -> Dns {
        use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
        use hickory_resolver::proto::rr::rdata::{A, TXT};
        use hickory_resolver::proto::rr::{RData, Record, RecordType};

        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let addr = socket.local_addr().expect("addr");
        let txt_dir = tempfile::tempdir().expect("txt dir");
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (txt_dir.path().to_path_buf(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else { continue };
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut resp = query.clone();
                resp.metadata.message_type = MessageType::Response;
                resp.metadata.authoritative = true;
                resp.metadata.recursion_available = false;
                resp.answers.clear();
                resp.authorities.clear();
                resp.additionals.clear();
                resp.metadata.response_code = ResponseCode::NoError;
                for q in &query.queries {
                    let name = q.name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
                    if name != "acme.test" && !name.ends_with(".acme.test") {
                        resp.metadata.response_code = ResponseCode::Refused;
                        continue;
                    }
                    match q.query_type {
                        RecordType::A => {
                            resp.answers.push(Record::from_rdata(q.name.clone(), 5, RData::A(A(Ipv4Addr::LOCALHOST))))
                        }
                        RecordType::TXT => {
                            let values = std::fs::read_to_string(t.join(&name)).unwrap_or_default();
                            for v in values.lines().map(str::to_string) {
                                resp.answers.push(Record::from_rdata(q.name.clone(), 5, RData::TXT(TXT::new(vec![v]))));
                            }
                        }
                        _ => {}
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
        });
        Dns { addr, txt_dir, stop, thread: Some(thread) }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------ the server

/// `keyrite acme-serve` as a child process; killed on drop.
struct Server {
    child: Child,
    log: PathBuf,
    directory: String,
    tls_ca: PathBuf,
    http01: u16,
    tlsalpn01: u16,
    dns: Dns,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(ca: &Ca) -> Server {
        let dns = Dns::start();
        let dir = tempfile::tempdir().expect("server dir");
        let (port, http01, tlsalpn01) = (free_port(), free_port(), free_port());
        let ready = dir.path().join("ready.json");
        let log = dir.path().join("acme-serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_keyrite"))
            .current_dir(ca.work.path())
            .env("SOFTHSM2_CONF", &ca.hsm.conf)
            .env(PIN_VAR, PIN)
            .env("KEYRITE_LOG", "info,keyrite=debug")
            .args(["acme-serve", "--issuer", "issuer/issuer.toml", "--env", "env.toml"])
            .args(["--db", p(&dir.path().join("acme.sqlite"))])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--tls-name", "127.0.0.1"])
            .args(["--http01-port", &http01.to_string(), "--tlsalpn01-port", &tlsalpn01.to_string()])
            .args(["--dns", &dns.addr.to_string()])
            .args(["--allow-dns-suffix", "acme.test", "--allow-ip-range", "127.0.0.0/8"])
            .args(["--lifetime", "24h", "--max-identifiers", "10"])
            .args(["--ready-file", p(&ready)])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn keyrite acme-serve");
        let mut server =
            Server { child, log, directory: String::new(), tls_ca: PathBuf::new(), http01, tlsalpn01, dns, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    server.directory = v["directory"].as_str().expect("directory").to_string();
                    server.tls_ca = PathBuf::from(v["tls_ca"].as_str().expect("tls_ca"));
                    assert_eq!(v["listen"].as_str(), Some(format!("127.0.0.1:{port}").as_str()));
                    break;
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("acme-serve exited with {status} before it was ready:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "acme-serve not ready after 20 s (ready file: {:?}):\n{}",
                std::fs::read_to_string(&ready),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client's working directory.
    fn client_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).expect("client dir");
        d
    }

    /// Stops the server with SIGTERM and expects a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let k = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(k.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "acme-serve exit {status}:\n{}", self.log());
                break;
            }
            assert!(Instant::now() < deadline, "acme-serve did not stop on SIGTERM:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log();
        assert!(!log.contains(PIN), "the PIN leaked into the log");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a client, failing with its output and the server log.
fn run_client(server: &Server, what: &str, cmd: &mut Command) -> Output {
    let started = Instant::now();
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}\n--- acme-serve log\n{}",
        started.elapsed(),
        stdout(&out),
        stderr(&out),
        server.log()
    );
    eprintln!("{what}: ok in {:.1?}", started.elapsed());
    out
}

// ------------------------------------------------------------------ checks

/// The first certificate of a PEM file, written alone to `out`.
fn first_cert(pem_file: &Path, out: &Path) -> PathBuf {
    let text = std::fs::read_to_string(pem_file).expect("pem");
    let end = "-----END CERTIFICATE-----";
    let i = text.find(end).expect("a certificate") + end.len();
    std::fs::write(out, format!("{}\n", &text[..i].trim_start())).expect("write leaf");
    out.to_path_buf()
}

/// openssl accepts the chain, and the leaf says what a TLS server leaf must.
fn check_leaf(ca: &Ca, leaf: &Path, names: &[&str]) {
    let v = openssl(&["verify", "-CAfile", p(&ca.root_pem()), "-untrusted", p(&ca.intermediate_pem()), p(leaf)]);
    assert!(v.status.success(), "openssl verify: {}{}", stdout(&v), stderr(&v));
    let text = openssl(&["x509", "-in", p(leaf), "-noout", "-text"]);
    let text = stdout(&text);
    for n in names {
        let want = if n.parse::<std::net::IpAddr>().is_ok() { format!("IP Address:{n}") } else { format!("DNS:{n}") };
        assert!(text.contains(&want), "leaf lacks {want}:\n{text}");
    }
    if text.contains("id-ecPublicKey") {
        let ku = stdout(&openssl(&["x509", "-in", p(leaf), "-noout", "-ext", "keyUsage"]));
        let lines: Vec<&str> = ku.lines().map(str::trim).collect();
        assert_eq!(lines.get(1).copied(), Some("Digital Signature"), "EC leaf key usage:\n{ku}");
        assert_eq!(lines.len(), 2, "EC leaf key usage:\n{ku}");
    }
}

fn serial_of(cert: &Path) -> String {
    stdout(&openssl(&["x509", "-in", p(cert), "-noout", "-serial"])).trim().to_string()
}

// ------------------------------------------------------------------ certbot

fn certbot(server: &Server, dir: &Path) -> Command {
    let mut c = Command::new("certbot");
    c.env("REQUESTS_CA_BUNDLE", &server.tls_ca)
        .args(["--config-dir", p(&dir.join("config"))])
        .args(["--work-dir", p(&dir.join("work"))])
        .args(["--logs-dir", p(&dir.join("logs"))])
        .args(["--server", &server.directory])
        .args(["--non-interactive", "--no-random-sleep-on-renew"]);
    c
}

#[test]
fn certbot_http01_issue_renew_revoke() {
    require_tool("certbot", "certbot");
    let ca = Ca::new();
    let server = Server::start(&ca);
    let dir = server.client_dir("certbot");
    let name = "certbot.acme.test";
    run_client(
        &server,
        "certbot certonly",
        certbot(&server, &dir)
            .args(["certonly", "--standalone", "--http-01-port", &server.http01.to_string()])
            .args(["--http-01-address", "127.0.0.1"])
            .args(["--agree-tos", "-m", "ops@acme.test", "-d", name]),
    );
    let live = dir.join("config/live").join(name);
    check_leaf(&ca, &live.join("cert.pem"), &[name]);
    let first = serial_of(&live.join("cert.pem"));

    run_client(
        &server,
        "certbot renew --force-renewal",
        certbot(&server, &dir).args(["renew", "--force-renewal"]).args([
            "--http-01-port",
            &server.http01.to_string(),
            "--http-01-address",
            "127.0.0.1",
        ]),
    );
    check_leaf(&ca, &live.join("cert.pem"), &[name]);
    assert_ne!(serial_of(&live.join("cert.pem")), first, "renewal issued a new certificate");

    run_client(
        &server,
        "certbot revoke",
        certbot(&server, &dir).args(["revoke", "--cert-path", p(&live.join("cert.pem"))]).args([
            "--reason",
            "superseded",
            "--no-delete-after-revoke",
        ]),
    );
    server.stop();
}

// ------------------------------------------------------------------ lego

fn lego(server: &Server, dir: &Path, domains: &[&str]) -> Command {
    let mut c = Command::new("lego");
    c.env("LEGO_CA_CERTIFICATES", &server.tls_ca).args([
        "--server",
        &server.directory,
        "--email",
        "ops@acme.test",
        "--path",
        p(dir),
        "--accept-tos",
    ]);
    for d in domains {
        c.args(["--domains", d]);
    }
    c
}

/// lego names its files after the first domain.
fn lego_cert(dir: &Path, name: &str) -> PathBuf {
    dir.join("certificates").join(format!("{name}.crt"))
}

fn lego_round_trip(challenge: &str, name: &str) {
    require_tool("lego", "lego");
    let ca = Ca::new();
    let server = Server::start(&ca);
    let dir = server.client_dir("lego");
    let challenge_args: Vec<String> = match challenge {
        "http-01" => vec!["--http".into(), "--http.port".into(), format!("127.0.0.1:{}", server.http01)],
        "tls-alpn-01" => vec!["--tls".into(), "--tls.port".into(), format!("127.0.0.1:{}", server.tlsalpn01)],
        other => panic!("no such challenge {other}"),
    };
    run_client(
        &server,
        &format!("lego run ({challenge}, {name})"),
        lego(&server, &dir, &[name]).args(&challenge_args).arg("run"),
    );
    let leaf = first_cert(&lego_cert(&dir, name), &dir.join("leaf1.pem"));
    check_leaf(&ca, &leaf, &[name]);

    run_client(
        &server,
        &format!("lego renew ({challenge})"),
        lego(&server, &dir, &[name]).args(&challenge_args).args(["renew", "--days", "9999", "--no-random-sleep"]),
    );
    let renewed = first_cert(&lego_cert(&dir, name), &dir.join("leaf2.pem"));
    check_leaf(&ca, &renewed, &[name]);
    assert_ne!(serial_of(&leaf), serial_of(&renewed), "renewal issued a new certificate");

    run_client(&server, &format!("lego revoke ({challenge})"), lego(&server, &dir, &[name]).arg("revoke"));
    server.stop();
}

#[test]
fn lego_http01_issue_renew_revoke() {
    lego_round_trip("http-01", "lego-http.acme.test");
}

#[test]
fn lego_tlsalpn01_issue_renew_revoke() {
    lego_round_trip("tls-alpn-01", "lego-alpn.acme.test");
}

/// RFC 8738: an IP address is ordered as an "ip" identifier. lego 4.9.1
/// (Debian bookworm) orders it as a "dns" identifier, which the server must
/// refuse with a problem that says what to do; a lego that orders "ip"
/// must get a certificate with the IP address SAN.
#[test]
fn lego_http01_ip_identifier() {
    require_tool("lego", "lego");
    let ca = Ca::new();
    let server = Server::start(&ca);
    let dir = server.client_dir("lego-ip");
    let out = lego(&server, &dir, &["127.0.0.1"])
        .args(["--http", "--http.port", &format!("127.0.0.1:{}", server.http01), "run"])
        .output()
        .expect("run lego");
    if out.status.success() {
        let leaf = first_cert(&lego_cert(&dir, "127.0.0.1"), &dir.join("leaf.pem"));
        check_leaf(&ca, &leaf, &["127.0.0.1"]);
    } else {
        let err = stderr(&out);
        assert!(
            err.contains("urn:ietf:params:acme:error:rejectedIdentifier")
                && err.contains("is an IP address; order it as an \"ip\" identifier"),
            "lego failed for another reason:\n{err}\n--- acme-serve log\n{}",
            server.log()
        );
        eprintln!("lego orders IP addresses as dns identifiers; refused as RFC 8738 requires");
    }
    server.stop();
}

/// lego dns-01 through its `exec` provider: the hook script writes the TXT
/// value where the test's authoritative server answers from, and lego asks
/// that server (and only it) before telling acme-serve to validate.
#[test]
fn lego_dns01_exec_issue() {
    use std::os::unix::fs::PermissionsExt;
    require_tool("lego", "lego");
    let ca = Ca::new();
    let server = Server::start(&ca);
    let dir = server.client_dir("lego-dns");
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\nname=$(printf %s \"$2\" | sed 's/[.]$//')\ncase \"$1\" in\n  present) printf '%s\\n' \"$3\" >> \"{dir}/$name\" ;;\n  cleanup) rm -f \"{dir}/$name\" ;;\nesac\n",
            dir = server.dns.txt_dir.path().display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let name = "lego-dns.acme.test";
    run_client(
        &server,
        "lego run (dns-01 via exec)",
        lego(&server, &dir, &[name])
            .env("EXEC_PATH", &hook)
            .env("EXEC_POLLING_INTERVAL", "1")
            .env("EXEC_PROPAGATION_TIMEOUT", "30")
            .args(["--dns", "exec", "--dns.resolvers", &server.dns.addr.to_string(), "--dns.disable-cp"])
            .arg("run"),
    );
    let leaf = first_cert(&lego_cert(&dir, name), &dir.join("leaf.pem"));
    check_leaf(&ca, &leaf, &[name]);
    server.stop();
}

/// acme-serve refuses to start, saying why, and never echoes the PIN.
#[test]
fn acme_serve_refuses_to_start_with_reasons() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().expect("dir");
    let serve = |pin: &str, extra: &[&str]| {
        let out = keyrite()
            .current_dir(ca.work.path())
            .env("SOFTHSM2_CONF", &ca.hsm.conf)
            .env(PIN_VAR, pin)
            .args(["acme-serve", "--issuer", "issuer/issuer.toml", "--env", "env.toml"])
            .args(["--db", p(&dir.path().join("acme.sqlite"))])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(extra)
            .output()
            .expect("run acme-serve");
        assert!(!out.status.success(), "acme-serve started: {}", stdout(&out));
        let err = stderr(&out);
        assert!(!err.contains(PIN) && !err.contains("wrong-pin-0000"), "a PIN leaked:\n{err}");
        err
    };
    let err = serve("wrong-pin-0000", &["--allow-dns-suffix", "acme.test"]);
    assert!(err.contains("CKR_PIN_INCORRECT") || err.to_lowercase().contains("pin"), "{err}");
    let err = serve(PIN, &[]);
    assert!(err.contains("nothing may be issued"), "{err}");
    // A certificate file replaced after install is caught by the start-up check.
    std::fs::write(ca.path("issuer/intermediate.pem"), std::fs::read(ca.root_pem()).expect("root")).expect("swap");
    let err = serve(PIN, &["--allow-dns-suffix", "acme.test"]);
    assert!(err.contains("issuer refused"), "{err}");
}
