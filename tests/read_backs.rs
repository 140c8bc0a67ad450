//! Witness read-backs at full strength, and one plan hash over every file
//! the ceremony reads.
//!
//! An insider who writes the plan and its template can prepare two variants
//! whose hashes share their first bits, have one printed and approved, and
//! run the other. Here the witness of a root ceremony confirms a root
//! fingerprint that agrees with the real one on its first 30 or 80 bits,
//! and the ceremony stops (the plan read-back and a template changed after
//! printing are in `root_ceremony.rs`, the CSR's in `offline_ca.rs`). The
//! plan hash printed on paper is recomputed with the real `sha256sum`, as a
//! reviewer without keyrite would.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use keyrite::ceremony::operator::CardKind;
use keyrite::ceremony::{engine, CeremonyError, Operator, ReadBack, RunOptions, ScriptedOperator};
use keyrite::config::{Answers, Backend, Environment, Plan, Role, SecretSource};
use keyrite::secret::Secret;
use keyrite::transfer::{BundleKind, BundleWriter};

const PLAN: &str = "ceremonies/root-init-hsm-only.toml";

fn answers(plan_read_back: &str) -> String {
    format!(
        "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\nsecurity-officer = [\"Sam Officer\"]\n\n[answers]\nroom-sealed = true\nplan-hash = \"{plan_read_back}\"\nroot-fingerprint = \"(as shown)\"\n"
    )
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
    let o = print_script(dir, &[plan]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the request bundle request/ from the input directory too: pass --input-dir"),
        "{}",
        stderr(&o)
    );

    let o = print_script(dir, &[plan, "--input-dir", p(&stick)]);
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
