//! Tampering with an audit log is caught, and the right entry is named.
//! Public API only.

use std::path::{Path, PathBuf};

use keyrite::audit::{self, canonical, checkpoint, Artifact, AuditError, AuditLog, Event, Outcome, VerifyOptions};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use serde_json::Value;

/// seq of the checkpoint entries in the log `build` writes.
const CHECKPOINTS: [u64; 3] = [4, 13, 22];
const TOTAL: u64 = 23;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    key: SoftKey,
    key_name: String,
    final_note: String,
    final_root: String,
}

/// Writes a closed ceremony log of 23 lines:
/// seq 0 ceremony-started, 1 audit-key-announced, 2-3 events, 4 checkpoint,
/// 5-12 events, 13 checkpoint, 14-20 events, 21 ceremony-closed,
/// 22 final checkpoint.
fn build() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let key = SoftKey::generate("audit", KeyAlgorithm::EcdsaP256).expect("audit key");
    let mut log = AuditLog::create(&path, "root-2025").expect("create");
    let key_name = log.origin().to_string();
    log.append(Event::new("1", "ceremony-started").role("ceremony-administrator").actor("Alice")).expect("append");
    log.announce_key(&key_name, key.spki_der(), key.signature_algorithm()).expect("announce");
    log.append(
        Event::new("2", "participants-recorded")
            .detail("witnesses", Value::from(vec!["Bob", "Carol"]))
            .detail("threshold", 3),
    )
    .expect("append");
    log.append(Event::new("3", "hsm-initialised").actor("Alice").detail("token", "slot 0")).expect("append");
    log.checkpoint(&key, &key_name).expect("checkpoint 1");
    for i in 0..8 {
        let event = if i % 2 == 0 { "key-generated" } else { "certificate-signed" };
        log.append(
            Event::new(format!("{}", 4 + i), event)
                .role("key-manager")
                .actor("Dave")
                .input(Artifact::of("request", format!("req {i}").as_bytes()))
                .output(Artifact::of(format!("out-{i}.pem"), format!("cert {i}").as_bytes()))
                .detail("index", i),
        )
        .expect("append");
    }
    log.checkpoint(&key, &key_name).expect("checkpoint 2");
    for i in 0..7 {
        let result = if i == 3 { Outcome::Failed } else { Outcome::Ok };
        log.append(Event::new(format!("{}", 12 + i), "crl-signed").result(result).detail("crl_number", i))
            .expect("append");
    }
    log.append(Event::new("19", "ceremony-closed").actor("Alice")).expect("close");
    let last = log.checkpoint(&key, &key_name).expect("final checkpoint");
    assert_eq!(log.len(), TOTAL);
    assert_eq!(last.size, TOTAL - 1);
    assert_eq!(last.entry_seq, TOTAL - 1);
    Fixture { path, key, key_name, final_note: last.note_text, final_root: last.root_hex, _dir: dir }
}

/// These tests are about the file's own consistency: nothing pinned, asked
/// for explicitly (pins have their own tests below).
fn closed() -> VerifyOptions {
    VerifyOptions { expect_closed: true, ..VerifyOptions::unpinned() }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).expect("read").lines().map(str::to_string).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

/// Edits line `line` (1-based) with `f`, keeping everything else byte-identical.
fn edit_line(path: &Path, line: usize, f: impl FnOnce(&str) -> String) {
    let mut all = lines(path);
    let edited = f(&all[line - 1]);
    assert_ne!(edited, all[line - 1], "the edit must change the line");
    all[line - 1] = edited;
    write_lines(path, &all);
}

/// Changes one byte: the last digit of the timestamp's seconds. The line
/// stays canonical JSON, so only the hash chain and signatures can tell.
fn bump_ts(line: &str) -> String {
    let at = line.find("Z\",\"v\":1}").expect("ts at the end") - 1;
    let mut bytes = line.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'9' { b'0' } else { bytes[at] + 1 };
    String::from_utf8(bytes).expect("utf8")
}

/// Changes one hex digit of the line's `prev` field.
fn bump_prev(line: &str) -> String {
    let at = line.find("\"prev\":\"").expect("prev") + 8;
    let mut bytes = line.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).expect("utf8")
}

fn expect_err(path: &Path, options: &VerifyOptions) -> AuditError {
    audit::verify(path, options).expect_err("verification must fail")
}

#[test]
fn an_untouched_log_verifies() {
    let fx = build();
    let report = audit::verify(&fx.path, &closed()).expect("verifies");
    assert_eq!(report.entries, TOTAL);
    assert_eq!(report.checkpoints, 3);
    assert_eq!(report.ceremonies, vec!["root-2025".to_string()]);
    assert!(report.closed);
    assert_eq!(report.uncovered_entries, 1, "only the final checkpoint entry itself");
    let last = report.last_checkpoint.expect("last checkpoint");
    assert_eq!(last.note_text, fx.final_note);
    assert_eq!(last.size, TOTAL - 1);
    assert_eq!(last.fingerprint.words.split(' ').count(), 26);
    assert_eq!(report.audit_keys.len(), 1);
    assert_eq!(report.audit_keys[0].fingerprint.hex, keyrite::words::sha256_hex(fx.key.spki_der()));

    // The note is a C2SP checkpoint: origin, size, base64 root, blank line, signature.
    let mut note_lines = fx.final_note.lines();
    assert_eq!(note_lines.next(), Some("keyrite/root-2025"));
    assert_eq!(note_lines.next(), Some("22"));
    assert_eq!(note_lines.next().map(str::len), Some(44));
    assert_eq!(note_lines.next(), Some(""));
    assert!(note_lines.next().expect("signature line").starts_with("\u{2014} keyrite/root-2025 "));
}

#[test]
fn one_changed_byte_in_a_middle_line_names_that_line() {
    for line in [1usize, 3, 8, 12, 17] {
        let fx = build();
        edit_line(&fx.path, line, bump_ts);
        let err = expect_err(&fx.path, &closed());
        assert!(matches!(err, AuditError::Altered { .. }), "line {line}: {err}");
        assert_eq!(err.line(), Some(line as u64), "line {line}: {err}");
        assert_eq!(err.seq(), Some(line as u64 - 1), "line {line}: {err}");
        assert!(err.to_string().contains(&fx.path.display().to_string()));
    }
}

#[test]
fn an_edited_prev_field_names_its_own_line_not_the_one_before() {
    for line in [2usize, 9, 16] {
        let fx = build();
        edit_line(&fx.path, line, bump_prev);
        let err = expect_err(&fx.path, &closed());
        assert!(matches!(err, AuditError::Altered { .. }), "line {line}: {err}");
        assert_eq!(err.line(), Some(line as u64), "line {line}: {err}");
    }
}

#[test]
fn a_changed_byte_in_a_checkpoint_line_names_it() {
    // The middle checkpoint (seq 13, line 14): both in its timestamp and in
    // its signed note's root hash.
    let fx = build();
    edit_line(&fx.path, 14, bump_ts);
    let err = expect_err(&fx.path, &closed());
    assert_eq!((err.line(), err.seq()), (Some(14), Some(13)), "{err}");

    let fx = build();
    edit_line(&fx.path, 14, |l| {
        let at = l.find("keyrite/root-2025\\n13\\n").expect("note body") + "keyrite/root-2025\\n13\\n".len();
        let mut bytes = l.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("utf8")
    });
    let err = expect_err(&fx.path, &closed());
    assert_eq!((err.line(), err.seq()), (Some(14), Some(13)), "{err}");
}

#[test]
fn a_changed_byte_in_the_last_line_is_caught_by_its_seal() {
    let fx = build();
    edit_line(&fx.path, TOTAL as usize, bump_ts);
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    assert_eq!((err.line(), err.seq()), (Some(TOTAL), Some(TOTAL - 1)), "{err}");
    assert!(err.to_string().contains("seal"), "{err}");

    let fx = build();
    edit_line(&fx.path, TOTAL as usize, bump_prev);
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Altered { .. }), "{err}");
    assert_eq!(err.line(), Some(TOTAL), "{err}");

    // The line before the last one: the last checkpoint's seal proves the
    // last line intact, so the edit is placed on the closing entry.
    let fx = build();
    edit_line(&fx.path, TOTAL as usize - 1, bump_ts);
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Altered { .. }), "{err}");
    assert_eq!((err.line(), err.seq()), (Some(TOTAL - 1), Some(TOTAL - 2)), "{err}");
}

#[test]
fn a_byte_that_breaks_the_json_names_its_line() {
    let fx = build();
    edit_line(&fx.path, 7, |l| l.replacen("\"event\":", "\"event\" :", 1));
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Malformed { .. }), "{err}");
    assert_eq!(err.line(), Some(7));
    assert!(err.to_string().contains("not canonical"), "{err}");
}

#[test]
fn a_deleted_line_is_named() {
    let fx = build();
    let mut all = lines(&fx.path);
    all.remove(7); // seq 7
    write_lines(&fx.path, &all);
    let err = expect_err(&fx.path, &closed());
    match &err {
        AuditError::Sequence { line, expected, found, .. } => assert_eq!((*line, *expected, *found), (8, 7, 8)),
        other => panic!("expected a sequence error, got {other}"),
    }
    assert!(err.to_string().contains("deleted"), "{err}");
}

#[test]
fn swapped_lines_are_named() {
    let fx = build();
    let mut all = lines(&fx.path);
    all.swap(9, 10); // seq 9 and 10
    write_lines(&fx.path, &all);
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Sequence { expected: 9, found: 10, .. }), "{err}");
    assert_eq!(err.line(), Some(10));
}

#[test]
fn a_tail_cut_after_a_checkpoint_fails_when_the_log_must_be_closed() {
    let fx = build();
    let all = lines(&fx.path);
    write_lines(&fx.path, &all[..14]); // ends with the checkpoint at seq 13
                                       // Internally consistent: without expect_closed it verifies...
    let report = audit::verify(&fx.path, &VerifyOptions::unpinned()).expect("consistent prefix");
    assert_eq!(report.entries, 14);
    assert!(!report.closed);
    // ...but a closed ceremony is demanded, and the paper log disagrees.
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::NotClosed { .. }), "{err}");
    assert_eq!((err.line(), err.seq()), (Some(14), Some(13)));
    assert!(err.to_string().contains("log ends at entry 13"), "{err}");
    assert!(err.to_string().contains("the tail may have been cut"), "{err}");
    let paper = VerifyOptions { paper_checkpoints: vec![fx.final_note.clone()], ..VerifyOptions::default() };
    assert!(matches!(expect_err(&fx.path, &paper), AuditError::PaperMismatch { .. }));

    // Cut between "ceremony-closed" and its checkpoint.
    let fx = build();
    let all = lines(&fx.path);
    write_lines(&fx.path, &all[..TOTAL as usize - 1]);
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::NotClosed { .. }), "{err}");
    assert_eq!(err.seq(), Some(TOTAL - 2));

    // Cut mid-line.
    let fx = build();
    let text = std::fs::read(&fx.path).expect("read");
    std::fs::write(&fx.path, &text[..text.len() - 10]).expect("write");
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Malformed { .. }), "{err}");
    assert_eq!(err.line(), Some(TOTAL));
}

#[test]
fn a_checkpoint_signed_by_an_unannounced_key_fails() {
    let fx = build();
    let other = SoftKey::generate("intruder", KeyAlgorithm::EcdsaP256).expect("key");
    // Forge the final checkpoint line with another key under the announced
    // name; everything else (seq, prev, root) stays right.
    let all = lines(&fx.path);
    let mut value: Value = serde_json::from_str(&all[TOTAL as usize - 1]).expect("json");
    let body = checkpoint::SignedNote::parse(&fx.final_note).expect("note").text;
    let forged_note = checkpoint::sign_note(&body, &fx.key_name, &other).expect("sign");
    value["details"]["note"] = Value::from(forged_note.clone());
    value["outputs"] = serde_json::json!([Artifact::of("checkpoint-note", forged_note.as_bytes())]);
    value["details"].as_object_mut().expect("details").remove("seal");
    let mut message = audit::SEAL_CONTEXT.to_vec();
    message.extend_from_slice(canonical::to_canonical_string(&value).expect("canonical").as_bytes());
    let seal = other.sign(&message).expect("seal");
    use base64::Engine;
    value["details"]["seal"] = Value::from(base64::engine::general_purpose::STANDARD.encode(seal));
    let mut forged = all.clone();
    forged[TOTAL as usize - 1] = canonical::to_canonical_string(&value).expect("canonical");
    write_lines(&fx.path, &forged);

    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    assert_eq!((err.line(), err.seq()), (Some(TOTAL), Some(TOTAL - 1)), "{err}");
    assert!(err.to_string().contains("no signature is by an announced audit key"), "{err}");
}

#[test]
fn the_log_refuses_to_checkpoint_with_any_key_but_the_announced_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let audit_key = SoftKey::generate("audit", KeyAlgorithm::EcdsaP256).expect("key");
    let ca_key = SoftKey::generate("root-ca", KeyAlgorithm::EcdsaP384).expect("key");
    let mut log = AuditLog::create(&path, "root-2025").expect("create");
    log.append(Event::new("1", "ceremony-started")).expect("append");
    let err = log.checkpoint(&audit_key, "audit").expect_err("nothing announced");
    assert!(matches!(err, AuditError::WrongSigner { .. }), "{err}");
    log.announce_key("audit", audit_key.spki_der(), audit_key.signature_algorithm()).expect("announce");
    let err = log.checkpoint(&ca_key, "audit").expect_err("CA key");
    assert!(matches!(err, AuditError::WrongSigner { .. }), "{err}");
    assert_eq!(log.len(), 2, "a refused checkpoint writes nothing");
    log.checkpoint(&audit_key, "audit").expect("the audit key may sign");
    // Re-announcing a name for a different key is refused.
    assert!(log.announce_key("audit", ca_key.spki_der(), ca_key.signature_algorithm()).is_err());
    assert!(log.append(Event::new("2", "checkpoint")).is_err(), "reserved event name");
}

#[test]
fn a_pinned_key_mismatch_fails_at_the_first_checkpoint() {
    let fx = build();
    let pinned_ok = VerifyOptions {
        pinned_audit_keys: vec![keyrite::words::sha256_hex(fx.key.spki_der()).to_uppercase()],
        expect_closed: true,
        ..VerifyOptions::default()
    };
    let report = audit::verify(&fx.path, &pinned_ok).expect("pinned key matches");
    assert!(report.trust.pinned);
    assert_eq!(report.trust.trusted_size, TOTAL - 1);

    let other = SoftKey::generate("other", KeyAlgorithm::EcdsaP256).expect("key");
    let pinned_other = VerifyOptions {
        pinned_audit_keys: vec![keyrite::words::sha256_hex(other.spki_der())],
        expect_closed: true,
        ..VerifyOptions::default()
    };
    let err = expect_err(&fx.path, &pinned_other);
    assert!(matches!(err, AuditError::Untrusted { .. }), "{err}");
    assert_eq!((err.line(), err.seq()), (Some(CHECKPOINTS[0] + 1), Some(CHECKPOINTS[0])), "{err}");
    assert!(err.to_string().contains("nothing trusted vouches for"), "{err}");
}

#[test]
fn a_rewritten_chain_is_caught_by_the_next_checkpoint_root() {
    let fx = build();
    let mut all = lines(&fx.path);
    // Edit seq 6 and recompute every later prev, as a careful forger would.
    all[6] = bump_ts(&all[6]);
    for i in 7..all.len() {
        let mut v: Value = serde_json::from_str(&all[i]).expect("json");
        v["prev"] = Value::from(keyrite::words::sha256_hex(all[i - 1].as_bytes()));
        all[i] = canonical::to_canonical_string(&v).expect("canonical");
    }
    write_lines(&fx.path, &all);
    let err = expect_err(&fx.path, &closed());
    assert!(matches!(err, AuditError::Checkpoint { .. }), "{err}");
    assert_eq!((err.line(), err.seq()), (Some(14), Some(13)), "{err}");
    assert!(err.to_string().contains("lines 5..=13"), "{err}");
}

#[test]
fn secrets_are_refused_at_append_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::create(&path, "root-2025").expect("create");
    for key in ["pin", "User_PIN", "passphrase", "so_secret", "share_3", "private_key", "Mnemonic"] {
        let err = log.append(Event::new("1", "hsm-initialised").detail(key, "x")).expect_err(key);
        assert!(matches!(err, AuditError::SecretRefused { .. }), "{key}: {err}");
    }
    assert_eq!(log.len(), 0);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0, "nothing written");
    log.append(Event::new("1", "hsm-initialised").detail("slot", 0)).expect("harmless detail");
}

#[test]
fn the_paper_checkpoint_is_matched_by_note_root_or_fingerprint() {
    let fx = build();
    let report = audit::verify(&fx.path, &closed()).expect("verifies");
    let fingerprint = report.last_checkpoint.expect("cp").fingerprint;
    let colons = fingerprint
        .hex
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":");
    for paper in [
        fx.final_note.replace('\n', "\r\n"),
        fx.final_root.to_uppercase(),
        fingerprint.hex.clone(),
        colons.to_uppercase(),
        fingerprint.hex[..32].to_string(),
        fingerprint.first_words(13),
        fingerprint.words.to_uppercase(),
    ] {
        let options =
            VerifyOptions { paper_checkpoints: vec![paper.clone()], expect_closed: true, ..VerifyOptions::default() };
        let report = audit::verify(&fx.path, &options).unwrap_or_else(|e| panic!("{paper}: {e}"));
        assert_eq!(report.trust.paper_matched, vec![TOTAL - 1], "{paper}");
    }
    let options =
        VerifyOptions { paper_checkpoints: vec!["00".repeat(32)], expect_closed: true, ..VerifyOptions::default() };
    assert!(matches!(expect_err(&fx.path, &options), AuditError::PaperMismatch { .. }));
    // Twelve words are 120 bits: a forger could grind a checkpoint to match.
    let options = VerifyOptions { paper_checkpoints: vec![fingerprint.first_words(12)], ..VerifyOptions::default() };
    let err = expect_err(&fx.path, &options);
    assert!(err.to_string().contains("at least 13 words"), "{err}");
}

#[test]
fn a_later_ceremony_continues_the_same_log() {
    let fx = build();
    let (mut log, _) = AuditLog::open_append(&fx.path, "crl-2025-q2", &closed()).expect("open");
    assert_eq!(log.len(), TOTAL);
    assert_eq!(log.origin(), "keyrite/root-2025", "the log keeps its identity");
    log.append(Event::new("1", "ceremony-started")).expect("append");
    log.append(Event::new("2", "ceremony-closed")).expect("append");
    let cp = log.checkpoint(&fx.key, &fx.key_name).expect("checkpoint");
    assert_eq!(cp.size, TOTAL + 2);
    let report = audit::verify(&fx.path, &closed()).expect("verifies");
    assert_eq!(report.ceremonies, vec!["root-2025".to_string(), "crl-2025-q2".to_string()]);
    assert_eq!(report.checkpoints, 4);
    // The earlier paper checkpoint is still found in the longer log.
    let options = VerifyOptions { paper_checkpoints: vec![fx.final_note.clone()], ..closed() };
    assert_eq!(audit::verify(&fx.path, &options).expect("ok").trust.paper_matched, vec![TOTAL - 1]);

    // A tampered log is not continued.
    edit_line(&fx.path, 5, bump_ts);
    let err = AuditLog::open_append(&fx.path, "next", &closed()).expect_err("tampered");
    assert_eq!(err.line(), Some(5), "{err}");
    // An existing file is never recreated.
    assert!(matches!(AuditLog::create(&fx.path, "x"), Err(AuditError::File(_))));
}

#[test]
fn the_log_file_is_world_readable_and_one_json_object_per_line() {
    use std::os::unix::fs::PermissionsExt;
    let fx = build();
    let mode = std::fs::metadata(&fx.path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode & 0o644, 0o644);
    for line in lines(&fx.path) {
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(canonical::to_canonical_string(&v).expect("canonical"), line);
        assert_eq!(v["v"], 1);
    }
}
