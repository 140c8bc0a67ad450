//! The root key ceremony, run by the real binary against a real SoftHSM
//! token, its outputs checked with openssl and pkcs11-tool. These runs use
//! `ceremonies/root-init-hsm-only.toml`, whose key never leaves the token;
//! `tests/custody_ceremony.rs` runs the backup-enabled `root-init.toml`.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const PLAN: &str = "ceremonies/root-init-hsm-only.toml";
const PIN: &str = "314159";
const SO_PIN: &str = "27182818";

/// A prepared ceremony: token initialised, plan files copied, environment
/// and answers written, output directory created (empty).
struct Setup {
    hsm: SoftHsm,
    work: tempfile::TempDir,
}

impl Setup {
    fn new(token_label: &str) -> Self {
        let hsm = SoftHsm::new();
        hsm.init_token(token_label, SO_PIN, PIN);
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        std::fs::create_dir(work.path().join("out")).expect("out");
        let s = Setup { hsm, work };
        s.write_env(token_label);
        s.write_answers(None);
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn write_env(&self, token_label: &str) {
        std::fs::write(
            self.path("env.toml"),
            format!(
                "output_dir = \"out\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"{token_label}\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
                self.hsm.module.display()
            ),
        )
        .expect("env");
    }

    /// Answers with the real plan read-back (the 13 read-back words of the
    /// plan hash), or `read` to simulate a witness misreading.
    fn write_answers(&self, read: Option<&str>) {
        let words = read.map(str::to_string).unwrap_or_else(|| plan_words(&self.path(PLAN), None));
        std::fs::write(
            self.path("answers.toml"),
            format!(
                "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\nsecurity-officer = [\"Sam Officer\"]\n\n[answers]\nroom-sealed = true\nplan-hash = \"{words}\"\nroot-fingerprint = \"(as shown)\"\n"
            ),
        )
        .expect("answers");
    }

    fn run(&self, pin: &str) -> std::process::Output {
        keyrite()
            .current_dir(self.work.path())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env("KEYRITE_TEST_PIN", pin)
            .args(["ceremony", "run", PLAN, "--env", "env.toml", "--answers", "answers.toml", "--allow-network"])
            .output()
            .expect("run keyrite")
    }

    fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// Runs the ceremony into an empty output directory, the witness
    /// reading `plan_read_back` at the plan-hash step.
    fn run_reading(&self, plan_read_back: &str) -> std::process::Output {
        let _ = std::fs::remove_dir_all(self.out());
        std::fs::create_dir(self.out()).expect("out");
        self.write_answers(Some(plan_read_back));
        self.run(PIN)
    }

    /// The ceremony stopped at the plan read-back: the log keeps the
    /// deviation as evidence; no certificate, no key on the token.
    fn assert_stopped_before_any_key(&self, o: &std::process::Output, needle: &str) {
        assert_fails_with(o, needle);
        assert_eq!(list(&self.out()), vec!["root-r1-audit.jsonl"], "only the log");
        let log = std::fs::read_to_string(self.out().join("root-r1-audit.jsonl")).expect("log");
        assert!(log.contains("\"event\":\"deviation\"") && log.contains("\"event\":\"ceremony-aborted\""), "{log}");
        let objects = stdout(&self.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]));
        assert!(!objects.contains("root-r1"), "no key was made: {objects}");
    }
}

fn assert_ok(o: &std::process::Output) {
    assert!(o.status.success(), "keyrite failed:\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

fn assert_fails_with(o: &std::process::Output, needle: &str) {
    assert!(!o.status.success(), "keyrite should have failed; stdout:\n{}", stdout(o));
    let err = stderr(o);
    assert!(err.contains(needle), "error should mention {needle:?}; got:\n{err}");
}

#[test]
fn a_root_made_on_softhsm_verifies_and_its_key_never_leaves_the_token() {
    let s = Setup::new("root-token");
    let o = s.run(PIN);
    assert_ok(&o);
    let out = s.out();
    let pem = out.join("root-r1.pem");
    let pem_s = pem.to_str().expect("utf8");

    let v = openssl(&["verify", "-CAfile", pem_s, pem_s]);
    assert!(v.status.success(), "openssl verify: {}{}", stdout(&v), stderr(&v));

    let text = stdout(&openssl(&["x509", "-in", pem_s, "-noout", "-text"]));
    assert!(text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE"), "{text}");
    assert!(text.contains("X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(
        text.contains(
            "Subject: C = DE, O = keyrite Example, OU = Certificate Authority, CN = keyrite Example Root CA R1"
        ),
        "{text}"
    );
    assert!(text.contains("ASN1 OID: secp384r1") && text.contains("ecdsa-with-SHA384"), "{text}");

    // The DER output is the same certificate as the PEM one.
    let der_from_pem = openssl(&["x509", "-in", pem_s, "-outform", "DER"]).stdout;
    assert_eq!(der_from_pem, std::fs::read(out.join("root-r1.der")).expect("der"));

    // On the token: the private key is sensitive, never extractable, local.
    let objects = stdout(&s.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects", "--type", "privkey"]));
    let root = objects
        .split("Private Key Object")
        .find(|o| o.contains("label:      root-r1\n"))
        .expect("root private key listed");
    for flag in ["sensitive", "always sensitive", "never extractable", "local"] {
        assert!(root.contains(flag), "private key should be {flag}: {root}");
    }
    assert!(root.contains("Usage:      sign"), "{root}");

    // The certificate's public key is the token's public key: pkcs11-tool
    // prints the token's CKA_EC_POINT (a DER OCTET STRING around the point);
    // the point is the last 97 bytes of the certificate's P-384 SPKI.
    let cert_pub = s.path("cert-pub.pem");
    let p = openssl(&["x509", "-in", pem_s, "-noout", "-pubkey", "-out", cert_pub.to_str().expect("utf8")]);
    assert!(p.status.success());
    let spki = openssl(&["pkey", "-pubin", "-in", cert_pub.to_str().expect("utf8"), "-outform", "DER"]).stdout;
    let point = &spki[spki.len() - 97..];
    let publics = stdout(&s.hsm.pkcs11_tool(&["--list-objects", "--type", "pubkey"]));
    let root_pub =
        publics.split("Public Key Object").find(|o| o.contains("label:      root-r1\n")).expect("root public key");
    assert!(
        root_pub.contains(&format!("EC_POINT:   0461{}", hex::encode(point))),
        "token key differs from the certificate's: {root_pub}"
    );

    // The audit log verifies offline, and records the token without the PIN.
    let log = out.join("root-r1-audit.jsonl");
    let paper = paper_checkpoint(&stdout(&o));
    let verified = keyrite().args(["audit", "verify", "--checkpoint", &paper]).arg(&log).output().expect("verify");
    assert_ok(&verified);
    assert!(stdout(&verified).contains("the paper checkpoint matches"), "{}", stdout(&verified));
    let unpinned = keyrite().args(["audit", "verify"]).arg(&log).output().expect("verify");
    assert!(!unpinned.status.success(), "nothing pinned is not OK");
    let log_text = std::fs::read_to_string(&log).expect("log");
    assert!(log_text.contains("\"model\":\"SoftHSM v2\"") && log_text.contains("\"firmware\":"), "token facts logged");
    assert!(!log_text.contains(PIN), "the PIN must never reach the log");
    assert!(!stdout(&o).contains(PIN) && !stderr(&o).contains(PIN), "nor the terminal");
}

#[test]
fn the_audit_log_names_an_edit_a_deleted_line_a_swap_and_a_cut_tail() {
    let s = Setup::new("audit-token");
    assert_ok(&s.run(PIN));
    let log = std::fs::read_to_string(s.out().join("root-r1-audit.jsonl")).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 10);

    let check = |name: &str, tampered: String, needle: &str| {
        let path = s.path(&format!("{name}.jsonl"));
        std::fs::write(&path, tampered).expect("write");
        let o = keyrite().args(["audit", "verify"]).arg(&path).output().expect("verify");
        assert!(!o.status.success(), "{name}: tampered log must fail");
        let err = stderr(&o);
        assert!(err.contains(needle), "{name}: expected {needle:?} in:\n{err}");
    };
    let join = |ls: &[&str]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();

    // One byte changed in line 5: a participant's name.
    let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    edited[4] = edited[4].replacen("\"ok\"", "\"ko\"", 1);
    assert_ne!(edited[4], lines[4], "the edit must change the line");
    check("edited", edited.iter().map(|l| format!("{l}\n")).collect(), "line 5");

    let mut deleted = lines.clone();
    deleted.remove(6);
    check("deleted", join(&deleted), "line 7");

    let mut swapped = lines.clone();
    swapped.swap(8, 9);
    check("swapped", join(&swapped), "line 9");

    // Cut right after the first checkpoint: still a valid prefix, but the
    // ceremony's closing checkpoint is gone.
    let first_checkpoint = lines.iter().position(|l| l.contains("\"event\":\"checkpoint\"")).expect("checkpoint");
    check("cut", join(&lines[..=first_checkpoint]), "the tail may have been cut");
}

#[test]
fn a_ceremony_file_with_an_unknown_key_is_refused_before_anything_happens() {
    let s = Setup::new("unknown-key-token");
    let plan = s.path(PLAN);
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replace("[key]\n", "[key]\nslot = 0\n")).expect("write");
    let o = s.run(PIN);
    assert_fails_with(&o, "unknown field `slot`");
    assert!(stderr(&o).contains("root-init-hsm-only.toml"), "the message names the file");
    assert!(list(&s.out()).is_empty(), "nothing written: {:?}", list(&s.out()));
}

#[test]
fn an_existing_output_is_never_overwritten() {
    let s = Setup::new("exists-token");
    std::fs::write(s.out().join("root-r1.pem"), "keep me").expect("write");
    let o = s.run(PIN);
    assert_fails_with(&o, "root-r1.pem: already exists");
    assert_eq!(std::fs::read_to_string(s.out().join("root-r1.pem")).expect("read"), "keep me");
    assert_eq!(list(&s.out()), vec!["root-r1.pem"]);
    // And no key was made on the token.
    let objects = stdout(&s.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]));
    assert!(!objects.contains("root-r1"), "no key may be generated: {objects}");
}

#[test]
fn a_wrong_pin_stops_the_ceremony_with_nothing_written() {
    let s = Setup::new("pin-token");
    let o = s.run("000000");
    assert_fails_with(&o, "C_Login failed");
    assert!(stderr(&o).contains("the PIN is wrong"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("000000"), "the PIN is never echoed");
    assert!(list(&s.out()).is_empty());
}

#[test]
fn a_token_that_does_not_exist_is_named_with_the_tokens_present() {
    let s = Setup::new("present-token");
    s.write_env("absent-token");
    let o = s.run(PIN);
    assert_fails_with(&o, "no token labelled \"absent-token\"");
    assert!(stderr(&o).contains("\"present-token\""), "lists what is there: {}", stderr(&o));
    assert!(list(&s.out()).is_empty());
}

#[test]
fn a_key_label_already_on_the_token_is_refused() {
    let s = Setup::new("label-token");
    assert_ok(&s.run(PIN));
    // Same token, fresh output directory: the labels are taken now.
    std::fs::rename(s.out(), s.path("first-run")).expect("move");
    std::fs::create_dir(s.out()).expect("out");
    let o = s.run(PIN);
    assert_fails_with(&o, "is already used by an object on token \"label-token\"");
    assert!(list(&s.out()).is_empty());
}

#[test]
fn an_unsupported_algorithm_is_refused_by_name() {
    let s = Setup::new("alg-token");
    let plan = s.path(PLAN);
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replacen("algorithm = \"ecdsa-p384\"", "algorithm = \"ecdsa-p521\"", 1)).expect("write");
    let o = s.run(PIN);
    assert_fails_with(&o, "key.algorithm");
    assert!(stderr(&o).contains("unsupported key algorithm \"ecdsa-p521\""), "{}", stderr(&o));
    assert!(list(&s.out()).is_empty());
}

#[test]
fn a_witness_who_reads_back_the_wrong_plan_words_stops_the_ceremony_before_any_key_exists() {
    let s = Setup::new("wrong-token");
    let o = s.run_reading("zero zero zero");
    s.assert_stopped_before_any_key(&o, "the witness read back \"zero zero zero\"");
}

#[test]
fn a_plan_hash_read_back_sharing_its_first_30_or_80_bits_stops_the_ceremony_before_any_key_exists() {
    let s = Setup::new("readback-token");
    let printed = print_script(s.work.path(), &[PLAN]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let words = printed_row(&stdout(&printed), "Plan read-back").replace(" · ", " ");
    assert_eq!(words.split(' ').count(), 13, "13 words, 130 bits: {words}");
    assert_eq!(words, plan_words(&s.path(PLAN), None), "the paper shows what the ceremony compares");

    // A second plan ground to share the first 30, or 80, bits.
    for same in [3, 8] {
        let o = s.run_reading(&near_miss(&words, same));
        s.assert_stopped_before_any_key(&o, "the witness read back");
    }
    // Three right words were the whole check before; now they are 30 bits too few.
    let o = s.run_reading(&words.split(' ').take(3).collect::<Vec<_>>().join(" "));
    s.assert_stopped_before_any_key(&o, "carries only 30 bits");

    // The full read-back passes, and the log says how many bits were confirmed.
    let o = s.run_reading(&words);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let log = std::fs::read_to_string(s.path("out/root-r1-audit.jsonl")).expect("log");
    let confirmed = log.lines().find(|l| l.contains("\"event\":\"witness-confirmed\"")).expect("confirmed");
    assert!(confirmed.contains("\"bits_confirmed\":130"), "{confirmed}");
}

#[test]
fn a_template_changed_after_printing_is_refused_at_the_plan_read_back() {
    let s = Setup::new("readback-token");
    let printed = print_script(s.work.path(), &[PLAN]);
    let words = printed_row(&stdout(&printed), "Plan read-back").replace(" · ", " ");
    let script = stdout(&printed);
    let template = s.path("templates/root-ca.toml");
    let text = std::fs::read_to_string(&template).expect("template");
    assert!(
        script.contains(&format!("{}  ../templates/root-ca.toml", keyrite::words::sha256_hex(text.as_bytes()))),
        "the template is listed with its SHA-256:\n{script}"
    );

    // After the script was approved, the root's validity is stretched to the
    // template's ceiling; the ceremony file itself is untouched.
    let edited = text.replacen("validity = \"7305d\"", "validity = \"9000d\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&template, edited).expect("write");
    assert!(keyrite::config::Plan::load(&s.path(PLAN)).is_ok(), "the edited template is a valid template");
    let o = s.run_reading(&words);
    s.assert_stopped_before_any_key(&o, "the witness read back");
}

#[test]
fn rsa_roots_are_generated_in_the_token_too() {
    let s = Setup::new("rsa-token");
    let plan = s.path(PLAN);
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(&plan, text.replacen("algorithm = \"ecdsa-p384\"", "algorithm = \"rsa-3072\"", 1)).expect("write");
    s.write_answers(None);
    assert_ok(&s.run(PIN));
    let pem = s.out().join("root-r1.pem");
    let pem_s = pem.to_str().expect("utf8");
    let v = openssl(&["verify", "-CAfile", pem_s, pem_s]);
    assert!(v.status.success(), "{}", stderr(&v));
    let text = stdout(&openssl(&["x509", "-in", pem_s, "-noout", "-text"]));
    assert!(text.contains("Public-Key: (3072 bit)") && text.contains("sha256WithRSAEncryption"), "{text}");
}

/// Runs `script` in a new network namespace with sysfs remounted, so the
/// air-gap guard sees only the namespace's interfaces.
fn in_netns(s: &Setup, script: &str) -> std::process::Output {
    require_tool("unshare", "util-linux");
    require_tool("ip", "iproute2");
    std::process::Command::new("unshare")
        .args(["-n", "-m", "sh", "-c"])
        .arg(format!("mount -t sysfs none /sys && ip link set lo up && {script}"))
        .current_dir(s.work.path())
        .env("SOFTHSM2_CONF", &s.hsm.conf)
        .env("KEYRITE_TEST_PIN", PIN)
        .env("KEYRITE", env!("CARGO_BIN_EXE_keyrite"))
        .output()
        .expect("unshare")
}

#[test]
fn the_air_gap_guard_refuses_an_interface_that_is_up_and_allows_an_isolated_laptop() {
    let s = Setup::new("airgap-token");
    let run = format!("\"$KEYRITE\" ceremony run {PLAN} --env env.toml --answers answers.toml");
    let refused = in_netns(&s, &format!("ip link add kr0 type veth peer name kr1 && ip link set kr0 up && {run}"));
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("network interfaces are up: kr0"), "{}", stderr(&refused));
    assert!(list(&s.out()).is_empty());

    let isolated = in_netns(&s, &run);
    assert!(isolated.status.success(), "{}\n{}", stdout(&isolated), stderr(&isolated));
    let log = std::fs::read_to_string(s.out().join("root-r1-audit.jsonl")).expect("log");
    assert!(log.contains("\"network_interfaces_up\":[]"), "the log records the empty interface list");
}

/// Runs `script` under `unshare` with `flags` (and nothing remounted).
fn unshared(s: &Setup, flags: &[&str], script: &str) -> std::process::Output {
    require_tool("unshare", "util-linux");
    std::process::Command::new("unshare")
        .args(flags)
        .args(["sh", "-c", script])
        .current_dir(s.work.path())
        .env("SOFTHSM2_CONF", &s.hsm.conf)
        .env("KEYRITE_TEST_PIN", PIN)
        .env("KEYRITE", env!("CARGO_BIN_EXE_keyrite"))
        .output()
        .expect("unshare")
}

#[test]
fn unshare_n_alone_is_enough_to_rehearse_air_gapped() {
    // sysfs still shows the host's interfaces here (eth0 is up on the
    // host); the guard reads the namespace's own list.
    let s = Setup::new("unshare-token");
    let run = format!("\"$KEYRITE\" ceremony run {PLAN} --env env.toml --answers answers.toml");
    let o = unshared(&s, &["-n"], &run);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
}

#[test]
fn the_air_gap_guard_fails_closed_when_it_cannot_list_the_interfaces() {
    let s = Setup::new("blind-token");
    let run = format!("\"$KEYRITE\" ceremony run {PLAN} --env env.toml --answers answers.toml");
    // /proc hidden: the interface list cannot be read.
    let blind = unshared(&s, &["-n", "-m"], &format!("mount -t tmpfs none /proc && {run}"));
    assert!(!blind.status.success(), "{}", stdout(&blind));
    assert!(
        stderr(&blind).contains("the air-gap guard cannot tell whether this machine is networked"),
        "{}",
        stderr(&blind)
    );
    assert!(list(&s.out()).is_empty(), "nothing written");
    // An interface of this namespace that sysfs (the host's) does not show:
    // its state is unknown, so it counts as up.
    let unknown = unshared(&s, &["-n"], &format!("ip link add kr9 type veth peer name kr8 && {run}"));
    assert!(!unknown.status.success(), "{}", stdout(&unknown));
    assert!(stderr(&unknown).contains("network interfaces are up: kr8, kr9"), "{}", stderr(&unknown));
    assert!(list(&s.out()).is_empty(), "nothing written");
}

fn rehearse(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let o = keyrite().args(["rehearse", "--dir"]).arg(dir).args(extra).output().expect("rehearse");
    assert_ok(&o);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("rehearsal.json")).expect("rehearsal.json")).expect("json");
    for key in
        ["backend", "module", "token_label", "root_cert", "audit_log", "share_cards", "share_threshold", "backup_blob"]
    {
        assert!(json.get(key).is_some(), "rehearsal.json lacks {key}: {json}");
    }
    let cert = json["root_cert"].as_str().expect("root_cert");
    let v = openssl(&["verify", "-CAfile", cert, cert]);
    assert!(v.status.success(), "{}", stderr(&v));
    let log = json["audit_log"].as_str().expect("audit_log");
    let paper = json["audit_log_checkpoint"].as_str().expect("audit_log_checkpoint");
    assert_ok(&keyrite().args(["audit", "verify", "--checkpoint", paper, log]).output().expect("verify"));
    let ca_log = Path::new(json["ca_dir"].as_str().expect("ca_dir")).join("audit.jsonl");
    let ca_paper = json["ca_audit_log_checkpoint"].as_str().expect("ca_audit_log_checkpoint");
    let v = keyrite().args(["audit", "verify", "--checkpoint", ca_paper]).arg(&ca_log).output().expect("verify");
    assert_ok(&v);
    // The CRL ceremony's anchor came from the rehearsal, not from paper: the
    // log says so, and counts it towards rehearsal-grade.
    assert!(stdout(&v).contains(keyrite::ceremony::continuity::REHEARSAL_ANCHOR), "{}", stdout(&v));
    // Every custodian's card holds that custodian's words, and each checks
    // alone against the log.
    let cards = json["share_cards"].as_array().expect("share_cards");
    assert_eq!(cards.len(), 3);
    assert_eq!(json["share_threshold"], 2);
    for card in cards {
        let card = card.as_str().expect("card path");
        let text = std::fs::read_to_string(card).expect("card");
        assert!(text.contains("Words (33):"), "{text}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(card).expect("stat").permissions());
        assert_eq!(mode & 0o777, 0o600, "a share card is for its custodian only");
        let v = keyrite()
            .args(["shares", "verify", "--log", log, "--card", card, "--checkpoint", paper])
            .output()
            .expect("shares verify");
        assert_ok(&v);
        assert!(stdout(&v).contains("matches its commitment"), "{}", stdout(&v));
    }
    assert!(Path::new(json["backup_blob"].as_str().expect("blob")).exists());
    // The intermediate chains to the root, and the root's CRL (which lists
    // nothing yet) is accepted by openssl's CRL check.
    let int = json["intermediate_cert"].as_str().expect("intermediate_cert");
    let crl = json["root_crl"].as_str().expect("root_crl");
    let v = openssl(&["verify", "-crl_check", "-CRLfile", crl, "-CAfile", cert, int]);
    assert!(v.status.success(), "{}{}", stdout(&v), stderr(&v));
    assert!(
        stdout(&openssl(&["crl", "-in", crl, "-noout", "-text"])).contains("X509v3 CRL Number: \n                1")
    );
    let ca = json["ca_dir"].as_str().expect("ca_dir");
    assert_ok(&keyrite().args(["ca", "verify", ca]).output().expect("ca verify"));
    json
}

#[test]
fn rehearse_runs_the_bundled_ceremony_on_softhsm() {
    softhsm_module();
    let dir = tempfile::tempdir().expect("tempdir");
    let json = rehearse(&dir.path().join("r"), &[]);
    assert_eq!(json["backend"], "softhsm");
    assert!(json["module"].as_str().expect("module").ends_with("libsofthsm2.so"));
    assert_eq!(json["token_label"], "keyrite-rehearsal");
    // The rehearsal ran the repository's ceremony file byte for byte.
    let repo_plan =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("ceremonies/root-init.toml")).expect("plan");
    let copied = std::fs::read(dir.path().join("r/ceremonies/root-init.toml")).expect("copy");
    assert!(repo_plan == copied, "the rehearsal must run the repository's root-init.toml byte for byte");
}

#[test]
fn rehearse_runs_on_the_software_key_store_without_an_hsm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = dir.path().join("r");
    let json = rehearse(&r, &["--backend", "soft"]);
    assert_eq!(json["backend"], "soft");
    assert!(json["module"].is_null());

    // The software root was opened by two custodians' backup cards in the
    // CA ceremonies' preflight, and the CA log says who.
    let ca_log = std::fs::read_to_string(r.join("ca/audit.jsonl")).expect("CA log");
    let unlocked: Vec<&str> = ca_log.lines().filter(|l| l.contains("\"event\":\"store-unlocked\"")).collect();
    assert_eq!(unlocked.len(), 2, "sign-intermediate and crl each opened the store:\n{ca_log}");
    assert!(unlocked[0].contains("Rehearsal Custodian A, Rehearsal Custodian C"), "{}", unlocked[0]);

    // One card does not open it, and nothing is written.
    std::fs::create_dir(r.join("out2")).expect("out2");
    std::fs::write(
        r.join("env2.toml"),
        "output_dir = \"out2\"\nca_dir = \"ca\"\ncustodian_media = \"custodians\"\n[soft]\ndir = \"keystore\"\nsealing_key = { shares = \"root/root-r1-audit.jsonl\" }\n",
    )
    .expect("env");
    let answers = std::fs::read_to_string(r.join("ceremonies/answers/crl.rehearsal.toml")).expect("answers");
    let one = answers.replace("\"Rehearsal Custodian A\", \"Rehearsal Custodian C\"", "\"Rehearsal Custodian B\"");
    assert_ne!(one, answers);
    std::fs::write(r.join("one.toml"), one).expect("answers");
    let o = keyrite()
        .current_dir(&r)
        .args([
            "ceremony",
            "run",
            "ceremonies/crl.toml",
            "--env",
            "env2.toml",
            "--answers",
            "one.toml",
            "--allow-network",
        ])
        .output()
        .expect("keyrite");
    assert_fails_with(
        &o,
        "1 valid card(s), and the software key store's sealing key (the backup KEK) needs 2 of the 3",
    );
    assert!(list(&r.join("out2")).is_empty(), "nothing written");
}

#[test]
fn rehearse_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("keep"), "x").expect("write");
    let o = keyrite().args(["rehearse", "--dir"]).arg(dir.path()).output().expect("rehearse");
    assert_fails_with(&o, "is not empty");
    assert_eq!(list(dir.path()), vec!["keep"]);
}
