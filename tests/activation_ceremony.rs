//! Activation end to end on a real SoftHSM token: the root ceremony with a
//! backup and `[activation]` makes the token's PIN random and splits it 2-of-3;
//! the old PIN no longer logs in; activation cards are their own files; a later
//! ceremony (a CRL) logs in with `pin = { shares = ... }` from two custodians'
//! cards; a wrong card is named; one card alone is refused. With a backup the
//! security officer's PIN gets the same treatment by default; a plan that
//! keeps it whole says why, and the log records the reason.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;

use common::*;
use keyrite::secret::Secret;

const PIN: &str = "271828";
const SO_PIN: &str = "14142135";
const CUSTODIANS: [&str; 3] = ["Alice Custodian", "Bob Custodian", "Carol Custodian"];
const PLAN: &str = "ceremonies/root-init-activation.toml";
const KEEP_SO_PIN: &str = "The SO PIN is sealed in the bank vault under two keys";

struct Activation {
    hsm: SoftHsm,
    work: tempfile::TempDir,
    /// The CA log's last checkpoint, as the paper log holds it.
    paper: std::cell::RefCell<Option<String>>,
}

impl Activation {
    /// Runs the root ceremony with backup and activation on token "root";
    /// `keep_so_pin` keeps the SO PIN whole (with a reason) instead of
    /// splitting it too.
    fn new(keep_so_pin: bool) -> (Self, Output) {
        let hsm = SoftHsm::new();
        hsm.init_token("root", SO_PIN, PIN);
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        std::fs::create_dir(work.path().join("out")).expect("out");
        let c = Activation { hsm, work, paper: Default::default() };
        if keep_so_pin {
            let text = std::fs::read_to_string(c.path(PLAN)).expect("plan");
            let kept = text.replacen(
                "custodian_role = \"custodian\"\n",
                &format!("custodian_role = \"custodian\"\nkeep_so_pin = \"{KEEP_SO_PIN}\"\n"),
                1,
            );
            assert_ne!(kept, text);
            std::fs::write(c.path(PLAN), kept).expect("plan");
        }
        std::fs::write(
            c.path("env.toml"),
            format!(
                "output_dir = \"out\"\ncustodian_media = \"media\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"root\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\nso_pin = {{ env = \"KEYRITE_TEST_SO_PIN\" }}\n",
                c.hsm.module.display()
            ),
        )
        .expect("env");
        let words = plan_words(&c.path(PLAN), None);
        std::fs::write(
            c.path("answers.toml"),
            format!(
                "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\nsecurity-officer = [\"Sam Officer\"]\ncustodian = [\"{}\", \"{}\", \"{}\"]\n\n[answers]\nroom-sealed = true\nplan-hash = \"{words}\"\nroot-fingerprint = \"(as shown)\"\n",
                CUSTODIANS[0], CUSTODIANS[1], CUSTODIANS[2]
            ),
        )
        .expect("answers");
        let o =
            c.keyrite(&["ceremony", "run", PLAN, "--env", "env.toml", "--answers", "answers.toml", "--allow-network"]);
        (c, o)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn keyrite(&self, args: &[&str]) -> Output {
        keyrite()
            .current_dir(self.work.path())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env("KEYRITE_TEST_PIN", PIN)
            .env("KEYRITE_TEST_SO_PIN", SO_PIN)
            .args(args)
            .output()
            .expect("keyrite")
    }

    fn card(&self, custodian: &str, suffix: &str) -> PathBuf {
        self.path(&format!("media/{}{suffix}", custodian.to_lowercase().replace(' ', "-")))
    }

    fn words(&self, custodian: &str, suffix: &str) -> String {
        let card = std::fs::read(self.card(custodian, suffix)).expect("card");
        keyrite::shares::words_from_card(&Secret::new(card)).expose_str().expect("utf8").to_string()
    }

    /// The PIN two custodians' cards rebuild, as keyrite derives it.
    fn rebuilt_pin(&self, suffix: &str) -> String {
        let a = self.words(CUSTODIANS[0], suffix);
        let b = self.words(CUSTODIANS[2], suffix);
        let seed = keyrite::shares::combine_mnemonics(&[&a, &b], b"").expect("combine");
        let pin = keyrite::hsm::backup::pin_from_seed(&seed).expect("pin");
        pin.expose_str().expect("utf8").to_string()
    }

    /// Runs the CRL ceremony against a CA directory of this root, logging in
    /// with the custodians named (their activation cards), into `out`.
    fn crl(&self, out: &str, custodians: &[&str]) -> Output {
        if !self.path("ca").exists() {
            assert_ok(&self.keyrite(&["ca", "init", "ca", "--root", "out/root-r1.pem"]));
        }
        std::fs::create_dir(self.path(out)).expect("crl out");
        let env = format!("{out}-env.toml");
        std::fs::write(
            self.path(&env),
            format!(
                "output_dir = \"{out}\"\nca_dir = \"ca\"\ncustodian_media = \"media\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"root\"\npin = {{ shares = \"out/root-r1-audit.jsonl\" }}\n",
                self.hsm.module.display()
            ),
        )
        .expect("env");
        let words = plan_words(&self.path("ceremonies/crl.toml"), None);
        let names = custodians.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
        let answers = format!("{out}-answers.toml");
        std::fs::write(
            self.path(&answers),
            format!(
                "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\ncustodian = [{names}]\n\n[answers]\nplan-hash = \"{words}\"\n{}",
                self.paper.borrow().as_ref().map(|p| format!("audit-checkpoint = \"{p}\"\n")).unwrap_or_default()
            ),
        )
        .expect("answers");
        let o = self.keyrite(&[
            "ceremony",
            "run",
            "ceremonies/crl.toml",
            "--env",
            &env,
            "--answers",
            &answers,
            "--allow-network",
        ]);
        if o.status.success() {
            *self.paper.borrow_mut() = Some(paper_checkpoint(&stdout(&o)));
        }
        o
    }

    fn login(&self, args: &[&str]) -> Output {
        let mut all = vec!["--token-label", "root", "--login"];
        all.extend_from_slice(args);
        all.push("--list-objects");
        self.hsm.pkcs11_tool(&all)
    }
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "keyrite failed:\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "keyrite should have failed; stdout:\n{}", stdout(o));
    assert!(stderr(o).contains(needle), "error should mention {needle:?}; got:\n{}", stderr(o));
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
fn the_root_token_is_activated_by_custodians_and_a_later_ceremony_logs_in_with_two_cards() {
    let (c, o) = Activation::new(true);
    assert_ok(&o);
    let log = c.path("out/root-r1-audit.jsonl");
    let paper = paper_checkpoint(&stdout(&o));
    assert_ok(&c.keyrite(&["audit", "verify", "--checkpoint", &paper, log.to_str().expect("utf8")]));
    let log_text = std::fs::read_to_string(&log).expect("log");
    // The plan kept the SO PIN whole and said why; the log says so too, and
    // the SO PIN is unchanged.
    let started = log_text.lines().find(|l| l.contains("\"event\":\"ceremony-started\"")).expect("started");
    assert!(
        started.contains(&format!(
            "\"security_officer_custody\":\"kept whole, not split among custodians: {KEEP_SO_PIN}\""
        )),
        "{started}"
    );
    assert!(!log_text.contains("\"purpose\":\"token security officer PIN\""));
    assert!(c.login(&["--login-type", "so", "--so-pin", SO_PIN, "--session-rw"]).status.success());
    for event in ["activation-card-handed-out", "activation-drill-passed", "token-pin-changed", "restore-drill-passed"]
    {
        assert!(log_text.contains(&format!("\"event\":\"{event}\"")), "log records {event}");
    }
    assert!(
        log_text.contains("\"purpose\":\"token user PIN\"") && log_text.contains("\"purpose\":\"root key backup KEK\"")
    );

    // The old PIN no longer logs in; the PIN two activation cards rebuild does.
    let old = c.login(&["--pin", PIN]);
    assert!(!old.status.success(), "the old PIN must fail: {}", stdout(&old));
    assert!(stderr(&old).contains("CKR_PIN_INCORRECT"), "{}", stderr(&old));
    let new_pin = c.rebuilt_pin(".activation.card.txt");
    assert!(c.login(&["--pin", &new_pin]).status.success(), "the rebuilt PIN logs in");
    assert!(!log_text.contains(&new_pin) && !stdout(&o).contains(&new_pin), "the PIN is never shown or logged");

    // Activation cards: their own files, mode 0600, saying what they open,
    // other words than the backup cards; none of their words in the log.
    for custodian in CUSTODIANS {
        let path = c.card(custodian, ".activation.card.txt");
        let mode = std::fs::metadata(&path).expect("activation card").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let text = std::fs::read_to_string(&path).expect("card");
        assert!(text.contains("activation (user PIN)"), "{text}");
        let words = c.words(custodian, ".activation.card.txt");
        assert_eq!(words.split(' ').count(), 20, "a 16-byte seed makes 20 words");
        assert_ne!(words, c.words(custodian, ".card.txt"));
        assert!(!log_text.contains(&words) && !stdout(&o).contains(&words));
        // The backup set is still the one `shares verify` finds.
        let v = c.keyrite(&[
            "shares",
            "verify",
            "--log",
            log.to_str().expect("utf8"),
            "--card",
            c.card(custodian, ".card.txt").to_str().expect("utf8"),
            "--checkpoint",
            &paper,
        ]);
        assert_ok(&v);
    }

    // A later ceremony logs in with two custodians' activation cards.
    let o = c.crl("crl1", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_ok(&o);
    assert!(c.path("crl1/crl/crl.pem").exists());
    let ca_log = std::fs::read_to_string(c.path("ca/audit.jsonl")).unwrap_or_else(|_| {
        // The CA directory names its log; find it.
        let entry = std::fs::read_dir(c.path("ca"))
            .expect("ca dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .expect("CA log");
        std::fs::read_to_string(entry).expect("log")
    });
    let activated =
        ca_log.lines().find(|l| l.contains("\"event\":\"token-activated\"")).expect("token-activated entry");
    assert!(activated.contains(CUSTODIANS[0]) && activated.contains(CUSTODIANS[2]), "{activated}");
    assert!(!activated.contains(CUSTODIANS[1]), "{activated}");
    assert!(!ca_log.contains(&new_pin) && !ca_log.contains(&c.words(CUSTODIANS[0], ".activation.card.txt")));

    // A wrong activation card (one word changed) is named, and the token is
    // not opened.
    let alice = c.card(CUSTODIANS[0], ".activation.card.txt");
    let original = std::fs::read_to_string(&alice).expect("card");
    std::fs::write(&alice, swap_word(&original, 7)).expect("write");
    let o = c.crl("crl-bad", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "the activation (user PIN) card Alice Custodian entered is not valid");
    assert!(list(&c.path("crl-bad")).is_empty(), "nothing written");

    // A backup card is not an activation card: another set, named.
    std::fs::write(&alice, std::fs::read(c.card(CUSTODIANS[0], ".card.txt")).expect("backup card")).expect("write");
    let o = c.crl("crl-backup-card", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "Alice Custodian entered is from another set");

    // One card alone does not open the token.
    let o = c.crl("crl-alone", &[CUSTODIANS[1]]);
    assert_fails_with(&o, "1 valid card(s), and the token's user PIN needs 2 of the 3");

    // A wrong card among three is named and skipped; two good ones open.
    std::fs::write(&alice, swap_word(&original, 3)).expect("write");
    let o = c.crl("crl2", &CUSTODIANS);
    assert_ok(&o);
    assert!(stdout(&o).contains("REJECTED: the activation (user PIN) card Alice Custodian entered"), "{}", stdout(&o));
    std::fs::write(&alice, original).expect("restore card");
    assert_ok(&c.crl("crl3", &[CUSTODIANS[1], CUSTODIANS[0]]));
}

#[test]
fn with_a_backup_the_security_officer_pin_is_split_as_a_set_of_its_own() {
    let (c, o) = Activation::new(false);
    assert_ok(&o);
    let log_text = std::fs::read_to_string(c.path("out/root-r1-audit.jsonl")).expect("log");
    assert!(log_text.contains("\"purpose\":\"token security officer PIN\""), "SO set recorded");

    // The old SO PIN fails; the one two SO activation cards rebuild works.
    // (An SO login needs a read-write session; pkcs11-tool opens read-only
    // ones unless told.)
    let old = c.login(&["--login-type", "so", "--so-pin", SO_PIN, "--session-rw"]);
    assert!(!old.status.success(), "the old SO PIN must fail: {}", stdout(&old));
    assert!(stderr(&old).contains("CKR_PIN_INCORRECT"), "{}", stderr(&old));
    let so = c.rebuilt_pin(".so-activation.card.txt");
    let new = c.login(&["--login-type", "so", "--so-pin", &so, "--session-rw"]);
    assert!(new.status.success(), "the rebuilt SO PIN logs in: {}", stderr(&new));
    assert!(!log_text.contains(&so));
    for custodian in CUSTODIANS {
        let text = std::fs::read_to_string(c.card(custodian, ".so-activation.card.txt")).expect("so card");
        assert!(text.contains("activation (security officer PIN)"), "{text}");
        assert_ne!(c.words(custodian, ".so-activation.card.txt"), c.words(custodian, ".activation.card.txt"));
    }
    // The user PIN is split too, and a later ceremony still opens the token.
    assert!(!c.login(&["--pin", PIN]).status.success());
    assert_ok(&c.crl("crl1", &[CUSTODIANS[2], CUSTODIANS[1]]));
}

#[test]
fn activation_is_refused_on_the_software_store() {
    let work = tempfile::tempdir().expect("tempdir");
    copy_plan_files(work.path());
    std::fs::create_dir(work.path().join("out")).expect("out");
    std::fs::write(work.path().join("env.toml"), "output_dir = \"out\"\n[soft]\ndir = \"keystore\"\n").expect("env");
    std::fs::write(work.path().join("answers.toml"), "[participants]\nceremony-administrator = [\"Ada Admin\"]\n")
        .expect("answers");
    let o = keyrite()
        .current_dir(work.path())
        .args(["ceremony", "run", PLAN, "--env", "env.toml", "--answers", "answers.toml", "--allow-network"])
        .output()
        .expect("keyrite");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("the software key store has no PIN"), "{}", stderr(&o));
}

#[test]
fn a_root_log_re_signed_under_another_key_does_not_open_the_token() {
    let (c, o) = Activation::new(false);
    assert_ok(&o);
    // The insider rewrites the root ceremony's log under a key of their own,
    // keeping the card commitments: the cards still check against it.
    let fresh = keyrite::hsm::soft::SoftKey::generate("forger", keyrite::hsm::KeyAlgorithm::EcdsaP256).expect("key");
    resign_log(&c.path("out/root-r1-audit.jsonl"), &fresh);
    // Once the cards have opened the token, the log is checked against the
    // token's record of the root ceremony (and the audit key on it): refused
    // before anything is written.
    let o = c.crl("crl-forged", &[CUSTODIANS[0], CUSTODIANS[2]]);
    assert_fails_with(&o, "differ from the key store's record of this log");
    assert!(list(&c.path("crl-forged")).is_empty(), "nothing written");
    assert!(!c.path("ca/audit.jsonl").exists(), "no CA log started");
}
