//! n-of-m custody on a real SoftHSM token: wrap-with-trusted backups, restores
//! from a quorum of shares, and activation PINs held as shares.
//!
//! PKCS#11 `C_Initialize` and the login state are per process, so every test
//! of this binary shares one SoftHSM configuration and one loaded module, and
//! runs under one mutex; each test initialises fresh tokens of its own.
//! Tests skip (pass with a note) when SoftHSM is not installed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use keyrite::hsm::backup::{self, BackupError, RestoreOptions, WrappedKey};
use keyrite::hsm::pkcs11::{Extractability, Module, Token, TokenSelector};
use keyrite::hsm::{verify_signature, HsmError, KeyAlgorithm, RandomSource, Signer};
use keyrite::secret::Secret;
use keyrite::shares;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

struct Harness {
    conf: PathBuf,
    module: Module,
    _dir: tempfile::TempDir,
}

static HARNESS: OnceLock<Option<Harness>> = OnceLock::new();
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_TOKEN: AtomicU32 = AtomicU32::new(0);

/// The shared module, and the lock that keeps tests from interleaving logins.
fn harness() -> Option<(MutexGuard<'static, ()>, &'static Harness)> {
    let guard = SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let harness = HARNESS.get_or_init(|| {
        if !Path::new(MODULE).exists() {
            eprintln!("SoftHSM is not installed at {MODULE}; skipping");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tokens")).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        );
        std::fs::write(&conf, text).expect("conf");
        // Set once, before the module loads, while the test mutex is held.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let module = Module::load(Path::new(MODULE)).expect("load SoftHSM");
        Some(Harness { conf, module, _dir: dir })
    });
    harness.as_ref().map(|h| (guard, h))
}

struct Fresh {
    selector: TokenSelector,
    user_pin: Secret,
    so_pin: Secret,
}

fn fresh_token(h: &Harness, prefix: &str) -> Fresh {
    let n = NEXT_TOKEN.fetch_add(1, Ordering::SeqCst);
    let label = format!("{prefix}-{}-{n}", std::process::id());
    let user_pin = Secret::new(format!("user-{label}").into_bytes());
    let so_pin = Secret::new(format!("so-{label}").into_bytes());
    let selector = h.module.init_token(&label, &so_pin, &user_pin).expect("init token");
    Fresh { selector, user_pin, so_pin }
}

fn open(h: &Harness, t: &Fresh) -> Token {
    h.module.open(&t.selector, &t.user_pin).expect("open token")
}

fn object_count(token: &Token) -> usize {
    token.session().find_objects(&[]).expect("find objects").len()
}

fn secret_keys(token: &Token) -> usize {
    token.session().find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)]).expect("find secret keys").len()
}

/// A 32-byte KEK from the token's RNG, split 3-of-5.
fn kek_and_shares(token: &Token) -> (Secret, Vec<shares::Share>) {
    let kek = Secret::new(token.random_bytes(32).expect("rng"));
    let set = shares::split(&kek, 3, 5, b"", 0, token).expect("split");
    (kek, set)
}

/// Generates `label` with wrap-with-trusted on a fresh token A and backs it
/// up; returns the backup (after a round trip through the file format), the
/// shares, the original SPKI and the backup file's path.
fn generate_and_back_up(
    h: &Harness,
    dir: &Path,
    label: &str,
    algorithm: KeyAlgorithm,
) -> (WrappedKey, Vec<shares::Share>) {
    let a = fresh_token(h, "custody-a");
    let mut token = open(h, &a);
    let spki = {
        let key = token
            .generate(label, algorithm, algorithm.default_signature(), Extractability::WrapWithTrustedOnly)
            .expect("generate");
        key.spki_der().to_vec()
    };
    let (kek, set) = kek_and_shares(&token);
    let before = object_count(&token);
    let wrapped = backup::backup_key(&mut token, &a.user_pin, &a.so_pin, label, &kek).expect("backup");
    assert_eq!(wrapped.public_key_spki, spki);
    assert_eq!(wrapped.algorithm, algorithm);
    assert_eq!(secret_keys(&token), 0, "the KEK must be gone from token A");
    assert_eq!(object_count(&token), before, "backup leaves token A as it found it");

    // The user is logged in again and the key still signs.
    let key = token.find_key(label, None, None).expect("find after backup");
    let sig = key.sign(b"after backup").expect("sign after backup");
    verify_signature(&spki, algorithm.default_signature(), b"after backup", &sig).expect("verify after backup");

    // The blob is plain RFC 5649: any AES-KWP implementation opens it.
    use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
    let soft_kek = AesKek::new(&AES_256, kek.expose()).expect("kek");
    let mut out = zeroize::Zeroizing::new(vec![0u8; wrapped.blob.len()]);
    let pkcs8 = soft_kek.unwrap_with_padding(&wrapped.blob, &mut out).expect("RFC 5649 unwrap in software");
    assert_eq!(pkcs8.first(), Some(&0x30), "a DER PKCS#8 SEQUENCE");

    let path = dir.join(format!("{label}.wrapped.json"));
    std::fs::write(&path, wrapped.to_file_bytes()).expect("write backup");
    let parsed = WrappedKey::parse(&std::fs::read(&path).expect("read backup"), &path).expect("parse backup");
    assert_eq!(parsed, wrapped);
    (parsed, set)
}

fn restore_and_prove(h: &Harness, wrapped: &WrappedKey, quorum: &[shares::Share]) -> Fresh {
    let b = fresh_token(h, "custody-b");
    let token = open(h, &b);
    let kek = shares::combine(quorum, b"").expect("combine");
    let key = backup::restore_key(&token, wrapped, &kek, &RestoreOptions::default()).expect("restore");
    assert_eq!(key.spki_der(), wrapped.public_key_spki.as_slice());
    assert_eq!(key.label(), wrapped.key_label);
    assert_eq!(key.id(), wrapped.key_id.as_slice());
    let sig = key.sign(b"tbsCertificate").expect("sign");
    verify_signature(&wrapped.public_key_spki, wrapped.algorithm.default_signature(), b"tbsCertificate", &sig)
        .expect("the restored key's signature verifies under the original public key");
    assert_eq!(secret_keys(&token), 0, "no KEK left on token B");
    drop(key);
    // Found again from scratch, as the next ceremony would.
    let again = token.find_key(&wrapped.key_label, None, None).expect("find restored");
    assert_eq!(again.spki_der(), wrapped.public_key_spki.as_slice());
    b
}

#[test]
fn an_ecdsa_p384_root_is_backed_up_and_restored_from_three_of_five_shares() {
    let Some((_guard, h)) = harness() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (wrapped, set) = generate_and_back_up(h, dir.path(), "root-p384", KeyAlgorithm::EcdsaP384);
    let b = restore_and_prove(h, &wrapped, &[set[3].clone(), set[0].clone(), set[4].clone()]);

    // Another tool sees the restored private key. The PIN goes on argv
    // because pkcs11-tool takes it nowhere else; acceptable only for a
    // throwaway test token.
    let output = std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", &h.conf)
        .args(["--module", MODULE, "--token-label", &b.selector.label, "--login", "--pin"])
        .arg(b.user_pin.expose_str().expect("text pin"))
        .args(["--list-objects", "--type", "privkey"])
        .output();
    match output {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "pkcs11-tool failed: {}", String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("Private Key Object"), "{stdout}");
            assert!(stdout.contains("root-p384"), "{stdout}");
        }
        Err(e) => eprintln!("pkcs11-tool not available ({e}); skipping the cross-tool check"),
    }
}

#[test]
fn an_rsa_3072_root_is_backed_up_and_restored() {
    let Some((_guard, h)) = harness() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (wrapped, set) = generate_and_back_up(h, dir.path(), "root-rsa", KeyAlgorithm::Rsa3072);
    restore_and_prove(h, &wrapped, &set[1..4]);
}

#[test]
fn a_quorum_from_another_set_or_a_damaged_blob_creates_nothing() {
    let Some((_guard, h)) = harness() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (wrapped, set) = generate_and_back_up(h, dir.path(), "root-wrong", KeyAlgorithm::EcdsaP256);
    let b = fresh_token(h, "custody-b");
    let token = open(h, &b);
    let (_other_kek, other_set) = kek_and_shares(&token);
    let wrong = shares::combine(&other_set[..3], b"").expect("combine");
    let before = object_count(&token);
    let err = backup::restore_key(&token, &wrapped, &wrong, &RestoreOptions::default()).err().expect("must fail");
    assert!(matches!(&err, HsmError::Backup(e) if matches!(**e, BackupError::WrongKek { .. })), "{err}");
    assert!(err.to_string().contains("a share is from another set"), "{err}");
    assert_eq!(object_count(&token), before, "nothing created on token B");

    // The right shares with a damaged blob: the token refuses, nothing is left.
    let right = shares::combine(&set[2..5], b"").expect("combine");
    let mut damaged = wrapped.clone();
    let mid = damaged.blob.len() / 2;
    damaged.blob[mid] ^= 0x01;
    let err = backup::restore_key(&token, &damaged, &right, &RestoreOptions::default()).err().expect("must fail");
    assert!(matches!(&err, HsmError::Backup(e) if matches!(**e, BackupError::BlobRejected { .. })), "{err}");
    assert!(err.to_string().contains("blob is damaged"), "{err}");
    assert_eq!(object_count(&token), before, "nothing left on token B");
    assert_eq!(secret_keys(&token), 0);
}

#[test]
fn the_token_refuses_to_wrap_with_a_key_the_user_made() {
    let Some((_guard, h)) = harness() else { return };
    let a = fresh_token(h, "custody-a");
    let token = open(h, &a);
    let key = token
        .generate(
            "root-untrusted",
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256.default_signature(),
            Extractability::WrapWithTrustedOnly,
        )
        .expect("generate");
    let aes = |trusted: Option<bool>| {
        let mut t = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(vec![0x42; 32]),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ];
        t.extend(trusted.map(Attribute::Trusted));
        t
    };
    let session = token.session();
    // The user cannot mark a key trusted...
    match session.create_object(&aes(Some(true))) {
        Err(CkError::Pkcs11(RvError::AttributeReadOnly, _)) => {}
        other => panic!("SoftHSM let the user create a trusted key: {other:?}"),
    }
    // ...and an untrusted key may not wrap a wrap-with-trusted key.
    let untrusted = session.create_object(&aes(None)).expect("untrusted AES key");
    match session.wrap_key(&Mechanism::AesKeyWrapPad, untrusted, key.private_handle()) {
        Err(CkError::Pkcs11(RvError::KeyNotWrappable, _)) => {}
        other => panic!("SoftHSM wrapped a wrap-with-trusted key with an untrusted key: {other:?}"),
    }
}

#[test]
fn a_key_that_is_never_extractable_cannot_be_backed_up() {
    let Some((_guard, h)) = harness() else { return };
    let a = fresh_token(h, "custody-a");
    let mut token = open(h, &a);
    token
        .generate(
            "root-never",
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256.default_signature(),
            Extractability::Never,
        )
        .expect("generate");
    let (kek, _) = kek_and_shares(&token);
    let err = backup::backup_key(&mut token, &a.user_pin, &a.so_pin, "root-never", &kek).expect_err("must fail");
    assert!(matches!(&err, HsmError::Backup(e) if matches!(**e, BackupError::NotBackupable { .. })), "{err}");
    assert!(err.to_string().contains("not extractable"), "{err}");
    assert_eq!(secret_keys(&token), 0);

    // A wrong SO PIN fails cleanly and leaves the user logged in.
    token
        .generate(
            "root-ok",
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP256.default_signature(),
            Extractability::WrapWithTrustedOnly,
        )
        .expect("generate");
    let wrong_so = Secret::new(b"not-the-so-pin".to_vec());
    let err = backup::backup_key(&mut token, &a.user_pin, &wrong_so, "root-ok", &kek).expect_err("must fail");
    assert!(err.to_string().contains("C_Login"), "{err}");
    assert_eq!(secret_keys(&token), 0);
    token.find_key("root-ok", None, None).expect("still logged in as user").sign(b"m").expect("sign");
}

#[test]
fn a_random_user_pin_held_as_two_of_three_shares_activates_the_token() {
    let Some((_guard, h)) = harness() else { return };
    let t = fresh_token(h, "custody-pin");
    let set = {
        let token = open(h, &t);
        let seed = backup::random_pin_seed(&token).expect("seed");
        let pin = backup::pin_from_seed(&seed).expect("pin");
        backup::set_user_pin(&token, &t.user_pin, &pin).expect("C_SetPIN");
        shares::split(&seed, 2, 3, b"", 0, &token).expect("split")
    };
    let seed = shares::combine(&[set[2].clone(), set[0].clone()], b"").expect("combine");
    let pin = backup::pin_from_seed(&seed).expect("pin");
    let token = h.module.open(&t.selector, &pin).expect("log in with the PIN rebuilt from shares");
    drop(token);
    let err = h.module.open(&t.selector, &t.user_pin).err().expect("the old PIN must fail");
    assert!(err.to_string().contains("PIN is wrong") || err.to_string().contains("PinIncorrect"), "{err}");

    // The SO can reset the user PIN and change its own.
    let reset = backup::random_pin(&keyrite::hsm::soft::SystemRng).expect("pin");
    backup::init_user_pin(&h.module, &t.selector, &t.so_pin, &reset).expect("C_InitPIN");
    drop(h.module.open(&t.selector, &reset).expect("log in with the reset PIN"));
    let new_so = Secret::new(b"a-new-so-pin-1234".to_vec());
    backup::set_so_pin(&h.module, &t.selector, &t.so_pin, &new_so).expect("C_SetPIN as SO");
    drop(h.module.open_so_session(&t.selector, &new_so).expect("SO login with the new PIN"));
}
