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

mod acme_support;
mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use acme_support::{free_port, kill_if_running, terminate, AcmeServeProcess, LoopbackDns, TEST_INTERMEDIATE};
use common::{keyrite, openssl, p, require_tool, stderr, stdout, IntermediateHost};
use keyrite::profile::Profile;

const PIN_VAR: &str = "KEYRITE_TEST_ACME_PIN";
const PIN: &str = "acme-user-pin-2718";

// ------------------------------------------------------------------ the CA

/// A SoftHSM token holding the intermediate key and its audit key, the
/// issuer directory the binary installed, and the root that signed it.
type Ca = IntermediateHost;

fn new_ca() -> Ca {
    require_tool("openssl", "openssl");
    let template = Profile::from_toml_str(TEST_INTERMEDIATE, "test-intermediate").expect("test template");
    IntermediateHost::installed("acme-hsm", PIN_VAR, PIN, "acme-e1", "keyrite ACME Clients Test Issuing CA", &template)
        .0
}

// ------------------------------------------------------------------ DNS

/// The shared loopback DNS server (`acme_support::LoopbackDns`) for
/// `acme.test`, with TXT answers for dns-01 from `txt_dir`.
struct Dns {
    addr: SocketAddr,
    // Declared first so the server stops before its TXT directory goes.
    _server: LoopbackDns,
    /// TXT answers for dns-01: one file per owner name (no trailing dot),
    /// one value a line, written by a client's hook script.
    txt_dir: tempfile::TempDir,
}

impl Dns {
    fn start() -> Dns {
        let txt_dir = tempfile::tempdir().expect("txt dir");
        let server = LoopbackDns::start_with_txt("acme.test", Some(txt_dir.path().to_path_buf()));
        Dns { addr: server.addr, txt_dir, _server: server }
    }
}

// ------------------------------------------------------------------ the server

/// `keyrite acme-serve` as a child process (killed on drop), with the DNS
/// server it resolves through and the ports clients answer on.
struct Server {
    process: AcmeServeProcess,
    directory: String,
    tls_ca: PathBuf,
    http01: u16,
    tlsalpn01: u16,
    dns: Dns,
    dir: tempfile::TempDir,
}

/// What a test may change about how acme-serve is started.
#[derive(Default)]
struct ServerOpts {
    /// The resolver acme-serve validates through; the in-test server when `None`.
    dns: Option<SocketAddr>,
    /// Where a client answers http-01 (a free port when `None`).
    http01: Option<u16>,
    /// Where a client answers tls-alpn-01 (a free port when `None`).
    tlsalpn01: Option<u16>,
    /// Further acme-serve arguments.
    extra: Vec<String>,
}

impl Server {
    fn start(ca: &Ca) -> Server {
        Server::start_with(ca, ServerOpts::default())
    }

    fn start_with(ca: &Ca, opts: ServerOpts) -> Server {
        let dns = Dns::start();
        let dir = tempfile::tempdir().expect("server dir");
        let port = free_port();
        let http01 = opts.http01.unwrap_or_else(free_port);
        let tlsalpn01 = opts.tlsalpn01.unwrap_or_else(free_port);
        let resolver = opts.dns.unwrap_or(dns.addr);
        let ready = dir.path().join("ready.json");
        let log = dir.path().join("acme-serve.log");
        let mut cmd = ca.keyrite();
        cmd.env("KEYRITE_LOG", "info,keyrite=debug")
            .args(["acme-serve", "--issuer", "issuer/issuer.toml", "--env", "env.toml"])
            .args(["--db", p(&dir.path().join("acme.sqlite"))])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--tls-name", "127.0.0.1"])
            .args(["--http01-port", &http01.to_string(), "--tlsalpn01-port", &tlsalpn01.to_string()])
            .args(["--dns", &resolver.to_string()])
            .args(["--allow-dns-suffix", "acme.test", "--allow-ip-range", "127.0.0.0/8"])
            .args(["--lifetime", "24h", "--max-identifiers", "10"])
            .args(["--ready-file", p(&ready)])
            .args(&opts.extra);
        let process = AcmeServeProcess::spawn(cmd, &ready, &log).unwrap_or_else(|log| panic!("{log}"));
        assert_eq!(process.listen.to_string(), format!("127.0.0.1:{port}"));
        let (directory, tls_ca) = (process.directory.clone(), process.tls_ca.clone());
        Server { process, directory, tls_ca, http01, tlsalpn01, dns, dir }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    /// A client's working directory.
    fn client_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).expect("client dir");
        d
    }

    /// Stops the server with SIGTERM and expects a clean exit.
    fn stop(mut self) {
        self.process.stop();
        let log = self.log();
        assert!(!log.contains(PIN), "the PIN leaked into the log");
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
    certbot_from(Path::new("certbot"), server, dir)
}

fn certbot_from(program: &Path, server: &Server, dir: &Path) -> Command {
    let mut c = Command::new(program);
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
    let ca = new_ca();
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

/// certbot from PyPI (4.1 and later read ARI), in the virtualenv `.ci/run`
/// makes; `KEYRITE_CERTBOT_ARI` names another certbot binary.
fn certbot_ari() -> PathBuf {
    let path = std::env::var_os("KEYRITE_CERTBOT_ARI").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/keyrite/certbot-ari/bin/certbot")
    });
    assert!(
        path.is_file(),
        "{} is missing: python3 -m venv ~/.cache/keyrite/certbot-ari && \
         ~/.cache/keyrite/certbot-ari/bin/pip install certbot==5.1.0 (.ci/run does this)",
        path.display()
    );
    path
}

/// certbot reads the renewal window (RFC 9773): a fresh certificate is not
/// due although it expires within certbot's own margin, and once it is
/// revoked the window says "now" and `certbot renew` replaces it.
#[test]
fn certbot_from_pypi_renews_when_ari_says_so() {
    let bin = certbot_ari();
    let ca = new_ca();
    let server = Server::start(&ca);
    let dir = server.client_dir("certbot-ari");
    let name = "ari.acme.test";
    let http =
        ["--http-01-port".to_string(), server.http01.to_string(), "--http-01-address".into(), "127.0.0.1".into()];
    run_client(
        &server,
        "certbot (PyPI) certonly",
        certbot_from(&bin, &server, &dir).args(["certonly", "--standalone"]).args(&http).args([
            "--agree-tos",
            "-m",
            "ops@acme.test",
            "-d",
            name,
        ]),
    );
    let live = dir.join("config/live").join(name);
    check_leaf(&ca, &live.join("cert.pem"), &[name]);
    let first = serial_of(&live.join("cert.pem"));

    // certbot's own rule would renew a 24 h certificate at once (30 days
    // before expiry); an hour leaves the decision to ARI.
    let conf = dir.join("config/renewal").join(format!("{name}.conf"));
    let text = std::fs::read_to_string(&conf).expect("renewal conf");
    let without_margin: String =
        text.lines().filter(|l| !l.trim_start().starts_with("renew_before_expiry")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&conf, format!("renew_before_expiry = 1 hour\n{without_margin}")).expect("conf");

    let out = run_client(
        &server,
        "certbot (PyPI) renew, not due",
        certbot_from(&bin, &server, &dir).arg("renew").args(&http),
    );
    assert_eq!(serial_of(&live.join("cert.pem")), first, "renewed before its window:\n{}", stdout(&out));
    let after = std::fs::read_to_string(&conf).expect("conf");
    assert!(after.contains("[acme_renewal_info]"), "certbot did not ask renewalInfo:\n{after}");

    run_client(
        &server,
        "certbot (PyPI) revoke",
        certbot_from(&bin, &server, &dir).args(["revoke", "--cert-path", p(&live.join("cert.pem"))]).args([
            "--reason",
            "keycompromise",
            "--no-delete-after-revoke",
        ]),
    );
    // certbot waits out the Retry-After (6 h) it stored before asking
    // again; the test skips ahead by forgetting it.
    let text = std::fs::read_to_string(&conf).expect("conf");
    let cut = text.find("[acme_renewal_info]").expect("section");
    let rest = &text[cut + "[acme_renewal_info]".len()..];
    let next_section = rest.find("\n[").map_or(text.len(), |i| cut + "[acme_renewal_info]".len() + i + 1);
    std::fs::write(&conf, format!("{}{}", &text[..cut], &text[next_section..])).expect("conf");

    run_client(&server, "certbot (PyPI) renew, window now", certbot_from(&bin, &server, &dir).arg("renew").args(&http));
    check_leaf(&ca, &live.join("cert.pem"), &[name]);
    assert_ne!(serial_of(&live.join("cert.pem")), first, "ARI said renew now; certbot did not");
    server.stop();
}

// ------------------------------------------------------------------ External Account Binding

/// `keyrite acme eab create` on the server's database; returns (kid, hmac).
fn eab_create(server: &Server, audit: &Path, extra: &[&str]) -> (String, String) {
    let out = keyrite()
        .args(["acme", "eab", "create", "--db", p(&server.dir.path().join("acme.sqlite"))])
        .args(["--audit-log", p(audit), "--actor", "Alice"])
        .args(extra)
        .output()
        .expect("keyrite acme eab create");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (field("kid "), field("hmac "))
}

#[test]
fn lego_and_certbot_with_managed_eab() {
    require_tool("lego", "lego");
    require_tool("certbot", "certbot");
    let ca = new_ca();
    let server = Server::start_with(&ca, ServerOpts { extra: vec!["--require-eab".into()], ..ServerOpts::default() });
    let audit = server.dir.path().join("eab-audit.jsonl");
    let http = format!("127.0.0.1:{}", server.http01);

    // lego with a key limited to team-a.
    let (kid, mac) = eab_create(&server, &audit, &["--dns-suffix", "*.team-a.acme.test", "--note", "team A"]);
    let dir = server.client_dir("lego-eab");
    let name = "www.team-a.acme.test";
    run_client(
        &server,
        "lego run with EAB",
        lego(&server, &dir, &[name]).args([
            "--eab",
            "--kid",
            &kid,
            "--hmac",
            &mac,
            "--http",
            "--http.port",
            &http,
            "run",
        ]),
    );
    check_leaf(&ca, &first_cert(&lego_cert(&dir, name), &dir.join("leaf.pem")), &[name]);
    // The same account (lego reuses it) is refused team-b.
    let out = lego(&server, &dir, &["www.team-b.acme.test"])
        .args(["--eab", "--kid", &kid, "--hmac", &mac, "--http", "--http.port", &http, "run"])
        .output()
        .expect("lego");
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("rejectedIdentifier") && said.contains("team-b"), "{said}");

    // certbot with its own key.
    let (kid2, mac2) = eab_create(&server, &audit, &["--dns-suffix", "acme.test", "--max-lifetime", "24h"]);
    let cdir = server.client_dir("certbot-eab");
    let cname = "certbot-eab.acme.test";
    run_client(
        &server,
        "certbot certonly with EAB",
        certbot(&server, &cdir)
            .args(["certonly", "--standalone", "--http-01-port", &server.http01.to_string()])
            .args(["--http-01-address", "127.0.0.1", "--eab-kid", &kid2, "--eab-hmac-key", &mac2])
            .args(["--agree-tos", "-m", "ops@acme.test", "-d", cname]),
    );
    check_leaf(&ca, &cdir.join("config/live").join(cname).join("cert.pem"), &[cname]);

    // Without a binding, and with a revoked key: no account.
    let out = lego(&server, &server.client_dir("lego-none"), &["none.acme.test"])
        .args(["--http", "--http.port", &http, "run"])
        .output()
        .expect("lego");
    assert!(!out.status.success());
    // lego reads meta.externalAccountRequired and stops before asking.
    let said = format!("{}{}", stdout(&out), stderr(&out)).to_lowercase();
    assert!(said.contains("externalaccountrequired") || said.contains("external account"), "{said}");
    let (kid3, mac3) = eab_create(&server, &audit, &[]);
    let db = server.dir.path().join("acme.sqlite");
    let rv = keyrite()
        .args(["acme", "eab", "revoke", "--db", p(&db), "--audit-log", p(&audit), &kid3])
        .output()
        .expect("revoke");
    assert!(rv.status.success(), "{}", stderr(&rv));
    let out = lego(&server, &server.client_dir("lego-revoked"), &["revoked.acme.test"])
        .args(["--eab", "--kid", &kid3, "--hmac", &mac3, "--http", "--http.port", &http, "run"])
        .output()
        .expect("lego");
    assert!(!out.status.success());
    assert!(format!("{}{}", stdout(&out), stderr(&out)).contains("revoked"), "{}", stderr(&out));

    // list shows the three, none of their HMACs; the audit log verifies and
    // holds the kids but no HMAC.
    let list = keyrite().args(["acme", "eab", "list", "--db", p(&db)]).output().expect("list");
    let listed = stdout(&list);
    assert!(listed.contains(&kid) && listed.contains(&kid2) && listed.contains(&kid3), "{listed}");
    assert!(listed.lines().any(|l| l.contains(&kid3) && l.contains("revoked")), "{listed}");
    let log = std::fs::read_to_string(&audit).expect("audit log");
    for m in [&mac, &mac2, &mac3] {
        assert!(!listed.contains(m.as_str()) && !log.contains(m.as_str()), "an HMAC leaked");
        assert!(!server.log().contains(m.as_str()), "an HMAC leaked into the server log");
    }
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(log.contains("eab-key-created") && log.contains("eab-key-revoked") && log.contains(&kid));
    // The EAB log has no audit key or checkpoint yet: nothing can pin it,
    // so only its own consistency is checked, and asked for as such.
    let v = keyrite().args(["audit", "verify", "--allow-open", "--unpinned", p(&audit)]).output().expect("verify");
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
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
    let ca = new_ca();
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

/// The leaves' CRL: lego issues, the CRL fetched with curl from the URL in
/// the leaf's cRLDistributionPoints lets `openssl verify -crl_check` pass;
/// lego revokes, and the CRL fetched again makes it fail as revoked.
#[test]
fn lego_revocation_reaches_the_served_crl() {
    require_tool("lego", "lego");
    require_tool("curl", "curl");
    let ca = new_ca();
    let crl_port = free_port();
    let crl_url = format!("http://127.0.0.1:{crl_port}/issuing-e1.crl");
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/tls-leaf.toml"))
        .expect("leaf template");
    let leaf_template = ca.work.path().join("leaf-crl.toml");
    std::fs::write(&leaf_template, shipped.replace("http://crl.example.com/issuing-e1.crl", &crl_url))
        .expect("template");
    let server = Server::start_with(
        &ca,
        ServerOpts {
            extra: vec![
                "--leaf-template".into(),
                p(&leaf_template).into(),
                "--crl-listen".into(),
                format!("127.0.0.1:{crl_port}"),
            ],
            ..ServerOpts::default()
        },
    );
    let dir = server.client_dir("lego-crl");
    let name = "crl.acme.test";
    let http = ["--http".to_string(), "--http.port".into(), format!("127.0.0.1:{}", server.http01)];
    run_client(&server, "lego run (for the CRL)", lego(&server, &dir, &[name]).args(http).arg("run"));
    let leaf = first_cert(&lego_cert(&dir, name), &dir.join("leaf.pem"));
    let cdp = stdout(&openssl(&["x509", "-in", p(&leaf), "-noout", "-ext", "crlDistributionPoints"]));
    assert!(cdp.contains(&crl_url), "the leaf names the served CRL:\n{cdp}");

    let fetch = |out: &Path| {
        let c = Command::new("curl").args(["-sS", "--fail", "-o", p(out), &crl_url]).output().expect("curl");
        assert!(c.status.success(), "curl {crl_url}: {}\n{}", stderr(&c), server.log());
    };
    let verify = |crl: &Path| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            p(&ca.root_pem()),
            "-untrusted",
            p(&ca.intermediate_pem()),
            "-CRLfile",
            p(crl),
            p(&leaf),
        ])
    };
    let before = dir.join("before.crl");
    fetch(&before);
    let ok = verify(&before);
    assert!(ok.status.success(), "not yet revoked: {}{}", stdout(&ok), stderr(&ok));

    run_client(&server, "lego revoke (for the CRL)", lego(&server, &dir, &[name]).arg("revoke"));
    let after = dir.join("after.crl");
    fetch(&after);
    let refused = verify(&after);
    assert!(!refused.status.success(), "a revoked leaf must fail: {}", stdout(&refused));
    let why = format!("{}{}", stdout(&refused), stderr(&refused));
    assert!(why.contains("certificate revoked"), "{why}");
    // The CRL is the intermediate's, numbered upwards, scoped to the URL.
    let text = stdout(&openssl(&["crl", "-inform", "DER", "-in", p(&after), "-noout", "-text"]));
    assert!(text.contains(&crl_url), "issuingDistributionPoint names the URL:\n{text}");
    assert!(text.contains(&serial_of(&leaf).trim_start_matches("serial=").to_string()), "{text}");
    let number = |t: &str| {
        let i = t.find("X509v3 CRL Number:").expect("CRL number");
        t[i..].lines().nth(1).expect("value").trim().to_string()
    };
    let before_text = stdout(&openssl(&["crl", "-inform", "DER", "-in", p(&before), "-noout", "-text"]));
    assert!(
        number(&text).parse::<u64>().expect("number") > number(&before_text).parse::<u64>().expect("number"),
        "CRL numbers grow"
    );
    server.stop();
}

/// RFC 8738: an IP address is ordered as an "ip" identifier. lego 4.9.1
/// (Debian bookworm) orders it as a "dns" identifier, which the server must
/// refuse with a problem that says what to do; a lego that orders "ip"
/// must get a certificate with the IP address SAN.
#[test]
fn lego_http01_ip_identifier() {
    require_tool("lego", "lego");
    let ca = new_ca();
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
    let ca = new_ca();
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
    let ca = new_ca();
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

// ------------------------------------------------------------------ Knot DNS (RFC 2136)

/// A DNS query for `name` (absolute, with the trailing dot) of type `qtype`
/// over UDP: the response code and the number of answers, or `None` when
/// nothing answered in time. Built by hand: a question is 20-odd bytes.
fn dns_query(server: SocketAddr, name: &str, qtype: u16) -> Option<(u8, u16)> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
    let mut q = vec![0x4b, 0x52, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    socket.send_to(&q, server).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    (n >= 12 && buf[..2] == q[..2]).then(|| (buf[3] & 0x0f, u16::from_be_bytes([buf[6], buf[7]])))
}

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;

/// `knotd` as a child on a free loopback port, authoritative for
/// `acme.test.` (SOA, NS, `acme.test` and `*.acme.test` → 127.0.0.1),
/// taking RFC 2136 updates signed with a TSIG key whose random secret lives
/// only in the 0600 config file and in this struct (handed to clients
/// through their environment, never argv). Killed on drop.
struct Knot {
    child: Child,
    addr: SocketAddr,
    key_name: String,
    secret: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Knot {
    fn start() -> Knot {
        use base64::Engine;
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        require_tool("knotd", "knot");
        let dir = tempfile::tempdir().expect("knot dir");
        let d = dir.path();
        for sub in ["run", "db", "zones"] {
            std::fs::create_dir(d.join(sub)).expect("knot subdir");
        }
        std::fs::write(
            d.join("zones/acme.test.zone"),
            "$ORIGIN acme.test.\n$TTL 5\n\
             @ SOA ns.acme.test. hostmaster.acme.test. 1 3600 600 86400 5\n\
             @ NS ns.acme.test.\n@ A 127.0.0.1\n* A 127.0.0.1\n",
        )
        .expect("zone file");
        let mut raw = [0u8; 32];
        aws_lc_rs::rand::fill(&mut raw).expect("rng");
        let secret = base64::engine::general_purpose::STANDARD.encode(raw);
        let key_name = "keyrite-acme-test.".to_string();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        // Run as root without dropping privileges: the temp dir is root's.
        let conf = format!(
            "server:\n    rundir: \"{run}\"\n    user: root:root\n    listen: 127.0.0.1@{port}\n\
             log:\n  - target: stderr\n    any: info\n\
             database:\n    storage: \"{db}\"\n\
             key:\n  - id: {key_name}\n    algorithm: hmac-sha256\n    secret: {secret}\n\
             acl:\n  - id: acme-update\n    key: {key_name}\n    action: update\n\
             zone:\n  - domain: acme.test.\n    storage: \"{zones}\"\n    file: \"acme.test.zone\"\n    acl: acme-update\n",
            run = d.join("run").display(),
            port = addr.port(),
            db = d.join("db").display(),
            zones = d.join("zones").display(),
        );
        let conf_path = d.join("knot.conf");
        let mut f =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&conf_path).expect("knot.conf");
        f.write_all(conf.as_bytes()).expect("write knot.conf");
        drop(f);
        let log = d.join("knotd.log");
        let child = Command::new("knotd")
            .args(["--config", p(&conf_path)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("knot log"))
            .spawn()
            .expect("spawn knotd");
        let mut knot = Knot { child, addr, key_name, secret, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some((0, n)) = dns_query(addr, "acme.test.", TYPE_SOA) {
                if n > 0 {
                    break;
                }
            }
            if let Ok(Some(status)) = knot.child.try_wait() {
                panic!("knotd exited with {status} before it answered:\n{}", knot.log());
            }
            assert!(Instant::now() < deadline, "knotd not answering after 20 s:\n{}", knot.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            matches!(dns_query(addr, "anything.acme.test.", TYPE_A), Some((0, 1))),
            "knotd does not answer the wildcard A:\n{}",
            knot.log()
        );
        knot
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops knotd with SIGTERM and expects a clean exit.
    fn stop(mut self) {
        terminate(&mut self.child, "knotd", &self.log);
        assert!(!self.log().contains(&self.secret), "the TSIG secret leaked into knotd's log");
    }
}

impl Drop for Knot {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// lego's file name for a domain: `*` becomes `_`.
fn lego_cert_for(dir: &Path, name: &str) -> PathBuf {
    lego_cert(dir, &name.replace('*', "_"))
}

/// lego dns-01 through its `rfc2136` provider: TSIG-signed dynamic updates
/// to a real authoritative server (Knot), which acme-serve then asks for
/// the TXT record. A plain name, then a wildcard with its base name (two
/// TXT values at one owner name; wildcards are dns-01 only).
#[test]
fn lego_dns01_rfc2136_knot() {
    require_tool("lego", "lego");
    let knot = Knot::start();
    let ca = new_ca();
    let server = Server::start_with(&ca, ServerOpts { dns: Some(knot.addr), ..Default::default() });
    let dir = server.client_dir("lego-rfc2136");
    let rfc2136 = |domains: &[&str]| {
        let mut c = lego(&server, &dir, domains);
        c.env("RFC2136_NAMESERVER", knot.addr.to_string())
            .env("RFC2136_TSIG_KEY", &knot.key_name)
            .env("RFC2136_TSIG_ALGORITHM", "hmac-sha256.")
            .env("RFC2136_TSIG_SECRET", &knot.secret)
            .env("RFC2136_TTL", "5")
            .env("RFC2136_POLLING_INTERVAL", "1")
            .env("RFC2136_PROPAGATION_TIMEOUT", "30")
            // rfc2136 solves challenges one after another, by default a
            // minute apart.
            .env("RFC2136_SEQUENCE_INTERVAL", "1")
            // lego's propagation check asks the zone's NS on port 53; Knot
            // applies an update before it answers, so there is nothing to wait for.
            .args(["--dns", "rfc2136", "--dns.resolvers", &knot.addr.to_string(), "--dns.disable-cp"])
            .arg("run");
        c
    };
    let check_log = |out: &Output| {
        let all = format!("{}{}", stdout(out), stderr(out));
        assert!(!all.contains(&knot.secret), "the TSIG secret leaked into lego's output");
    };

    let name = "rfc2136.acme.test";
    let out = run_client(&server, "lego run (dns-01 via rfc2136 to knot)", &mut rfc2136(&[name]));
    check_log(&out);
    let leaf = first_cert(&lego_cert_for(&dir, name), &dir.join("leaf1.pem"));
    check_leaf(&ca, &leaf, &[name]);
    assert!(
        matches!(dns_query(knot.addr, "_acme-challenge.rfc2136.acme.test.", TYPE_TXT), Some((0, 0))),
        "lego left its TXT record in the zone"
    );

    let wild = ["*.w.acme.test", "w.acme.test"];
    let out = run_client(&server, "lego run (dns-01 via rfc2136, wildcard)", &mut rfc2136(&wild));
    check_log(&out);
    let leaf = first_cert(&lego_cert_for(&dir, wild[0]), &dir.join("leaf2.pem"));
    check_leaf(&ca, &leaf, &wild);
    assert!(
        matches!(dns_query(knot.addr, "_acme-challenge.w.acme.test.", TYPE_TXT), Some((0, 0))),
        "lego left its TXT records in the zone"
    );

    let klog = knot.log();
    assert!(klog.contains("DDNS"), "knotd saw no dynamic update:\n{klog}");
    server.stop();
    knot.stop();
}

// ------------------------------------------------------------------ Caddy

/// `caddy run` as a child; killed on drop.
struct Caddy {
    child: Child,
    log: PathBuf,
}

impl Caddy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops Caddy with SIGTERM (a graceful shutdown) within a bound.
    fn stop(mut self) {
        terminate(&mut self.child, "caddy", &self.log);
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// The first file called `file_name` under `dir`, searched depth first.
fn find_file(dir: &Path, file_name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, file_name) {
                return Some(found);
            }
        } else if entry.file_name() == file_name {
            return Some(path);
        }
    }
    None
}

/// Caddy's automatic HTTPS against acme-serve: it answers http-01 or
/// tls-alpn-01 on its own ports, which acme-serve is pointed at, stores the
/// certificate, and serves the site with it. `challenge` `None` is the
/// plain global `acme_ca`/`acme_ca_root` setup (Caddy picks the
/// challenge); otherwise the other challenge is disabled in `cert_issuer`.
fn caddy_round_trip(challenge: Option<&str>, name: &str) {
    require_tool("caddy", "caddy");
    require_tool("curl", "curl");
    let ca = new_ca();
    let (http_port, https_port) = (free_port(), free_port());
    let server = Server::start_with(
        &ca,
        ServerOpts { http01: Some(http_port), tlsalpn01: Some(https_port), ..Default::default() },
    );
    let dir = server.client_dir("caddy");
    let (directory, tls_ca) = (&server.directory, server.tls_ca.display());
    let issuer = match challenge {
        None => format!("\tacme_ca {directory}\n\tacme_ca_root {tls_ca}\n"),
        Some(c) => {
            let disable = match c {
                "http-01" => "disable_tlsalpn_challenge",
                "tls-alpn-01" => "disable_http_challenge",
                other => panic!("no such challenge {other}"),
            };
            format!("\tcert_issuer acme {{\n\t\tdir {directory}\n\t\ttrusted_roots {tls_ca}\n\t\t{disable}\n\t}}\n")
        }
    };
    let caddyfile = dir.join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n\tadmin off\n\tdefault_bind 127.0.0.1\n\thttp_port {http_port}\n\thttps_port {https_port}\n\
             {issuer}\temail ops@acme.test\n\tocsp_stapling off\n\
             \tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\n\n{name} {{\n\trespond \"ok\"\n}}\n",
        ),
    )
    .expect("Caddyfile");
    let data = dir.join("data");
    let log = dir.join("caddy.log");
    let started = Instant::now();
    let child = Command::new("caddy")
        .args(["run", "--config", p(&caddyfile), "--adapter", "caddyfile"])
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", &data)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("caddy log"))
        .spawn()
        .expect("spawn caddy");
    let mut caddy = Caddy { child, log };

    let crt_name = format!("{name}.crt");
    let deadline = Instant::now() + Duration::from_secs(90);
    let crt = loop {
        if let Some(found) = find_file(&data, &crt_name) {
            break found;
        }
        if let Ok(Some(status)) = caddy.child.try_wait() {
            panic!("caddy exited with {status}:\n{}\n--- acme-serve log\n{}", caddy.log(), server.log());
        }
        assert!(
            Instant::now() < deadline,
            "caddy has no certificate after 90 s:\n{}\n--- acme-serve log\n{}",
            caddy.log(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("caddy: certificate stored in {:.1?}", started.elapsed());
    let leaf = first_cert(&crt, &dir.join("leaf.pem"));
    check_leaf(&ca, &leaf, &[name]);

    // Caddy serves the site with it (it may take a moment to load it).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .args(["--resolve", &format!("{name}:{https_port}:127.0.0.1")])
            .args(["--cacert", p(&ca.root_pem())])
            .arg(format!("https://{name}:{https_port}/"))
            .output()
            .expect("run curl");
        if out.status.success() {
            assert_eq!(stdout(&out), "ok", "caddy's answer");
            break;
        }
        assert!(Instant::now() < deadline, "curl to caddy failed: {}\n--- caddy log\n{}", stderr(&out), caddy.log());
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("caddy ({challenge:?}): served {name} over HTTPS in {:.1?}", started.elapsed());
    if challenge.is_some() {
        let log = server.log();
        assert!(!log.contains("validation attempt failed"), "a {challenge:?} attempt failed:\n{log}");
    }
    caddy.stop();
    server.stop();
}

#[test]
fn caddy_automatic_https() {
    caddy_round_trip(None, "caddy.acme.test");
}

#[test]
fn caddy_http01() {
    caddy_round_trip(Some("http-01"), "caddy-http.acme.test");
}

#[test]
fn caddy_tlsalpn01() {
    caddy_round_trip(Some("tls-alpn-01"), "caddy-alpn.acme.test");
}
