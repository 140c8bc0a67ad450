//! The software key store: for machines without an HSM, and for rehearsals.
//!
//! A private key is generated in memory by aws-lc-rs and immediately sealed
//! into `<dir>/<label>.key.json` under AES-256-GCM. The sealing key comes from
//! a passphrase through PBKDF2-HMAC-SHA256 or, under n-of-m custody, is a raw
//! 256-bit key recombined from shares. The file's header (label, algorithm,
//! public key) is the cipher's associated data, so a sealed file renamed or
//! edited to claim another label or key fails to open instead of signing with
//! the wrong key.

use std::fs;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self as sig, KeyPair};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{HsmError, KeyAlgorithm, RandomSource, SignatureAlgorithm, Signer};
use crate::files::{self, Mode};
use crate::secret::Secret;

/// PBKDF2 iterations for passphrase-sealed keys (OWASP 2023 guidance for
/// PBKDF2-HMAC-SHA256). Stored in each file so it can be raised later.
pub const PBKDF2_ITERATIONS: u32 = 600_000;
const FORMAT: &str = "keyrite-sealed-key-v1";

/// An in-memory private key. Used for the store's keys once unsealed, for the
/// throwaway keys that sign lint certificates, and in tests.
pub struct SoftKey {
    label: String,
    algorithm: KeyAlgorithm,
    signature: SignatureAlgorithm,
    spki: Vec<u8>,
    pair: Pair,
    pkcs8: Zeroizing<Vec<u8>>,
}

enum Pair {
    Ec(sig::EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

impl SoftKey {
    /// Generates a fresh key in memory (never written anywhere by itself).
    pub fn generate(label: &str, algorithm: KeyAlgorithm) -> Result<Self, HsmError> {
        let fail = |what: &str| SoftError::Crypto(format!("generating a {algorithm} key failed: {what}"));
        let pkcs8 = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let pair = sig::EcdsaKeyPair::generate(ec_alg(algorithm)).map_err(|_| fail("EC"))?;
                pair.to_pkcs8v1().map_err(|_| fail("PKCS#8"))?.as_ref().to_vec()
            }
            KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let size = if algorithm == KeyAlgorithm::Rsa3072 {
                    aws_lc_rs::rsa::KeySize::Rsa3072
                } else {
                    aws_lc_rs::rsa::KeySize::Rsa4096
                };
                let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| fail("RSA"))?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(|_| fail("PKCS#8"))?;
                der.as_ref().to_vec()
            }
        };
        Self::from_pkcs8(label, algorithm, Zeroizing::new(pkcs8))
    }

    fn from_pkcs8(label: &str, algorithm: KeyAlgorithm, pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, HsmError> {
        let bad = || SoftError::Crypto(format!("key {label:?} does not load as a {algorithm} PKCS#8 key"));
        let (pair, spki) = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                let pair = sig::EcdsaKeyPair::from_pkcs8(ec_alg(algorithm), &pkcs8).map_err(|_| bad())?;
                let spki = pair.public_key().as_der().map_err(|_| bad())?.as_ref().to_vec();
                (Pair::Ec(pair), spki)
            }
            KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad())?;
                let spki = pair.public_key().as_der().map_err(|_| bad())?.as_ref().to_vec();
                (Pair::Rsa(pair), spki)
            }
        };
        if super::spki_algorithm(&spki)? != algorithm {
            return Err(bad().into());
        }
        Ok(SoftKey { label: label.to_string(), algorithm, signature: algorithm.default_signature(), spki, pair, pkcs8 })
    }

    /// Chooses another signature scheme (RSA PSS, SHA-384), checked against the key.
    pub fn with_signature(mut self, signature: SignatureAlgorithm) -> Result<Self, HsmError> {
        if !signature.fits(self.algorithm) {
            return Err(HsmError::SignatureMismatch { sig: signature, key: self.algorithm });
        }
        self.signature = signature;
        Ok(self)
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

fn ec_alg(algorithm: KeyAlgorithm) -> &'static sig::EcdsaSigningAlgorithm {
    if algorithm == KeyAlgorithm::EcdsaP384 {
        &sig::ECDSA_P384_SHA384_ASN1_SIGNING
    } else {
        &sig::ECDSA_P256_SHA256_ASN1_SIGNING
    }
}

impl Signer for SoftKey {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.signature
    }

    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let rng = SystemRandom::new();
        let fail = || HsmError::from(SoftError::Crypto(format!("signing with soft key {:?} failed", self.label)));
        match &self.pair {
            Pair::Ec(pair) => {
                // The ECDSA key pair fixes its hash at load time: P-256 with
                // SHA-256, P-384 with SHA-384, which is what `signature` says.
                if !self.signature.fits(self.algorithm) {
                    return Err(HsmError::SignatureMismatch { sig: self.signature, key: self.algorithm });
                }
                Ok(pair.sign(&rng, message).map_err(|_| fail())?.as_ref().to_vec())
            }
            Pair::Rsa(pair) => {
                let padding: &'static dyn sig::RsaEncoding = match self.signature {
                    SignatureAlgorithm::RsaPkcs1Sha256 => &sig::RSA_PKCS1_SHA256,
                    SignatureAlgorithm::RsaPkcs1Sha384 => &sig::RSA_PKCS1_SHA384,
                    SignatureAlgorithm::RsaPssSha256 => &sig::RSA_PSS_SHA256,
                    SignatureAlgorithm::RsaPssSha384 => &sig::RSA_PSS_SHA384,
                    other => return Err(HsmError::SignatureMismatch { sig: other, key: self.algorithm }),
                };
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(padding, &rng, message, &mut out).map_err(|_| fail())?;
                Ok(out)
            }
        }
    }

    fn describe(&self) -> String {
        format!("software key {:?} ({})", self.label, self.algorithm)
    }
}

/// Random bytes from the operating system, for the software backend.
pub struct SystemRng;

impl RandomSource for SystemRng {
    fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        let mut out = vec![0u8; len];
        SystemRandom::new().fill(&mut out).map_err(|_| SoftError::Crypto("the system RNG failed".into()))?;
        Ok(out)
    }
}

/// What unlocks a sealed key file.
pub enum SealingKey {
    /// A passphrase, stretched with PBKDF2.
    Passphrase(Secret),
    /// A raw 256-bit key, e.g. recombined from custodians' shares.
    Raw(Secret),
}

/// A directory of sealed private keys.
pub struct SoftStore {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedFile {
    format: String,
    label: String,
    algorithm: KeyAlgorithm,
    /// The public key, base64 DER SubjectPublicKeyInfo: readable without the
    /// passphrase, so an auditor can match it to a certificate.
    public_key: String,
    kdf: Kdf,
    cipher: String,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
enum Kdf {
    Pbkdf2HmacSha256 { iterations: u32, salt: String },
    Raw,
}

impl SoftStore {
    /// Opens (and, if needed, creates with mode 0700) a key store directory.
    pub fn open(dir: &Path) -> Result<Self, HsmError> {
        files::create_dir(dir, Mode::Private).map_err(SoftError::File)?;
        Ok(SoftStore { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sealed file that holds `label`.
    pub fn key_path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.key.json"))
    }

    /// Checks a label can be used for a new key: valid characters, not taken.
    pub fn check_new_label(&self, label: &str) -> Result<(), HsmError> {
        check_label(label)?;
        let path = self.key_path(label);
        if path.exists() {
            return Err(SoftError::LabelExists { label: label.into(), path }.into());
        }
        Ok(())
    }

    /// Generates a key, seals it and writes it (never over an existing one).
    pub fn generate(&self, label: &str, algorithm: KeyAlgorithm, sealing: &SealingKey) -> Result<SoftKey, HsmError> {
        self.check_new_label(label)?;
        let key = SoftKey::generate(label, algorithm)?;
        let sealed = seal(&key, sealing)?;
        let json = serde_json::to_vec_pretty(&sealed).map_err(|e| SoftError::Crypto(e.to_string()))?;
        files::write_new(&self.key_path(label), &json, Mode::Private).map_err(SoftError::File)?;
        Ok(key)
    }

    /// Reads a sealed key's public key without unsealing it.
    pub fn public_key(&self, label: &str) -> Result<(KeyAlgorithm, Vec<u8>), HsmError> {
        let (_, sealed) = self.read(label)?;
        let spki = B64.decode(&sealed.public_key).map_err(|_| self.corrupt(label, "public_key is not base64"))?;
        Ok((sealed.algorithm, spki))
    }

    /// Unseals a key. A wrong passphrase or share set and a tampered file both
    /// fail authentication; the message says which checks to make.
    pub fn load(&self, label: &str, sealing: &SealingKey) -> Result<SoftKey, HsmError> {
        let (path, sealed) = self.read(label)?;
        open_sealed(&path, label, sealed, sealing)
    }

    fn read(&self, label: &str) -> Result<(PathBuf, SealedFile), HsmError> {
        check_label(label)?;
        let path = self.key_path(label);
        let bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SoftError::NoSuchKey { label: label.into(), dir: self.dir.clone() }
            } else {
                SoftError::File(files::FileError::io(&path, "reading", e))
            }
        })?;
        let sealed: SealedFile = serde_json::from_slice(&bytes)
            .map_err(|e| SoftError::Corrupt { path: path.clone(), what: e.to_string() })?;
        Ok((path, sealed))
    }

    fn corrupt(&self, label: &str, what: &str) -> HsmError {
        SoftError::Corrupt { path: self.key_path(label), what: what.into() }.into()
    }

    /// The file of records the store keeps beside its keys (the twin of a
    /// token's data objects): one JSON object per line, appended, fsynced.
    pub fn records_path(&self) -> PathBuf {
        self.dir.join("records.jsonl")
    }

    /// The records labelled `label` (or all), as (label, value), oldest
    /// first.
    pub fn records(&self, label: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, HsmError> {
        let path = self.records_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SoftError::File(files::FileError::io(&path, "reading", e)).into()),
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let record: StoreRecord = serde_json::from_str(line)
                .map_err(|e| SoftError::Corrupt { path: path.clone(), what: format!("line {}: {e}", i + 1) })?;
            if label.is_none_or(|l| l == record.label) {
                out.push((record.label, record.value.into_bytes()));
            }
        }
        Ok(out)
    }

    /// Appends a record (fsynced). Records are never rewritten.
    pub fn add_record(&self, label: &str, value: &[u8]) -> Result<(), HsmError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.records_path();
        let value = std::str::from_utf8(value)
            .map_err(|_| SoftError::Corrupt { path: path.clone(), what: "a record must be UTF-8 text".into() })?;
        let mut line = serde_json::to_vec(&StoreRecord { label: label.into(), value: value.into() })
            .map_err(|e| SoftError::Crypto(e.to_string()))?;
        line.push(b'\n');
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| SoftError::File(files::FileError::io(&path, "opening", e)))?;
        files::append_line(&mut file, &path, &line).map_err(SoftError::File)?;
        Ok(())
    }
}

/// One line of the store's records file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreRecord {
    label: String,
    value: String,
}

/// The custodians' quorum key: Ed25519, derived from the backup's
/// key-encryption key with HKDF-SHA256, so that whoever rebuilds the KEK (a
/// quorum of custodians) can sign with it, and nobody else. It is never
/// stored: a root ceremony derives it to announce its public key, a restore
/// derives it again to sign a succession (`audit::succession`).
pub struct QuorumKey {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    spki: Vec<u8>,
}

impl QuorumKey {
    /// HKDF-SHA256 with salt "keyrite custodian quorum key v1", the KEK as
    /// input key material and info "ed25519 seed": the 32-byte seed.
    pub fn derive(kek: &Secret) -> Result<Self, HsmError> {
        use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
        let fail = |what: &str| SoftError::Crypto(format!("deriving the custodians' quorum key failed: {what}"));
        let prk = Salt::new(HKDF_SHA256, b"keyrite custodian quorum key v1").extract(kek.expose());
        let mut seed = Zeroizing::new([0u8; 32]);
        prk.expand(&[b"ed25519 seed"], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut seed[..]))
            .map_err(|_| fail("HKDF"))?;
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| fail("Ed25519"))?;
        let raw: [u8; 32] = pair.public_key().as_ref().try_into().map_err(|_| fail("public key length"))?;
        Ok(QuorumKey { pair, spki: super::ed25519_spki(&raw) })
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Unseals a key file's contents; `path` only names it in errors.
fn open_sealed(path: &Path, label: &str, sealed: SealedFile, sealing: &SealingKey) -> Result<SoftKey, HsmError> {
    let path = path.to_path_buf();
    if sealed.format != FORMAT || sealed.cipher != "aes-256-gcm" || sealed.label != label {
        return Err(corrupt(&path, "header does not match this label or format"));
    }
    let key = derive_key(sealing, &sealed.kdf, &path)?;
    let nonce = B64.decode(&sealed.nonce).map_err(|_| corrupt(&path, "nonce is not base64"))?;
    let mut data =
        Zeroizing::new(B64.decode(&sealed.ciphertext).map_err(|_| corrupt(&path, "ciphertext is not base64"))?);
    let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| corrupt(&path, "nonce length"))?;
    let aad = header_aad(&sealed.label, sealed.algorithm, &sealed.public_key);
    let plain = key
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut data)
        .map_err(|_| SoftError::Unseal { path: path.clone() })?;
    let soft = SoftKey::from_pkcs8(label, sealed.algorithm, Zeroizing::new(plain.to_vec()))?;
    let stated = B64.decode(&sealed.public_key).map_err(|_| corrupt(&path, "public_key is not base64"))?;
    if stated != soft.spki {
        return Err(corrupt(&path, "public_key does not belong to the sealed private key"));
    }
    Ok(soft)
}

fn corrupt(path: &Path, what: &str) -> HsmError {
    SoftError::Corrupt { path: path.to_path_buf(), what: what.into() }.into()
}

/// Unseals a key file held in memory (a backup being checked before it is
/// written anywhere).
pub fn unseal_bytes(label: &str, bytes: &[u8], sealing: &SealingKey) -> Result<SoftKey, HsmError> {
    let path = PathBuf::from(format!("(backup of {label})"));
    let sealed: SealedFile =
        serde_json::from_slice(bytes).map_err(|e| SoftError::Corrupt { path: path.clone(), what: e.to_string() })?;
    open_sealed(&path, label, sealed, sealing)
}

fn check_label(label: &str) -> Result<(), HsmError> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !label.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(SoftError::BadLabel(label.into()).into())
    }
}

fn header_aad(label: &str, algorithm: KeyAlgorithm, public_key_b64: &str) -> String {
    format!("{FORMAT}\n{label}\n{}\n{public_key_b64}", algorithm.name())
}

fn seal(key: &SoftKey, sealing: &SealingKey) -> Result<SealedFile, HsmError> {
    let rng = SystemRandom::new();
    let rng_fail = || SoftError::Crypto("the system RNG failed".into());
    let kdf = match sealing {
        SealingKey::Passphrase(_) => {
            let mut salt = [0u8; 16];
            rng.fill(&mut salt).map_err(|_| rng_fail())?;
            Kdf::Pbkdf2HmacSha256 { iterations: PBKDF2_ITERATIONS, salt: B64.encode(salt) }
        }
        SealingKey::Raw(_) => Kdf::Raw,
    };
    let aead_key = derive_key(sealing, &kdf, Path::new("(new key)"))?;
    let mut nonce = [0u8; 12];
    rng.fill(&mut nonce).map_err(|_| rng_fail())?;
    let public_key = B64.encode(&key.spki);
    let aad = header_aad(&key.label, key.algorithm, &public_key);
    let mut data = Zeroizing::new(key.pkcs8.to_vec());
    aead_key
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut *data)
        .map_err(|_| SoftError::Crypto("sealing failed".into()))?;
    Ok(SealedFile {
        format: FORMAT.into(),
        label: key.label.clone(),
        algorithm: key.algorithm,
        public_key,
        kdf,
        cipher: "aes-256-gcm".into(),
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(&*data),
    })
}

fn derive_key(sealing: &SealingKey, kdf: &Kdf, path: &Path) -> Result<LessSafeKey, HsmError> {
    let mut key = Zeroizing::new([0u8; 32]);
    match (sealing, kdf) {
        (SealingKey::Passphrase(pass), Kdf::Pbkdf2HmacSha256 { iterations, salt }) => {
            let salt = B64
                .decode(salt)
                .map_err(|_| SoftError::Corrupt { path: path.into(), what: "salt is not base64".into() })?;
            let iterations =
                std::num::NonZeroU32::new(*iterations).filter(|n| n.get() >= 100_000).ok_or_else(|| {
                    SoftError::Corrupt { path: path.into(), what: "PBKDF2 iterations below 100000".into() }
                })?;
            aws_lc_rs::pbkdf2::derive(
                aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                &salt,
                pass.expose(),
                &mut *key,
            );
        }
        (SealingKey::Raw(raw), Kdf::Raw) => {
            if raw.len() != 32 {
                return Err(SoftError::Crypto(format!("a raw sealing key must be 32 bytes, not {}", raw.len())).into());
            }
            key.copy_from_slice(raw.expose());
        }
        (SealingKey::Passphrase(_), Kdf::Raw) => {
            return Err(SoftError::WrongUnlock { path: path.into(), needs: "custodians' shares" }.into())
        }
        (SealingKey::Raw(_), _) => {
            return Err(SoftError::WrongUnlock { path: path.into(), needs: "a passphrase" }.into())
        }
    }
    let unbound =
        UnboundKey::new(&aead::AES_256_GCM, &*key).map_err(|_| SoftError::Crypto("AES key setup failed".into()))?;
    Ok(LessSafeKey::new(unbound))
}

/// Errors of the software key store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SoftError {
    #[error("key label {0:?} is not allowed: use 1-64 characters from A-Z a-z 0-9 - _ . (not starting with a dot)")]
    BadLabel(String),
    #[error("key label {label:?} is already in the software key store ({path}); choose another label")]
    LabelExists { label: String, path: PathBuf },
    #[error("no key labelled {label:?} in the software key store {dir}; check the label and the store directory")]
    NoSuchKey { label: String, dir: PathBuf },
    #[error("{path}: cannot unseal: the passphrase (or share set) is wrong, or the file was altered; check the passphrase and compare the file's SHA-256 with the audit log")]
    Unseal { path: PathBuf },
    #[error("{path}: this key is sealed under {needs}; unlock it that way")]
    WrongUnlock { path: PathBuf, needs: &'static str },
    #[error("{path}: sealed key file is damaged: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("software key store: {0}")]
    Crypto(String),
    #[error(transparent)]
    File(#[from] files::FileError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> SealingKey {
        SealingKey::Passphrase(Secret::new(s.as_bytes().to_vec()))
    }

    #[test]
    fn a_sealed_key_signs_after_reopening_and_refuses_a_wrong_passphrase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SoftStore::open(dir.path()).expect("open");
        let key = store.generate("root", KeyAlgorithm::EcdsaP256, &pass("correct horse")).expect("generate");
        let reopened = store.load("root", &pass("correct horse")).expect("load");
        assert_eq!(key.spki_der(), reopened.spki_der());
        let sig = reopened.sign(b"tbs").expect("sign");
        super::super::verify_signature(key.spki_der(), SignatureAlgorithm::EcdsaSha256, b"tbs", &sig).expect("verify");
        let err = store.load("root", &pass("wrong")).err().expect("wrong passphrase must fail");
        assert!(err.to_string().contains("cannot unseal"), "{err}");
        assert!(!err.to_string().contains("wrong\""), "no passphrase in the message");
        let again = store.generate("root", KeyAlgorithm::EcdsaP256, &pass("x")).err().expect("label reuse");
        assert!(again.to_string().contains("already in the software key store"), "{again}");
    }

    #[test]
    fn rsa_keys_sign_pkcs1_and_pss() {
        let key = SoftKey::generate("r", KeyAlgorithm::Rsa3072).expect("gen");
        let sig = key.sign(b"m").expect("sign");
        super::super::verify_signature(key.spki_der(), SignatureAlgorithm::RsaPkcs1Sha256, b"m", &sig).expect("pkcs1");
        let key = key.with_signature(SignatureAlgorithm::RsaPssSha256).expect("pss");
        let sig = key.sign(b"m").expect("sign");
        super::super::verify_signature(key.spki_der(), SignatureAlgorithm::RsaPssSha256, b"m", &sig)
            .expect("pss verify");
    }
}
