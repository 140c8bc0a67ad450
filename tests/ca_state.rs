//! The offline CA directory: index, revocation, CRL numbers, crash safety,
//! and what OpenSSL makes of its index and CRLs.

use std::fs;
use std::path::Path;
use std::process::Command;

use keyrite::audit::AuditLog;
use keyrite::ca::{self, build_crl, CaDir, CaError, CrlParams, RevocationReason};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::profile::{issue, IssueRequest, Issued, IssuerRef, Profile};
use time::{Duration, OffsetDateTime};

const OPENSSL: &str = "/usr/bin/openssl";

fn profile(name: &str) -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name)).expect("template")
}

fn random_serial() -> Vec<u8> {
    let mut s = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut s).expect("rng");
    s
}

struct Pki {
    root_key: SoftKey,
    root: Issued,
    ints: Vec<Issued>,
}

fn pki(intermediates: usize) -> Pki {
    let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("root key");
    let root_profile = profile("root-ca.toml");
    let nb = OffsetDateTime::now_utc() - Duration::hours(1);
    let root = issue(
        &IssueRequest {
            profile: &root_profile,
            subject: None,
            subject_spki: root_key.spki_der(),
            sans: vec![],
            serial: random_serial(),
            not_before: nb,
            not_after: root_profile.not_after_for(nb),
            issuer: IssuerRef::SelfSigned,
        },
        &root_key,
    )
    .expect("root");
    let int_profile = profile("intermediate-ca.toml");
    let ints = (0..intermediates)
        .map(|_| {
            let key = SoftKey::generate("int", KeyAlgorithm::EcdsaP256).expect("int key");
            issue(
                &IssueRequest {
                    profile: &int_profile,
                    subject: None,
                    subject_spki: key.spki_der(),
                    sans: vec![],
                    serial: random_serial(),
                    not_before: nb,
                    not_after: int_profile.not_after_for(nb),
                    issuer: IssuerRef::Certificate { der: &root.der },
                },
                &root_key,
            )
            .expect("intermediate")
        })
        .collect();
    Pki { root_key, root, ints }
}

fn openssl(args: &[&str], cwd: &Path) -> (bool, String) {
    assert!(Path::new(OPENSSL).exists(), "{OPENSSL} is required for these tests");
    let o = Command::new(OPENSSL).args(args).current_dir(cwd).output().expect("run openssl");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn crl_signed(log: &mut AuditLog, crl: &ca::SignedCrl) {
    log.append(ca::crl_signed_event(crl)).expect("log");
}

#[test]
fn issue_records_duplicates_and_revocations() {
    let p = pki(2);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    assert!(matches!(CaDir::init(&dir, &p.root.der), Err(CaError::NotEmpty { .. })));

    let serial = hex::decode(&p.ints[0].serial_hex).expect("hex");
    ca.reserve_serial(&serial).expect("reserve");
    let e = ca.reserve_serial(&serial).expect_err("reserved twice");
    assert!(matches!(e, CaError::DuplicateSerial { what: "reserved", .. }), "{e}");
    let rec = ca.record_issued(&p.ints[0].der).expect("record");
    assert_eq!(rec.serial, p.ints[0].serial_hex);
    assert_eq!(rec.subject_openssl, "/C=DE/O=keyrite Example/CN=keyrite Example Issuing CA E1");
    assert!(ca.state().reserved_serials.is_empty());
    let e = ca.record_issued(&p.ints[0].der).expect_err("duplicate serial");
    assert!(matches!(e, CaError::DuplicateSerial { what: "issued", .. }), "{e}");
    assert!(e.to_string().contains(&p.ints[0].serial_hex), "{e}");
    ca.record_issued(&p.ints[1].der).expect("second, unreserved");

    // A certificate from another root is not this CA's.
    let other = pki(1);
    assert!(matches!(ca.record_issued(&other.ints[0].der), Err(CaError::BadCertificate { .. })));

    let now = OffsetDateTime::now_utc();
    let e = ca.revoke("0123456789", RevocationReason::KeyCompromise, now).expect_err("unknown");
    assert!(matches!(e, CaError::UnknownSerial { .. }), "{e}");
    let e = ca.revoke(&p.ints[0].serial_hex, RevocationReason::CertificateHold, now).expect_err("hold");
    assert!(e.to_string().contains("certificateHold is refused"), "{e}");
    let e = ca.revoke(&p.ints[0].serial_hex, RevocationReason::RemoveFromCrl, now).expect_err("remove");
    assert!(e.to_string().contains("removeFromCRL is refused"), "{e}");
    ca.revoke(&p.ints[0].serial_hex.to_uppercase(), RevocationReason::KeyCompromise, now).expect("revoke");
    let e = ca.revoke(&p.ints[0].serial_hex, RevocationReason::Superseded, now).expect_err("twice");
    assert!(matches!(e, CaError::AlreadyRevoked { .. }), "{e}");

    // Everything survives a reopen, and verify agrees.
    let ca = CaDir::open(&dir).expect("open");
    assert_eq!(ca.certificates().len(), 2);
    assert_eq!(ca.revoked_entries().len(), 1);
    let report = CaDir::verify(&dir).expect("verify");
    assert_eq!((report.certificates, report.revoked), (2, 1));
    assert_eq!(report.next_crl_number, 1);

    // A changed certificate file is caught.
    let f = dir.join(&ca.certificates()[1].file);
    let mut bytes = fs::read(&f).expect("read");
    bytes[10] ^= 1;
    fs::remove_file(&f).expect("rm");
    fs::write(&f, bytes).expect("write");
    assert!(matches!(CaDir::verify(&dir), Err(CaError::BadState { .. })));
}

#[test]
fn crl_for_a_revoked_intermediate_is_accepted_and_enforced_by_openssl() {
    let p = pki(1);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    ca.record_issued(&p.ints[0].der).expect("record");
    let work = tmp.path();
    fs::write(work.join("root.pem"), &p.root.pem).expect("root.pem");
    fs::write(work.join("int.pem"), &p.ints[0].pem).expect("int.pem");
    let now = OffsetDateTime::now_utc();
    let idp = Some("http://crl.example.com/root-r1.crl".to_string());

    // An empty CRL first: OpenSSL must accept it and the intermediate.
    let crl1 = ca.issue_crl(&p.root_key, now, now + Duration::days(30), idp.clone()).expect("crl 1");
    assert_eq!(crl1.crl_number, 1);
    fs::write(work.join("crl1.pem"), &crl1.pem).expect("write");
    let (ok, out) = openssl(&["verify", "-crl_check", "-CRLfile", "crl1.pem", "-CAfile", "root.pem", "int.pem"], work);
    assert!(ok, "an empty CRL must leave the intermediate valid: {out}");

    ca.revoke(&p.ints[0].serial_hex, RevocationReason::KeyCompromise, now - Duration::minutes(5)).expect("revoke");
    let crl2 = ca.issue_crl(&p.root_key, now, now + Duration::days(30), idp).expect("crl 2");
    assert_eq!(crl2.crl_number, 2);
    fs::write(work.join("crl.pem"), &crl2.pem).expect("write");
    let (ok, text) = openssl(&["crl", "-in", "crl.pem", "-noout", "-text"], work);
    assert!(ok, "{text}");
    assert!(text.contains("X509v3 CRL Number:") && text.contains("\n                2\n"), "{text}");
    assert!(text.contains(&p.ints[0].serial_hex.to_uppercase()), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert!(text.contains("X509v3 Authority Key Identifier"), "{text}");
    let (ok, out) = openssl(&["verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "root.pem", "int.pem"], work);
    assert!(!ok, "the revoked intermediate must be rejected: {out}");
    assert!(out.contains("certificate revoked"), "{out}");
    // OpenSSL agrees the CRL is signed by the root.
    let (ok, out) = openssl(&["crl", "-in", "crl.pem", "-noout", "-CAfile", "root.pem"], work);
    assert!(ok && out.contains("verify OK"), "{out}");

    // The signer must hold the root's key.
    let stranger = SoftKey::generate("x", KeyAlgorithm::EcdsaP384).expect("key");
    let e = build_crl(
        CrlParams {
            issuer_cert_der: &p.root.der,
            crl_number: 9,
            previous_crl_number: None,
            this_update: now,
            next_update: now + Duration::days(1),
            revoked: std::iter::empty(),
            issuing_distribution_point: None,
        },
        &stranger,
    )
    .expect_err("wrong signer");
    assert!(matches!(e, CaError::WrongSigner { .. }), "{e}");
}

#[test]
fn crl_builder_refuses_bad_requests() {
    let p = pki(0);
    let now = OffsetDateTime::now_utc();
    let serial = [0x11u8; 16];
    let build = |number, previous, next: OffsetDateTime, entries: Vec<(&'static [u8], RevocationReason)>| {
        build_crl(
            CrlParams {
                issuer_cert_der: &p.root.der,
                crl_number: number,
                previous_crl_number: previous,
                this_update: now,
                next_update: next,
                revoked: entries.into_iter().map(|(s, r)| (s, now - Duration::hours(1), r)),
                issuing_distribution_point: None,
            },
            &p.root_key,
        )
    };
    let e = build(2, Some(2), now + Duration::days(1), vec![]).expect_err("number");
    assert!(e.to_string().contains("not larger than the previous"), "{e}");
    let e = build(3, None, now, vec![]).expect_err("dates");
    assert!(e.to_string().contains("not before nextUpdate"), "{e}");
    let s: &'static [u8] = Box::leak(Box::new(serial));
    let e = build(
        3,
        None,
        now + Duration::days(1),
        vec![(s, RevocationReason::Superseded), (s, RevocationReason::Superseded)],
    )
    .expect_err("duplicate");
    assert!(matches!(e, CaError::Lint { .. }) && e.to_string().contains("listed twice"), "{e}");
    let e = build(3, None, now + Duration::days(1), vec![(&[0, 0], RevocationReason::Superseded)]).expect_err("zero");
    assert!(e.to_string().contains("zero"), "{e}");
    let e =
        build(3, None, now + Duration::days(1), vec![(&[0x80; 20], RevocationReason::Superseded)]).expect_err("long");
    assert!(e.to_string().contains("20 octets"), "{e}");
    let e = build(3, None, now + Duration::days(1), vec![(s, RevocationReason::RemoveFromCrl)]).expect_err("remove");
    assert!(e.to_string().contains("removeFromCRL"), "{e}");
    let ok = build(3, Some(2), now + Duration::days(1), vec![(s, RevocationReason::Unspecified)]).expect("ok");
    let list = <x509_cert::crl::CertificateList as der::Decode>::from_der(&ok.der).expect("x509-cert parses it");
    let entries = list.tbs_cert_list.revoked_certificates.expect("entries");
    assert_eq!(entries.len(), 1);
    assert!(entries[0].crl_entry_extensions.is_none(), "unspecified is written by omitting reasonCode");
}

#[test]
fn export_index_is_read_by_openssl_ca() {
    let p = pki(2);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    for i in &p.ints {
        ca.record_issued(&i.der).expect("record");
    }
    ca.revoke(&p.ints[1].serial_hex, RevocationReason::Superseded, OffsetDateTime::now_utc()).expect("revoke");
    let index = ca::export_index(&dir).expect("export");
    let lines: Vec<&str> = index.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("V\t"), "{index}");
    assert!(lines[1].starts_with("R\t") && lines[1].contains("Z,superseded\t"), "{index}");

    // OpenSSL's own CA reads the database and puts the revoked serial on a CRL.
    let w = tmp.path().join("openssl");
    fs::create_dir(&w).expect("mkdir");
    fs::write(w.join("index.txt"), &index).expect("index");
    fs::write(w.join("crlnumber"), "1000\n").expect("crlnumber");
    fs::write(
        w.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\nunique_subject = no\n",
    )
    .expect("cnf");
    let (ok, out) = openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-subj",
            "/CN=openssl test CA",
            "-days",
            "1",
        ],
        &w,
    );
    assert!(ok, "{out}");
    let (ok, out) =
        openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-keyfile", "k.pem", "-cert", "c.pem", "-out", "o.pem"], &w);
    assert!(ok, "openssl ca -gencrl must accept the exported index: {out}");
    let (ok, text) = openssl(&["crl", "-in", "o.pem", "-noout", "-text"], &w);
    assert!(ok, "{text}");
    assert!(text.contains(&p.ints[1].serial_hex.to_uppercase()), "{text}");
    assert!(!text.contains(&p.ints[0].serial_hex.to_uppercase()), "{text}");
    assert!(text.contains("Superseded"), "{text}");
    // `-status` reports through its output (its exit code is the status).
    let (_, out) = openssl(&["ca", "-config", "ca.cnf", "-status", &p.ints[0].serial_hex.to_uppercase()], &w);
    assert!(out.contains("=Valid (V)"), "{out}");
    let (_, out) = openssl(&["ca", "-config", "ca.cnf", "-status", &p.ints[1].serial_hex.to_uppercase()], &w);
    assert!(out.contains("=Revoked (R)"), "{out}");
}

#[test]
fn crl_numbers_grow_across_restores() {
    let p = pki(1);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    ca.record_issued(&p.ints[0].der).expect("record");
    let mut log = AuditLog::create(&dir.join(ca::AUDIT_LOG), "crl-test-1").expect("log");
    let now = OffsetDateTime::now_utc();
    let backup_state = fs::read(dir.join(ca::STATE_FILE)).expect("state before any CRL");

    for expected in 1..=3 {
        let crl = ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect("crl");
        assert_eq!(crl.crl_number, expected);
        crl_signed(&mut log, &crl);
    }
    // Restore the old state.json and lose the CRL files: the log still knows.
    fs::write(dir.join(ca::STATE_FILE), &backup_state).expect("restore");
    for n in 1..=3 {
        fs::remove_file(dir.join(format!("crls/crl-{n}.der"))).expect("rm");
    }
    let mut ca = CaDir::open(&dir).expect("open");
    assert_eq!(ca.state().crl.last_reserved, 0, "the counter state is gone");
    assert_eq!(ca.next_crl_number().expect("next"), 4);
    let crl = ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect("crl 4");
    assert_eq!(crl.crl_number, 4);
    crl_signed(&mut log, &crl);

    // Restore again but keep the files and lose the log: the files still know.
    fs::write(dir.join(ca::STATE_FILE), &backup_state).expect("restore");
    drop(log);
    fs::remove_file(dir.join(ca::AUDIT_LOG)).expect("rm log");
    let ca = CaDir::open(&dir).expect("open");
    assert_eq!(ca.next_crl_number().expect("next"), 5);
    let report = CaDir::verify(&dir).expect("verify");
    assert!(report.notes.iter().any(|n| n.contains("crl-4.der is newer than state.json")), "{:?}", report.notes);
}

/// The insider's move: put back a `state.json` kept from before a
/// revocation, so that the next CRL, made from the state alone, quietly
/// drops it. The audit log and the last CRL both remember; either one alone
/// is enough to refuse, naming the serial, before anything is reserved or
/// signed.
#[test]
fn a_state_json_put_back_from_before_a_revocation_is_refused_naming_the_serial() {
    let p = pki(2);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    ca.record_issued(&p.ints[0].der).expect("record");
    ca.record_issued(&p.ints[1].der).expect("record");
    let kept_aside = fs::read(dir.join(ca::STATE_FILE)).expect("state before the revocation");
    let log_path = dir.join(ca::AUDIT_LOG);
    let mut log = AuditLog::create(&log_path, "revoke-test-1").expect("log");
    let now = OffsetDateTime::now_utc();
    let revoked = &p.ints[0].serial_hex;
    let record = ca.revoke(revoked, RevocationReason::KeyCompromise, now).expect("revoke");
    log.append(ca::certificate_revoked_event(&record)).expect("log the revocation");
    let crl = ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect("crl 1");
    crl_signed(&mut log, &crl);
    drop(log);
    let newest = fs::read(dir.join(ca::STATE_FILE)).expect("the newest state");

    fs::write(dir.join(ca::STATE_FILE), &kept_aside).expect("put the old state back");
    let refused = |ca: &mut CaDir, anchor: &str| {
        let e =
            ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect_err("a CRL without the revocation");
        assert!(matches!(&e, CaError::RevocationLost { serial, .. } if serial == revoked), "{e}");
        let text = e.to_string();
        assert!(text.contains(revoked) && text.contains(anchor) && text.contains("shows it valid"), "{text}");
        assert!(!dir.join("crls/crl-2.der").exists(), "nothing signed");
        assert_eq!(ca.state().crl.last_reserved, 0, "no number reserved");
        let e = CaDir::verify(&dir).expect_err("ca verify agrees");
        assert!(matches!(&e, CaError::RevocationLost { serial, .. } if serial == revoked), "{e}");
    };

    // The log alone anchors it (the CRL file moved away)...
    let crl_file = dir.join("crls/crl-1.der");
    let aside = tmp.path().join("crl-1.der");
    fs::rename(&crl_file, &aside).expect("move the CRL away");
    refused(&mut CaDir::open(&dir).expect("open"), "audit log");
    // ...and the last CRL alone (the log gone).
    fs::rename(&aside, &crl_file).expect("CRL back");
    let log_aside = tmp.path().join("audit.jsonl");
    fs::rename(&log_path, &log_aside).expect("move the log away");
    refused(&mut CaDir::open(&dir).expect("open"), "CRL number 1");
    fs::rename(&log_aside, &log_path).expect("log back");

    // A revocation softened in the state (keyCompromise to superseded) is
    // refused as well.
    let mut state: serde_json::Value = serde_json::from_slice(&kept_aside).expect("json");
    let entry = state["certificates"]
        .as_array_mut()
        .expect("certificates")
        .iter_mut()
        .find(|c| c["serial"] == revoked.as_str())
        .expect("the revoked certificate");
    entry["status"] = "revoked".into();
    entry["reason"] = "superseded".into();
    entry["revoked_at"] =
        record.revoked_at.expect("time").format(&time::format_description::well_known::Rfc3339).expect("fmt").into();
    fs::write(dir.join(ca::STATE_FILE), serde_json::to_vec(&state).expect("json")).expect("write");
    let e = CaDir::verify(&dir).expect_err("a softer reason");
    assert!(e.to_string().contains("records it revoked for superseded"), "{e}");

    // The newest state back: the next CRL is made, and still lists it.
    fs::write(dir.join(ca::STATE_FILE), &newest).expect("the newest state back");
    let mut ca = CaDir::open(&dir).expect("open");
    let crl = ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect("crl 2");
    assert_eq!((crl.crl_number, crl.entries), (2, 1));

    // A revocation saved in the state whose log entry was never written
    // (the ceremony stopped in between) is a note, not an error.
    ca.revoke(&p.ints[1].serial_hex, RevocationReason::Superseded, now).expect("revoke, not logged");
    let report = CaDir::verify(&dir).expect("verify");
    assert!(
        report.notes.iter().any(|n| n.contains(&p.ints[1].serial_hex) && n.contains("no certificate-revoked entry")),
        "{:?}",
        report.notes
    );
}

#[test]
fn a_crash_between_reservation_and_record_loses_and_reuses_nothing() {
    let p = pki(2);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    ca.record_issued(&p.ints[0].der).expect("record");
    let now = OffsetDateTime::now_utc();
    let first = ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect("crl 1");
    assert_eq!(first.crl_number, 1);

    // Crash 1: the number is reserved, nothing is signed yet.
    let reserved = ca.reserve_crl_number().expect("reserve");
    assert_eq!(reserved, 2);
    drop(ca); // the process dies here
    let report = CaDir::verify(&dir).expect("verify after crash 1");
    assert_eq!(report.last_crl_number, Some(1));
    assert_eq!(report.next_crl_number, 3, "a reserved number is skipped, never reused");

    // Crash 2: reserved and signed, the file written, the state not yet updated.
    let mut ca = CaDir::open(&dir).expect("open");
    let n = ca.reserve_crl_number().expect("reserve");
    assert_eq!(n, 3);
    let entries = ca.revoked_entries();
    let crl = build_crl(
        CrlParams {
            issuer_cert_der: ca.root_cert_der(),
            crl_number: n,
            previous_crl_number: ca.last_crl_number(),
            this_update: now,
            next_update: now + Duration::days(7),
            revoked: entries.iter().map(|(s, t, r)| (s.as_slice(), *t, *r)),
            issuing_distribution_point: None,
        },
        &p.root_key,
    )
    .expect("build");
    keyrite::files::write_new(&dir.join(format!("crls/crl-{n}.der")), &crl.der, keyrite::files::Mode::Public)
        .expect("file");
    drop(ca); // dies before record_crl updates state.json
    let report = CaDir::verify(&dir).expect("verify after crash 2");
    assert_eq!(report.next_crl_number, 4);
    assert!(report.notes.iter().any(|n| n.contains("crl-3.der was written but not recorded")), "{:?}", report.notes);
    // Recording the same signed CRL after the restart completes the step.
    let mut ca = CaDir::open(&dir).expect("open");
    ca.record_crl(&crl).expect("record after restart");
    assert_eq!(ca.next_crl_number().expect("next"), 4);

    // Crash 3: a serial reserved, the certificate never recorded.
    let serial = hex::decode(&p.ints[1].serial_hex).expect("hex");
    ca.reserve_serial(&serial).expect("reserve serial");
    drop(ca);
    let report = CaDir::verify(&dir).expect("verify after crash 3");
    assert_eq!(report.reserved_serials, 1);
    let mut ca = CaDir::open(&dir).expect("open");
    assert!(matches!(ca.reserve_serial(&serial), Err(CaError::DuplicateSerial { .. })));
    ca.record_issued(&p.ints[1].der).expect("recording completes the reservation");
    assert_eq!(CaDir::verify(&dir).expect("verify").reserved_serials, 0);

    // Nothing but the final files is left over (no temp files).
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn backup_writes_a_ca_backup_bundle() {
    let p = pki(1);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca");
    let mut ca = CaDir::init(&dir, &p.root.der).expect("init");
    ca.record_issued(&p.ints[0].der).expect("record");
    let now = OffsetDateTime::now_utc();
    ca.issue_crl(&p.root_key, now, now + Duration::days(7), None).expect("crl");
    let out = tmp.path().join("usb").join("backup");
    let manifest = ca::backup(&dir, &out, "root ceremony 2").expect("backup");
    assert_eq!(manifest.extra["next_crl_number"], 2);
    let b = keyrite::transfer::Bundle::open(&out, keyrite::transfer::BundleKind::CaBackup, &Default::default())
        .expect("open");
    assert_eq!(b.file(ca::STATE_FILE).expect("state"), fs::read(dir.join(ca::STATE_FILE)).expect("read"));
    assert!(b.file("crl-1.der").is_ok());
    assert!(b.file(&format!("cert-{}.der", p.ints[0].serial_hex)).is_ok());
}
