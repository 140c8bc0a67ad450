//! The CA side: CSR checks, serials, and the signer's owner thread.
//!
//! A `Signer` is neither `Send` nor `Sync` (a PKCS#11 session has one
//! owner), so the issuer's keys are *built* on a dedicated thread by the
//! issuer's factory and never leave it; async handlers send that thread
//! jobs over a channel and await a reply. Every certificate goes through
//! `profile::issue` (build, lint with a throwaway key, sign, verify). The
//! same thread holds the intermediate host's audit key, which signs the
//! issuance log's checkpoints and nothing else.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use der::{Decode, Encode};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::request::{CertReq, ExtensionReq};

use super::identifier::Identifier;
use super::jws::Jwk;
use super::problem::Problem;
use crate::hsm::{HsmError, KeyAlgorithm, RandomSource, SignatureAlgorithm, Signer};
use crate::profile::{self, IssueRequest, Issued, IssuerRef, Profile, ProfileError, San};

/// The issuer's two keys, built on the signer thread.
pub struct IssuerKeys {
    /// The intermediate's key: signs leaves and CRLs.
    pub ca: Box<dyn Signer>,
    /// The intermediate host's audit key: signs the issuance log's
    /// checkpoints and nothing else. Never the CA key.
    pub audit: Box<dyn Signer>,
}

/// Builds the issuer's keys. Called once, on the signer thread, so a PKCS#11
/// session is opened by the thread that will own it.
pub type SignerFactory = Box<dyn FnOnce() -> Result<IssuerKeys, HsmError> + Send>;

/// The issuing CA the server signs with.
pub struct Issuer {
    /// The issuing (intermediate) certificate, DER.
    pub certificate_der: Vec<u8>,
    /// What follows the leaf in a download: the issuing certificate and any
    /// further intermediates, PEM, leaf-most first (no root).
    pub chain_pem: String,
    pub keys: SignerFactory,
}

/// Why the CA side failed. Messages carry their cause's text; no variant
/// has a `#[source]` (one cause policy: the message, never both).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The factory could not open the key store or find a key.
    #[error("the CA signer could not be opened: {0}")]
    SignerOpen(HsmError),
    /// The audit key is the CA key (or missing): checkpoints must be signed
    /// by a dedicated key.
    #[error("the audit key must be a dedicated key, not the CA key: {0}")]
    AuditKey(String),
    /// The signer thread is gone (the server is stopping, or it panicked).
    #[error("the signer thread has stopped")]
    SignerGone,
    /// Build, lint, sign or verify of a certificate failed.
    #[error("issuance failed: {0}")]
    Issue(ProfileError),
    /// The random number generator failed drawing a serial.
    #[error("random serial: {0}")]
    Rng(HsmError),
    /// The operating system refused a thread.
    #[error("cannot start the signer thread: {0}")]
    Thread(String),
    /// Build, lint, sign or verify of a CRL failed.
    #[error("CRL: {0}")]
    Crl(String),
    /// The job reached the signer after its deadline and was not signed:
    /// the issuance may already have been resolved by another instance.
    #[error("the signer was busy past this issuance's deadline; nothing was signed")]
    Deadline,
    /// The audit key failed to sign.
    #[error("the audit key failed to sign: {0}")]
    AuditSign(HsmError),
}

/// One leaf to issue: everything decided before the signer is called.
pub struct LeafRequest {
    /// The serial, already reserved in the store (see [`new_serial`]).
    pub serial: Vec<u8>,
    pub spki_der: Vec<u8>,
    pub sans: Vec<San>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The order's profile's template; `None` is the server's leaf template.
    pub profile: Option<Profile>,
    /// The signer refuses the job after this.
    pub deadline: Instant,
}

/// One CRL to sign for the leaves of this issuer.
pub struct CrlRequest {
    pub crl_number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    /// Serial (unsigned big-endian bytes), revocation time, reason.
    pub entries: Vec<(Vec<u8>, OffsetDateTime, crate::ca::RevocationReason)>,
    /// The cRLDistributionPoints URI of the leaves this CRL covers.
    pub distribution_point: String,
}

enum Job {
    Leaf { req: Box<LeafRequest>, reply: oneshot::Sender<Result<Issued, CaError>> },
    Crl { req: CrlRequest, reply: oneshot::Sender<Result<crate::ca::SignedCrl, CaError>> },
    AuditSign { message: Vec<u8>, reply: mpsc::Sender<Result<Vec<u8>, HsmError>> },
}

/// What the server knows about its audit key without holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditKeyInfo {
    pub spki_der: Vec<u8>,
    pub key_algorithm: KeyAlgorithm,
    pub signature_algorithm: SignatureAlgorithm,
    pub description: String,
}

/// The async side of the signer thread.
pub struct SignerHandle {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    audit: AuditKeyInfo,
}

/// A fresh serial: 16 random bytes, positive (RFC 5280 §4.1.2.2), drawn
/// before anything is signed so it can be reserved first.
pub fn new_serial() -> Result<Vec<u8>, CaError> {
    let random = crate::hsm::soft::SystemRng.random_bytes(16).map_err(CaError::Rng)?;
    profile::normalize_serial(&random).map_err(|p| CaError::Rng(HsmError::BadSignature(p)))
}

impl SignerHandle {
    /// Starts the owner thread and waits until the factory has built the
    /// keys (so a wrong PIN fails the start, not the first order), and
    /// checks the audit key is not the CA key.
    pub fn start(issuer_der: Vec<u8>, profile: Profile, factory: SignerFactory) -> Result<Self, CaError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<AuditKeyInfo, CaError>>();
        let thread = std::thread::Builder::new()
            .name("keyrite-acme-signer".into())
            .spawn(move || {
                let keys = match factory() {
                    Ok(k) => k,
                    Err(e) => {
                        let _ = ready_tx.send(Err(CaError::SignerOpen(e)));
                        return;
                    }
                };
                if keys.audit.spki_der() == keys.ca.spki_der() {
                    let _ =
                        ready_tx.send(Err(CaError::AuditKey(format!("{} is the issuing key", keys.audit.describe()))));
                    return;
                }
                tracing::info!(signer = %keys.ca.describe(), audit_key = %keys.audit.describe(), "ACME signer ready");
                let info = AuditKeyInfo {
                    spki_der: keys.audit.spki_der().to_vec(),
                    key_algorithm: keys.audit.key_algorithm(),
                    signature_algorithm: keys.audit.signature_algorithm(),
                    description: keys.audit.describe(),
                };
                let _ = ready_tx.send(Ok(info));
                // Ends when every SignerHandle sender is dropped.
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Leaf { req, reply } => {
                            let template = req.profile.as_ref().unwrap_or(&profile);
                            let _ = reply.send(issue_leaf(&issuer_der, template, keys.ca.as_ref(), &req));
                        }
                        Job::Crl { req, reply } => {
                            let _ = reply.send(sign_crl(&issuer_der, keys.ca.as_ref(), &req));
                        }
                        Job::AuditSign { message, reply } => {
                            let _ = reply.send(keys.audit.sign(&message));
                        }
                    }
                }
            })
            .map_err(|e| CaError::Thread(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(audit)) => Ok(SignerHandle { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), audit }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(CaError::SignerGone),
        }
    }

    pub async fn issue(&self, req: LeafRequest) -> Result<Issued, CaError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Leaf { req: Box::new(req), reply })?;
        rx.await.map_err(|_| CaError::SignerGone)?
    }

    /// Signs a CRL with the issuing key (the same thread, so the same
    /// PKCS#11 session, as every leaf).
    pub async fn sign_crl(&self, req: CrlRequest) -> Result<crate::ca::SignedCrl, CaError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Crl { req, reply })?;
        rx.await.map_err(|_| CaError::SignerGone)?
    }

    /// The audit key's public facts.
    pub fn audit_key(&self) -> &AuditKeyInfo {
        &self.audit
    }

    /// The audit key as a [`Signer`] for a blocking context (a store
    /// transaction signing a checkpoint): each signature is a job on the
    /// signer thread, waited for.
    pub fn audit_signer(&self) -> Result<RemoteAuditKey, CaError> {
        let guard = self.tx.lock().map_err(|_| CaError::SignerGone)?;
        let tx = guard.as_ref().ok_or(CaError::SignerGone)?.clone();
        Ok(RemoteAuditKey { tx, info: self.audit.clone() })
    }

    fn send(&self, job: Job) -> Result<(), CaError> {
        let guard = self.tx.lock().map_err(|_| CaError::SignerGone)?;
        let tx = guard.as_ref().ok_or(CaError::SignerGone)?;
        tx.send(job).map_err(|_| CaError::SignerGone)
    }

    /// Stops the thread after the jobs already queued.
    /// Blocks until the thread has finished; call from a blocking context.
    pub fn stop(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The audit key, reached through the signer thread; blocks on each
/// signature, so use it only on a blocking thread.
pub struct RemoteAuditKey {
    tx: mpsc::Sender<Job>,
    info: AuditKeyInfo,
}

impl Signer for RemoteAuditKey {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.info.key_algorithm
    }
    fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.info.signature_algorithm
    }
    fn spki_der(&self) -> &[u8] {
        &self.info.spki_der
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let gone = || HsmError::BadSignature("the signer thread has stopped".into());
        let (reply, rx) = mpsc::channel();
        self.tx.send(Job::AuditSign { message: message.to_vec(), reply }).map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
    fn describe(&self) -> String {
        self.info.description.clone()
    }
}

fn issue_leaf(issuer_der: &[u8], profile: &Profile, signer: &dyn Signer, req: &LeafRequest) -> Result<Issued, CaError> {
    // Past its deadline the issuance may already be resolved elsewhere
    // (abandoned, its serial retired): signing now would make a certificate
    // nobody will record.
    if Instant::now() >= req.deadline {
        return Err(CaError::Deadline);
    }
    let request = IssueRequest {
        profile,
        subject: None,
        subject_spki: &req.spki_der,
        sans: req.sans.clone(),
        serial: req.serial.clone(),
        not_before: req.not_before,
        not_after: req.not_after,
        issuer: IssuerRef::Certificate { der: issuer_der },
    };
    profile::issue(&request, signer).map_err(CaError::Issue)
}

/// Build, lint, sign and verify with the offline side's CRL encoder.
fn sign_crl(issuer_der: &[u8], signer: &dyn Signer, req: &CrlRequest) -> Result<crate::ca::SignedCrl, CaError> {
    let params = crate::ca::CrlParams {
        issuer_cert_der: issuer_der,
        crl_number: req.crl_number,
        previous_crl_number: None,
        this_update: req.this_update,
        next_update: req.next_update,
        revoked: req.entries.iter().map(|(serial, at, reason)| (serial.as_slice(), *at, *reason)),
        issuing_distribution_point: Some(req.distribution_point.clone()),
    };
    crate::ca::build_crl(params, signer).map_err(|e| CaError::Crl(e.to_string()))
}

/// What a CSR that passed every check asks for.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub spki_der: Vec<u8>,
    pub sans: Vec<San>,
}

/// Checks a CSR against the order (checklist 31–32). Nothing from the CSR
/// but its public key and its names is ever used: its extensions are read
/// only to refuse what they ask for, never copied.
pub fn check_csr(
    der_bytes: &[u8],
    order_identifiers: &[Identifier],
    account_key: &Jwk,
    profile: &Profile,
) -> Result<CheckedCsr, Problem> {
    let csr = CertReq::from_der(der_bytes).map_err(|_| Problem::bad_csr("CSR is not DER PKCS#10"))?;
    let info_der = csr.info.to_der().map_err(|_| Problem::bad_csr("CSR does not re-encode"))?;
    let spki_der = csr.info.public_key.to_der().map_err(|_| Problem::bad_csr("CSR key does not re-encode"))?;

    // Key quality with the leaf template's own policy (size, exponent, curve).
    profile.subject_keys().check(&spki_der).map_err(|e| Problem::bad_csr(format!("CSR public key refused: {e}")))?;
    let csr_key = Jwk::from_spki_der(&spki_der).map_err(|e| Problem::bad_csr(format!("CSR public key: {e}")))?;
    if csr_key.thumbprint() == account_key.thumbprint() {
        return Err(Problem::bad_csr("the CSR's key is the account key; use a separate key for the certificate"));
    }
    verify_csr_signature(&csr, &info_der, &spki_der)?;

    // Names.
    let mut sans = Vec::new();
    for attr in csr.info.attributes.iter() {
        if attr.oid != const_oid::db::rfc5912::ID_EXTENSION_REQ {
            continue;
        }
        for value in attr.values.iter() {
            let value_der = value.to_der().map_err(|_| Problem::bad_csr("CSR attribute does not encode"))?;
            let req = ExtensionReq::from_der(&value_der)
                .map_err(|_| Problem::bad_csr("CSR extensionRequest does not parse"))?;
            for ext in req.0 {
                let bytes = ext.extn_value.as_bytes();
                if ext.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                    let san = SubjectAltName::from_der(bytes)
                        .map_err(|_| Problem::bad_csr("CSR subjectAltName does not parse"))?;
                    for name in san.0 {
                        sans.push(match name {
                            GeneralName::DnsName(d) => San::Dns(d.to_string()),
                            GeneralName::IpAddress(o) => San::Ip(ip_from_octets(o.as_bytes())?),
                            _ => return Err(Problem::bad_csr("CSR asks for a name that is neither DNS nor IP")),
                        });
                    }
                } else if ext.extn_id == const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS {
                    let bc = BasicConstraints::from_der(bytes)
                        .map_err(|_| Problem::bad_csr("CSR basicConstraints does not parse"))?;
                    if bc.ca {
                        return Err(Problem::bad_csr("CSR asks for CA:TRUE"));
                    }
                }
            }
        }
    }
    let cn = csr
        .info
        .subject
        .common_name()
        .map_err(|_| Problem::bad_csr("CSR common name is not a string"))?
        .map(|d| d.value().to_string());
    if let Some(cn) = &cn {
        if cn.parse::<IpAddr>().is_ok() {
            return Err(Problem::bad_csr("CSR common name is an IP address"));
        }
        let cn_san = San::Dns(cn.to_ascii_lowercase());
        if sans.is_empty() {
            sans.push(cn_san);
        } else if !sans.iter().any(|s| dns_eq(s, &cn_san)) {
            return Err(Problem::bad_csr("CSR common name is not among its subjectAltNames"));
        }
    }
    let wanted: BTreeSet<String> = order_identifiers.iter().map(|i| i.value.to_ascii_lowercase()).collect();
    let got: BTreeSet<String> = sans
        .iter()
        .map(|s| match s {
            San::Dns(d) => d.to_ascii_lowercase(),
            San::Ip(ip) => ip.to_string(),
        })
        .collect();
    if wanted != got {
        return Err(Problem::bad_csr("the CSR's names are not exactly the order's identifiers"));
    }
    let sans = order_identifiers
        .iter()
        .map(|i| match i.kind.as_str() {
            "ip" => i.value.parse().map(San::Ip).map_err(|_| Problem::bad_csr("bad IP identifier")),
            _ => Ok(San::Dns(i.value.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CheckedCsr { spki_der, sans })
}

fn dns_eq(a: &San, b: &San) -> bool {
    match (a, b) {
        (San::Dns(x), San::Dns(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

fn ip_from_octets(o: &[u8]) -> Result<IpAddr, Problem> {
    match o.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(o).map_err(|_| Problem::bad_csr("bad IP"))?)),
        16 => Ok(IpAddr::from(<[u8; 16]>::try_from(o).map_err(|_| Problem::bad_csr("bad IP"))?)),
        _ => Err(Problem::bad_csr("CSR IP address SAN is neither 4 nor 16 bytes")),
    }
}

/// Verifies the CSR's self-signature. SHA-1, MD5, DSA and anything else not
/// listed are refused by construction.
fn verify_csr_signature(csr: &CertReq, info_der: &[u8], spki_der: &[u8]) -> Result<(), Problem> {
    use aws_lc_rs::signature as sig;
    use const_oid::db::{rfc5912, rfc8410};
    let oid = csr.algorithm.oid;
    let alg: &dyn sig::VerificationAlgorithm = if oid == rfc5912::ECDSA_WITH_SHA_256 {
        &sig::ECDSA_P256_SHA256_ASN1
    } else if oid == rfc5912::ECDSA_WITH_SHA_384 {
        &sig::ECDSA_P384_SHA384_ASN1
    } else if oid == rfc5912::ECDSA_WITH_SHA_512 {
        &sig::ECDSA_P521_SHA512_ASN1
    } else if oid == rfc5912::SHA_256_WITH_RSA_ENCRYPTION {
        &sig::RSA_PKCS1_2048_8192_SHA256
    } else if oid == rfc5912::SHA_384_WITH_RSA_ENCRYPTION {
        &sig::RSA_PKCS1_2048_8192_SHA384
    } else if oid == rfc5912::SHA_512_WITH_RSA_ENCRYPTION {
        &sig::RSA_PKCS1_2048_8192_SHA512
    } else if oid == rfc8410::ID_ED_25519 {
        &sig::ED25519
    } else {
        return Err(Problem::bad_csr(format!(
            "CSR signature algorithm {oid} is not accepted (SHA-1, MD5 and DSA never are)"
        )));
    };
    // ECDSA with a hash that does not fit the curve (P-256 with SHA-384)
    // fails verification below, because aws-lc binds curve and hash.
    let key = spki::SubjectPublicKeyInfoRef::try_from(spki_der).map_err(|_| Problem::bad_csr("CSR key"))?;
    let sig_bytes = csr.signature.as_bytes().ok_or_else(|| Problem::bad_csr("CSR signature has unused bits"))?;
    sig::UnparsedPublicKey::new(alg, key.subject_public_key.raw_bytes())
        .verify(info_der, sig_bytes)
        .map_err(|_| Problem::bad_csr("CSR signature does not verify"))
}
