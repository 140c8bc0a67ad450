//! The CA side: CSR checks and issuance on the signer's owner thread.
//!
//! A `Signer` is neither `Send` nor `Sync` (a PKCS#11 session has one
//! owner), so the signer is *built* on a dedicated thread by the issuer's
//! factory and never leaves it; async handlers send that thread jobs over a
//! channel and await a oneshot reply. Every certificate goes through
//! `profile::issue` (build, lint with a throwaway key, sign, verify).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use der::{Decode, Encode};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::request::{CertReq, ExtensionReq};

use super::identifier::Identifier;
use super::jws::Jwk;
use super::problem::Problem;
use crate::hsm::{HsmError, RandomSource, Signer};
use crate::profile::{self, IssueRequest, Issued, IssuerRef, Profile, ProfileError, San};

/// Builds the CA signer. Called once, on the signer thread, so a PKCS#11
/// session is opened by the thread that will own it.
pub type SignerFactory = Box<dyn FnOnce() -> Result<Box<dyn Signer>, HsmError> + Send>;

/// The issuing CA the server signs with.
pub struct Issuer {
    /// The issuing (intermediate) certificate, DER.
    pub certificate_der: Vec<u8>,
    /// What follows the leaf in a download: the issuing certificate and any
    /// further intermediates, PEM, leaf-most first (no root).
    pub chain_pem: String,
    pub signer: SignerFactory,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA signer could not be opened: {0}")]
    SignerOpen(#[source] HsmError),
    #[error("the signer thread has stopped")]
    SignerGone,
    #[error("issuance failed: {0}")]
    Issue(ProfileError),
    #[error("random serial: {0}")]
    Rng(#[source] HsmError),
    #[error("cannot start the signer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("CRL: {0}")]
    Crl(String),
}

/// One leaf to issue.
pub struct LeafRequest {
    pub spki_der: Vec<u8>,
    pub sans: Vec<San>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The order's profile's template; `None` is the server's leaf template.
    pub profile: Option<Profile>,
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
}

/// The async side of the signer thread.
pub struct SignerHandle {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl SignerHandle {
    /// Starts the owner thread and waits until the factory has built the
    /// signer (so a wrong PIN fails the start, not the first order).
    pub fn start(issuer_der: Vec<u8>, profile: Profile, factory: SignerFactory) -> Result<Self, CaError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), CaError>>();
        let thread = std::thread::Builder::new()
            .name("keyrite-acme-signer".into())
            .spawn(move || {
                let signer = match factory() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(CaError::SignerOpen(e)));
                        return;
                    }
                };
                tracing::info!(signer = %signer.describe(), "ACME signer ready");
                let _ = ready_tx.send(Ok(()));
                // Ends when every SignerHandle sender is dropped.
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Leaf { req, reply } => {
                            let template = req.profile.as_ref().unwrap_or(&profile);
                            let _ = reply.send(issue_leaf(&issuer_der, template, signer.as_ref(), &req));
                        }
                        Job::Crl { req, reply } => {
                            let _ = reply.send(sign_crl(&issuer_der, signer.as_ref(), &req));
                        }
                    }
                }
            })
            .map_err(CaError::Thread)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(SignerHandle { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) }),
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

fn issue_leaf(issuer_der: &[u8], profile: &Profile, signer: &dyn Signer, req: &LeafRequest) -> Result<Issued, CaError> {
    let serial = crate::hsm::soft::SystemRng.random_bytes(16).map_err(CaError::Rng)?;
    // The default start is backdated a minute for clients with slow clocks,
    // but never before the intermediate's own start (it would be, just after
    // the intermediate was installed). Only that backdate is moved; a start
    // the order asked for is never changed behind its back.
    let issuer_start = profile::certificate_summary(issuer_der).map(|s| s.not_before).ok();
    let not_before = match issuer_start {
        Some(start) if req.not_before < start && start - req.not_before <= time::Duration::minutes(1) => start,
        _ => req.not_before,
    };
    let request = IssueRequest {
        profile,
        subject: None,
        subject_spki: &req.spki_der,
        sans: req.sans.clone(),
        serial,
        not_before,
        not_after: req.not_after,
        issuer: IssuerRef::Certificate { der: issuer_der },
    };
    Ok(profile::issue(&request, signer)?)
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

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<ProfileError> for CaError {
    fn from(e: ProfileError) -> Self {
        CaError::Issue(e)
    }
}
