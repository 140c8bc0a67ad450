//! The online intermediate: a request made on a real SoftHSM token by the
//! keyrite binary, signed "offline" here with the library, and installed (or
//! refused) by the binary again; plus a software-store round trip through
//! the library.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{keyrite, list, openssl, random_serial, stderr, stdout, IntermediateHost, OfflineRoot};
use keyrite::config::{Backend, Environment, SecretSource};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::intermediate::{self, IntermediateError, IssuerConfig, RequestOptions};
use keyrite::profile::{issue, DistinguishedName, IssueRequest, Issued, IssuerRef, Profile};
use keyrite::secret::Secret;
use keyrite::transfer::csr::parse_csr;
use time::{Duration, OffsetDateTime};

const PIN_VAR: &str = "KEYRITE_TEST_INT_PIN";
const PIN: &str = "int-user-pin-4711";

fn profile(name: &str) -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name)).expect("template")
}

/// The offline root, made the way the root ceremony makes it (but with a
/// software key, in memory).
fn root() -> OfflineRoot {
    OfflineRoot::new(OffsetDateTime::now_utc() - Duration::days(30))
}

/// The offline ceremony's signing with the shipped intermediate template.
fn sign(root: &OfflineRoot, csr_pem: &[u8], spki_override: Option<&[u8]>, not_before: OffsetDateTime) -> Issued {
    root.sign(csr_pem, &profile("intermediate-ca.toml"), spki_override, not_before)
}

/// Writes the response bundle the offline side hands back.
fn response(dir: &Path, int: &Issued, root: &OfflineRoot) {
    root.response(dir, int);
}

/// A SoftHSM token for the intermediate host, an environment file naming it
/// (PIN from an environment variable), and the directories of one test.
struct Host(IntermediateHost);

impl std::ops::Deref for Host {
    type Target = IntermediateHost;
    fn deref(&self) -> &IntermediateHost {
        &self.0
    }
}

impl Host {
    fn new() -> Host {
        Host(IntermediateHost::new("int-hsm", PIN_VAR, PIN))
    }

    fn request(&self, label: &str) -> Output {
        let out = self.0.request(
            label,
            &[
                "--subject-cn",
                "keyrite Example Issuing CA E1",
                "--subject-o",
                "keyrite Example",
                "--subject-c",
                "DE",
                "--requester",
                "ops@issuing-ca-1",
            ],
        );
        assert!(out.status.success(), "request failed: {}{}", stdout(&out), stderr(&out));
        out
    }
}

/// The value printed after `label` (first whitespace-separated token).
fn printed(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"))
}

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().expect("sha256sum");
    stdout(&out).split_whitespace().next().expect("digest").to_string()
}

fn failed_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got success: {}", stdout(out));
    let err = stderr(out);
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
    assert!(!err.contains(PIN), "the PIN leaked into an error:\n{err}");
}

#[test]
fn softhsm_request_sign_install_round_trip() {
    let host = Host::new();
    let out = host.request("issuing-e1");
    let text = stdout(&out);
    assert!(!text.contains(PIN));

    // The bundle: csr.pem and the manifest, nothing else.
    assert_eq!(list(&host.path("usb-request")), ["csr.pem", "manifest.json"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.path("usb-request/manifest.json")).expect("manifest"))
            .expect("json");
    assert_eq!(manifest["kind"], "intermediate-request");
    assert_eq!(manifest["identity"], "ops@issuing-ca-1");
    let extra = &manifest["extra"];
    assert_eq!(extra["key_label"], "issuing-e1");
    assert_eq!(extra["algorithm"], "ecdsa-p256");
    let uri = extra["key_uri"].as_str().expect("uri");
    assert!(uri.starts_with("pkcs11:") && uri.contains("object=issuing-e1"), "{uri}");
    let manifest_text = std::fs::read_to_string(host.path("usb-request/manifest.json")).expect("manifest");
    assert!(!manifest_text.contains(PIN) && !manifest_text.contains("pin"), "{manifest_text}");

    // openssl accepts the CSR's proof of possession.
    let csr_path = host.path("usb-request/csr.pem");
    let v = openssl(&["req", "-in", csr_path.to_str().expect("utf8"), "-verify", "-noout"]);
    assert!(v.status.success(), "openssl req -verify: {}", stderr(&v));

    // The printed hashes are what sha256sum computes.
    assert_eq!(printed(&text, "csr.pem SHA-256"), sha256sum(&csr_path));
    let der = host.path("csr.der");
    let o = openssl(&[
        "req",
        "-in",
        csr_path.to_str().expect("utf8"),
        "-outform",
        "DER",
        "-out",
        der.to_str().expect("utf8"),
    ]);
    assert!(o.status.success());
    let csr_hash = printed(&text, "CSR SHA-256");
    assert_eq!(csr_hash, sha256sum(&der));
    assert_eq!(extra["csr_sha256"], csr_hash.as_str());
    let pubkey = host.path("pub.der");
    let o = openssl(&[
        "req",
        "-in",
        csr_path.to_str().expect("utf8"),
        "-pubkey",
        "-noout",
        "-out",
        host.path("pub.pem").to_str().expect("utf8"),
    ]);
    assert!(o.status.success());
    let o = openssl(&[
        "pkey",
        "-pubin",
        "-in",
        host.path("pub.pem").to_str().expect("utf8"),
        "-outform",
        "DER",
        "-out",
        pubkey.to_str().expect("utf8"),
    ]);
    assert!(o.status.success());
    let spki_hash = printed(&text, "public key SHA-256");
    assert_eq!(spki_hash, sha256sum(&pubkey));
    assert_eq!(extra["spki_sha256"], spki_hash.as_str());
    // Both digests are also spelled in the 13 words a witness reads back.
    let csr_words = keyrite::words::Fingerprint::of_digest(&hex::decode(&csr_hash).expect("hex")).read_back_grouped();
    let spki_words = keyrite::words::Fingerprint::of_digest(&hex::decode(&spki_hash).expect("hex")).read_back_grouped();
    assert!(text.contains(&format!("  read-back         {csr_words}\n")), "{text}");
    assert!(text.contains(&format!("  read-back         {spki_words}\n")), "{text}");

    // The key is on the token, not extractable.
    let objs = host.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--token-label", "int-hsm", "--list-objects"]);
    assert!(stdout(&objs).contains("issuing-e1"), "{}", stdout(&objs));

    // Offline signing, response bundle, install.
    let root = root();
    let int = sign(&root, &host.csr(), None, OffsetDateTime::now_utc() - Duration::hours(1));
    response(&host.path("usb-response"), &int, &root);
    let out = host.install("usb-response", &root.cert.fingerprint.hex);
    assert!(out.status.success(), "install: {}{}", stdout(&out), stderr(&out));
    assert_eq!(
        list(&host.path("issuer")),
        ["chain.pem", "intermediate.pem", "issuer.toml", "request.json", "root.pem"]
    );

    let issuer_toml = std::fs::read_to_string(host.path("issuer/issuer.toml")).expect("issuer.toml");
    assert!(!issuer_toml.contains(PIN) && !issuer_toml.contains("pin"), "{issuer_toml}");
    let config = IssuerConfig::load(&host.path("issuer/issuer.toml")).expect("load");
    assert_eq!(config.root_sha256, root.cert.fingerprint.hex);
    assert_eq!(config.key_label, "issuing-e1");
    assert_eq!(config.key_algorithm, KeyAlgorithm::EcdsaP256);
    match &config.key {
        intermediate::IssuerKey::Pkcs11 { uri } => {
            assert!(uri.contains("module-path="), "{uri}");
            assert!(uri.contains("object=issuing-e1") && uri.contains("token=int-hsm"), "{uri}");
        }
        other => panic!("expected a PKCS#11 key, got {other:?}"),
    }

    // OpenSSL agrees with the chain.
    let v = openssl(&[
        "verify",
        "-CAfile",
        host.path("issuer/root.pem").to_str().expect("utf8"),
        host.path("issuer/intermediate.pem").to_str().expect("utf8"),
    ]);
    assert!(v.status.success(), "openssl verify: {}{}", stdout(&v), stderr(&v));

    // acme-serve's start-up check passes now, and refuses outside the
    // intermediate's validity (the root is valid at both times).
    let check = |at: Option<String>| {
        let mut args = vec![
            "intermediate".to_string(),
            "check".into(),
            "issuer/issuer.toml".into(),
            "--env".into(),
            "env.toml".into(),
        ];
        if let Some(at) = at {
            args.push("--at".into());
            args.push(at);
        }
        host.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = check(None);
    assert!(ok.status.success(), "check: {}{}", stdout(&ok), stderr(&ok));
    let fmt = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).expect("fmt");
    let int_summary = keyrite::profile::certificate_summary(&int.der).expect("summary");
    failed_with(&check(Some(fmt(int_summary.not_after + Duration::days(1)))), "(expired)");
    failed_with(&check(Some(fmt(int_summary.not_before - Duration::days(1)))), "(not yet valid)");

    // The same response cannot be installed twice over an existing issuer.toml.
    let out = host.install("usb-response", &root.cert.fingerprint.hex);
    failed_with(&out, "issuer.toml: already exists; keyrite never overwrites an issuer configuration");
}

/// The request made on the host, with `bad` responses that must each be
/// refused with a specific message, leaving nothing but request.json.
#[test]
fn softhsm_install_refusals_write_nothing() {
    let host = Host::new();
    host.request("issuing-e2");
    let csr = host.csr();
    let root = root();
    let now = OffsetDateTime::now_utc();
    let nothing_written = || assert_eq!(list(&host.path("issuer")), ["request.json"]);

    // 1. The operator pins another root: refused, both fingerprints in words.
    let good = sign(&root, &csr, None, now - Duration::hours(1));
    response(&host.path("r-good"), &good, &root);
    let other_root = self::root();
    let out = host.install("r-good", &other_root.cert.fingerprint.hex);
    failed_with(&out, "the root certificate is not the pinned root");
    let err = stderr(&out);
    assert!(err.contains(&other_root.cert.fingerprint.words), "{err}");
    assert!(err.contains(&root.cert.fingerprint.words), "{err}");
    nothing_written();
    failed_with(&host.install("r-good", "not-a-fingerprint"), "not a SHA-256 fingerprint");
    nothing_written();

    // 2. A certificate for another key.
    let stranger = SoftKey::generate("stranger", KeyAlgorithm::EcdsaP256).expect("key");
    let wrong_key = sign(&root, &csr, Some(stranger.spki_der()), now - Duration::hours(1));
    response(&host.path("r-wrong-key"), &wrong_key, &root);
    failed_with(&host.install("r-wrong-key", &root.cert.fingerprint.hex), "the certificate is for another key");
    nothing_written();

    // 3. A tampered bundle: one byte of the certificate changed.
    response(&host.path("r-tampered"), &good, &root);
    let p = host.path("r-tampered/intermediate.pem");
    let mut bytes = std::fs::read(&p).expect("read");
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(&p, bytes).expect("write");
    failed_with(&host.install("r-tampered", &root.cert.fingerprint.hex), "hash mismatch for intermediate.pem");
    nothing_written();

    // 4. An intermediate from another root (same template, same subject),
    //    shipped with the pinned root.
    let foreign = sign(&other_root, &csr, None, now - Duration::hours(1));
    response(&host.path("r-foreign"), &foreign, &root);
    failed_with(&host.install("r-foreign", &root.cert.fingerprint.hex), "signature does not verify under the key of");
    nothing_written();

    // 5. Not yet valid.
    let future = sign(&root, &csr, None, now + Duration::days(2));
    response(&host.path("r-future"), &future, &root);
    failed_with(&host.install("r-future", &root.cert.fingerprint.hex), "(not yet valid)");
    nothing_written();

    // 6. A request bundle where a response was expected.
    failed_with(
        &host.install("usb-request", &root.cert.fingerprint.hex),
        "but a intermediate-response bundle was expected",
    );
    nothing_written();

    // 7. issuer.toml already there (an earlier install): refused before anything is read.
    std::fs::write(host.path("issuer/issuer.toml"), "# earlier\n").expect("write");
    failed_with(
        &host.install("r-good", &root.cert.fingerprint.hex),
        "already exists; keyrite never overwrites an issuer configuration",
    );
    assert_eq!(list(&host.path("issuer")), ["issuer.toml", "request.json"]);
    assert_eq!(std::fs::read_to_string(host.path("issuer/issuer.toml")).expect("read"), "# earlier\n");
}

#[test]
fn softhsm_request_refuses_a_used_directory_and_label() {
    let host = Host::new();
    host.request("issuing-e3");
    // The bundle directory is not empty now: refused before a key is made.
    let again = host.run(&[
        "intermediate",
        "request",
        "--env",
        "env.toml",
        "--out",
        "usb-request",
        "--label",
        "issuing-e4",
        "--subject-cn",
        "x",
        "--requester",
        "ops",
    ]);
    failed_with(&again, "must not exist or must be empty");
    let objs = host.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--token-label", "int-hsm", "--list-objects"]);
    assert!(!stdout(&objs).contains("issuing-e4"), "a key was generated anyway");
}

/// The software key store, through the library: request, sign, install,
/// check, and the issuer.toml's strictness.
#[test]
fn soft_store_round_trip_through_the_library() {
    let work = tempfile::tempdir().expect("work");
    let env = Environment {
        backend: Backend::Soft {
            dir: work.path().join("keystore"),
            passphrase: Some(SecretSource::Memory(Secret::from_string("correct horse battery".into()))),
            sealing_key: None,
        },
        output_dir: work.path().join("issuer"),
        input_dir: work.path().join("issuer"),
        custodian_media: None,
        ca_dir: None,
        source: None,
    };
    let mut no_prompt = |q: &str| -> Result<Secret, IntermediateError> { panic!("prompted: {q}") };
    let store = intermediate::open_key_store(&env, &mut no_prompt).expect("store");
    let opts = RequestOptions {
        label: "issuing-soft".into(),
        algorithm: KeyAlgorithm::EcdsaP384,
        subject: DistinguishedName {
            common_name: Some("keyrite Example Issuing CA S1".into()),
            organization: Some("keyrite Example".into()),
            country: Some("DE".into()),
            ..Default::default()
        },
        requester: "ops@soft".into(),
        hostname: None,
    };
    let issuer_dir = work.path().join("issuer");
    let done = intermediate::request(&store, &opts, &work.path().join("usb"), &issuer_dir).expect("request");
    assert!(done.key_uri.starts_with("keyrite-soft:"), "{}", done.key_uri);
    let csr_pem = std::fs::read(work.path().join("usb/csr.pem")).expect("csr");
    let csr = parse_csr(&csr_pem).expect("parse");
    assert_eq!(csr.sha256(), &done.csr_sha256);
    assert_eq!(csr.spki_sha256(), &done.spki_sha256);

    let root = root();
    let int = sign(&root, &csr_pem, None, OffsetDateTime::now_utc() - Duration::hours(1));
    response(&work.path().join("resp"), &int, &root);
    let installed = intermediate::install(
        &work.path().join("resp"),
        &store,
        &root.cert.fingerprint.hex.to_uppercase(),
        &issuer_dir,
        None,
    )
    .expect("install");
    assert_eq!(installed.config.key_label, "issuing-soft");
    let toml_text = std::fs::read_to_string(&installed.issuer_toml).expect("toml");
    assert!(toml_text.contains("backend = \"soft\""), "{toml_text}");
    assert!(!toml_text.contains("correct horse"), "{toml_text}");

    // acme-serve's start: load and check, then the failures.
    let config = IssuerConfig::load(&installed.issuer_toml).expect("load");
    let checked = intermediate::check_issuer(&config, &store, OffsetDateTime::now_utc()).expect("check");
    assert_eq!(checked.intermediate_der, int.der);
    let late = checked.intermediate.not_after + Duration::seconds(1);
    match intermediate::check_issuer(&config, &store, late) {
        Err(IntermediateError::Validity { state: "expired", file, .. }) => assert!(file.ends_with("intermediate.pem")),
        other => panic!("expected expired, got {other:?}"),
    }
    match intermediate::check_issuer(&config, &store, checked.intermediate.not_before - Duration::seconds(1)) {
        Err(IntermediateError::Validity { state: "not yet valid", .. }) => {}
        other => panic!("expected not yet valid, got {other:?}"),
    }

    // Another issuer's certificate in place of ours: refused at start.
    let other_key = SoftKey::generate("other", KeyAlgorithm::EcdsaP256).expect("key");
    let other = sign(&root, &csr_pem, Some(other_key.spki_der()), OffsetDateTime::now_utc() - Duration::hours(1));
    let swapped = work.path().join("swapped");
    std::fs::create_dir(&swapped).expect("mkdir");
    std::fs::write(swapped.join("intermediate.pem"), &other.pem).expect("w");
    std::fs::write(swapped.join("chain.pem"), format!("{}{}", other.pem, root.cert.pem)).expect("w");
    std::fs::write(swapped.join("root.pem"), &root.cert.pem).expect("w");
    let mut text = toml_text.clone();
    text = text.replace(&config.certificate_sha256, &keyrite::words::sha256_hex(&other.der));
    std::fs::write(swapped.join("issuer.toml"), text).expect("w");
    let swapped_config = IssuerConfig::load(&swapped.join("issuer.toml")).expect("load swapped");
    match intermediate::check_issuer(&swapped_config, &store, OffsetDateTime::now_utc()) {
        Err(e @ IntermediateError::WrongKey { .. }) => assert!(e.to_string().contains("another key"), "{e}"),
        other => panic!("expected WrongKey, got {other:?}"),
    }

    // Strict parsing: an unknown key, a PIN in the URI.
    let strict = work.path().join("strict.toml");
    std::fs::write(&strict, format!("{toml_text}pin = \"1234\"\n")).expect("w");
    let e = IssuerConfig::load(&strict).expect_err("unknown field");
    assert!(e.to_string().contains("pin"), "{e}");
    let strict2 = work.path().join("strict2.toml");
    let pkcs11 = toml_text
        .lines()
        .filter(|l| !l.starts_with("dir =") && !l.starts_with("label ="))
        .map(|l| {
            if l.starts_with("backend =") {
                "backend = \"pkcs11\"\nuri = \"pkcs11:token=t;object=k?module-path=/m.so&pin-value=123456\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&strict2, pkcs11).expect("w");
    let e = IssuerConfig::load(&strict2).expect_err("pin-value");
    assert!(e.to_string().contains("pin-value is refused") && !e.to_string().contains("123456"), "{e}");
}

/// `keyrite acme-serve` refuses to start, saying why, with an intermediate
/// from another root, an expired intermediate, and an intermediate for a key
/// that is not the host's; each is made consistent with issuer.toml (its
/// recorded hash updated), so only the real start-up check can catch it.
#[test]
fn acme_serve_refuses_another_root_an_expired_intermediate_and_a_foreign_key() {
    let work = tempfile::tempdir().expect("work");
    std::fs::write(
        work.path().join("env.toml"),
        "output_dir = \"issuer\"\n[soft]\ndir = \"keystore\"\npassphrase = { env = \"KEYRITE_TEST_SOFT_PASS\" }\n",
    )
    .expect("env");
    std::env::set_var("KEYRITE_TEST_SOFT_PASS", "acme serve refusal test");
    let env = Environment::load(&work.path().join("env.toml")).expect("env");
    let mut no_prompt = |q: &str| -> Result<Secret, IntermediateError> { panic!("prompted: {q}") };
    let store = intermediate::open_key_store(&env, &mut no_prompt).expect("store");
    let opts = RequestOptions {
        label: "issuing-refusals".into(),
        algorithm: KeyAlgorithm::EcdsaP256,
        subject: DistinguishedName { common_name: Some("keyrite Refusal Test CA".into()), ..Default::default() },
        requester: "ops".into(),
        hostname: None,
    };
    let issuer_dir = work.path().join("issuer");
    intermediate::request(&store, &opts, &work.path().join("usb"), &issuer_dir).expect("request");
    let csr_pem = std::fs::read(work.path().join("usb/csr.pem")).expect("csr");
    let root = root();
    let good = sign(&root, &csr_pem, None, OffsetDateTime::now_utc() - Duration::hours(1));
    response(&work.path().join("resp"), &good, &root);
    let installed =
        intermediate::install(&work.path().join("resp"), &store, &root.cert.fingerprint.hex, &issuer_dir, None)
            .expect("install");
    let toml_text = std::fs::read_to_string(&installed.issuer_toml).expect("toml");
    drop(store);

    // A variant of the installed issuer with `int` in place of the signed
    // intermediate, the chain file made to match (intermediate + pinned root).
    let variant = |name: &str, int: &Issued| -> PathBuf {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("intermediate.pem"), &int.pem).expect("w");
        std::fs::write(dir.join("chain.pem"), format!("{}{}", int.pem, root.cert.pem)).expect("w");
        std::fs::write(dir.join("root.pem"), &root.cert.pem).expect("w");
        let text = toml_text.replace(&installed.config.certificate_sha256, &keyrite::words::sha256_hex(&int.der));
        std::fs::write(dir.join("issuer.toml"), text).expect("w");
        dir.join("issuer.toml")
    };
    let serve = |issuer: &Path| -> String {
        let listen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let out = keyrite()
            .current_dir(work.path())
            .arg("acme-serve")
            .arg("--issuer")
            .arg(issuer)
            .args(["--env", "env.toml", "--db"])
            .arg(work.path().join(format!(
                    "{}.db",
                    issuer
                        .parent()
                        .and_then(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )))
            .args(["--listen", &listen.to_string(), "--allow-dns-suffix", "acme.test"])
            .output()
            .expect("run acme-serve");
        assert!(!out.status.success(), "acme-serve started with {}: {}", issuer.display(), stdout(&out));
        let err = stderr(&out);
        assert!(!err.contains("acme serve refusal test"), "the passphrase leaked: {err}");
        err
    };

    let other_root = self::root();
    let from_other_root = sign(&other_root, &csr_pem, None, OffsetDateTime::now_utc() - Duration::hours(1));
    let err = serve(&variant("other-root", &from_other_root));
    assert!(
        err.contains("the signature does not verify under the key of"),
        "another root must be named as the reason: {err}"
    );

    let p = profile("intermediate-ca.toml");
    let parsed = parse_csr(&csr_pem).expect("csr");
    let expired = issue(
        &IssueRequest {
            profile: &p,
            subject: Some(parsed.subject().clone()),
            subject_spki: parsed.spki_der(),
            sans: vec![],
            serial: random_serial(),
            not_before: OffsetDateTime::now_utc() - Duration::days(20),
            not_after: OffsetDateTime::now_utc() - Duration::days(1),
            issuer: IssuerRef::Certificate { der: &root.cert.der },
        },
        &root.key,
    )
    .expect("expired intermediate");
    let err = serve(&variant("expired", &expired));
    assert!(err.contains("expired"), "{err}");

    let other_key = SoftKey::generate("other", KeyAlgorithm::EcdsaP256).expect("key");
    let foreign = sign(&root, &csr_pem, Some(other_key.spki_der()), OffsetDateTime::now_utc() - Duration::hours(1));
    let err = serve(&variant("foreign-key", &foreign));
    assert!(err.contains("another key"), "{err}");
}
