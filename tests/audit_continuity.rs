//! The CA's audit log holds against an insider who can edit files: a log
//! laundered, cut back, rolled back with its whole directory, or extended
//! with a ceremony under a key it announces for itself is refused by the
//! next ceremony (before the token signs anything) and by `keyrite audit
//! verify` given what the paper log holds. An aborted ceremony ends with a
//! checkpoint the next one continues from.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use keyrite::audit::{self, canonical, AuditLog, Event, VerifyOptions};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::transfer::{BundleKind, BundleWriter};
use keyrite::words::Fingerprint;
use serde_json::Value;

const PIN: &str = "577215";

/// A root on SoftHSM token "root", its CA directory, and the CA's log after
/// a sign-intermediate and a CRL ceremony.
struct Ca {
    hsm: SoftHsm,
    work: tempfile::TempDir,
    /// The paper log: each CA ceremony's final (or abort) checkpoint, in order.
    paper: Vec<String>,
    /// The audit key's SHA-256, as the paper's audit key box holds it.
    audit_key: String,
}

impl Ca {
    fn new() -> Self {
        let hsm = SoftHsm::new();
        hsm.init_token("root", "12345678", PIN);
        let work = tempfile::tempdir().expect("tempdir");
        copy_plan_files(work.path());
        let mut c = Ca { hsm, work, paper: Vec::new(), audit_key: String::new() };
        std::fs::create_dir(c.path("root")).expect("root dir");
        c.env("root-env.toml", "root");
        let plan = "ceremonies/root-init-hsm-only.toml";
        c.answers("root-answers.toml", plan, &[("root-fingerprint", "(as shown)"), ("room-sealed", "true")], None);
        let answers = std::fs::read_to_string(c.path("root-answers.toml")).expect("answers");
        std::fs::write(
            c.path("root-answers.toml"),
            answers.replace("\n\n[answers]", "\nsecurity-officer = [\"Sam Officer\"]\n\n[answers]"),
        )
        .expect("answers");
        let o = c.run(plan, "root-env.toml", "root-answers.toml");
        assert_ok(&o);
        let root_pem = std::fs::read(c.path("root/root-r1.pem")).expect("root");
        let (_, der) = pem_rfc7468::decode_vec(&root_pem).expect("pem");
        keyrite::ca::CaDir::init(&c.path("ca"), &der).expect("ca init");

        // A request on the USB stick, signed by the sign-intermediate
        // ceremony; then the first CRL.
        std::fs::create_dir(c.path("usb")).expect("usb");
        let csr = openssl_ec_csr(c.work.path());
        let mut w = BundleWriter::create(&c.path("usb/request")).expect("bundle");
        w.add("csr.pem", &csr).expect("add");
        w.finish(BundleKind::IntermediateRequest, "Ivan Intermediate-Host", serde_json::Map::new()).expect("finish");
        let csr_words = Fingerprint::sha256(&pem_rfc7468::decode_vec(&csr).expect("pem").1).read_back_words();
        let o = c.ceremony("sign-intermediate", "signed", &[("csr-hash", csr_words.as_str())]);
        assert_ok(&o);
        let transcript = stdout(&o);
        let at = transcript.find("in use. Public key SHA-256:\n").expect("audit key shown") + 28;
        c.audit_key = transcript[at..].split_whitespace().next().expect("hex").to_string();
        assert_ok(&c.ceremony("crl", "crl1", &[]));
        c
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }

    fn log(&self) -> PathBuf {
        self.path("ca/audit.jsonl")
    }

    fn env(&self, name: &str, out: &str) {
        std::fs::write(
            self.path(name),
            format!(
                "output_dir = \"{out}\"\ninput_dir = \"usb\"\nca_dir = \"ca\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"root\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
                self.hsm.module.display()
            ),
        )
        .expect("env");
    }

    /// Answers: participants, the plan read-back, `extra`, and the paper
    /// checkpoint the witness types (when the log is continued).
    fn answers(&self, name: &str, plan: &str, extra: &[(&str, &str)], paper: Option<&str>) {
        // The plan hash covers the request bundle of a sign-intermediate.
        let input = plan.contains("sign-intermediate").then(|| self.path("usb"));
        let words = plan_words(&self.path(plan), input.as_deref());
        let mut text = "[participants]\nceremony-administrator = [\"Ada Admin\"]\ninternal-witness = [\"Wendy Witness\"]\n\n[answers]\n".to_string();
        if !extra.iter().any(|(k, _)| *k == "plan-hash") {
            text.push_str(&format!("plan-hash = \"{words}\"\n"));
        }
        for (k, v) in extra {
            text.push_str(&if *v == "true" { format!("{k} = true\n") } else { format!("{k} = \"{v}\"\n") });
        }
        if let Some(p) = paper {
            text.push_str(&format!("audit-checkpoint = \"{p}\"\n"));
        }
        std::fs::write(self.path(name), text).expect("answers");
    }

    fn run(&self, plan: &str, env: &str, answers: &str) -> Output {
        keyrite()
            .current_dir(self.work.path())
            .env("SOFTHSM2_CONF", &self.hsm.conf)
            .env("KEYRITE_TEST_PIN", PIN)
            .args(["ceremony", "run", plan, "--env", env, "--answers", answers, "--allow-network"])
            .output()
            .expect("keyrite")
    }

    /// Runs CA ceremony `kind` into `out`, the witness typing `paper` (by
    /// default the last checkpoint on the paper log); a printed final or
    /// abort checkpoint goes on the paper log.
    fn ceremony_with(&mut self, kind: &str, out: &str, extra: &[(&str, &str)], paper: Option<&str>) -> Output {
        std::fs::create_dir_all(self.path(out)).expect("out");
        let plan = format!("ceremonies/{kind}.toml");
        self.env(&format!("{out}-env.toml"), out);
        let last = self.paper.last().cloned();
        self.answers(&format!("{out}-answers.toml"), &plan, extra, paper.or(last.as_deref()));
        let o = self.run(&plan, &format!("{out}-env.toml"), &format!("{out}-answers.toml"));
        if stdout(&o).contains("audit checkpoint") {
            self.paper.push(paper_checkpoint(&stdout(&o)));
        }
        o
    }

    fn ceremony(&mut self, kind: &str, out: &str, extra: &[(&str, &str)]) -> Output {
        self.ceremony_with(kind, out, extra, None)
    }

    fn verify(&self, args: &[&str]) -> Output {
        keyrite().args(["audit", "verify"]).args(args).arg(self.log()).output().expect("verify")
    }

    /// The data objects on the token (the store's records), as pkcs11-tool
    /// lists them.
    fn records(&self) -> String {
        stdout(&self.hsm.pkcs11_tool(&["--token-label", "root", "--list-objects", "--type", "data"]))
    }

    fn state(&self) -> Vec<u8> {
        std::fs::read(self.path("ca/state.json")).expect("state")
    }
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "keyrite failed:\nstdout:\n{}\nstderr:\n{}", stdout(o), stderr(o));
}

fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "keyrite should have failed; stdout:\n{}", stdout(o));
    assert!(stderr(o).contains(needle), "error should mention {needle:?}; got:\n{}", stderr(o));
}

fn openssl_ec_csr(dir: &Path) -> Vec<u8> {
    let (key, csr) = (dir.join("int.key"), dir.join("int.csr"));
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
    assert!(o.status.success(), "openssl req: {}", stderr(&o));
    std::fs::read(csr).expect("csr")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("log").lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).expect("write");
}

/// What a careful forger does after editing: renumber `seq` and recompute
/// every `prev`, so the chain is consistent again.
fn rechain(lines: &mut [String]) {
    let mut prev = "0".repeat(64);
    for (i, line) in lines.iter_mut().enumerate() {
        let mut v: Value = serde_json::from_str(line).expect("json");
        v["seq"] = Value::from(i as u64);
        v["prev"] = Value::from(prev.clone());
        *line = canonical::to_canonical_string(&v).expect("canonical");
        prev = keyrite::words::sha256_hex(line.as_bytes());
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn a_laundered_log_is_refused_before_the_token_signs_and_audit_verify_refuses_it_with_the_paper() {
    let mut c = Ca::new();
    let log = c.log();
    // The insider deletes the checkpoints, changes the intermediate's
    // subject in its certificate-signed entry, and re-chains seq and prev.
    let mut forged: Vec<String> = lines(&log).into_iter().filter(|l| !l.contains("\"event\":\"checkpoint\"")).collect();
    let signed = forged.iter().position(|l| l.contains("\"event\":\"certificate-signed\"")).expect("signed entry");
    forged[signed] = forged[signed].replace("Issuing CA", "Issuing CB");
    rechain(&mut forged);
    write_lines(&log, &forged);
    let (before_log, before_state, before_records) = (std::fs::read(&log).expect("log"), c.state(), c.records());

    // The next ceremony, with the witness typing the real last checkpoint,
    // refuses in the preflight, naming the range the token's record covers.
    let o = c.ceremony("crl", "crl2", &[]);
    assert_fails_with(&o, "differ from the key store's record of this log");
    assert!(stderr(&o).contains("entries seq 0..="), "{}", stderr(&o));
    assert_eq!(std::fs::read(&log).expect("log"), before_log, "nothing appended");
    assert_eq!(c.state(), before_state, "no CRL number taken, nothing signed");
    assert!(list(&c.path("crl2")).is_empty(), "nothing written");
    assert_eq!(c.records(), before_records, "no record added to the token");

    // Countersigned with the real audit key (what keyrite did before it
    // checked anchors), the log satisfies a pin of the key alone: only what
    // the paper and the token recorded tell it apart.
    std::env::set_var("SOFTHSM2_CONF", &c.hsm.conf);
    {
        let store = keyrite::hsm::keystore::KeyStore::open_pkcs11(
            &c.hsm.module,
            &keyrite::hsm::pkcs11::TokenSelector { label: "root".into(), serial: None },
            &keyrite::secret::Secret::new(PIN.as_bytes().to_vec()),
        )
        .expect("token");
        let key = store.find("root-r1-audit", None).expect("audit key");
        let (mut forger, _) = AuditLog::open_append(&log, "forger", &VerifyOptions::unpinned()).expect("open");
        forger.append(Event::new("close", "ceremony-closed")).expect("append");
        forger.checkpoint(key.signer.as_ref(), "root-r1-audit").expect("countersign");
    }
    assert_ok(&c.verify(&["--audit-key-sha256", &c.audit_key]));
    let paper = c.paper.last().expect("paper").clone();
    let o = c.verify(&["--audit-key-sha256", &c.audit_key, "--checkpoint", &paper]);
    assert_fails_with(&o, "no checkpoint in the log matches the paper log's");
    let o = c.ceremony("crl", "crl3", &[]);
    assert_fails_with(&o, "differ from the key store's record of this log");
    assert!(list(&c.path("crl3")).is_empty(), "nothing written");
}

#[test]
fn a_log_cut_back_to_an_earlier_ceremony_is_refused() {
    let mut c = Ca::new();
    let log = c.log();
    let all = lines(&log);
    // Cut after the sign-intermediate ceremony's closing checkpoint: a valid
    // log by itself, ending closed.
    let closes: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(i, l)| l.contains("\"event\":\"checkpoint\"") && all[i - 1].contains("\"event\":\"ceremony-closed\""))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(closes.len(), 2, "two ceremonies closed");
    write_lines(&log, &all[..=closes[0]]);
    assert_ok(&c.verify(&["--checkpoint", &c.paper[0]]));

    let o = c.verify(&["--checkpoint", &c.paper[1]]);
    assert_fails_with(&o, "no checkpoint in the log matches the paper log's");
    // The witness types the last checkpoint on paper; or is shown the old one.
    let last = c.paper[1].clone();
    let o = c.ceremony_with("crl", "crl2", &[], Some(&last));
    assert_fails_with(&o, "the log was cut back or restored from an older copy");
    let first = c.paper[0].clone();
    let o = c.ceremony_with("crl", "crl3", &[], Some(&first));
    assert_fails_with(&o, "the log was cut back or restored from an older copy");
    assert!(list(&c.path("crl2")).is_empty() && list(&c.path("crl3")).is_empty(), "nothing written");
}

#[test]
fn a_whole_ca_directory_rolled_back_to_an_earlier_snapshot_is_refused() {
    let mut c = Ca::new();
    // A snapshot of the directory (log, state, CRLs, everything) after the
    // first CRL; a second CRL; then the snapshot put back.
    copy_dir(&c.path("ca"), &c.path("snapshot"));
    let paper_at_snapshot = c.paper.last().expect("paper").clone();
    assert_ok(&c.ceremony("crl", "crl2", &[]));
    std::fs::remove_dir_all(c.path("ca")).expect("rm");
    copy_dir(&c.path("snapshot"), &c.path("ca"));

    // Even a witness shown the snapshot's own last checkpoint cannot make it
    // pass: the token remembers the second CRL.
    let o = c.ceremony_with("crl", "crl3", &[], Some(&paper_at_snapshot));
    assert_fails_with(&o, "the key store recorded the log closed by ceremony \"root-r1-crl\"");
    assert!(stderr(&o).contains("the log was cut back or restored from an older copy"), "{}", stderr(&o));
    assert!(list(&c.path("crl3")).is_empty(), "nothing written");
    // A fresh, empty CA directory cannot start the log over either.
    std::fs::remove_file(c.log()).expect("rm log");
    let o = c.ceremony_with("crl", "crl4", &[], Some(&paper_at_snapshot));
    assert_fails_with(&o, "that log's file is missing");
}

#[test]
fn a_forged_ceremony_under_a_fresh_key_after_the_paper_checkpoint_is_refused() {
    let mut c = Ca::new();
    let log = c.log();
    let paper = c.paper.last().expect("paper").clone();
    // A whole ceremony appended after the last paper checkpoint, under a key
    // the forger announces, with a quorum key of their own naming it too.
    let fresh = SoftKey::generate("forged-audit", KeyAlgorithm::EcdsaP256).expect("key");
    let quorum = keyrite::hsm::soft::QuorumKey::derive(&keyrite::secret::Secret::new(vec![9u8; 32])).expect("q");
    {
        let (mut forger, _) = AuditLog::open_append(&log, "root-r1-crl", &VerifyOptions::unpinned()).expect("open");
        forger.append(Event::new("preflight", "ceremony-started")).expect("append");
        forger.announce_key("forged-audit", fresh.spki_der(), fresh.signature_algorithm()).expect("announce");
        let q = keyrite::audit::succession::QuorumKey::new(quorum.spki_der(), "root-r1-init", 1);
        forger.announce_quorum_key(&q).expect("quorum");
        let fp = keyrite::words::sha256_hex(fresh.spki_der());
        let statement = keyrite::audit::succession::Succession::statement(&q.public_key_sha256, &fp, "root-r1-crl");
        let s = keyrite::audit::succession::Succession::new(
            &q.public_key_sha256,
            &fp,
            "root-r1-crl",
            &quorum.sign(statement.as_bytes()),
        );
        forger.record_succession(&s).expect("succession");
        forger.append(Event::new("revoke", "certificate-revoked").detail("serial", "01")).expect("append");
        forger.append(Event::new("close", "ceremony-closed")).expect("append");
        forger.checkpoint(&fresh, "forged-audit").expect("checkpoint");
    }
    let forged_paper = Fingerprint::sha256(
        audit::verify(&log, &VerifyOptions::unpinned())
            .expect("consistent")
            .last_checkpoint
            .expect("cp")
            .note_text
            .as_bytes(),
    )
    .hex;

    // Consistent in itself...
    let o = c.verify(&["--unpinned"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("NOT PINNED"), "{}", stdout(&o));
    // ...but the paper checkpoint, or the paper's audit key, trusts no key
    // the log announces for itself, nor a quorum key it announces for itself.
    for pin in [["--checkpoint", paper.as_str()], ["--audit-key-sha256", c.audit_key.as_str()]] {
        let o = c.verify(&pin);
        assert_fails_with(&o, "signed by audit key \"forged-audit\"");
        assert!(stderr(&o).contains("nothing trusted vouches for"), "{}", stderr(&o));
    }
    // The next ceremony refuses it, whichever checkpoint the witness is given.
    let o = c.ceremony_with("crl", "crl2", &[], Some(&paper));
    assert_fails_with(&o, "signed by audit key \"forged-audit\"");
    let o = c.ceremony_with("crl", "crl3", &[], Some(&forged_paper));
    assert_fails_with(&o, "did not sign the log's last checkpoint");
    assert!(list(&c.path("crl2")).is_empty() && list(&c.path("crl3")).is_empty(), "nothing written");
}

#[test]
fn an_aborted_ceremony_ends_with_a_checkpoint_and_the_next_one_continues_from_it() {
    let mut c = Ca::new();
    // The witness reads back the wrong plan words: the ceremony stops after
    // the log was opened, and signs an abort checkpoint.
    let wrong = near_miss(&plan_words(&c.path("ceremonies/crl.toml"), None), 0);
    let o = c.ceremony("crl", "crl2", &[("plan-hash", wrong.as_str())]);
    assert_fails_with(&o, "the witness read back");
    assert!(stdout(&o).contains("ABORT audit checkpoint"), "{}", stdout(&o));
    assert!(list(&c.path("crl2")).is_empty(), "no CRL written");
    let abort_paper = c.paper.last().expect("abort checkpoint").clone();
    let o = c.verify(&["--checkpoint", &abort_paper, "--audit-key-sha256", &c.audit_key]);
    assert_ok(&o);
    assert!(stdout(&o).contains("ending       aborted (ceremony \"root-r1-crl\""), "{}", stdout(&o));
    assert!(!stdout(&o).contains("may have been cut"), "{}", stdout(&o));
    assert!(c.records().contains("keyrite-audit-log-"), "the token keeps the records:\n{}", c.records());
    let log_text = std::fs::read_to_string(c.log()).expect("log");
    assert!(
        log_text.contains("\"anchor_records\":\"token data object, not modifiable, not destroyable\""),
        "SoftHSM takes CKA_DESTROYABLE false: the records only grow"
    );
    let label = keyrite::audit::anchor::anchor_label("keyrite/root-r1-sign-intermediate");
    let deleted = c.hsm.pkcs11_tool(&[
        "--token-label",
        "root",
        "--login",
        "--pin",
        PIN,
        "--delete-object",
        "--type",
        "data",
        "--label",
        &label,
    ]);
    // The token refuses C_DestroyObject with CKR_ACTION_PROHIBITED (0x1b).
    assert!(
        !deleted.status.success() && stderr(&deleted).contains("C_DestroyObject") && stderr(&deleted).contains("0x1b"),
        "a record cannot be deleted: {}{}",
        stdout(&deleted),
        stderr(&deleted)
    );
    assert!(c.records().contains(&label));

    // The next ceremony continues the aborted log from its abort checkpoint.
    assert_ok(&c.ceremony("crl", "crl3", &[]));
    let paper = c.paper.last().expect("paper").clone();
    assert_ok(&c.verify(&["--checkpoint", &paper]));
}

#[test]
fn audit_verify_says_what_it_could_not_establish_and_takes_the_paper_as_typed() {
    let c = Ca::new();
    let o = c.verify(&[]);
    assert_fails_with(&o, "nothing ties it to the paper record");
    assert!(stderr(&o).contains("--unpinned"), "{}", stderr(&o));

    let note = c.paper.last().expect("paper").clone();
    let fp = Fingerprint::of_digest(&hex::decode(&note).expect("hex"));
    let colons: Vec<String> = note.as_bytes().chunks(2).map(|b| String::from_utf8_lossy(b).to_uppercase()).collect();
    for typed in [fp.first_words(13), fp.words.to_uppercase(), colons.join(":"), note[..32].to_string()] {
        let o = c.verify(&["--checkpoint", &typed]);
        assert_ok(&o);
        assert!(stdout(&o).contains("the paper checkpoint matches"), "{typed}: {}", stdout(&o));
    }
    let key_words = Fingerprint::of_digest(&hex::decode(&c.audit_key).expect("hex")).first_words(13);
    assert_ok(&c.verify(&["--audit-key-sha256", &key_words]));
    let o = c.verify(&["--checkpoint", &fp.first_words(12)]);
    assert_fails_with(&o, "at least 13 words");

    // The paper script has a box for the audit key's SHA-256.
    let o = keyrite().args(["ceremony", "print"]).arg(c.path("ceremonies/crl.toml")).output().expect("print");
    assert_ok(&o);
    assert!(stdout(&o).contains("Audit key SHA-256"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Last checkpoint of the CA's audit log"), "{}", stdout(&o));
}
