//! n-of-m custody end to end: the backup-enabled root ceremony on a real
//! SoftHSM token, share cards checked alone, the KEK recombined by the
//! independent Python SLIP-0039 implementation, a restore into a fresh token
//! that then signs an intermediate openssl accepts under the original root,
//! and every bad share named.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const PIN: &str = "271828";
const SO_PIN: &str = "14142135";
const CUSTODIANS: [&str; 3] = ["Alice Custodian", "Bob Custodian", "Carol Custodian"];

struct Custody {
    hsm: SoftHsm,
    work: tempfile::TempDir,
    /// The final checkpoint of the log a restore reads (the root ceremony's,
    /// or after a reshare the reshare's), as the paper log holds it.
    source_paper: std::cell::RefCell<String>,
}

impl Custody {
    /// Runs the backup-enabled root ceremony on token "root".
    fn new() -> Self {
        let c = Custody::prepare();
        assert_ok(&c.run_root(&[]));
        c
    }

    /// Token "root", the plan files, environment and answers for the
    /// backup-enabled root ceremony, not yet run.
    fn prepare() -> Self {
        let hsm = SoftHsm::new();
        hsm.init_token("root", SO_PIN, PIN);
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        std::fs::create_dir(work.path().join("out")).expect("out");
        let c = Custody { hsm, work, source_paper: Default::default() };
        c.env("env.toml", "root", "out", "out");
        let words = plan_words(&c.path("ceremonies/root-init.toml"), None);
        std::fs::write(
            c.path("answers.toml"),
            format!(
                "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\nsecurity-officer = [\"Sam Officer\"]\ncustodian = [\"{}\", \"{}\", \"{}\"]\n\n[answers]\nroom-sealed = true\nplan-hash = \"{words}\"\nroot-fingerprint = \"(as shown)\"\n",
                CUSTODIANS[0], CUSTODIANS[1], CUSTODIANS[2]
            ),
        )
        .expect("answers");
        c
    }

    /// Runs the root ceremony, with extra environment variables.
    fn run_root(&self, vars: &[(&str, &str)]) -> Output {
        let mut cmd = self.command();
        cmd.args([
            "ceremony",
            "run",
            "ceremonies/root-init.toml",
            "--env",
            "env.toml",
            "--answers",
            "answers.toml",
            "--allow-network",
        ]);
        cmd.envs(vars.iter().copied());
        let o = cmd.output().expect("keyrite");
        if o.status.success() {
            *self.source_paper.borrow_mut() = paper_checkpoint(&stdout(&o));
        }
        o
    }

    fn paper(&self) -> String {
        self.source_paper.borrow().clone()
    }

    /// `keyrite shares verify` of `card` against `log`, with `pins` (the
    /// paper log's values, or `--unpinned`).
    fn shares_verify(&self, log: &Path, card: &Path, pins: &[&str]) -> Output {
        let mut args =
            vec!["shares", "verify", "--log", log.to_str().expect("utf8"), "--card", card.to_str().expect("utf8")];
        args.extend_from_slice(pins);
        self.keyrite(&args)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn env(&self, name: &str, token: &str, out: &str, input: &str) {
        std::fs::write(
            self.path(name),
            format!(
                "output_dir = \"{out}\"\ninput_dir = \"{input}\"\ncustodian_media = \"media\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"{token}\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\nso_pin = {{ env = \"KEYRITE_TEST_SO_PIN\" }}\n",
                self.hsm.module.display()
            ),
        )
        .expect("env");
    }

    fn command(&self) -> std::process::Command {
        let mut cmd = keyrite();
        cmd.current_dir(self.work.path())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env("KEYRITE_TEST_PIN", PIN)
            .env("KEYRITE_TEST_SO_PIN", SO_PIN);
        cmd
    }

    fn keyrite(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("keyrite")
    }

    fn card(&self, custodian: &str) -> PathBuf {
        self.path(&format!("media/{}.card.txt", custodian.to_lowercase().replace(' ', "-")))
    }

    /// Prepares and runs a restore into a fresh token `token`, with the
    /// custodians named; returns the run's output.
    fn restore(&self, token: &str, custodians: &[&str]) -> Output {
        self.hsm.init_token(token, SO_PIN, PIN);
        let out = format!("restore-{token}");
        std::fs::create_dir(self.path(&out)).expect("restore out");
        self.env(&format!("{token}.toml"), token, &out, "out");
        let words = plan_words(&self.path("ceremonies/root-restore.toml"), Some(&self.path("out")));
        let names = custodians.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let answers = format!("{token}-answers.toml");
        std::fs::write(
            self.path(&answers),
            format!("[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\ncustodian = [{names}]\n\n[answers]\nplan-hash = \"{words}\"\nsource-log-checkpoint = \"{}\"\n", self.paper()),
        )
        .expect("answers");
        let env = format!("{token}.toml");
        self.keyrite(&[
            "ceremony",
            "run",
            "ceremonies/root-restore.toml",
            "--env",
            &env,
            "--answers",
            &answers,
            "--allow-network",
        ])
    }

    fn token_objects(&self, token: &str) -> String {
        stdout(&self.hsm.pkcs11_tool(&["--token-label", token, "--login", "--pin", PIN, "--list-objects"]))
    }

    /// Token "root"'s objects as the security officer sees them, logged in
    /// with the SO PIN the token was made with (an SO login needs a
    /// read-write session).
    fn so_objects(&self, extra: &[&str]) -> Output {
        let mut args =
            vec!["--token-label", "root", "--login", "--login-type", "so", "--so-pin", SO_PIN, "--session-rw"];
        args.push("--list-objects");
        args.extend_from_slice(extra);
        self.hsm.pkcs11_tool(&args)
    }
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "keyrite failed:\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "keyrite should have failed; stdout:\n{}", stdout(o));
    assert!(stderr(o).contains(needle), "error should mention {needle:?}; got:\n{}", stderr(o));
}

#[test]
fn the_root_ceremony_backs_up_splits_and_drills_and_each_share_checks_alone() {
    let c = Custody::new();
    let out = c.path("out");
    for name in ["root-r1.pem", "root-r1.der", "root-r1-backup.json", "root-r1-audit.jsonl"] {
        assert!(out.join(name).exists(), "{name} written");
    }
    let log = out.join("root-r1-audit.jsonl");
    let log_text = std::fs::read_to_string(&log).expect("log");
    for event in ["key-backed-up", "share-handed-out", "shares-issued", "share-verified", "restore-drill-passed"] {
        assert!(log_text.contains(&format!("\"event\":\"{event}\"")), "log records {event}");
    }
    // No share word and no PIN reaches the log.
    for custodian in CUSTODIANS {
        let card = std::fs::read_to_string(c.card(custodian)).expect("card");
        assert!(card.contains(&format!("Custodian:       {custodian}")), "{card}");
        let words = keyrite::shares::words_from_card(&keyrite::secret::Secret::new(card.into_bytes()));
        let words = words.expose_str().expect("utf8").to_string();
        assert_eq!(words.split(' ').count(), 33);
        assert!(!log_text.contains(&words), "the share must not be in the log");
        let v = c.shares_verify(&log, &c.card(custodian), &["--checkpoint", &c.paper()]);
        assert_ok(&v);
        assert!(stdout(&v).contains(&format!("held by {custodian}")), "{}", stdout(&v));
    }
    assert!(!log_text.contains(PIN) && !log_text.contains(SO_PIN));

    // The root key is on the token, sensitive, and extractable only under
    // wrap-with-trusted; the backup KEK is gone from the token.
    let objects = c.token_objects("root");
    let root =
        objects.split("Private Key Object").skip(1).find(|o| o.contains("label:      root-r1\n")).expect("root key");
    assert!(root.contains("sensitive") && root.contains("always sensitive") && root.contains("local"), "{root}");
    assert!(!objects.contains("keyrite-kek-"), "the KEK must be destroyed on the token: {objects}");

    // Whoever holds both PINs could make a trusted key and export the root:
    // the security officer PIN is split among the custodians by default.
    let started = log_text.lines().find(|l| l.contains("\"event\":\"ceremony-started\"")).expect("started");
    assert!(started.contains("\"security_officer_custody\":\"split 2 of 3 among the custodian role"), "{started}");
    assert!(log_text.contains("\"purpose\":\"token security officer PIN\""), "the SO PIN's card set is logged");
    let old_so = c.so_objects(&[]);
    assert!(!old_so.status.success(), "the old SO PIN must no longer log in: {}", stdout(&old_so));
    assert!(stderr(&old_so).contains("CKR_PIN_INCORRECT"), "{}", stderr(&old_so));
    for custodian in CUSTODIANS {
        let card = c.path(&format!("media/{}.so-activation.card.txt", custodian.to_lowercase().replace(' ', "-")));
        let text = std::fs::read_to_string(&card).expect("SO activation card");
        assert!(text.contains("activation (security officer PIN)"), "{text}");
    }

    // A share with one word changed is caught by its checksum, and named.
    let card = std::fs::read_to_string(c.card(CUSTODIANS[1])).expect("card");
    let bad = c.path("bad-card.txt");
    std::fs::write(&bad, swap_word(&card, 12)).expect("write");
    let v = c.shares_verify(&log, &bad, &["--checkpoint", &c.paper()]);
    assert!(!v.status.success());
    assert!(stderr(&v).contains("checksum"), "{}", stderr(&v));
}

#[test]
fn shares_made_by_keyrite_rebuild_the_kek_in_the_python_reference_implementation() {
    let c = Custody::new();
    let cards: Vec<String> = CUSTODIANS[..2]
        .iter()
        .map(|n| {
            let card = std::fs::read(c.card(n)).expect("card");
            keyrite::shares::words_from_card(&keyrite::secret::Secret::new(card))
                .expose_str()
                .expect("utf8")
                .to_string()
        })
        .collect();
    let blob: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.path("out/root-r1-backup.json")).expect("blob")).expect("json");
    // The KEK check value is HMAC-SHA256(KEK, "keyrite KEK check v1")[:8];
    // Python recombines the shares on its own and computes it.
    let script = "import sys, hmac, hashlib\nfrom shamir_mnemonic import combine_mnemonics\nlines=[l.strip() for l in sys.stdin if l.strip()]\nkek=combine_mnemonics(lines)\nprint(hmac.new(kek, b'keyrite KEK check v1', hashlib.sha256).digest()[:8].hex())\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (apt-get install python3; pip install shamir-mnemonic)");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().expect("stdin");
        for words in &cards {
            writeln!(stdin, "{words}").expect("write");
        }
    }
    let o = child.wait_with_output().expect("python");
    assert!(o.status.success(), "python shamir-mnemonic failed (pip install shamir-mnemonic): {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), blob["kek_check"].as_str().expect("kek_check"));
}

#[test]
fn a_restore_from_two_shares_signs_an_intermediate_that_openssl_accepts_under_the_original_root() {
    let c = Custody::new();
    let o = c.restore("restored", &[CUSTODIANS[2], CUSTODIANS[0]]);
    assert_ok(&o);
    let log = c.path("restore-restored/root-r1-restore-audit.jsonl");
    let paper = paper_checkpoint(&stdout(&o));
    assert_ok(&keyrite().args(["audit", "verify", "--checkpoint", &paper]).arg(&log).output().expect("verify"));
    assert!(std::fs::read_to_string(&log).expect("log").contains("\"event\":\"key-restored\""));

    // Sign an intermediate with the restored key, through the library's one
    // issuance path, and let openssl judge it against the original root.
    std::env::set_var("SOFTHSM2_CONF", &c.hsm.conf);
    let root_pem = std::fs::read(c.path("out/root-r1.pem")).expect("root");
    let (_, root_der) = pem_rfc7468::decode_vec(&root_pem).expect("pem");
    let store = keyrite::hsm::keystore::KeyStore::open_pkcs11(
        &c.hsm.module,
        &keyrite::hsm::pkcs11::TokenSelector { label: "restored".into(), serial: None },
        &keyrite::secret::Secret::new(PIN.as_bytes().to_vec()),
    )
    .expect("open restored token");
    let root_key = store.find("root-r1", None).expect("restored key");
    let subject =
        keyrite::hsm::soft::SoftKey::generate("int", keyrite::hsm::KeyAlgorithm::EcdsaP256).expect("subject key");
    let profile =
        keyrite::profile::Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/intermediate-ca.toml"))
            .expect("template");
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).expect("now");
    let issued = keyrite::profile::issue(
        &keyrite::profile::IssueRequest {
            profile: &profile,
            subject: None,
            subject_spki: keyrite::hsm::Signer::spki_der(&subject),
            sans: Vec::new(),
            serial: keyrite::hsm::RandomSource::random_bytes(&store, 20).expect("serial"),
            not_before: now,
            not_after: profile.not_after_for(now),
            issuer: keyrite::profile::IssuerRef::Certificate { der: &root_der },
        },
        root_key.signer.as_ref(),
    )
    .expect("issue intermediate with the restored key");
    let int = c.path("intermediate.pem");
    std::fs::write(&int, issued.pem).expect("write");
    let v =
        openssl(&["verify", "-CAfile", c.path("out/root-r1.pem").to_str().expect("utf8"), int.to_str().expect("utf8")]);
    assert!(v.status.success(), "openssl verify: {}{}", stdout(&v), stderr(&v));
}

#[test]
fn bad_shares_at_a_restore_are_named_and_nothing_is_restored() {
    let c = Custody::new();
    let alice = c.card(CUSTODIANS[0]);
    let carol = c.card(CUSTODIANS[2]);
    let original_carol = std::fs::read_to_string(&carol).expect("card");

    // One word changed on Carol's card.
    std::fs::write(&carol, swap_word(&original_carol, 5)).expect("write");
    let o = c.restore("typo", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "the share Carol Custodian entered is not valid");
    assert!(!c.token_objects("typo").contains("root-r1\n"), "nothing restored");

    // Carol brings a card of another set.
    let other = keyrite::shares::split(
        &keyrite::secret::Secret::new(vec![7u8; 32]),
        2,
        3,
        b"",
        0,
        &keyrite::hsm::soft::SystemRng,
    )
    .expect("split");
    std::fs::write(&carol, keyrite::shares::render_card("other", CUSTODIANS[2], &other[2], 3).expose()).expect("write");
    let o = c.restore("foreign", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "the share Carol Custodian entered is from another set");

    // Carol brings a copy of Alice's card: a duplicate.
    std::fs::copy(&alice, &carol).expect("copy");
    let o = c.restore("duplicate", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "Carol Custodian entered share 1, which was already entered: a duplicate");

    // Only one custodian comes: fewer than the threshold.
    let o = c.restore("alone", &[CUSTODIANS[0]]);
    assert_fails_with(&o, "role \"custodian\" needs at least 2 participant(s), 1 recorded");

    // With the right cards the same restore works.
    std::fs::write(&carol, original_carol).expect("restore card");
    assert_ok(&c.restore("good", &[CUSTODIANS[0], CUSTODIANS[2]]));
    assert!(c.token_objects("good").contains("label:      root-r1\n"));
}

#[test]
fn a_reshare_hands_the_backup_to_new_custodians_and_retires_the_old_cards() {
    let c = Custody::new();
    let new = ["Dave Custodian", "Erin Custodian", "Frank Custodian", "Grace Custodian"];
    std::fs::create_dir(c.path("reshare-out")).expect("out");
    c.env("reshare-env.toml", "root", "reshare-out", "out");
    let words = plan_words(&c.path("ceremonies/reshare.toml"), Some(&c.path("out")));
    let names = new.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        c.path("reshare-answers.toml"),
        format!("[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\ncustodian = [\"{}\", \"{}\"]\nnew-custodian = [{names}]\n\n[answers]\nplan-hash = \"{words}\"\nsource-log-checkpoint = \"{}\"\n", CUSTODIANS[1], CUSTODIANS[0], c.paper()),
    )
    .expect("answers");
    let o = c.keyrite(&[
        "ceremony",
        "run",
        "ceremonies/reshare.toml",
        "--env",
        "reshare-env.toml",
        "--answers",
        "reshare-answers.toml",
        "--allow-network",
    ]);
    assert_ok(&o);
    let log = c.path("reshare-out/root-r1-reshare-audit.jsonl");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("\"event\":\"share-set-retired\"") && text.contains("\"event\":\"restore-drill-passed\""),
        "{text}"
    );

    // A new card checks against the reshare's log; an old one is another set.
    let reshare_paper = paper_checkpoint(&stdout(&o));
    let check = |card: &Path| c.shares_verify(&log, card, &["--checkpoint", &reshare_paper]);
    assert_ok(&check(&c.card(new[3])));
    let old = check(&c.card(CUSTODIANS[2]));
    assert!(!old.status.success() && stderr(&old).contains("from another set"), "{}", stderr(&old));

    // A restore from three of the new custodians works; the inputs now name
    // the reshare's log, which holds the new set's commitments.
    std::fs::copy(&log, c.path("out/root-r1-reshare-audit.jsonl")).expect("copy log");
    *c.source_paper.borrow_mut() = reshare_paper.clone();
    let restore = c.path("ceremonies/root-restore.toml");
    let text = std::fs::read_to_string(&restore).expect("restore plan");
    std::fs::write(
        &restore,
        text.replace("ceremony_log = \"root-r1-audit.jsonl\"", "ceremony_log = \"root-r1-reshare-audit.jsonl\"")
            .replace("min = 2", "min = 3"),
    )
    .expect("write");
    assert_ok(&c.restore("after-reshare", &[new[0], new[2], new[3]]));
    assert!(c.token_objects("after-reshare").contains("label:      root-r1\n"));
}

/// Replaces word `n` (1-based) of a card with another list word.
fn swap_word(card: &str, n: usize) -> String {
    let needle = format!("{n:>2}. ");
    let at = card.find(&needle).expect("numbered word") + needle.len();
    let end = at + card[at..].find(|ch: char| ch.is_whitespace()).unwrap_or(card.len() - at);
    let word = &card[at..end];
    let replacement = if word == "academic" { "acid" } else { "academic" };
    format!("{}{}{}", &card[..at], replacement, &card[end..])
}

#[test]
fn a_source_log_re_signed_under_another_key_is_refused_by_the_restore_and_by_shares_verify() {
    let c = Custody::new();
    let log = c.path("out/root-r1-audit.jsonl");
    let card = c.card(CUSTODIANS[0]);
    let verify_card = |pins: &[&str]| c.shares_verify(&log, &card, pins);
    // Without a pin, `shares verify` says what it could not establish.
    assert_fails_with(&verify_card(&[]), "nothing ties it to the paper record");

    // The insider rewrites the root ceremony's log under a key of their own,
    // keeping the share commitments: consistent by itself, cards still match.
    let fresh = keyrite::hsm::soft::SoftKey::generate("forger", keyrite::hsm::KeyAlgorithm::EcdsaP256).expect("key");
    resign_log(&log, &fresh);
    assert_ok(&verify_card(&["--unpinned"]));
    assert_fails_with(&verify_card(&["--checkpoint", &c.paper()]), "no checkpoint in the log matches the paper log's");

    // The restore's witness types the final checkpoint from the paper log:
    // the forged log is refused before a PIN is asked for.
    let o = c.restore("forged", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "no checkpoint in the log matches the paper log's");
    assert!(list(&c.path("restore-forged")).is_empty(), "nothing written");
    assert!(!c.token_objects("forged").contains("root-r1\n"), "nothing restored");
}

#[test]
fn after_a_restore_the_cas_log_trusts_the_new_audit_key_by_the_custodians_succession() {
    let c = Custody::new();
    assert_ok(&c.keyrite(&["ca", "init", "ca", "--root", "out/root-r1.pem"]));
    // Runs the CRL ceremony on `token`, with the audit key labelled `label`,
    // the witness typing `paper`; returns the run and its final checkpoint.
    let crl = |token: &str, label: &str, paper: Option<&str>| -> (Output, Option<String>) {
        let out = format!("crl-{token}");
        std::fs::create_dir(c.path(&out)).expect("out");
        std::fs::write(
            c.path(&format!("{out}.toml")),
            format!(
                "output_dir = \"{out}\"\nca_dir = \"ca\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"{token}\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
                c.hsm.module.display()
            ),
        )
        .expect("env");
        let plan = format!("ceremonies/crl-{token}.toml");
        let text = std::fs::read_to_string(c.path("ceremonies/crl.toml")).expect("plan");
        std::fs::write(c.path(&plan), text.replace("label = \"root-r1-audit\"", &format!("label = \"{label}\"")))
            .expect("plan");
        let words = plan_words(&c.path(&plan), None);
        let paper = paper.map(|p| format!("audit-checkpoint = \"{p}\"\n")).unwrap_or_default();
        std::fs::write(
            c.path(&format!("{out}-answers.toml")),
            format!("[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\n\n[answers]\nplan-hash = \"{words}\"\n{paper}"),
        )
        .expect("answers");
        let o = c.keyrite(&[
            "ceremony",
            "run",
            &plan,
            "--env",
            &format!("{out}.toml"),
            "--answers",
            &format!("{out}-answers.toml"),
            "--allow-network",
        ]);
        let printed = o.status.success().then(|| paper_checkpoint(&stdout(&o)));
        (o, printed)
    };
    // The first CRL, on the root token, starts the CA's log with the root's
    // audit key and the custodians' quorum key the root ceremony left there.
    let (o, paper) = crl("root", "root-r1-audit", None);
    assert_ok(&o);
    let paper = paper.expect("paper");
    let ca_log = std::fs::read_to_string(c.path("ca/audit.jsonl")).expect("CA log");
    assert!(ca_log.contains("\"event\":\"audit-quorum-key-announced\""), "{ca_log}");
    let old_key = {
        let text = stdout(&o);
        let at = text.find("in use. Public key SHA-256:\n").expect("audit key") + 28;
        text[at..].split_whitespace().next().expect("hex").to_string()
    };

    // The root token is lost; the custodians restore the key into a fresh
    // one, which makes a new audit key, and authorise it.
    let o = c.restore("restored", &[CUSTODIANS[1], CUSTODIANS[2]]);
    assert_ok(&o);
    assert!(stdout(&o).contains("The custodians' quorum key authorised audit key"), "{}", stdout(&o));

    // The next CRL, on the restored token, continues the CA's log: the new
    // key is trusted through the succession the custodians signed.
    let (o, last) = crl("restored", "root-r1-restore-audit", Some(&paper));
    assert_ok(&o);
    let last = last.expect("paper");
    let v = keyrite()
        .args(["audit", "verify", "--audit-key-sha256", &old_key, "--checkpoint", &last])
        .arg(c.path("ca/audit.jsonl"))
        .output()
        .expect("verify");
    assert_ok(&v);
    assert!(stdout(&v).contains("succession   seq"), "{}", stdout(&v));
    assert!(!stdout(&v).contains("NOT trusted"), "{}", stdout(&v));
}

#[test]
fn a_backup_that_dies_holding_its_trusted_key_leaves_no_key_on_the_token() {
    let c = Custody::prepare();
    let o = c.run_root(&[("KEYRITE_CRASH_AT", "backup:kek-created")]);
    assert!(!o.status.success(), "the process must die: {}", stdout(&o));
    assert!(stderr(&o).contains("crash point backup:kek-created"), "{}", stderr(&o));
    // The trusted key existed on the token when keyrite died; as a session
    // object it died with it. Listed by another tool, as the SO and as the
    // user (the SO PIN is still the old one: the split comes later).
    let so = c.so_objects(&["--type", "secrkey"]);
    assert!(so.status.success(), "{}", stderr(&so));
    let user = c.token_objects("root");
    assert!(user.contains("root-r1"), "the root key itself is there: {user}");
    for listing in [stdout(&so), user] {
        assert!(!listing.contains("keyrite-kek-") && !listing.contains("Secret Key Object"), "{listing}");
    }
}
