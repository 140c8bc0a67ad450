//! Rehearsal-grade evidence: a run that leans on rehearsal aids (an answers
//! file, `--allow-network`, the software key store, read-backs that echo the
//! screen) says so in its log, and `audit verify` reports the log as
//! rehearsal-grade with the reasons; a plan that declares `grade = "real"`
//! refuses each aid before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use keyrite::audit::{self, VerifyOptions};
use keyrite::ceremony::aids::Aid;

const PLAN: &str = "ceremonies/root-init-hsm-only.toml";

/// Plan files copied into a fresh directory with an empty `out/`.
fn work() -> tempfile::TempDir {
    let work = tempfile::tempdir().expect("tempdir");
    copy_plan_files(work.path());
    std::fs::create_dir(work.path().join("out")).expect("out");
    work
}

/// Answers for the root ceremony; `read` is what the witness "read back"
/// at both read-backs.
fn write_answers(dir: &Path, read: &str) {
    std::fs::write(
        dir.join("answers.toml"),
        format!("[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\nsecurity-officer = [\"Sam Officer\"]\n\n[answers]\nroom-sealed = true\nplan-hash = \"{read}\"\nroot-fingerprint = \"{read}\"\n"),
    )
    .expect("answers");
}

/// An environment on the software key store, its passphrase from a variable.
fn write_soft_env(dir: &Path) {
    std::fs::write(
        dir.join("env.toml"),
        "output_dir = \"out\"\n[soft]\ndir = \"keystore\"\npassphrase = { env = \"KEYRITE_TEST_PASSPHRASE\" }\n",
    )
    .expect("env");
}

fn run(dir: &Path, extra: &[&str]) -> Output {
    keyrite()
        .current_dir(dir)
        .env("KEYRITE_TEST_PASSPHRASE", "correct horse battery staple")
        .env("KEYRITE_TEST_PIN", "314159")
        .args(["ceremony", "run", PLAN, "--env", "env.toml", "--answers", "answers.toml"])
        .args(extra)
        .output()
        .expect("keyrite")
}

#[test]
fn a_rehearsal_grade_log_is_reported_as_such_and_says_why() {
    let w = work();
    write_soft_env(w.path());
    write_answers(w.path(), "(as shown)");
    let o = run(w.path(), &["--allow-network"]);
    assert!(o.status.success(), "the rehearsal runs: {}\n{}", stdout(&o), stderr(&o));
    let log = w.path().join("out/root-r1-audit.jsonl");

    // The library report lists every aid, each under the ceremony that used it.
    let paper = paper_checkpoint(&stdout(&o));
    let report = audit::verify(
        &log,
        &VerifyOptions { paper_checkpoints: vec![paper.clone()], expect_closed: true, ..VerifyOptions::default() },
    )
    .expect("verify");
    let reasons: Vec<&str> = report.rehearsal_grade.iter().map(|r| r.reason.as_str()).collect();
    for aid in [Aid::AnswersFile, Aid::NetworkAllowed, Aid::SoftwareKeyStore, Aid::EchoedReadBacks] {
        assert!(reasons.contains(&aid.reason()), "{aid:?} missing from {reasons:?}");
    }
    assert!(report.rehearsal_grade.iter().all(|r| r.ceremony_id == "root-r1-init-hsm-only"));
    // Recorded where they happened too: two echoed read-backs, the store opened.
    let echoed = report.rehearsal_grade.iter().find(|r| r.reason == Aid::EchoedReadBacks.reason()).expect("echo");
    assert!(echoed.seqs.len() >= 3, "ceremony-started and both read-backs: {:?}", echoed.seqs);
    let soft = report.rehearsal_grade.iter().find(|r| r.reason == Aid::SoftwareKeyStore.reason()).expect("soft");
    assert_eq!(soft.seqs.len(), 2, "ceremony-started and token-opened: {:?}", soft.seqs);

    // The command says it plainly, and --require-real turns it into a failure.
    let v = keyrite().args(["audit", "verify", "--checkpoint", &paper]).arg(&log).output().expect("audit verify");
    assert!(v.status.success(), "{}", stderr(&v));
    let text = stdout(&v);
    assert!(text.contains("REHEARSAL-GRADE"), "{text}");
    for aid in [Aid::AnswersFile, Aid::NetworkAllowed, Aid::SoftwareKeyStore, Aid::EchoedReadBacks] {
        assert!(text.contains(aid.reason()), "{text}");
    }
    let v = keyrite()
        .args(["audit", "verify", "--require-real", "--checkpoint", &paper])
        .arg(&log)
        .output()
        .expect("audit verify");
    assert!(!v.status.success(), "a rehearsal-grade log fails --require-real: {}", stdout(&v));
    assert!(stderr(&v).contains("rehearsal-grade"), "{}", stderr(&v));
}

/// The plan copied with `grade = "real"` declared in it.
fn real_plan(dir: &Path) -> PathBuf {
    let path = dir.join(PLAN);
    let text = std::fs::read_to_string(&path).expect("plan");
    std::fs::write(&path, text.replacen("kind = \"root-init\"\n", "kind = \"root-init\"\ngrade = \"real\"\n", 1))
        .expect("write");
    path
}

/// Runs the real plan on a SoftHSM environment (unless `soft`) and checks
/// it was refused for exactly the aids named, with nothing written.
fn refused_for(soft: bool, read: &str, extra: &[&str], named: &[Aid]) {
    let w = work();
    real_plan(w.path());
    let hsm = SoftHsm::new();
    if soft {
        write_soft_env(w.path());
    } else {
        hsm.init_token("root", "27182818", "314159");
        std::fs::write(
            w.path().join("env.toml"),
            format!(
                "output_dir = \"out\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"root\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
                hsm.module.display()
            ),
        )
        .expect("env");
    }
    write_answers(w.path(), read);
    let o = keyrite()
        .current_dir(w.path())
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("KEYRITE_TEST_PASSPHRASE", "correct horse battery staple")
        .env("KEYRITE_TEST_PIN", "314159")
        .args(["ceremony", "run", PLAN, "--env", "env.toml", "--answers", "answers.toml"])
        .args(extra)
        .output()
        .expect("keyrite");
    assert!(!o.status.success(), "a real plan must refuse: {}", stdout(&o));
    let err = stderr(&o);
    assert!(err.contains("declares grade = \"real\""), "{err}");
    for aid in [Aid::AnswersFile, Aid::NetworkAllowed, Aid::SoftwareKeyStore, Aid::EchoedReadBacks] {
        assert_eq!(err.contains(aid.reason()), named.contains(&aid), "{aid:?} in:\n{err}");
    }
    assert!(list(&w.path().join("out")).is_empty(), "nothing written");
    assert!(!w.path().join("keystore").exists(), "no key store made");
}

#[test]
fn a_real_plan_refuses_an_answers_file() {
    refused_for(false, "words the witness read", &[], &[Aid::AnswersFile]);
}

#[test]
fn a_real_plan_refuses_allow_network() {
    refused_for(false, "words the witness read", &["--allow-network"], &[Aid::AnswersFile, Aid::NetworkAllowed]);
}

#[test]
fn a_real_plan_refuses_the_software_key_store() {
    refused_for(true, "words the witness read", &[], &[Aid::AnswersFile, Aid::SoftwareKeyStore]);
}

#[test]
fn a_real_plan_refuses_an_echoed_read_back() {
    refused_for(false, "(as shown)", &[], &[Aid::AnswersFile, Aid::EchoedReadBacks]);
}
