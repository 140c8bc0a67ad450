//! Witness read-backs at full strength, and one plan hash over every file
//! the ceremony reads.
//!
//! An insider who writes the plan and its template can prepare two variants
//! whose hashes share their first bits, have one printed and approved, and
//! run the other; or edit the template after the script was printed. These
//! tests play that insider: a read-back that agrees with the real value on
//! its first 30 or 80 bits, or a template changed after printing, stops the
//! ceremony before the root key exists. The plan hash printed on paper is
//! recomputed with the real `sha256sum`, as a reviewer without keyrite would.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use keyrite::ceremony::operator::CardKind;
use keyrite::ceremony::{engine, CeremonyError, Operator, ReadBack, RunOptions, ScriptedOperator};
use keyrite::config::{Answers, Backend, Environment, Plan, Role, SecretSource};
use keyrite::secret::Secret;
use keyrite::transfer::{BundleKind, BundleWriter};

const PLAN: &str = "ceremonies/root-init-hsm-only.toml";
const PIN: &str = "141421";

/// A root ceremony on a fresh SoftHSM token, run by the real binary.
struct Root {
    hsm: SoftHsm,
    work: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        let hsm = SoftHsm::new();
        hsm.init_token("root", "12345678", PIN);
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        let r = Root { hsm, work };
        std::fs::write(
            r.path("env.toml"),
            format!(
                "output_dir = \"out\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"root\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
                r.hsm.module.display()
            ),
        )
        .expect("env");
        r
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    /// Runs the plan with the witness reading `plan_read_back`, into a new
    /// empty output directory.
    fn run(&self, plan_read_back: &str) -> Output {
        let out = self.path("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir(&out).expect("out");
        std::fs::write(self.path("answers.toml"), answers(plan_read_back)).expect("answers");
        keyrite()
            .current_dir(self.work.path())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env("KEYRITE_TEST_PIN", PIN)
            .args(["ceremony", "run", PLAN, "--env", "env.toml", "--answers", "answers.toml", "--allow-network"])
            .output()
            .expect("keyrite")
    }

    /// The ceremony stopped at the plan read-back: a deviation in the log,
    /// no certificate, no key on the token.
    fn assert_stopped_before_any_key(&self, o: &Output, needle: &str) {
        assert!(!o.status.success(), "the ceremony must stop; stdout:\n{}", stdout(o));
        assert!(stderr(o).contains(needle), "expected {needle:?} in:\n{}", stderr(o));
        assert_eq!(list(&self.path("out")), vec!["root-r1-audit.jsonl"], "only the log, as evidence");
        let log = std::fs::read_to_string(self.path("out/root-r1-audit.jsonl")).expect("log");
        assert!(log.contains("\"event\":\"deviation\"") && log.contains("\"event\":\"ceremony-aborted\""), "{log}");
        let objects = stdout(&self.hsm.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]));
        assert!(!objects.contains("root-r1"), "no key was made: {objects}");
    }
}

fn answers(plan_read_back: &str) -> String {
    format!(
        "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\nsecurity-officer = [\"Sam Officer\"]\n\n[answers]\nroom-sealed = true\nplan-hash = \"{plan_read_back}\"\nroot-fingerprint = \"(as shown)\"\n"
    )
}

/// The `Plan SHA-256` and `Plan read-back` rows of a printed script.
fn printed_row(script: &str, row: &str) -> String {
    let prefix = format!("| {row} | ");
    script
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.trim_end_matches(" |").to_string())
        .unwrap_or_else(|| panic!("no {row:?} row in the printed script:\n{script}"))
}

fn print(dir: &Path, args: &[&str]) -> Output {
    keyrite().current_dir(dir).args(["ceremony", "print"]).args(args).output().expect("keyrite")
}

#[test]
fn a_plan_hash_read_back_sharing_its_first_30_or_80_bits_stops_the_ceremony_before_any_key_exists() {
    let r = Root::new();
    let printed = print(r.work.path(), &[PLAN]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let words = printed_row(&stdout(&printed), "Plan read-back").replace(" · ", " ");
    assert_eq!(words.split(' ').count(), 13, "13 words, 130 bits: {words}");
    assert_eq!(words, plan_words(&r.path(PLAN), None), "the paper shows what the ceremony compares");

    // A second plan ground to share the first 30, or 80, bits.
    for same in [3, 8] {
        let o = r.run(&near_miss(&words, same));
        r.assert_stopped_before_any_key(&o, "the witness read back");
    }
    // Three right words were the whole check before; now they are 30 bits too few.
    let o = r.run(&words.split(' ').take(3).collect::<Vec<_>>().join(" "));
    r.assert_stopped_before_any_key(&o, "carries only 30 bits");

    // The full read-back passes, and the log says how many bits were confirmed.
    let o = r.run(&words);
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let log = std::fs::read_to_string(r.path("out/root-r1-audit.jsonl")).expect("log");
    let confirmed = log.lines().find(|l| l.contains("\"event\":\"witness-confirmed\"")).expect("confirmed");
    assert!(confirmed.contains("\"bits_confirmed\":130"), "{confirmed}");
}

#[test]
fn a_template_changed_after_printing_is_refused_at_the_plan_read_back() {
    let r = Root::new();
    let printed = print(r.work.path(), &[PLAN]);
    let words = printed_row(&stdout(&printed), "Plan read-back").replace(" · ", " ");
    let script = stdout(&printed);
    let template = r.path("templates/root-ca.toml");
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
    assert!(Plan::load(&r.path(PLAN)).is_ok(), "the edited template is a valid template");
    let o = r.run(&words);
    r.assert_stopped_before_any_key(&o, "the witness read back");
}

/// A witness who, at `key`, reads back a value that agrees with the screen
/// on its first `same` words only; every other prompt is answered from the
/// answers file.
struct NearMissWitness {
    inner: ScriptedOperator,
    key: &'static str,
    same: usize,
}

impl Operator for NearMissWitness {
    fn say(&mut self, text: &str) {
        self.inner.say(text)
    }
    fn participants(&mut self, key: &str, role: &Role) -> Result<Vec<String>, CeremonyError> {
        self.inner.participants(key, role)
    }
    fn confirm(&mut self, key: &str, question: &str) -> Result<bool, CeremonyError> {
        self.inner.confirm(key, question)
    }
    fn read_back(&mut self, key: &str, question: &str, shown: &str) -> Result<ReadBack, CeremonyError> {
        if key == self.key {
            Ok(ReadBack { text: near_miss(shown, self.same), echoed: false })
        } else {
            self.inner.read_back(key, question, shown)
        }
    }
    fn secret(&mut self, key: &str, question: &str) -> Result<Secret, CeremonyError> {
        self.inner.secret(key, question)
    }
    fn hand_out_card(
        &mut self,
        key: &str,
        custodian: &str,
        number: u8,
        card: &Secret,
        kind: CardKind,
    ) -> Result<Option<PathBuf>, CeremonyError> {
        self.inner.hand_out_card(key, custodian, number, card, kind)
    }
    fn take_card(&mut self, key: &str, custodian: &str, attempt: u32, kind: CardKind) -> Result<Secret, CeremonyError> {
        self.inner.take_card(key, custodian, attempt, kind)
    }
    fn is_interactive(&self) -> bool {
        self.inner.is_interactive()
    }
}

#[test]
fn a_root_fingerprint_read_back_sharing_its_first_30_or_80_bits_stops_the_ceremony() {
    // The fingerprint exists only once the root is signed, so the witness is
    // played in-process, on the software key store.
    for same in [3, 8] {
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        let out = work.path().join("out");
        std::fs::create_dir(&out).expect("out");
        let plan = Plan::load(&work.path().join(PLAN)).expect("plan");
        let env = Environment {
            backend: Backend::Soft {
                dir: work.path().join("keystore"),
                passphrase: Some(SecretSource::Memory(Secret::new(b"rehearsal passphrase".to_vec()))),
                sealing_key: None,
            },
            output_dir: out.clone(),
            input_dir: out.clone(),
            custodian_media: None,
            ca_dir: None,
            source: None,
        };
        let answers_text = answers(&plan_words(&work.path().join(PLAN), None));
        let answers = Answers::from_toml_str(&answers_text, Path::new("answers.toml")).expect("answers");
        let mut witness = NearMissWitness {
            inner: ScriptedOperator::new(answers, Box::new(std::io::sink())),
            key: "root-fingerprint",
            same,
        };
        let err = engine::run(&plan, &env, &mut witness, &RunOptions { allow_network: true })
            .err()
            .unwrap_or_else(|| panic!("a {}-bit read-back must not pass", same * 10));
        assert!(matches!(err, CeremonyError::ReadBackMismatch { .. }), "{err}");
        assert!(err.to_string().contains("Read back the root certificate fingerprint"), "{err}");
        // The ceremony stopped there: logged as a deviation, never closed.
        let log = std::fs::read_to_string(out.join("root-r1-audit.jsonl")).expect("log");
        let deviation = log.lines().find(|l| l.contains("\"event\":\"deviation\"")).expect("deviation logged");
        assert!(deviation.contains("root certificate SHA-256") && deviation.contains("\"bits_confirmed\":0"));
        assert!(log.contains("\"event\":\"ceremony-aborted\"") && !log.contains("\"event\":\"ceremony-closed\""));
    }
}

#[test]
fn the_plan_hash_is_what_sha256sum_prints_for_the_listed_files_and_print_shows_how() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path();
    copy_plan_files(dir);
    // A request bundle on "the stick", as the intermediate host writes it.
    let stick = dir.join("stick");
    std::fs::create_dir(&stick).expect("stick");
    let key = dir.join("int.key");
    let csr = dir.join("int.csr");
    let o = openssl(&[
        "req",
        "-new",
        "-nodes",
        "-subj",
        "/C=DE/O=keyrite Example/CN=keyrite Example Issuing CA E1",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        p(&key),
        "-out",
        p(&csr),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut w = BundleWriter::create(&stick.join("request")).expect("bundle");
    w.add("csr.pem", &std::fs::read(&csr).expect("csr")).expect("add");
    w.finish(BundleKind::IntermediateRequest, "Ivan Intermediate-Host", serde_json::Map::new()).expect("finish");

    let plan = "ceremonies/sign-intermediate.toml";
    // Without the stick, the plan hash cannot be printed: it covers the bundle.
    let o = print(dir, &[plan]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the request bundle request/ from the input directory too: pass --input-dir"),
        "{}",
        stderr(&o)
    );

    let o = print(dir, &[plan, "--input-dir", p(&stick)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = stdout(&o);
    let printed_hash = printed_row(&script, "Plan SHA-256");

    // A reviewer's recomputation with sha256sum alone, names as listed.
    require_tool("sha256sum", "coreutils");
    let sha256sum = |cwd: &Path, names: &[&str]| -> String {
        let o = std::process::Command::new("sha256sum").current_dir(cwd).args(names).output().expect("sha256sum");
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let mut listing =
        sha256sum(&dir.join("ceremonies"), &["sign-intermediate.toml", "../templates/intermediate-ca.toml"]);
    listing.push_str(&sha256sum(&stick, &["request/manifest.json", "request/csr.pem"]));
    std::fs::write(dir.join("listing"), &listing).expect("listing");
    let recomputed = sha256sum(dir, &["listing"]);
    assert_eq!(recomputed.split_whitespace().next(), Some(printed_hash.as_str()), "listing:\n{listing}");
    // The script lists exactly those lines.
    for line in listing.lines() {
        assert!(script.contains(line), "{line:?} listed in:\n{script}");
    }

    // The recipe the script prints runs as it stands (INPUT_DIR set).
    let recipe = script
        .split("To recompute it without keyrite:\n\n```\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("recipe");
    let o = std::process::Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(recipe.replace("INPUT_DIR", p(&stick)))
        .output()
        .expect("sh");
    assert!(o.status.success(), "{recipe}\n{}", stderr(&o));
    assert_eq!(stdout(&o).split_whitespace().next(), Some(printed_hash.as_str()), "{recipe}");
}
