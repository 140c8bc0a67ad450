//! `keyrite ca export-index | backup | verify` on a CA directory made with
//! the library.

mod common;

use std::path::Path;

use common::{keyrite, list, stderr, stdout};
use keyrite::ca::CaDir;
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::profile::{issue, IssueRequest, IssuerRef, Profile};
use time::{Duration, OffsetDateTime};

fn profile(name: &str) -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name)).expect("template")
}

#[test]
fn ca_commands_verify_export_and_back_up() {
    let work = tempfile::tempdir().expect("work");
    let key = SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("key");
    let p = profile("root-ca.toml");
    let nb = OffsetDateTime::now_utc() - Duration::hours(1);
    let root = issue(
        &IssueRequest {
            profile: &p,
            subject: None,
            subject_spki: key.spki_der(),
            sans: vec![],
            serial: vec![0x42; 16],
            not_before: nb,
            not_after: p.not_after_for(nb),
            issuer: IssuerRef::SelfSigned,
        },
        &key,
    )
    .expect("root");
    let ca_dir = work.path().join("ca");
    let mut ca = CaDir::init(&ca_dir, &root.der).expect("init");
    let ip = profile("intermediate-ca.toml");
    let int_key = SoftKey::generate("int", KeyAlgorithm::EcdsaP256).expect("int key");
    let serial = vec![0x17; 16];
    ca.reserve_serial(&serial).expect("reserve");
    let int = issue(
        &IssueRequest {
            profile: &ip,
            subject: None,
            subject_spki: int_key.spki_der(),
            sans: vec![],
            serial,
            not_before: nb,
            not_after: ip.not_after_for(nb),
            issuer: IssuerRef::Certificate { der: &root.der },
        },
        &key,
    )
    .expect("int");
    ca.record_issued(&int.der).expect("record");

    let run = |args: &[&str]| keyrite().current_dir(work.path()).args(args).output().expect("keyrite");
    let v = run(&["ca", "verify", "ca"]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(stdout(&v).contains("certificates     1 (0 revoked)"), "{}", stdout(&v));

    let x = run(&["ca", "export-index", "ca"]);
    assert!(x.status.success(), "{}", stderr(&x));
    let index = stdout(&x);
    assert!(index.starts_with('V') && index.contains(&int.serial_hex.to_uppercase()), "{index}");

    let b = run(&["ca", "backup", "ca", "--out", "backup"]);
    assert!(b.status.success(), "{}", stderr(&b));
    let files = list(&work.path().join("backup"));
    assert!(files.contains(&"state.json".to_string()) && files.contains(&"manifest.json".to_string()), "{files:?}");
    // A second backup into the same directory is refused.
    let again = run(&["ca", "backup", "ca", "--out", "backup"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("must not exist or must be empty"), "{}", stderr(&again));
}
