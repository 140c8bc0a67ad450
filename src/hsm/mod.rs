//! The `hsm` room: everything that holds or uses a private key.
//!
//! A CA key lives behind the [`Signer`] trait. Two backends implement it: a
//! PKCS#11 token reached through `cryptoki` ([`pkcs11`]) and the software key
//! store ([`soft`]), whose private keys are sealed in files under a passphrase.
//! Nothing outside this room ever sees private key bytes; the rest of keyrite
//! deals in SubjectPublicKeyInfo DER and X.509-ready signatures.

pub mod backup;
pub mod keystore;
pub mod pkcs11;
pub mod soft;
pub mod uri;

use std::fmt;

use serde::{Deserialize, Serialize};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), before the
/// 32-byte key. Ed25519 signs only the custodians' quorum statements (see
/// `soft::QuorumKey`); CA and audit keys stay ECDSA or RSA, which tokens have.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// The SubjectPublicKeyInfo of a raw Ed25519 public key.
pub fn ed25519_spki(public_key: &[u8; 32]) -> Vec<u8> {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(public_key);
    spki
}

/// The raw 32-byte key of an Ed25519 SubjectPublicKeyInfo.
pub fn ed25519_raw(spki: &[u8]) -> Result<&[u8], String> {
    match spki.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(raw) if raw.len() == 32 => Ok(raw),
        _ => Err("the key is not an Ed25519 SubjectPublicKeyInfo".into()),
    }
}

/// The key types keyrite generates and accepts for CA and audit keys.
///
/// Kept deliberately short: P-256/P-384 and RSA 3072/4096 are what every
/// tested token supports and what the CA/Browser Forum accepts for roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Rsa3072,
    Rsa4096,
}

impl KeyAlgorithm {
    /// The name used in ceremony files, answers files and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        }
    }

    /// Parses a ceremony-file name, naming the accepted ones on failure.
    pub fn from_name(name: &str) -> Result<Self, HsmError> {
        match name {
            "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            "ecdsa-p384" => Ok(KeyAlgorithm::EcdsaP384),
            "rsa-3072" => Ok(KeyAlgorithm::Rsa3072),
            "rsa-4096" => Ok(KeyAlgorithm::Rsa4096),
            other => Err(HsmError::UnsupportedAlgorithm(other.to_string())),
        }
    }

    /// The signature algorithm a key of this type signs certificates with.
    ///
    /// The hash follows the key's strength (SHA-384 for P-384, as RFC 5480
    /// recommends); RSA keys sign with PKCS#1 v1.5 unless a profile asks for
    /// PSS, because PSS-signed roots still break some relying parties.
    pub fn default_signature(self) -> SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => SignatureAlgorithm::EcdsaSha256,
            KeyAlgorithm::EcdsaP384 => SignatureAlgorithm::EcdsaSha384,
            KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => SignatureAlgorithm::RsaPkcs1Sha256,
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096)
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a signature is made. Every value names hash and padding together, so a
/// signer never has to guess the hash a caller meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlgorithm {
    EcdsaSha256,
    EcdsaSha384,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPssSha256,
    RsaPssSha384,
}

impl SignatureAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::EcdsaSha256 => "ecdsa-sha256",
            SignatureAlgorithm::EcdsaSha384 => "ecdsa-sha384",
            SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            SignatureAlgorithm::RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
            SignatureAlgorithm::RsaPssSha384 => "rsa-pss-sha384",
        }
    }

    /// Whether a key of `key` type can make this signature.
    pub fn fits(self, key: KeyAlgorithm) -> bool {
        match self {
            SignatureAlgorithm::EcdsaSha256 => key == KeyAlgorithm::EcdsaP256,
            SignatureAlgorithm::EcdsaSha384 => key == KeyAlgorithm::EcdsaP384,
            _ => key.is_rsa(),
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A private key that can sign, wherever it lives.
///
/// `sign` returns the signature exactly as X.509 carries it: DER
/// `Ecdsa-Sig-Value` for ECDSA (PKCS#11 `CKM_ECDSA` gives raw r‖s, which the
/// PKCS#11 backend converts), the plain octets for RSA. The trait asks for
/// neither `Send` nor `Sync`: a PKCS#11 key borrows its session, which has one
/// owner, so a server that signs from many tasks runs the signer on a single
/// owner thread and sends it requests.
pub trait Signer {
    /// The key's type.
    fn key_algorithm(&self) -> KeyAlgorithm;
    /// The signature this signer makes.
    fn signature_algorithm(&self) -> SignatureAlgorithm;
    /// The public key as DER `SubjectPublicKeyInfo`.
    fn spki_der(&self) -> &[u8];
    /// Signs `message` (the signer hashes it).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError>;
    /// A short description for logs and errors: backend, token and label,
    /// never a PIN.
    fn describe(&self) -> String;
}

/// A shared or borrowed signer signs the same way (the software store
/// caches unsealed keys behind `Rc`).
impl<T: Signer + ?Sized> Signer for std::rc::Rc<T> {
    fn key_algorithm(&self) -> KeyAlgorithm {
        (**self).key_algorithm()
    }
    fn signature_algorithm(&self) -> SignatureAlgorithm {
        (**self).signature_algorithm()
    }
    fn spki_der(&self) -> &[u8] {
        (**self).spki_der()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        (**self).sign(message)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Something that can hand out random bytes, ideally from the token's RNG.
pub trait RandomSource {
    fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError>;
}

/// Checks a signature made by `spki_der`'s key. Used after every signature
/// keyrite makes, and by auditors verifying checkpoints offline.
pub fn verify_signature(
    spki_der: &[u8],
    algorithm: SignatureAlgorithm,
    message: &[u8],
    signature: &[u8],
) -> Result<(), HsmError> {
    use aws_lc_rs::signature as sig;
    let key = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
        .map_err(|e| HsmError::BadPublicKey(format!("public key is not DER SubjectPublicKeyInfo: {e}")))?;
    let raw = key.subject_public_key.raw_bytes();
    let params: &dyn sig::VerificationAlgorithm = match algorithm {
        SignatureAlgorithm::EcdsaSha256 => &sig::ECDSA_P256_SHA256_ASN1,
        SignatureAlgorithm::EcdsaSha384 => &sig::ECDSA_P384_SHA384_ASN1,
        SignatureAlgorithm::RsaPkcs1Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        SignatureAlgorithm::RsaPkcs1Sha384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        SignatureAlgorithm::RsaPssSha256 => &sig::RSA_PSS_2048_8192_SHA256,
        SignatureAlgorithm::RsaPssSha384 => &sig::RSA_PSS_2048_8192_SHA384,
    };
    sig::UnparsedPublicKey::new(params, raw)
        .verify(message, signature)
        .map_err(|_| HsmError::SignatureInvalid(algorithm))
}

/// Identifies the key type of a DER `SubjectPublicKeyInfo`.
pub fn spki_algorithm(spki_der: &[u8]) -> Result<KeyAlgorithm, HsmError> {
    use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1};
    let key = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
        .map_err(|e| HsmError::BadPublicKey(format!("public key is not DER SubjectPublicKeyInfo: {e}")))?;
    let oid = key.algorithm.oid;
    if oid == ID_EC_PUBLIC_KEY {
        let curve = key
            .algorithm
            .parameters_oid()
            .map_err(|_| HsmError::BadPublicKey("EC public key without a named curve".into()))?;
        return match curve {
            c if c == SECP_256_R_1 => Ok(KeyAlgorithm::EcdsaP256),
            c if c == SECP_384_R_1 => Ok(KeyAlgorithm::EcdsaP384),
            c => Err(HsmError::UnsupportedAlgorithm(format!("EC curve {c}"))),
        };
    }
    if oid == RSA_ENCRYPTION {
        let bits = rsa_modulus_bits(key.subject_public_key.raw_bytes())?;
        return match bits {
            3072 => Ok(KeyAlgorithm::Rsa3072),
            4096 => Ok(KeyAlgorithm::Rsa4096),
            b => Err(HsmError::UnsupportedAlgorithm(format!("RSA with a {b}-bit modulus"))),
        };
    }
    Err(HsmError::UnsupportedAlgorithm(format!("public key algorithm {oid}")))
}

/// The bit length of an RSA modulus in a DER `RSAPublicKey`.
pub fn rsa_modulus_bits(rsa_public_key_der: &[u8]) -> Result<usize, HsmError> {
    let (n, _e) = rsa_public_key_parts(rsa_public_key_der)?;
    let n = strip_leading_zeros(&n);
    match n.first() {
        Some(first) => Ok(n.len() * 8 - first.leading_zeros() as usize),
        None => Ok(0),
    }
}

/// Splits a DER `RSAPublicKey` into modulus and exponent (big-endian).
pub fn rsa_public_key_parts(rsa_public_key_der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), HsmError> {
    use der::{asn1::UintRef, Decode, Reader, SliceReader};
    let bad = |e: der::Error| HsmError::BadPublicKey(format!("RSA public key is not DER: {e}"));
    let mut reader = SliceReader::new(rsa_public_key_der).map_err(bad)?;
    let (n, e) = reader
        .sequence(|seq| {
            let n = UintRef::decode(seq)?;
            let e = UintRef::decode(seq)?;
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        })
        .map_err(bad)?;
    reader.finish().map_err(bad)?;
    Ok((n, e))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Converts a raw ECDSA signature (r‖s, each `len/2` bytes, as PKCS#11
/// `CKM_ECDSA` returns it) into the DER `Ecdsa-Sig-Value` X.509 expects.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, HsmError> {
    use der::{asn1::UintRef, Encode, Sequence};
    #[derive(Sequence)]
    struct EcdsaSig<'a> {
        r: UintRef<'a>,
        s: UintRef<'a>,
    }
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(HsmError::BadSignature(format!(
            "raw ECDSA signature of {} bytes cannot be split into r and s",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let bad = |e: der::Error| HsmError::BadSignature(format!("cannot encode ECDSA signature: {e}"));
    let sig = EcdsaSig {
        r: UintRef::new(strip_leading_zeros(r)).map_err(bad)?,
        s: UintRef::new(strip_leading_zeros(s)).map_err(bad)?,
    };
    sig.to_der().map_err(bad)
}

/// Errors from key generation, lookup and signing.
///
/// Each message names the operation (for PKCS#11, the function) that failed
/// and says what the operator can do next. None carries a PIN or key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HsmError {
    #[error("unsupported key algorithm {0:?}: use one of ecdsa-p256, ecdsa-p384, rsa-3072, rsa-4096")]
    UnsupportedAlgorithm(String),
    #[error("bad public key: {0}")]
    BadPublicKey(String),
    #[error("bad signature from the signer: {0}")]
    BadSignature(String),
    #[error("signature check failed ({0}): the signature does not verify under the key's public key")]
    SignatureInvalid(SignatureAlgorithm),
    #[error("signature algorithm {sig} cannot be made with a {key} key")]
    SignatureMismatch { sig: SignatureAlgorithm, key: KeyAlgorithm },
    // Boxed: the backends' errors carry several names each, and every
    // `Result` in the crate would otherwise be as large as the largest.
    #[error(transparent)]
    Pkcs11(Box<pkcs11::Pkcs11Error>),
    #[error(transparent)]
    Soft(Box<soft::SoftError>),
    #[error(transparent)]
    Uri(Box<uri::UriError>),
    #[error(transparent)]
    Backup(Box<backup::BackupError>),
}

impl From<pkcs11::Pkcs11Error> for HsmError {
    fn from(e: pkcs11::Pkcs11Error) -> Self {
        HsmError::Pkcs11(Box::new(e))
    }
}

impl From<soft::SoftError> for HsmError {
    fn from(e: soft::SoftError) -> Self {
        HsmError::Soft(Box::new(e))
    }
}

impl From<uri::UriError> for HsmError {
    fn from(e: uri::UriError) -> Self {
        HsmError::Uri(Box::new(e))
    }
}

impl From<backup::BackupError> for HsmError {
    fn from(e: backup::BackupError) -> Self {
        HsmError::Backup(Box::new(e))
    }
}
