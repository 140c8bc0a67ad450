//! The `intermediate` room: the online side of an intermediate CA.
//!
//! Two trips across the air gap (see `docs/intermediate.md`):
//!
//! 1. **Request** ([`request`]): on the intermediate host, the key is born in
//!    the host's key store (a PKCS#11 token or the software store, chosen by
//!    the environment file), a PKCS#10 request is signed by that key, and an
//!    `intermediate-request` bundle carrying `csr.pem` is written to the USB
//!    stick. A small local record (`request.json` in the issuer directory)
//!    remembers which key the request was for.
//! 2. **Install** ([`install`]): the `intermediate-response` bundle that comes
//!    back from the offline ceremony is checked to the end (manifest, chain to
//!    the root the operator pins by fingerprint, CA flags, validity,
//!    signatures, and that the certificate is for *our* key), and only then is
//!    `issuer.toml` written: the one file `acme-serve` loads, which names the
//!    certificate files and the key and never a PIN.
//!
//! [`IssuerConfig::load`] and [`IssuerConfig::check`] are what `acme-serve`
//! runs at start: the same checks as install, against the files on disk and
//! the key in the store, so a server never signs with an issuer that would not
//! install today.

pub mod audit_key;

pub use crate::config::issuer::{IssuerConfig, IssuerKey};

use std::path::{Path, PathBuf};

use der::{Decode, Encode, Reader, SliceReader};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::config::issuer::{RawIssuerConfig, ISSUER_FORMAT};
use crate::config::{Backend, Environment, SecretSource};
use crate::files::{self, FileError, Mode};
use crate::hsm::keystore::{KeyStore, StoreFacts};
use crate::hsm::soft::SealingKey;
use crate::hsm::uri::Pkcs11Uri;
use crate::hsm::{self, HsmError, KeyAlgorithm, SignatureAlgorithm, Signer};
use crate::profile::{self, CertSummary, DistinguishedName};
use crate::secret::Secret;
use crate::transfer::csr::{parse_csr, CsrError};
use crate::transfer::{Bundle, BundleKind, BundleWriter, Limits, TransferError};
use crate::words::{self, Fingerprint};

/// The request bundle's one file.
pub const CSR_FILE: &str = "csr.pem";
/// The response bundle's files.
pub const INTERMEDIATE_FILE: &str = "intermediate.pem";
pub const CHAIN_FILE: &str = "chain.pem";
pub const ROOT_FILE: &str = "root.pem";
/// The local record of a request, in the issuer directory.
pub const REQUEST_RECORD: &str = "request.json";
/// The issuer configuration `acme-serve` loads, in the issuer directory.
pub const ISSUER_FILE: &str = "issuer.toml";

const REQUEST_FORMAT: &str = "keyrite-intermediate-request-v1";

/// Errors of the online intermediate: each names the file, field or key it
/// concerns and says what to do next. None carries a PIN or passphrase.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntermediateError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("key store: {0}")]
    Hsm(HsmError),
    #[error("{what}: {detail}")]
    Secret { what: String, detail: String },
    #[error("request: {field}: {problem}")]
    Request { field: String, problem: String },
    #[error("building the CSR for key {label:?} failed: {problem}. The key was generated and stays in the key store under that label; use a new label for the next attempt")]
    Csr { label: String, problem: String },
    #[error("the CSR keyrite just made for key {label:?} does not pass its own checks: {source}")]
    CsrCheck {
        label: String,
        #[source]
        source: CsrError,
    },
    #[error("{path}: {problem}")]
    Record { path: PathBuf, problem: String },
    #[error(
        "--root-sha256 {given:?}: not a SHA-256 fingerprint; give the 64 hex digits from the root ceremony's paper log"
    )]
    BadPin { given: String },
    #[error("{dir}: the response bundle must hold exactly {INTERMEDIATE_FILE}, {CHAIN_FILE} and {ROOT_FILE}; it holds {found}. Ask the offline operators for the response bundle keyrite writes")]
    ResponseFiles { dir: PathBuf, found: String },
    #[error("{file}: {problem}")]
    Pem { file: PathBuf, problem: String },
    #[error("{file}: the root certificate is not the pinned root.\n  pinned:   {pinned_hex}\n            {pinned_words}\n  in file:  {found_hex}\n            {found_words}\nDo not install it: check the fingerprint against the root ceremony's paper log")]
    RootMismatch { file: PathBuf, pinned_hex: String, pinned_words: String, found_hex: String, found_words: String },
    #[error("{file}: the certificate is for another key than {key} (certificate key SHA-256 {cert_spki}, local key SHA-256 {key_spki}); it was not issued for this host's request: do not install it")]
    WrongKey { file: PathBuf, key: String, cert_spki: String, key_spki: String },
    #[error("{file}: chain check failed: {problem}")]
    Chain { file: PathBuf, problem: String },
    #[error(
        "{file}: {problem}; an issuing CA must be basicConstraints CA:TRUE with pathLen 0 and keyUsage keyCertSign"
    )]
    NotCa { file: PathBuf, problem: String },
    #[error("{file}: not valid at {now}: valid from {not_before} to {not_after} ({state})")]
    Validity {
        file: PathBuf,
        now: OffsetDateTime,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        state: &'static str,
    },
    #[error(
        "{path}: already exists; keyrite never overwrites an issuer configuration: install into a new issuer directory"
    )]
    IssuerExists { path: PathBuf },
    #[error("{path}: field `{field}`: {problem}")]
    Config { path: PathBuf, field: String, problem: String },
    /// `issuer.toml` does not parse or breaks a rule of its format.
    #[error("{0}")]
    IssuerConfig(crate::config::ConfigError),
}

fn request_err(field: &str, problem: impl Into<String>) -> IntermediateError {
    IntermediateError::Request { field: field.into(), problem: problem.into() }
}

// ---------------------------------------------------------------------------
// Opening the key store

/// Opens the key store the environment file names, asking `prompt` only for
/// secrets whose source is `"prompt"` (the argument is the question to show).
/// PINs come from the terminal, a named environment variable or a 0600 file;
/// never from argv.
pub fn open_key_store(
    env: &Environment,
    prompt: &mut dyn FnMut(&str) -> Result<Secret, IntermediateError>,
) -> Result<KeyStore, IntermediateError> {
    match &env.backend {
        Backend::Pkcs11 { module, token, pin, .. } => {
            let pin = resolve_secret(pin, &format!("User PIN for token {:?}", token.label), prompt)?;
            Ok(KeyStore::open_pkcs11(module, token, &pin)?)
        }
        Backend::Soft { dir, passphrase, .. } => {
            let source = passphrase.as_ref().ok_or_else(|| IntermediateError::Secret {
                what: "environment file [soft]".into(),
                detail:
                    "the software key store needs passphrase = \"prompt\", { env = \"VAR\" } or { file = \"/path\" }"
                        .into(),
            })?;
            let pass = resolve_secret(source, "Passphrase for the software key store", prompt)?;
            Ok(KeyStore::open_soft(dir, SealingKey::Passphrase(pass))?)
        }
    }
}

/// Resolves one secret source (terminal via `prompt`, a named environment
/// variable, or a 0600 file); `acme-serve` resolves its PIN once at start
/// with it and keeps it in memory for the signer thread.
pub fn resolve_secret(
    source: &SecretSource,
    question: &str,
    prompt: &mut dyn FnMut(&str) -> Result<Secret, IntermediateError>,
) -> Result<Secret, IntermediateError> {
    let unattended =
        source.read_unattended().map_err(|e| IntermediateError::Secret { what: e.what, detail: e.detail })?;
    match (unattended, source) {
        (Some(secret), _) => Ok(secret),
        // Activation cards are for the offline root's token, in a ceremony.
        (None, SecretSource::Shares(log)) => Err(IntermediateError::Secret {
            what: format!("PIN from activation cards ({})", log.display()),
            detail:
                "the online intermediate does not take custodians' cards; give it a { file = ... } or { env = ... } PIN"
                    .into(),
        }),
        (None, _) => prompt(question),
    }
}

// ---------------------------------------------------------------------------
// Request

/// What to request.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    /// The new key's label in the key store (must be free).
    pub label: String,
    pub algorithm: KeyAlgorithm,
    /// The subject the host asks for: the signing ceremony refuses one that
    /// differs from its template's, unless its plan accepts the change.
    pub subject: DistinguishedName,
    /// Who asks: the manifest's identity (an operator or host name).
    pub requester: String,
    /// Recorded in the manifest for the offline operators, if given.
    pub hostname: Option<String>,
}

/// What [`request`] made.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    pub bundle_dir: PathBuf,
    /// `request.json` in the issuer directory.
    pub record_path: PathBuf,
    /// The key's PKCS#11 URI or `keyrite-soft:` path; never a PIN.
    pub key_uri: String,
    /// SHA-256 of the CSR's DER, for the out-of-band comparison.
    pub csr_sha256: Fingerprint,
    /// SHA-256 of the key's DER SubjectPublicKeyInfo.
    pub spki_sha256: Fingerprint,
    /// The CSR's SHA-256 over the PEM file's exact bytes (what `sha256sum
    /// csr.pem` prints).
    pub csr_file_sha256: Fingerprint,
    /// The audit key made beside the issuing key (see [`audit_key`]): its
    /// URI and its SPKI SHA-256, the fingerprint auditors pin.
    pub audit_key_uri: String,
    pub audit_spki_sha256: Fingerprint,
}

/// The local record of a request (`request.json`): which key the CSR was
/// for, so install finds the key without being told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    pub format: String,
    pub key_label: String,
    pub key_uri: String,
    pub algorithm: KeyAlgorithm,
    pub csr_sha256: String,
    pub spki_sha256: String,
    pub requester: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The audit key made with the request (absent in requests made before
    /// audit keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_spki_sha256: Option<String>,
}

impl RequestRecord {
    pub fn load(path: &Path) -> Result<RequestRecord, IntermediateError> {
        let bad = |problem: String| IntermediateError::Record { path: path.to_path_buf(), problem };
        let bytes = std::fs::read(path).map_err(|e| {
            bad(format!("cannot read the request record: {e}; pass --key-label to name the key instead"))
        })?;
        let record: RequestRecord =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a keyrite request record: {e}")))?;
        if record.format != REQUEST_FORMAT {
            return Err(bad(format!("format {:?} is not {REQUEST_FORMAT:?}", record.format)));
        }
        Ok(record)
    }
}

/// Generates the intermediate key in `store`, signs a CSR with it and writes
/// the `intermediate-request` bundle into `bundle_dir` (new or empty) and
/// the local record into `issuer_dir/request.json` (never overwritten).
///
/// Everything that can be checked is checked before the key is generated:
/// the subject, the requester, the outputs, the label and algorithm.
pub fn request(
    store: &KeyStore,
    opts: &RequestOptions,
    bundle_dir: &Path,
    issuer_dir: &Path,
) -> Result<RequestOutcome, IntermediateError> {
    opts.subject.check().map_err(|(field, problem)| request_err(&format!("subject.{field}"), problem))?;
    if opts.subject.common_name.is_none() {
        return Err(request_err("subject.common_name", "an intermediate needs a common name (--subject-cn)"));
    }
    check_text("requester", &opts.requester)?;
    if let Some(h) = &opts.hostname {
        check_text("hostname", h)?;
    }
    check_empty_or_absent(bundle_dir)?;
    let record_path = issuer_dir.join(REQUEST_RECORD);
    files::ensure_absent(&record_path)?;
    let signature = opts.algorithm.default_signature();
    store.check_new_key(&opts.label, opts.algorithm, signature)?;
    let audit_label = audit_key::label_for(&opts.label);
    audit_key::check_new(store, &audit_label)?;

    let key = store.generate(&opts.label, opts.algorithm, signature)?;
    let pem = build_csr(key.signer.as_ref(), &opts.subject, &opts.label)?;
    // Our own CSR must pass the checks the offline side will make.
    let csr = parse_csr(pem.as_bytes())
        .map_err(|source| IntermediateError::CsrCheck { label: opts.label.clone(), source })?;
    if csr.spki_der() != key.signer.spki_der() {
        return Err(IntermediateError::Csr {
            label: opts.label.clone(),
            problem: "the CSR's public key is not the generated key's".into(),
        });
    }

    let audit = audit_key::generate(store, &audit_label)?;
    let audit_spki_sha256 = Fingerprint::sha256(audit.signer.spki_der());

    let record = RequestRecord {
        format: REQUEST_FORMAT.into(),
        key_label: opts.label.clone(),
        key_uri: key.uri.clone(),
        algorithm: opts.algorithm,
        csr_sha256: csr.sha256().hex.clone(),
        spki_sha256: csr.spki_sha256().hex.clone(),
        requester: opts.requester.clone(),
        created: now_seconds(),
        audit_key_label: Some(audit_label),
        audit_spki_sha256: Some(audit_spki_sha256.hex.clone()),
    };
    let mut json = serde_json::to_vec_pretty(&record)
        .map_err(|e| IntermediateError::Record { path: record_path.clone(), problem: e.to_string() })?;
    json.push(b'\n');
    // The record first: a bundle without a local record could not be
    // installed without --key-label; a record without a bundle is harmless.
    files::create_dir(issuer_dir, Mode::Private)?;
    files::write_new(&record_path, &json, Mode::Public)?;

    let mut writer = BundleWriter::create(bundle_dir)?;
    writer.add(CSR_FILE, pem.as_bytes())?;
    let mut extra = Map::new();
    extra.insert("key_label".into(), Value::String(opts.label.clone()));
    extra.insert("key_uri".into(), Value::String(key.uri.clone()));
    extra.insert("csr_sha256".into(), Value::String(csr.sha256().hex.clone()));
    extra.insert("spki_sha256".into(), Value::String(csr.spki_sha256().hex.clone()));
    extra.insert("algorithm".into(), Value::String(opts.algorithm.name().into()));
    if let Some(h) = &opts.hostname {
        extra.insert("hostname".into(), Value::String(h.clone()));
    }
    writer.finish(BundleKind::IntermediateRequest, &opts.requester, extra)?;
    Ok(RequestOutcome {
        bundle_dir: bundle_dir.to_path_buf(),
        record_path,
        key_uri: key.uri,
        csr_sha256: csr.sha256().clone(),
        spki_sha256: csr.spki_sha256().clone(),
        csr_file_sha256: Fingerprint::sha256(pem.as_bytes()),
        audit_key_uri: audit.uri,
        audit_spki_sha256,
    })
}

/// The requester's sheet: printed on the intermediate host, signed, and
/// carried to the root ceremony apart from the USB stick. The request
/// bundle's manifest is unsigned, so this sheet is what binds the CSR on the
/// stick to the requester: the witness reads the CSR's read-back words (the
/// same [`crate::words::READ_BACK_WORDS`] words the ceremony asks for, 130
/// bits) from it. The CSR's DER holds its public key, so they confirm the
/// key too; the key's own hash is printed for the install and the records.
pub fn requester_sheet(opts: &RequestOptions, done: &RequestOutcome) -> String {
    format!(
        "Requester's sheet: print it, sign it, and bring it to the root ceremony.\n\
         requester           {}\n\
         subject requested   {}\n\
         CSR SHA-256         {}\n\
         \x20 read-back         {}\n\
         public key SHA-256  {}\n\
         \x20 read-back         {}\n\
         csr.pem SHA-256     {}\n\
         At the sign-intermediate ceremony the Internal Witness reads the CSR's read-back words\n\
         (or the first 32 hex digits of its SHA-256) from this sheet; the CSR holds the public key,\n\
         so they confirm both. `sha256sum csr.pem` prints the csr.pem line.\n\
         Signed (requester): ______________________   Date: __________\n",
        opts.requester,
        opts.subject,
        done.csr_sha256.hex,
        done.csr_sha256.read_back_grouped(),
        done.spki_sha256.hex,
        done.spki_sha256.read_back_grouped(),
        done.csr_file_sha256.hex,
    )
}

fn check_text(field: &str, value: &str) -> Result<(), IntermediateError> {
    if value.trim().is_empty() {
        return Err(request_err(field, "is empty"));
    }
    if value.len() > 256 || value.chars().any(char::is_control) {
        return Err(request_err(field, "must be one line of at most 256 bytes"));
    }
    Ok(())
}

fn check_empty_or_absent(dir: &Path) -> Result<(), IntermediateError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(TransferError::NotEmpty { dir: dir.to_path_buf() }.into()),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io(dir, "listing bundle directory", e).into()),
    }
}

fn now_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// rcgen signs the request through this adapter, so the private key never
/// leaves the store: rcgen builds the CertificationRequestInfo and asks for a
/// signature, which our [`Signer`] returns in the DER form rcgen expects.
struct RemoteKey<'a> {
    signer: &'a dyn Signer,
    /// The subjectPublicKey BIT STRING contents (rcgen wants those, not the
    /// whole SubjectPublicKeyInfo).
    raw_public: Vec<u8>,
    algorithm: &'static rcgen::SignatureAlgorithm,
    /// rcgen's error type cannot carry ours; keep it to report.
    failure: std::cell::RefCell<Option<HsmError>>,
}

impl rcgen::PublicKeyData for RemoteKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.raw_public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for RemoteKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg).map_err(|e| {
            self.failure.replace(Some(e));
            rcgen::Error::RemoteKeyError
        })
    }
}

fn build_csr(signer: &dyn Signer, subject: &DistinguishedName, label: &str) -> Result<String, IntermediateError> {
    let fail = |problem: String| IntermediateError::Csr { label: label.into(), problem };
    let algorithm = match signer.signature_algorithm() {
        SignatureAlgorithm::EcdsaSha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        SignatureAlgorithm::EcdsaSha384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        SignatureAlgorithm::RsaPkcs1Sha256 => &rcgen::PKCS_RSA_SHA256,
        SignatureAlgorithm::RsaPkcs1Sha384 => &rcgen::PKCS_RSA_SHA384,
        other => return Err(fail(format!("signature algorithm {other} is not used for requests"))),
    };
    let spki = spki::SubjectPublicKeyInfoRef::try_from(signer.spki_der())
        .map_err(|e| fail(format!("the key's public key is not DER SubjectPublicKeyInfo: {e}")))?;
    let key = RemoteKey {
        signer,
        raw_public: spki.subject_public_key.raw_bytes().to_vec(),
        algorithm,
        failure: std::cell::RefCell::new(None),
    };
    let mut params = rcgen::CertificateParams::default();
    // rcgen's default subject is a placeholder common name; start empty.
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (short, value) in subject.attributes() {
        let ty = match short {
            "C" => rcgen::DnType::CountryName,
            "ST" => rcgen::DnType::StateOrProvinceName,
            "L" => rcgen::DnType::LocalityName,
            "O" => rcgen::DnType::OrganizationName,
            "OU" => rcgen::DnType::OrganizationalUnitName,
            _ => rcgen::DnType::CommonName,
        };
        // RFC 5280 Appendix A: the country is a PrintableString.
        let value = if short == "C" {
            rcgen::DnValue::PrintableString(
                rcgen::string::PrintableString::try_from(value).map_err(|e| fail(format!("country: {e}")))?,
            )
        } else {
            rcgen::DnValue::Utf8String(value.to_string())
        };
        params.distinguished_name.push(ty, value);
    }
    let csr = params.serialize_request(&key).map_err(|e| match key.failure.take() {
        Some(hsm) => fail(format!("the key store could not sign: {hsm}")),
        None => fail(e.to_string()),
    })?;
    csr.pem().map_err(|e| fail(e.to_string()))
}

// ---------------------------------------------------------------------------
// Checking a chain

/// A certificate taken apart once: DER, parsed form, summary, and the raw
/// pieces the signature covers.
struct Cert {
    file: PathBuf,
    der: Vec<u8>,
    parsed: Certificate,
    summary: CertSummary,
    tbs: Vec<u8>,
    signature_algorithm: SignatureAlgorithm,
    signature: Vec<u8>,
    spki_der: Vec<u8>,
}

impl Cert {
    fn parse(file: &Path, der: Vec<u8>) -> Result<Cert, IntermediateError> {
        let chain = |problem: String| IntermediateError::Chain { file: file.to_path_buf(), problem };
        let parsed = Certificate::from_der(&der).map_err(|e| chain(format!("not a DER X.509 certificate: {e}")))?;
        if parsed.to_der().ok().as_deref() != Some(der.as_slice()) {
            return Err(chain("the certificate is not in canonical DER".into()));
        }
        let summary = profile::certificate_summary(&der).map_err(|e| chain(e.to_string()))?;
        let mut reader = SliceReader::new(&der).map_err(|e| chain(e.to_string()))?;
        let (tbs, alg, signature) = reader
            .sequence(|seq| {
                let tbs = seq.tlv_bytes()?.to_vec();
                let alg = seq.tlv_bytes()?.to_vec();
                let sig = der::asn1::BitStringRef::decode(seq)?;
                Ok((tbs, alg, sig.as_bytes().ok_or_else(|| der::Tag::BitString.value_error())?.to_vec()))
            })
            .map_err(|e: der::Error| chain(e.to_string()))?;
        reader.finish().map_err(|e| chain(format!("trailing bytes after the certificate: {e}")))?;
        let inner = parsed.tbs_certificate().signature().to_der().map_err(|e| chain(e.to_string()))?;
        if inner != alg {
            return Err(chain("the two signature algorithm fields differ".into()));
        }
        use SignatureAlgorithm::*;
        let signature_algorithm =
            [EcdsaSha256, EcdsaSha384, RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPssSha256, RsaPssSha384]
                .into_iter()
                .find(|a| profile::algorithm_identifier(*a) == alg.as_slice())
                .ok_or_else(|| chain("signed with an algorithm keyrite does not accept".into()))?;
        let spki_der = parsed.tbs_certificate().subject_public_key_info().to_der().map_err(|e| chain(e.to_string()))?;
        Ok(Cert { file: file.to_path_buf(), der, parsed, summary, tbs, signature_algorithm, signature, spki_der })
    }

    fn check_valid(&self, now: OffsetDateTime) -> Result<(), IntermediateError> {
        let state = if now < self.summary.not_before {
            "not yet valid"
        } else if now > self.summary.not_after {
            "expired"
        } else {
            return Ok(());
        };
        Err(IntermediateError::Validity {
            file: self.file.clone(),
            now,
            not_before: self.summary.not_before,
            not_after: self.summary.not_after,
            state,
        })
    }

    /// basicConstraints CA:TRUE (with pathLen `path_len` when given, any
    /// otherwise) and keyUsage keyCertSign.
    fn check_ca(&self, path_len: Option<u8>) -> Result<(), IntermediateError> {
        let not_ca = |problem: String| IntermediateError::NotCa { file: self.file.clone(), problem };
        let tbs = self.parsed.tbs_certificate();
        let bc = tbs
            .get_extension::<BasicConstraints>()
            .map_err(|e| not_ca(format!("basicConstraints does not parse: {e}")))?;
        match bc {
            Some((_, BasicConstraints { ca: true, path_len_constraint })) => {
                if path_len.is_some() && path_len_constraint != path_len {
                    return Err(not_ca(format!(
                        "basicConstraints pathLen is {}, not 0",
                        path_len_constraint.map_or("unlimited".to_string(), |n| n.to_string())
                    )));
                }
            }
            Some(_) => return Err(not_ca("basicConstraints says CA:FALSE".into())),
            None => return Err(not_ca("no basicConstraints extension".into())),
        }
        match tbs.get_extension::<KeyUsage>().map_err(|e| not_ca(format!("keyUsage does not parse: {e}")))? {
            Some((_, ku)) if ku.key_cert_sign() => Ok(()),
            Some(_) => Err(not_ca("keyUsage lacks keyCertSign".into())),
            None => Err(not_ca("no keyUsage extension".into())),
        }
    }

    /// Checks that `issuer` signed this certificate.
    fn check_signed_by(&self, issuer: &Cert) -> Result<(), IntermediateError> {
        let chain = |problem: String| IntermediateError::Chain { file: self.file.clone(), problem };
        let issuer_name = issuer.parsed.tbs_certificate().subject().to_der().map_err(|e| chain(e.to_string()))?;
        let own_issuer = self.parsed.tbs_certificate().issuer().to_der().map_err(|e| chain(e.to_string()))?;
        if issuer_name != own_issuer {
            return Err(chain(format!(
                "issued by {:?}, not by {:?} ({})",
                self.summary.issuer,
                issuer.summary.subject,
                issuer.file.display()
            )));
        }
        hsm::verify_signature(&issuer.spki_der, self.signature_algorithm, &self.tbs, &self.signature).map_err(|e| {
            chain(format!("the signature does not verify under the key of {} ({e})", issuer.file.display()))
        })
    }
}

/// Parses a PEM file holding exactly `count` certificates.
fn pem_certs(file: &Path, bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>, IntermediateError> {
    let bad = |problem: String| IntermediateError::Pem { file: file.to_path_buf(), problem };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not a text (PEM) file".into()))?;
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end_marker = "-----END CERTIFICATE-----";
        let end =
            rest.find(end_marker).ok_or_else(|| bad("a PEM block has no \"-----END CERTIFICATE-----\" line".into()))?
                + end_marker.len();
        let (label, der) =
            pem_rfc7468::decode_vec(&rest.as_bytes()[..end]).map_err(|e| bad(format!("bad PEM: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(bad(format!("PEM label {label:?} is not \"CERTIFICATE\"")));
        }
        out.push(der);
        rest = rest[end..].trim_start();
    }
    if out.len() != count {
        return Err(bad(format!("holds {} certificates, expected {count}", out.len())));
    }
    Ok(out)
}

/// Parses a fingerprint as written on paper: 64 hex digits, any case,
/// optionally separated by colons or spaces.
fn parse_pin(given: &str) -> Result<[u8; 32], IntermediateError> {
    let cleaned: String = given.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    let bytes = hex::decode(&cleaned).map_err(|_| IntermediateError::BadPin { given: given.into() })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| IntermediateError::BadPin { given: given.into() })
}

/// What a successful chain check established.
#[derive(Debug, Clone)]
pub struct CheckedIssuer {
    pub intermediate: CertSummary,
    pub root: CertSummary,
    pub intermediate_der: Vec<u8>,
    pub root_der: Vec<u8>,
    /// The key's URI (PKCS#11 or `keyrite-soft:`), never a PIN.
    pub key_uri: String,
    pub key_label: String,
    pub key_algorithm: KeyAlgorithm,
    /// The audit key, when `issuer.toml` names one: its label, URI and
    /// SPKI SHA-256.
    pub audit_key: Option<CheckedAuditKey>,
}

/// The audit key found in the store and checked against `issuer.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedAuditKey {
    pub label: String,
    pub uri: String,
    pub spki_sha256: String,
}

/// Every check between an intermediate, its root and the local key. The pin
/// is checked first, so a wrong root is named as such and not as a broken
/// chain.
fn check_chain(
    intermediate: &Cert,
    root: &Cert,
    pinned: &[u8; 32],
    key_spki: &[u8],
    key_name: &str,
    now: OffsetDateTime,
) -> Result<(), IntermediateError> {
    let found = words::sha256(&root.der);
    // Constant time: the comparison should not tell a prober how many
    // leading bytes of a forged root matched.
    if aws_lc_rs::constant_time::verify_slices_are_equal(&found, pinned).is_err() {
        let p = Fingerprint::of_digest(pinned);
        let f = Fingerprint::of_digest(&found);
        return Err(IntermediateError::RootMismatch {
            file: root.file.clone(),
            pinned_hex: p.hex,
            pinned_words: p.words,
            found_hex: f.hex,
            found_words: f.words,
        });
    }
    root.check_signed_by(root)?;
    root.check_ca(None)?;
    root.check_valid(now)?;
    intermediate.check_signed_by(root)?;
    intermediate.check_ca(Some(0))?;
    intermediate.check_valid(now)?;
    if intermediate.spki_der != key_spki {
        return Err(IntermediateError::WrongKey {
            file: intermediate.file.clone(),
            key: key_name.into(),
            cert_spki: intermediate.summary.spki_sha256.hex.clone(),
            key_spki: words::sha256_hex(key_spki),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Install

/// What [`install`] wrote.
#[derive(Debug, Clone)]
pub struct Installed {
    pub issuer_toml: PathBuf,
    /// The configuration as `acme-serve` will load it.
    pub config: IssuerConfig,
    pub checked: CheckedIssuer,
}

/// Checks the `intermediate-response` bundle in `response_dir` against the
/// root pinned by `pinned_root_sha256` (hex) and the local key, then writes
/// `intermediate.pem`, `chain.pem`, `root.pem` and, last, `issuer.toml` into
/// `issuer_dir`.
///
/// The key is the one `issuer_dir/request.json` names, or `key_label` when
/// given. Nothing is written unless every check passes; no file is ever
/// overwritten.
pub fn install(
    response_dir: &Path,
    store: &KeyStore,
    pinned_root_sha256: &str,
    issuer_dir: &Path,
    key_label: Option<&str>,
) -> Result<Installed, IntermediateError> {
    let pinned = parse_pin(pinned_root_sha256)?;
    let issuer_toml = issuer_dir.join(ISSUER_FILE);
    if std::fs::symlink_metadata(&issuer_toml).is_ok() {
        return Err(IntermediateError::IssuerExists { path: issuer_toml });
    }
    for name in [INTERMEDIATE_FILE, CHAIN_FILE, ROOT_FILE] {
        files::ensure_absent(&issuer_dir.join(name))?;
    }

    let bundle = Bundle::open(response_dir, BundleKind::IntermediateResponse, &Limits::default())?;
    let names: Vec<&str> = bundle.file_names().collect();
    let mut expected = [CHAIN_FILE, INTERMEDIATE_FILE, ROOT_FILE];
    expected.sort_unstable();
    if names != expected {
        return Err(IntermediateError::ResponseFiles { dir: response_dir.to_path_buf(), found: names.join(", ") });
    }
    let in_bundle = |name: &str| response_dir.join(name);
    let int_der = pem_certs(&in_bundle(INTERMEDIATE_FILE), bundle.file(INTERMEDIATE_FILE)?, 1)?.remove(0);
    let root_der = pem_certs(&in_bundle(ROOT_FILE), bundle.file(ROOT_FILE)?, 1)?.remove(0);
    let chain = pem_certs(&in_bundle(CHAIN_FILE), bundle.file(CHAIN_FILE)?, 2)?;
    if chain[0] != int_der || chain[1] != root_der {
        return Err(IntermediateError::Chain {
            file: in_bundle(CHAIN_FILE),
            problem: format!("must be {INTERMEDIATE_FILE} followed by {ROOT_FILE}, byte for byte"),
        });
    }

    let record_path = issuer_dir.join(REQUEST_RECORD);
    let record = match key_label {
        Some(_) if !record_path.exists() => None,
        _ => Some(RequestRecord::load(&record_path)?),
    };
    let label = match (key_label, &record) {
        (Some(l), _) => l.to_string(),
        (None, Some(r)) => r.key_label.clone(),
        (None, None) => {
            return Err(IntermediateError::Record {
                path: record_path,
                problem: "no request record; pass --key-label to name the key".into(),
            })
        }
    };
    let key = store.find(&label, None)?;
    if let Some(r) = &record {
        if r.key_label == label && r.spki_sha256 != words::sha256_hex(key.signer.spki_der()) {
            return Err(IntermediateError::Record {
                path: record_path.clone(),
                problem: format!(
                    "key {label:?} in the store is not the key this request was made for; the key was replaced after the request"
                ),
            });
        }
    }

    let int = Cert::parse(&in_bundle(INTERMEDIATE_FILE), int_der)?;
    let root = Cert::parse(&in_bundle(ROOT_FILE), root_der)?;
    check_chain(&int, &root, &pinned, key.signer.spki_der(), &key.uri, OffsetDateTime::now_utc())?;

    let key_config = issuer_key(store, &label, &key.uri)?;
    let audit = match record.as_ref().filter(|r| r.key_label == label) {
        Some(RequestRecord { audit_key_label: Some(a), audit_spki_sha256: Some(sha), .. }) => {
            let found = audit_key::find(store, a, sha, key.signer.spki_der(), &record_path)?;
            let config = issuer_key(store, a, &found.uri)?;
            Some((CheckedAuditKey { label: a.clone(), uri: found.uri.clone(), spki_sha256: sha.clone() }, config))
        }
        _ => None,
    };
    let raw = RawIssuerConfig {
        format: ISSUER_FORMAT.into(),
        certificate: PathBuf::from(INTERMEDIATE_FILE),
        chain: PathBuf::from(CHAIN_FILE),
        root: PathBuf::from(ROOT_FILE),
        root_sha256: hex::encode(pinned),
        certificate_sha256: int.summary.fingerprint.hex.clone(),
        key_algorithm: key.signer.key_algorithm(),
        key: key_config,
        audit_key: audit.as_ref().map(|(_, c)| c.clone()),
        audit_key_sha256: audit.as_ref().map(|(a, _)| a.spki_sha256.clone()),
    };
    let text = raw.to_toml(&issuer_toml).map_err(IntermediateError::IssuerConfig)?;

    files::create_dir(issuer_dir, Mode::Private)?;
    files::write_new(&issuer_dir.join(INTERMEDIATE_FILE), bundle.file(INTERMEDIATE_FILE)?, Mode::Public)?;
    files::write_new(&issuer_dir.join(CHAIN_FILE), bundle.file(CHAIN_FILE)?, Mode::Public)?;
    files::write_new(&issuer_dir.join(ROOT_FILE), bundle.file(ROOT_FILE)?, Mode::Public)?;
    // Last: a directory without issuer.toml is an install that did not finish.
    files::write_new(&issuer_toml, text.as_bytes(), Mode::Public).map_err(|e| match e {
        FileError::Exists { path } => IntermediateError::IssuerExists { path },
        other => other.into(),
    })?;
    let config = IssuerConfig::load(&issuer_toml).map_err(IntermediateError::IssuerConfig)?;
    let checked = CheckedIssuer {
        intermediate: int.summary,
        root: root.summary,
        intermediate_der: int.der,
        root_der: root.der,
        key_uri: key.uri.clone(),
        key_label: label,
        key_algorithm: key.signer.key_algorithm(),
        audit_key: audit.map(|(a, _)| a),
    };
    Ok(Installed { issuer_toml, config, checked })
}

/// The issuer.toml `[key]` table for a key found in `store`.
fn issuer_key(store: &KeyStore, label: &str, uri: &str) -> Result<IssuerKey, IntermediateError> {
    match store.facts() {
        StoreFacts::Pkcs11(_) => {
            let mut parsed = Pkcs11Uri::parse(uri).map_err(HsmError::from)?;
            parsed.module_path = store.module_path().map(|p| p.display().to_string());
            parsed.pin_source = None;
            Ok(IssuerKey::Pkcs11 { uri: parsed.to_string() })
        }
        StoreFacts::Soft { dir } => {
            // Absolute, so the server finds the store whatever its working
            // directory.
            let dir = std::fs::canonicalize(&dir).map_err(|e| FileError::io(Path::new(&dir), "resolving", e))?;
            Ok(IssuerKey::Soft { dir, label: label.into() })
        }
    }
}

// ---------------------------------------------------------------------------
// The issuer configuration

/// Re-runs every install check against the files on disk and the key in
/// `store` at time `now`: the store is the one named (token label and
/// serial and module, or software store directory), the key is there with
/// the recorded algorithm, the audit key too (its recorded SHA-256, and not
/// the issuing key), the root is the pinned one, the chain file is
/// intermediate + root, the intermediate is a CA with pathLen 0 and
/// keyCertSign, signed by the root, valid at `now`, and for this key.
///
/// `acme-serve` calls this at start and refuses to serve on any error.
pub fn check_issuer(
    config: &IssuerConfig,
    store: &KeyStore,
    now: OffsetDateTime,
) -> Result<CheckedIssuer, IntermediateError> {
    let field = |field: &str, problem: String| IntermediateError::Config {
        path: config.path.clone(),
        field: field.into(),
        problem,
    };
    match (&config.key, store.facts()) {
        (IssuerKey::Pkcs11 { uri }, StoreFacts::Pkcs11(facts)) => {
            let parsed = Pkcs11Uri::parse(uri).map_err(|e| field("key.uri", e.to_string()))?;
            if parsed.token.as_deref() != Some(facts.label.as_str()) {
                return Err(field(
                    "key.uri",
                    format!("names token {:?}, but the environment opened token {:?}", parsed.token, facts.label),
                ));
            }
            if let Some(serial) = &parsed.serial {
                if serial != &facts.serial {
                    return Err(field(
                        "key.uri",
                        format!("names token serial {serial}, but the open token's serial is {}", facts.serial),
                    ));
                }
            }
            let module = store.module_path().map(|p| p.display().to_string());
            if parsed.module_path != module {
                return Err(field(
                    "key.uri",
                    format!(
                        "names module {:?}, but the environment loaded {:?}",
                        parsed.module_path.unwrap_or_default(),
                        module.unwrap_or_default()
                    ),
                ));
            }
        }
        (IssuerKey::Soft { dir, .. }, StoreFacts::Soft { dir: open }) => {
            let open = std::fs::canonicalize(&open).unwrap_or_else(|_| PathBuf::from(&open));
            if &open != dir {
                return Err(field(
                    "key.dir",
                    format!(
                        "names software key store {}, but the environment opened {}",
                        dir.display(),
                        open.display()
                    ),
                ));
            }
        }
        (IssuerKey::Pkcs11 { .. }, _) => {
            return Err(field("key.backend", "is pkcs11, but the environment opened a software key store".into()))
        }
        (IssuerKey::Soft { .. }, _) => {
            return Err(field("key.backend", "is soft, but the environment opened a PKCS#11 token".into()))
        }
    }
    let key = store.find(&config.key_label, None)?;
    if key.signer.key_algorithm() != config.key_algorithm {
        return Err(field(
            "key_algorithm",
            format!("says {}, but key {:?} is {}", config.key_algorithm, config.key_label, key.signer.key_algorithm()),
        ));
    }
    let audit_key = match &config.audit_key {
        Some((label, sha)) => {
            let found = audit_key::find(store, label, sha, key.signer.spki_der(), &config.path)?;
            Some(CheckedAuditKey { label: label.clone(), uri: found.uri.clone(), spki_sha256: sha.clone() })
        }
        None => None,
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| FileError::io(p, "reading", e));
    let int_der = pem_certs(&config.certificate, &read(&config.certificate)?, 1)?.remove(0);
    let root_der = pem_certs(&config.root, &read(&config.root)?, 1)?.remove(0);
    let chain = pem_certs(&config.chain, &read(&config.chain)?, 2)?;
    if chain[0] != int_der || chain[1] != root_der {
        return Err(IntermediateError::Chain {
            file: config.chain.clone(),
            problem: format!(
                "must be {} followed by {}, byte for byte",
                config.certificate.display(),
                config.root.display()
            ),
        });
    }
    if words::sha256_hex(&int_der) != config.certificate_sha256 {
        return Err(field(
            "certificate_sha256",
            format!("does not match {}: the certificate file was replaced", config.certificate.display()),
        ));
    }
    let pinned = parse_pin(&config.root_sha256)?;
    let int = Cert::parse(&config.certificate, int_der)?;
    let root = Cert::parse(&config.root, root_der)?;
    check_chain(&int, &root, &pinned, key.signer.spki_der(), &key.uri, now)?;
    Ok(CheckedIssuer {
        intermediate: int.summary,
        root: root.summary,
        intermediate_der: int.der,
        root_der: root.der,
        key_uri: key.uri.clone(),
        key_label: config.key_label.clone(),
        key_algorithm: config.key_algorithm,
        audit_key,
    })
}

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<HsmError> for IntermediateError {
    fn from(e: HsmError) -> Self {
        IntermediateError::Hsm(e)
    }
}
