//! The offline CA end to end on a real SoftHSM root: an intermediate CSR
//! arrives in a USB transfer bundle, the sign-intermediate ceremony signs it,
//! a revoke ceremony revokes it and publishes a CRL that openssl honours, a
//! crl ceremony's number grows; bad bundles are refused with nothing signed,
//! and a crash at any step leaves a CA directory that verifies with no serial
//! or CRL number reused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use keyrite::transfer::{BundleKind, BundleWriter};
use keyrite::words::Fingerprint;

/// The subject templates/intermediate-ca-constrained.toml signs, as openssl
/// writes it: the CSRs of these tests ask for it.
const SUBJECT: &str = "/C=DE/O=keyrite Example/CN=keyrite Example Issuing CA E1 (constrained)";

const PIN: &str = "161803";

struct Ca {
    hsm: SoftHsm,
    work: tempfile::TempDir,
    /// The CA log's last checkpoint as the paper log holds it: copied from
    /// the transcript of the last CA ceremony that printed one, and typed
    /// back by the witness at the next one.
    paper: std::cell::RefCell<Option<String>>,
    /// The witness confirms that the paper log notes an interrupted
    /// ceremony (after a crash).
    after_crash: std::cell::Cell<bool>,
}

impl Ca {
    /// A root made by the (never-extractable) root ceremony on token
    /// "root", and a CA directory for it.
    fn new() -> Self {
        let hsm = SoftHsm::new();
        hsm.init_token("root", "12345678", PIN);
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        // The constrained template: the test checks its name constraints.
        let plan = work.path().join("ceremonies/sign-intermediate.toml");
        let text = std::fs::read_to_string(&plan).expect("plan");
        std::fs::write(&plan, text.replace("intermediate-ca.toml", "intermediate-ca-constrained.toml")).expect("write");
        let c = Ca { hsm, work, paper: Default::default(), after_crash: Default::default() };
        std::fs::create_dir(c.path("root")).expect("root dir");
        c.env("root-env.toml", "root", "root");
        let plan = "ceremonies/root-init-hsm-only.toml";
        c.answers(
            "root-answers.toml",
            plan,
            None,
            &[("root-fingerprint", "(as shown)".into()), ("room-sealed", "true".into())],
            &[("security-officer", "Sam Officer")],
        );
        assert_ok(&c.keyrite(
            &["ceremony", "run", plan, "--env", "root-env.toml", "--answers", "root-answers.toml", "--allow-network"],
            &[],
        ));
        let root_pem = std::fs::read(c.path("root/root-r1.pem")).expect("root");
        let (_, der) = pem_rfc7468::decode_vec(&root_pem).expect("pem");
        keyrite::ca::CaDir::init(&c.path("ca"), &der).expect("ca init");
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn env(&self, name: &str, out: &str, input: &str) {
        std::fs::write(
            self.path(name),
            format!(
                "output_dir = \"{out}\"\ninput_dir = \"{input}\"\nca_dir = \"ca\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"root\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
                self.hsm.module.display()
            ),
        )
        .expect("env");
    }

    /// Answers: participants, the plan read-back (the plan hash covers the
    /// files the plan reads from `input`, the input directory), and `extra`
    /// answers.
    fn answers(&self, name: &str, plan: &str, input: Option<&str>, extra: &[(&str, String)], roles: &[(&str, &str)]) {
        let plan_path = self.path(plan);
        let plan = keyrite::config::Plan::load(&plan_path).expect("plan");
        let input = input.map(|i| self.path(i));
        // A bundle too broken to read stops the preflight before any
        // read-back: its answer is never asked for.
        let words = keyrite::ceremony::inputs::plan_digest(&plan, input.as_deref())
            .map_or_else(|_| "(never asked)".to_string(), |d| d.fingerprint().read_back_words());
        // An answer given in `extra` is what the witness read instead.
        let words = extra.iter().find(|(k, _)| *k == "plan-hash").map_or(words, |(_, v)| v.clone());
        let mut text = String::from(
            "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\n",
        );
        for (role, who) in roles {
            text.push_str(&format!("{role} = [\"{who}\"]\n"));
        }
        text.push_str(&format!("\n[answers]\nplan-hash = \"{words}\"\n"));
        if let Some(paper) = self.paper.borrow().as_ref() {
            text.push_str(&format!("audit-checkpoint = \"{paper}\"\n"));
        }
        if self.after_crash.get() {
            text.push_str("audit-interrupted = true\n");
        }
        for (k, v) in extra.iter().filter(|(k, _)| *k != "plan-hash") {
            if v == "true" {
                text.push_str(&format!("{k} = true\n"));
            } else {
                text.push_str(&format!("{k} = \"{v}\"\n"));
            }
        }
        std::fs::write(self.path(name), text).expect("answers");
    }

    fn keyrite(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = keyrite();
        cmd.current_dir(self.work.path()).env("SOFTHSM2_CONF", &self.hsm.conf).env("KEYRITE_TEST_PIN", PIN).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().expect("keyrite");
        let ca_ceremony = args.first() == Some(&"ceremony") && args.get(2).is_some_and(|p| !p.contains("root-init"));
        if ca_ceremony && stdout(&o).contains("audit checkpoint") {
            *self.paper.borrow_mut() = Some(paper_checkpoint(&stdout(&o)));
        }
        o
    }

    /// A request bundle in `<dir>/request` holding `csr` (PEM bytes).
    fn request_bundle(&self, dir: &str, csr: &[u8]) {
        std::fs::create_dir_all(self.path(dir)).expect("usb");
        let mut w = BundleWriter::create(&self.path(&format!("{dir}/request"))).expect("bundle");
        w.add("csr.pem", csr).expect("add");
        w.finish(BundleKind::IntermediateRequest, "Ivan Intermediate-Host", serde_json::Map::new()).expect("finish");
    }

    /// Runs sign-intermediate reading the request from `usb` and writing to
    /// `out` (a fresh directory), the witness reading the right values.
    fn sign(&self, usb: &str, out: &str, crash_at: Option<&str>) -> Output {
        // The requester's sheet shows the SHA-256 of the CSR in DER, which
        // PEM line endings cannot change.
        let csr = std::fs::read(self.path(&format!("{usb}/request/csr.pem"))).unwrap_or_default();
        let csr_der = pem_rfc7468::decode_vec(&csr).map(|(_, d)| d).unwrap_or(csr);
        let csr_words = Fingerprint::sha256(&csr_der).read_back_words();
        self.sign_reading(usb, out, &[("csr-hash", csr_words)], crash_at)
    }

    /// Runs sign-intermediate with the witness's read-backs in `read`
    /// (`csr-hash`, and `plan-hash` when it is not the plan's own).
    fn sign_reading(&self, usb: &str, out: &str, read: &[(&str, String)], crash_at: Option<&str>) -> Output {
        std::fs::create_dir_all(self.path(out)).expect("out");
        let env = format!("{out}-env.toml");
        self.env(&env, out, usb);
        let answers = format!("{out}-answers.toml");
        let plan = "ceremonies/sign-intermediate.toml";
        self.answers(&answers, plan, Some(usb), read, &[]);
        let mut env_vars = Vec::new();
        if let Some(point) = crash_at {
            env_vars.push(("KEYRITE_CRASH_AT", point));
        }
        self.keyrite(&["ceremony", "run", plan, "--env", &env, "--answers", &answers, "--allow-network"], &env_vars)
    }

    /// Nothing was signed and no response written into `out`.
    fn assert_nothing_signed(&self, out: &str) {
        assert!(self.issued_serials().is_empty(), "{out}: nothing signed");
        assert!(list(&self.path(out)).is_empty(), "{out}: no response bundle");
    }

    /// Runs a CA ceremony (`plan`, no request bundle) into the fresh
    /// directory `out`.
    fn ceremony(&self, plan: &str, out: &str) -> Output {
        std::fs::create_dir(self.path(out)).expect("out");
        let (env, answers) = (format!("{out}-env.toml"), format!("{out}-answers.toml"));
        self.env(&env, out, out);
        self.answers(&answers, plan, None, &[], &[]);
        self.keyrite(&["ceremony", "run", plan, "--env", &env, "--answers", &answers, "--allow-network"], &[])
    }

    fn ca_state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("ca/state.json")).expect("state")).expect("json")
    }

    fn issued_serials(&self) -> Vec<String> {
        self.ca_state()["certificates"]
            .as_array()
            .expect("certs")
            .iter()
            .map(|c| c["serial"].as_str().expect("serial").to_string())
            .collect()
    }
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "keyrite failed:\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "keyrite should have failed; stdout:\n{}", stdout(o));
    assert!(stderr(o).contains(needle), "error should mention {needle:?}; got:\n{}", stderr(o));
}

/// A CSR made by openssl: `key` is an `openssl req -newkey` argument.
fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], extra: &[&str]) -> Vec<u8> {
    let out = dir.join(format!("{name}.csr"));
    let key = dir.join(format!("{name}.key"));
    let mut args = vec!["req", "-new", "-nodes"];
    if !extra.contains(&"-subj") {
        args.extend_from_slice(&["-subj", SUBJECT]);
    }
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-keyout", key.to_str().expect("utf8"), "-out", out.to_str().expect("utf8")]);
    args.extend_from_slice(extra);
    let o = openssl(&args);
    assert!(o.status.success(), "openssl req: {}", stderr(&o));
    std::fs::read(out).expect("csr")
}

fn ec_csr(dir: &Path, name: &str) -> Vec<u8> {
    openssl_csr(dir, name, &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], &[])
}

#[test]
fn an_intermediate_is_signed_from_a_usb_request_then_revoked_and_the_crl_is_honoured_by_openssl() {
    let c = Ca::new();
    c.request_bundle("usb", &ec_csr(c.work.path(), "int"));
    let o = c.sign("usb", "signed", None);
    assert_ok(&o);
    let response = c.path("signed/response");
    for f in ["intermediate.pem", "chain.pem", "root.pem", "manifest.json"] {
        assert!(response.join(f).exists(), "{f} in the response bundle");
    }
    let root = c.path("root/root-r1.pem");
    let int = response.join("intermediate.pem");
    let (root_s, int_s) = (root.to_str().expect("utf8"), int.to_str().expect("utf8"));
    let v = openssl(&["verify", "-CAfile", root_s, int_s]);
    assert!(v.status.success(), "openssl verify: {}{}", stdout(&v), stderr(&v));
    let text = stdout(&openssl(&["x509", "-in", int_s, "-noout", "-text"]));
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(
        text.contains("X509v3 Name Constraints: critical"),
        "the template's constraints, not the CSR's wishes: {text}"
    );
    assert!(
        text.contains("Subject: C = DE, O = keyrite Example, CN = keyrite Example Issuing CA E1 (constrained)"),
        "{text}"
    );
    let serial = stdout(&openssl(&["x509", "-in", int_s, "-noout", "-serial"]))
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    assert_eq!(c.issued_serials(), vec![serial.clone()]);

    // Revoke it and publish a CRL.
    let plan = c.path("ceremonies/revoke.toml");
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replace("serial = \"00\"", &format!("serial = \"{serial}\""))).expect("write");
    std::fs::create_dir(c.path("revoked")).expect("dir");
    c.env("revoke-env.toml", "revoked", "usb");
    c.answers("revoke-answers.toml", "ceremonies/revoke.toml", None, &[], &[]);
    assert_ok(&c.keyrite(
        &[
            "ceremony",
            "run",
            "ceremonies/revoke.toml",
            "--env",
            "revoke-env.toml",
            "--answers",
            "revoke-answers.toml",
            "--allow-network",
        ],
        &[],
    ));
    let crl = c.path("revoked/crl/crl.pem");
    let crl_s = crl.to_str().expect("utf8");
    let crl_text = stdout(&openssl(&["crl", "-in", crl_s, "-noout", "-text"]));
    assert!(crl_text.contains("X509v3 CRL Number: \n                1"), "{crl_text}");
    assert!(crl_text.to_ascii_lowercase().contains(&format!("serial number: {serial}")), "{crl_text}");
    let v = openssl(&["verify", "-crl_check", "-CRLfile", crl_s, "-CAfile", root_s, int_s]);
    assert!(!v.status.success(), "a revoked intermediate must be rejected");
    assert!(
        stdout(&v).contains("certificate revoked") || stderr(&v).contains("certificate revoked"),
        "{}{}",
        stdout(&v),
        stderr(&v)
    );

    // Revoking it again is refused before anything happens (the witness
    // types the revoke ceremony's checkpoint, now the last on paper).
    std::fs::create_dir(c.path("again")).expect("dir");
    c.env("again-env.toml", "again", "usb");
    c.answers("revoke-answers.toml", "ceremonies/revoke.toml", None, &[], &[]);
    let o = c.keyrite(
        &[
            "ceremony",
            "run",
            "ceremonies/revoke.toml",
            "--env",
            "again-env.toml",
            "--answers",
            "revoke-answers.toml",
            "--allow-network",
        ],
        &[],
    );
    assert_fails_with(&o, "is already revoked");

    // The next CRL's number grew.
    std::fs::create_dir(c.path("crl2")).expect("dir");
    c.env("crl-env.toml", "crl2", "usb");
    c.answers("crl-answers.toml", "ceremonies/crl.toml", None, &[], &[]);
    assert_ok(&c.keyrite(
        &[
            "ceremony",
            "run",
            "ceremonies/crl.toml",
            "--env",
            "crl-env.toml",
            "--answers",
            "crl-answers.toml",
            "--allow-network",
        ],
        &[],
    ));
    let crl2 = stdout(&openssl(&["crl", "-in", c.path("crl2/crl/crl.pem").to_str().expect("utf8"), "-noout", "-text"]));
    assert!(crl2.contains("X509v3 CRL Number: \n                2"), "{crl2}");
    // One log for the CA's ceremonies, verified offline against the paper.
    let paper = c.paper.borrow().clone().expect("paper checkpoint");
    assert_ok(
        &keyrite()
            .args(["audit", "verify", "--checkpoint", &paper])
            .arg(c.path("ca/audit.jsonl"))
            .output()
            .expect("verify"),
    );
    keyrite::ca::CaDir::verify(&c.path("ca")).expect("ca verify");
}

#[test]
fn bad_request_bundles_are_refused_with_nothing_signed_or_written() {
    let c = Ca::new();
    let good = ec_csr(c.work.path(), "good");
    let log_before = std::fs::read(c.path("ca/audit.jsonl")).ok();
    let check = |usb: &str, needle: &str| {
        let o = c.sign(usb, &format!("out-{usb}"), None);
        assert_fails_with(&o, needle);
        assert!(list(&c.path(&format!("out-{usb}"))).is_empty(), "{usb}: nothing written");
        assert!(c.issued_serials().is_empty(), "{usb}: nothing signed");
        assert_eq!(std::fs::read(c.path("ca/audit.jsonl")).ok(), log_before, "{usb}: the CA log is untouched");
    };

    // A byte changed after the manifest was written.
    c.request_bundle("changed", &good);
    let csr = c.path("changed/request/csr.pem");
    let mut bytes = std::fs::read(&csr).expect("csr");
    bytes[40] ^= 0x01;
    std::fs::write(&csr, bytes).expect("write");
    check("changed", "csr.pem");

    // A missing file, an extra file.
    c.request_bundle("missing", &good);
    std::fs::remove_file(c.path("missing/request/csr.pem")).expect("rm");
    check("missing", "csr.pem");
    c.request_bundle("extra", &good);
    std::fs::write(c.path("extra/request/notes.txt"), "hello").expect("extra");
    check("extra", "notes.txt");

    // A manifest that points outside the bundle.
    c.request_bundle("escape", &good);
    let manifest = c.path("escape/request/manifest.json");
    let text = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(&manifest, text.replace("\"csr.pem\"", "\"../csr.pem\"")).expect("write");
    check("escape", "../csr.pem");

    // A CSR whose proof-of-possession signature is broken.
    let der = pem_rfc7468::decode_vec(&good).expect("pem").1;
    let mut broken = der.clone();
    let last = broken.len() - 3;
    broken[last] ^= 0x55;
    let broken_pem =
        pem_rfc7468::encode_string("CERTIFICATE REQUEST", pem_rfc7468::LineEnding::LF, &broken).expect("pem");
    c.request_bundle("badsig", broken_pem.as_bytes());
    check("badsig", "signature");

    // A key below the template's minimum.
    c.request_bundle("weak", &openssl_csr(c.work.path(), "weak", &["-newkey", "rsa:2048"], &[]));
    check("weak", "RSA modulus of 2048 bits is not allowed");

    // A CSR asking for more than the template allows.
    c.request_bundle(
        "greedy",
        &openssl_csr(
            c.work.path(),
            "greedy",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
            &["-addext", "basicConstraints=critical,CA:TRUE,pathlen:2"],
        ),
    );
    check("greedy", "more than the template allows");
}

#[test]
fn a_crash_at_any_step_leaves_a_ca_directory_that_verifies_with_no_number_reused() {
    let c = Ca::new();
    c.after_crash.set(true);
    let mut seen_serials = std::collections::BTreeSet::new();
    for (i, point) in [
        "sign-intermediate:after-reserve",
        "sign-intermediate:after-sign",
        "sign-intermediate:after-bundle",
        "sign-intermediate:after-record",
    ]
    .iter()
    .enumerate()
    {
        let usb = format!("usb{i}");
        c.request_bundle(&usb, &ec_csr(c.work.path(), &format!("k{i}")));
        let o = c.sign(&usb, &format!("crash{i}"), Some(point));
        assert!(!o.status.success(), "{point}: the process must die");
        assert!(stderr(&o).contains(&format!("crash point {point}")), "{point}: {}", stderr(&o));
        let report = keyrite::ca::CaDir::verify(&c.path("ca")).unwrap_or_else(|e| panic!("{point}: ca verify: {e}"));
        let _ = report;
        // The same request signed again after the crash gets a new serial.
        let o = c.sign(&usb, &format!("retry{i}"), None);
        assert_ok(&o);
        keyrite::ca::CaDir::verify(&c.path("ca")).unwrap_or_else(|e| panic!("{point}: ca verify after retry: {e}"));
        let state = c.ca_state();
        let reserved: Vec<String> = state["reserved_serials"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["serial"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        for serial in c.issued_serials().into_iter().chain(reserved) {
            seen_serials.insert(serial);
        }
    }
    let issued = c.issued_serials();
    let unique: std::collections::BTreeSet<_> = issued.iter().collect();
    assert_eq!(unique.len(), issued.len(), "no serial issued twice: {issued:?}");

    // CRLs: a crash after the number is recorded; the next number is larger.
    std::fs::create_dir(c.path("crl-crash")).expect("dir");
    c.env("crl-crash-env.toml", "crl-crash", "usb0");
    c.answers("crl-answers.toml", "ceremonies/crl.toml", None, &[], &[]);
    let o = c.keyrite(
        &[
            "ceremony",
            "run",
            "ceremonies/crl.toml",
            "--env",
            "crl-crash-env.toml",
            "--answers",
            "crl-answers.toml",
            "--allow-network",
        ],
        &[("KEYRITE_CRASH_AT", "crl:after-record")],
    );
    assert!(!o.status.success());
    keyrite::ca::CaDir::verify(&c.path("ca")).expect("verify after crl crash");
    std::fs::create_dir(c.path("crl-ok")).expect("dir");
    c.env("crl-ok-env.toml", "crl-ok", "usb0");
    assert_ok(&c.keyrite(
        &[
            "ceremony",
            "run",
            "ceremonies/crl.toml",
            "--env",
            "crl-ok-env.toml",
            "--answers",
            "crl-answers.toml",
            "--allow-network",
        ],
        &[],
    ));
    let text =
        stdout(&openssl(&["crl", "-in", c.path("crl-ok/crl/crl.pem").to_str().expect("utf8"), "-noout", "-text"]));
    assert!(
        text.contains("X509v3 CRL Number: \n                2"),
        "the crashed ceremony's number 1 is never reused: {text}"
    );
}

#[test]
fn the_requesters_sheet_words_pass_the_csr_read_back_and_a_value_sharing_30_or_80_bits_does_not() {
    let c = Ca::new();
    // The intermediate host makes its key and request on its own token and
    // prints the requester's sheet.
    c.hsm.init_token("int", "12345678", PIN);
    std::fs::write(
        c.path("host-env.toml"),
        format!(
            "output_dir = \"issuer\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"int\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
            c.hsm.module.display()
        ),
    )
    .expect("env");
    let o = c.keyrite(
        &[
            "intermediate",
            "request",
            "--env",
            "host-env.toml",
            "--out",
            "usb/request",
            "--label",
            "issuing-e1",
            "--subject-cn",
            "keyrite Example Issuing CA E1 (constrained)",
            "--subject-o",
            "keyrite Example",
            "--subject-c",
            "DE",
            "--requester",
            "Ivan Intermediate-Host",
        ],
        &[],
    );
    assert_ok(&o);
    let sheet = stdout(&o);
    let after = |label: &str| -> String {
        let mut lines = sheet.lines().skip_while(|l| !l.starts_with(label));
        let hex = lines.next().and_then(|l| l.strip_prefix(label)).map(|r| r.trim().to_string());
        let words = lines.next().and_then(|l| l.trim_start().strip_prefix("read-back")).map(|r| r.trim().to_string());
        format!("{}|{}", hex.unwrap_or_default(), words.unwrap_or_default())
    };
    let (csr_hex, sheet_words) =
        after("CSR SHA-256").split_once('|').map(|(a, b)| (a.to_string(), b.to_string())).expect("CSR lines");
    let (spki_hex, spki_words) =
        after("public key SHA-256").split_once('|').map(|(a, b)| (a.to_string(), b.to_string())).expect("key lines");
    let csr_pem = std::fs::read(c.path("usb/request/csr.pem")).expect("csr");
    let csr = keyrite::transfer::csr::parse_csr(&csr_pem).expect("csr");
    // The sheet carries the CSR's and the key's SHA-256 at full strength,
    // in hex and in the 13 words the ceremony will ask for.
    assert_eq!(csr_hex, csr.sha256().hex);
    assert_eq!(spki_hex, csr.spki_sha256().hex);
    assert_eq!(sheet_words, csr.sha256().read_back_grouped(), "{sheet}");
    assert_eq!(spki_words, csr.spki_sha256().read_back_grouped(), "{sheet}");
    let read = sheet_words.replace(" · ", " ");
    assert_eq!(read.split(' ').count(), 13);

    // A CSR ground to share the sheet's first 30 or 80 bits is not signed.
    let log_len = |c: &Ca| std::fs::read_to_string(c.path("ca/audit.jsonl")).map(|l| l.lines().count()).unwrap_or(0);
    for same in [3, 8] {
        let out = format!("near-{same}");
        let before = log_len(&c);
        let o = c.sign_reading("usb", &out, &[("csr-hash", near_miss(&read, same))], None);
        assert_fails_with(&o, "the witness read back");
        c.assert_nothing_signed(&out);
        let log = std::fs::read_to_string(c.path("ca/audit.jsonl")).expect("CA log");
        let new: Vec<&str> = log.lines().skip(before).collect();
        assert!(new.iter().any(|l| l.contains("\"event\":\"deviation\"") && l.contains("CSR SHA-256")), "{log}");
        assert!(!new.iter().any(|l| l.contains("\"event\":\"certificate-signed\"")), "{log}");
    }

    // The words as the sheet prints them, separators and all, are accepted.
    assert_ok(&c.sign_reading("usb", "signed", &[("csr-hash", sheet_words.clone())], None));
    assert_eq!(c.issued_serials().len(), 1);
}

#[test]
fn a_request_or_template_changed_after_printing_is_refused_at_the_plan_read_back() {
    let c = Ca::new();
    c.request_bundle("usb", &ec_csr(c.work.path(), "approved"));
    let plan = "ceremonies/sign-intermediate.toml";
    let printed = c.keyrite(&["ceremony", "print", plan, "--input-dir", "usb"], &[]);
    assert_ok(&printed);
    let script = stdout(&printed);
    let words = printed_row(&script, "Plan read-back").replace(" · ", " ");
    for listed in [
        "sign-intermediate.toml",
        "../templates/intermediate-ca-constrained.toml",
        "request/manifest.json",
        "request/csr.pem",
    ] {
        assert!(script.contains(&format!("  {listed}\n")), "{listed} listed:\n{script}");
    }
    let csr_words = |usb: &str| {
        let pem = std::fs::read(c.path(&format!("{usb}/request/csr.pem"))).expect("csr");
        keyrite::transfer::csr::parse_csr(&pem).expect("csr").sha256().read_back_words()
    };

    // The courier swaps the request for another, well-formed one: the bundle
    // checks pass, the plan read-back does not.
    std::fs::rename(c.path("usb"), c.path("approved-usb")).expect("keep");
    c.request_bundle("usb", &ec_csr(c.work.path(), "swapped"));
    let read = [("plan-hash", words.clone()), ("csr-hash", csr_words("usb"))];
    let o = c.sign_reading("usb", "swapped", &read, None);
    assert_fails_with(&o, "step 2 (Compare the plan hash with the printed script): the witness read back");
    c.assert_nothing_signed("swapped");
    std::fs::remove_dir_all(c.path("usb")).expect("rm");
    std::fs::rename(c.path("approved-usb"), c.path("usb")).expect("back");

    // The template loses its name constraints after printing.
    let template = c.path("templates/intermediate-ca-constrained.toml");
    let text = std::fs::read_to_string(&template).expect("template");
    let edited = text.replace("excluded_dns = [\"secret.example.com\"]\n", "");
    assert_ne!(edited, text);
    std::fs::write(&template, &edited).expect("write");
    let read = [("plan-hash", words.clone()), ("csr-hash", csr_words("usb"))];
    let o = c.sign_reading("usb", "edited", &read, None);
    assert_fails_with(&o, "step 2 (Compare the plan hash with the printed script): the witness read back");
    c.assert_nothing_signed("edited");

    // Put back as printed, the same words pass.
    std::fs::write(&template, &text).expect("restore");
    assert_ok(&c.sign_reading("usb", "approved", &read, None));
    assert_eq!(c.issued_serials().len(), 1);
}

#[test]
fn a_csr_subject_that_differs_from_the_template_is_refused_unless_the_plan_accepts_it() {
    let c = Ca::new();
    let other = openssl_csr(
        c.work.path(),
        "other",
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-subj", "/C=DE/O=keyrite Example/CN=Requested Issuing CA"],
    );
    c.request_bundle("usb", &other);
    let log_before = std::fs::read(c.path("ca/audit.jsonl")).ok();
    let o = c.sign("usb", "refused", None);
    assert_fails_with(&o, "the CSR asks for subject \"CN=Requested Issuing CA,O=keyrite Example,C=DE\"");
    assert!(stderr(&o).contains("signs \"CN=keyrite Example Issuing CA E1 (constrained),O=keyrite Example,C=DE\""));
    assert!(stderr(&o).contains("replace_csr_subject = true"), "{}", stderr(&o));
    c.assert_nothing_signed("refused");
    assert_eq!(std::fs::read(c.path("ca/audit.jsonl")).ok(), log_before, "refused before the CA log is touched");

    // The witnessed plan accepts the change: signed, and both subjects are
    // on the screen and in the log.
    let plan = c.path("ceremonies/sign-intermediate.toml");
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replace("replace_csr_subject = false", "replace_csr_subject = true")).expect("write");
    let o = c.sign("usb", "accepted", None);
    assert_ok(&o);
    let screen = stdout(&o);
    assert!(screen.contains("CSR subject          CN=Requested Issuing CA,O=keyrite Example,C=DE"), "{screen}");
    assert!(
        screen.contains(
            "subject to sign      CN=keyrite Example Issuing CA E1 (constrained),O=keyrite Example,C=DE (from template"
        ),
        "{screen}"
    );
    assert!(screen.contains("DIFFERS from the CSR's: the plan accepts it"), "{screen}");
    let log = std::fs::read_to_string(c.path("ca/audit.jsonl")).expect("log");
    let signed = log.lines().find(|l| l.contains("\"event\":\"certificate-signed\"")).expect("signed entry");
    let entry: serde_json::Value = serde_json::from_str(signed).expect("json");
    assert_eq!(entry["details"]["csr_subject"], "CN=Requested Issuing CA,O=keyrite Example,C=DE");
    assert_eq!(entry["details"]["subject_replaced"], true);
    let subject = entry["details"]["subject"].as_str().expect("subject");
    assert!(subject.contains("keyrite Example Issuing CA E1 (constrained)"), "{subject}");
    let int = c.path("accepted/response/intermediate.pem");
    let text = stdout(&openssl(&["x509", "-in", p(&int), "-noout", "-subject"]));
    assert!(text.contains("CN = keyrite Example Issuing CA E1 (constrained)"), "{text}");
}

#[test]
fn a_state_json_put_back_from_before_a_revocation_stops_the_crl_ceremony_with_nothing_signed() {
    let c = Ca::new();
    c.request_bundle("usb", &ec_csr(c.work.path(), "int"));
    assert_ok(&c.sign("usb", "signed", None));
    let serial = c.issued_serials().pop().expect("the intermediate's serial");
    let kept_aside = std::fs::read(c.path("ca/state.json")).expect("state before the revocation");

    // The intermediate is revoked, and CRL 1 lists it.
    let plan = c.path("ceremonies/revoke.toml");
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replace("serial = \"00\"", &format!("serial = \"{serial}\""))).expect("write");
    assert_ok(&c.ceremony("ceremonies/revoke.toml", "revoked"));

    // Someone puts the old state.json back, then runs the CRL ceremony.
    std::fs::write(c.path("ca/state.json"), &kept_aside).expect("put the old state back");
    let log_before = std::fs::read(c.path("ca/audit.jsonl")).expect("CA log");
    let o = c.ceremony("ceremonies/crl.toml", "crl-after");
    assert_fails_with(&o, &format!("serial {serial} was revoked"));
    assert!(stderr(&o).contains("state.json") && stderr(&o).contains("shows it valid"), "{}", stderr(&o));
    assert!(list(&c.path("crl-after")).is_empty(), "no CRL bundle");
    assert_eq!(list(&c.path("ca/crls")), vec!["crl-1.der"], "no CRL signed");
    assert_eq!(std::fs::read(c.path("ca/audit.jsonl")).expect("log"), log_before, "the CA log is untouched");

    // `ca verify` says the same.
    let v = keyrite().args(["ca", "verify"]).arg(c.path("ca")).output().expect("ca verify");
    assert_fails_with(&v, &format!("serial {serial} was revoked"));
}
