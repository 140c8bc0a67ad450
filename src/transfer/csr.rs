//! Certificate signing requests arriving on the USB stick.
//!
//! [`parse_csr`] turns bytes into a [`Csr`] only if they are one strict
//! PKCS#10 request (PEM or DER, DER re-encoding byte for byte) whose
//! proof-of-possession signature verifies under its own key with an
//! algorithm keyrite accepts, whose subject maps onto a
//! [`DistinguishedName`], and whose requested extensions are ones keyrite
//! understands. [`Csr::check_against`] then compares the request with the
//! template that will issue it: the key must satisfy the template's
//! [`crate::profile::SubjectKeyPolicy`], and no requested extension may ask
//! for more than the template grants. The template, not the request, decides
//! what the certificate says; the comparison exists so that an operator is
//! never shown a request that silently gets less than it asked for.

use const_oid::db::rfc5280::{
    ID_CE_BASIC_CONSTRAINTS, ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE, ID_CE_NAME_CONSTRAINTS, ID_CE_SUBJECT_ALT_NAME,
};
use const_oid::ObjectIdentifier;
use der::asn1::BitStringRef;
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use x509_cert::ext::pkix::constraints::{BasicConstraints, NameConstraints};
use x509_cert::ext::pkix::{ExtendedKeyUsage as X509Eku, KeyUsage as X509KeyUsage, KeyUsages, SubjectAltName};
use x509_cert::request::CertReq;

use crate::hsm::{self, SignatureAlgorithm};
use crate::profile::{CertKind, DistinguishedName, ExtendedKeyUsage, KeyUsage, Profile};
use crate::words::Fingerprint;

/// The largest CSR keyrite reads: an RSA-8192 request with a few extensions
/// is under 4 KiB, so anything near this is not a request.
pub const MAX_CSR_BYTES: usize = 16 * 1024;

const OID_EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
const OID_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const OID_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

/// A parsed, self-consistent certificate request.
#[derive(Debug, Clone)]
pub struct Csr {
    der: Vec<u8>,
    subject: DistinguishedName,
    spki_der: Vec<u8>,
    signature_algorithm: SignatureAlgorithm,
    extensions: Vec<RequestedExtension>,
    sha256: Fingerprint,
    spki_sha256: Fingerprint,
}

/// One extension the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedExtension {
    pub oid: ObjectIdentifier,
    /// "basicConstraints", "keyUsage", ...
    pub name: &'static str,
    pub critical: bool,
    /// One line for the operator's screen, e.g. "CA:TRUE, pathLen:0".
    pub summary: String,
    value: Requested,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requested {
    BasicConstraints {
        ca: bool,
        path_len: Option<u8>,
    },
    /// Bits that map to the template's names, and any that do not
    /// (encipherOnly, decipherOnly).
    KeyUsage {
        known: Vec<KeyUsage>,
        other: Vec<&'static str>,
    },
    ExtendedKeyUsage(Vec<ObjectIdentifier>),
    SubjectAltName,
    NameConstraints,
}

/// Why a request was refused. Messages say which part of the request is at
/// fault and what the requester should do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    #[error("the CSR is {size} bytes, more than the {MAX_CSR_BYTES} a certificate request can reasonably be; check that the right file was copied")]
    TooLarge { size: usize },
    #[error("the CSR is not valid PEM: {0}; send the file `openssl req` wrote, unmodified")]
    Pem(String),
    #[error("the CSR's PEM label is {0:?}, not \"CERTIFICATE REQUEST\"; this is some other kind of file")]
    PemLabel(String),
    #[error("the CSR is not a DER PKCS#10 request: {0}")]
    Der(String),
    #[error("the CSR is not in canonical DER (BER or trailing bytes); regenerate it with `openssl req`")]
    NotCanonical,
    #[error("the CSR's subject: {attribute}: {problem}")]
    Subject { attribute: String, problem: String },
    #[error("the CSR carries attribute {oid} ({name}); keyrite accepts only an extensionRequest: regenerate the CSR without it")]
    Attribute { oid: ObjectIdentifier, name: String },
    #[error("the CSR's requested extension {name} ({oid}) does not parse: {problem}")]
    Extension { oid: ObjectIdentifier, name: String, problem: String },
    #[error("the CSR asks for more than the template allows: it requests extension {name} ({oid}), which keyrite never grants on request; regenerate the CSR without it")]
    UnexpectedExtension { oid: ObjectIdentifier, name: String },
    #[error("the CSR requests extension {name} twice")]
    DuplicateExtension { name: String },
    #[error("the CSR is signed with SHA-1 ({oid}), which is refused; regenerate it with SHA-256 or SHA-384 (`openssl req -sha256`)")]
    Sha1 { oid: ObjectIdentifier },
    #[error("the CSR's signature algorithm {oid} ({name}) is not accepted; use ECDSA or RSA (PKCS#1 v1.5 or PSS) with SHA-256 or SHA-384")]
    SignatureAlgorithm { oid: ObjectIdentifier, name: String },
    #[error("the CSR's proof of possession failed: {0}. The request was altered or not signed by the key it contains; ask the requester for a fresh CSR")]
    ProofOfPossession(String),
    #[error("the CSR's public key is refused by template {template}: {problem}")]
    KeyRefused { template: String, problem: String },
    #[error("the CSR asks for more than the template allows: {extension}: {problem}; regenerate the CSR without it or use another template ({template})")]
    MoreThanTemplate { template: String, extension: &'static str, problem: String },
}

/// Parses and checks one CSR (PEM or DER); see the module documentation.
pub fn parse_csr(bytes: &[u8]) -> Result<Csr, CsrError> {
    if bytes.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge { size: bytes.len() });
    }
    let der = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        let (label, der) = pem_rfc7468::decode_vec(bytes).map_err(|e| CsrError::Pem(e.to_string()))?;
        if label != "CERTIFICATE REQUEST" {
            return Err(CsrError::PemLabel(label.to_string()));
        }
        der
    } else {
        bytes.to_vec()
    };
    let req = CertReq::from_der(&der).map_err(|e| CsrError::Der(e.to_string()))?;
    if req.to_der().ok().as_deref() != Some(der.as_slice()) {
        return Err(CsrError::NotCanonical);
    }
    // The signature covers the CertificationRequestInfo exactly as sent, so
    // take those bytes from the wire rather than from a re-encoding.
    let (info_tlv, alg_tlv, signature) = split(&der)?;
    let spki_der = req.info.public_key.to_der().map_err(|e| CsrError::Der(e.to_string()))?;
    let signature_algorithm = signature_algorithm(alg_tlv)?;
    verify_pop(&spki_der, signature_algorithm, info_tlv, signature)?;

    let subject = subject(&req.info.subject)?;
    let mut extensions: Vec<RequestedExtension> = Vec::new();
    for attr in req.info.attributes.iter() {
        if attr.oid != OID_EXTENSION_REQUEST {
            return Err(CsrError::Attribute { oid: attr.oid, name: oid_name(&attr.oid) });
        }
        if attr.values.len() != 1 {
            return Err(CsrError::Der("the extensionRequest attribute must have exactly one value".into()));
        }
        for value in attr.values.iter() {
            let exts: Vec<x509_cert::ext::Extension> =
                value.decode_as().map_err(|e| CsrError::Der(format!("extensionRequest: {e}")))?;
            for ext in exts {
                let parsed = requested_extension(&ext)?;
                if extensions.iter().any(|e| e.oid == parsed.oid) {
                    return Err(CsrError::DuplicateExtension { name: parsed.name.to_string() });
                }
                extensions.push(parsed);
            }
        }
    }
    Ok(Csr {
        sha256: Fingerprint::sha256(&der),
        spki_sha256: Fingerprint::sha256(&spki_der),
        der,
        subject,
        spki_der,
        signature_algorithm,
        extensions,
    })
}

impl Csr {
    /// The request as DER (what was hashed for [`Csr::sha256`] if it came as
    /// DER; a PEM file's hash is of the decoded DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    pub fn subject(&self) -> &DistinguishedName {
        &self.subject
    }
    /// The requester's public key, DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    /// The algorithm of the proof-of-possession signature.
    pub fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.signature_algorithm
    }
    pub fn requested_extensions(&self) -> &[RequestedExtension] {
        &self.extensions
    }
    /// SHA-256 of the request's DER.
    pub fn sha256(&self) -> &Fingerprint {
        &self.sha256
    }
    /// SHA-256 of the DER SubjectPublicKeyInfo, what the requester reads out
    /// over the phone to confirm the key.
    pub fn spki_sha256(&self) -> &Fingerprint {
        &self.spki_sha256
    }

    /// Checks the request against the template that is to issue it.
    pub fn check_against(&self, profile: &Profile) -> Result<(), CsrError> {
        let template = profile.source().to_string();
        profile
            .subject_keys()
            .check(&self.spki_der)
            .map_err(|problem| CsrError::KeyRefused { template: template.clone(), problem })?;
        let more =
            |extension, problem: String| CsrError::MoreThanTemplate { template: template.clone(), extension, problem };
        for ext in &self.extensions {
            match &ext.value {
                Requested::BasicConstraints { ca: false, .. } => {}
                Requested::BasicConstraints { ca: true, path_len } => {
                    if !profile.kind().is_ca() {
                        return Err(more("basicConstraints", "it asks to be a CA; the template issues leaves".into()));
                    }
                    match (profile.path_len(), path_len) {
                        (None, _) => {}
                        (Some(allowed), None) => {
                            return Err(more(
                                "basicConstraints",
                                format!("it asks for no path length limit; the template allows pathLen {allowed}"),
                            ))
                        }
                        (Some(allowed), Some(asked)) if asked > &allowed => {
                            return Err(more(
                                "basicConstraints",
                                format!("it asks for pathLen {asked}; the template allows pathLen {allowed}"),
                            ))
                        }
                        _ => {}
                    }
                }
                Requested::KeyUsage { known, other } => {
                    let mut extra: Vec<&str> =
                        known.iter().filter(|k| !profile.key_usage().contains(k)).map(|k| k.name()).collect();
                    extra.extend(other.iter().copied());
                    if !extra.is_empty() {
                        return Err(more(
                            "keyUsage",
                            format!(
                                "it asks for {}; the template grants {}",
                                extra.join(", "),
                                names(profile.key_usage().iter().map(|k| k.name()))
                            ),
                        ));
                    }
                }
                Requested::ExtendedKeyUsage(oids) => {
                    let granted: Vec<ObjectIdentifier> = profile
                        .extended_key_usage()
                        .iter()
                        .map(|e| match e {
                            ExtendedKeyUsage::ServerAuth => OID_SERVER_AUTH,
                            ExtendedKeyUsage::ClientAuth => OID_CLIENT_AUTH,
                        })
                        .collect();
                    let extra: Vec<String> = oids
                        .iter()
                        .filter(|o| !granted.contains(o))
                        .map(|o| format!("{} ({o})", oid_name(o)))
                        .collect();
                    if !extra.is_empty() {
                        return Err(more(
                            "extendedKeyUsage",
                            format!(
                                "it asks for {}; the template grants {}",
                                extra.join(", "),
                                names(profile.extended_key_usage().iter().map(|e| e.name()))
                            ),
                        ));
                    }
                }
                // The names in the certificate come from the template (a CA
                // certificate has no SAN; its name constraints are the
                // template's), so asking for these cannot widen anything.
                Requested::SubjectAltName | Requested::NameConstraints => {}
            }
        }
        if profile.kind() == CertKind::IntermediateCa && self.subject.common_name.is_none() {
            return Err(CsrError::Subject {
                attribute: "CN".into(),
                problem: "an intermediate CA needs a common name; regenerate the CSR with -subj \"/CN=...\"".into(),
            });
        }
        Ok(())
    }

    /// Lines for the operator's screen.
    pub fn summary(&self) -> Vec<String> {
        let mut out = vec![
            format!("subject: {}", self.subject),
            format!("key: {}", key_description(&self.spki_der)),
            format!("signed with: {}", self.signature_algorithm),
            format!("CSR SHA-256: {}", self.sha256.hex),
            format!("key SHA-256: {}", self.spki_sha256.hex),
        ];
        for e in &self.extensions {
            out.push(format!("requests {}{}: {}", e.name, if e.critical { " (critical)" } else { "" }, e.summary));
        }
        out
    }
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn key_description(spki: &[u8]) -> String {
    match hsm::spki_algorithm(spki) {
        Ok(k) => k.to_string(),
        Err(_) => match spki::SubjectPublicKeyInfoRef::try_from(spki)
            .ok()
            .and_then(|s| hsm::rsa_modulus_bits(s.subject_public_key.raw_bytes()).ok())
        {
            Some(bits) => format!("rsa-{bits}"),
            None => "unrecognised key".into(),
        },
    }
}

fn oid_name(oid: &ObjectIdentifier) -> String {
    const_oid::db::DB.by_oid(oid).map_or_else(|| "unknown".to_string(), str::to_string)
}

/// (CertificationRequestInfo TLV, signatureAlgorithm TLV, signature bits).
type Parts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn split(der: &[u8]) -> Result<Parts<'_>, CsrError> {
    let bad = |e: der::Error| CsrError::Der(e.to_string());
    let mut reader = SliceReader::new(der).map_err(bad)?;
    let parts = reader
        .sequence(|seq| {
            let info = seq.tlv_bytes()?;
            let alg = seq.tlv_bytes()?;
            let sig = BitStringRef::decode(seq)?;
            Ok((info, alg, sig.as_bytes().ok_or_else(|| Tag::BitString.value_error())?))
        })
        .map_err(bad)?;
    reader.finish().map_err(bad)?;
    Ok(parts)
}

/// Maps the signature AlgorithmIdentifier, byte for byte, to a scheme
/// keyrite accepts. PSS is accepted only with the RFC 4055 parameters
/// keyrite itself writes (MGF1 with the same hash, salt as long as the hash).
fn signature_algorithm(alg_tlv: &[u8]) -> Result<SignatureAlgorithm, CsrError> {
    use SignatureAlgorithm::*;
    for alg in [EcdsaSha256, EcdsaSha384, RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPssSha256, RsaPssSha384] {
        if crate::profile::algorithm_identifier(alg) == alg_tlv {
            return Ok(alg);
        }
    }
    let id = spki::AlgorithmIdentifierRef::from_der(alg_tlv).map_err(|e| CsrError::Der(e.to_string()))?;
    let sha1 = [
        "1.2.840.113549.1.1.5", // sha1WithRSAEncryption
        "1.2.840.10045.4.1",    // ecdsa-with-SHA1
        "1.3.14.3.2.29",        // sha-1WithRSASignature (OIW)
        "1.2.840.10040.4.3",    // dsa-with-sha1
    ];
    if sha1.iter().any(|s| ObjectIdentifier::new(s).is_ok_and(|o| o == id.oid)) {
        return Err(CsrError::Sha1 { oid: id.oid });
    }
    let mut name = oid_name(&id.oid);
    if id.oid.to_string() == "1.2.840.113549.1.1.10" {
        name.push_str(" with parameters other than SHA-256/384, MGF1 with the same hash and a salt of the hash length");
    }
    Err(CsrError::SignatureAlgorithm { oid: id.oid, name })
}

/// Checks the proof of possession. ECDSA signatures may use either hash
/// with either curve (`openssl req` signs with SHA-256 whatever the curve),
/// so the curve is taken from the key, not from the algorithm.
fn verify_pop(spki_der: &[u8], alg: SignatureAlgorithm, message: &[u8], signature: &[u8]) -> Result<(), CsrError> {
    use aws_lc_rs::signature as sig;
    use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, SECP_256_R_1, SECP_384_R_1};
    let key = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
        .map_err(|e| CsrError::ProofOfPossession(format!("the public key does not parse: {e}")))?;
    let is_ec = key.algorithm.oid == ID_EC_PUBLIC_KEY;
    let is_ecdsa = matches!(alg, SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384);
    if is_ec != is_ecdsa {
        return Err(CsrError::ProofOfPossession(format!(
            "a {alg} signature cannot be made by a {} key",
            if is_ec { "EC" } else { "non-EC" }
        )));
    }
    if !is_ec {
        return hsm::verify_signature(spki_der, alg, message, signature)
            .map_err(|e| CsrError::ProofOfPossession(e.to_string()));
    }
    let curve = key
        .algorithm
        .parameters_oid()
        .map_err(|_| CsrError::ProofOfPossession("EC key without a named curve".into()))?;
    let params: &'static sig::EcdsaVerificationAlgorithm = match (curve, alg) {
        (c, SignatureAlgorithm::EcdsaSha256) if c == SECP_256_R_1 => &sig::ECDSA_P256_SHA256_ASN1,
        (c, SignatureAlgorithm::EcdsaSha384) if c == SECP_256_R_1 => &sig::ECDSA_P256_SHA384_ASN1,
        (c, SignatureAlgorithm::EcdsaSha256) if c == SECP_384_R_1 => &sig::ECDSA_P384_SHA256_ASN1,
        (c, SignatureAlgorithm::EcdsaSha384) if c == SECP_384_R_1 => &sig::ECDSA_P384_SHA384_ASN1,
        (c, _) => return Err(CsrError::ProofOfPossession(format!("EC curve {c} is not P-256 or P-384"))),
    };
    sig::UnparsedPublicKey::new(params, key.subject_public_key.raw_bytes()).verify(message, signature).map_err(|_| {
        CsrError::ProofOfPossession(format!("the {alg} signature does not verify under the request's own key"))
    })
}

/// Maps the subject onto a [`DistinguishedName`]: single-valued RDNs, each
/// of C, ST, L, O, OU, CN at most once, UTF8String or PrintableString.
fn subject(name: &x509_cert::name::Name) -> Result<DistinguishedName, CsrError> {
    let mut dn = DistinguishedName::default();
    let err =
        |attribute: &str, problem: &str| CsrError::Subject { attribute: attribute.into(), problem: problem.into() };
    for rdn in name.iter_rdn() {
        if rdn.len() != 1 {
            return Err(err("(RDN)", "a multi-valued RDN is not supported; put each attribute in its own RDN"));
        }
        for atv in rdn.iter() {
            let short = match atv.oid.to_string().as_str() {
                "2.5.4.6" => "C",
                "2.5.4.8" => "ST",
                "2.5.4.7" => "L",
                "2.5.4.10" => "O",
                "2.5.4.11" => "OU",
                "2.5.4.3" => "CN",
                _ => {
                    return Err(CsrError::Subject {
                        attribute: format!("{} ({})", oid_name(&atv.oid), atv.oid),
                        problem: "is not one of C, ST, L, O, OU, CN; regenerate the CSR without it".into(),
                    })
                }
            };
            if !matches!(atv.value.tag(), Tag::Utf8String | Tag::PrintableString) {
                return Err(err(short, "is neither a UTF8String nor a PrintableString"));
            }
            let text = std::str::from_utf8(atv.value.value()).map_err(|_| err(short, "is not valid UTF-8"))?;
            let slot = match short {
                "C" => &mut dn.country,
                "ST" => &mut dn.state,
                "L" => &mut dn.locality,
                "O" => &mut dn.organization,
                "OU" => &mut dn.organizational_unit,
                _ => &mut dn.common_name,
            };
            if slot.is_some() {
                return Err(err(short, "appears twice"));
            }
            *slot = Some(text.to_string());
        }
    }
    dn.check().map_err(|(attribute, problem)| CsrError::Subject { attribute: attribute.into(), problem })?;
    Ok(dn)
}

fn requested_extension(ext: &x509_cert::ext::Extension) -> Result<RequestedExtension, CsrError> {
    let oid = ext.extn_id;
    let bytes = ext.extn_value.as_bytes();
    let bad = |name: &str, e: der::Error| CsrError::Extension { oid, name: name.into(), problem: e.to_string() };
    let (name, value, summary) = if oid == ID_CE_BASIC_CONSTRAINTS {
        let bc = BasicConstraints::from_der(bytes).map_err(|e| bad("basicConstraints", e))?;
        let summary = match (bc.ca, bc.path_len_constraint) {
            (true, Some(n)) => format!("CA:TRUE, pathLen:{n}"),
            (true, None) => "CA:TRUE, no path length limit".into(),
            (false, _) => "CA:FALSE".into(),
        };
        ("basicConstraints", Requested::BasicConstraints { ca: bc.ca, path_len: bc.path_len_constraint }, summary)
    } else if oid == ID_CE_KEY_USAGE {
        let ku = X509KeyUsage::from_der(bytes).map_err(|e| bad("keyUsage", e))?;
        let table = [
            (KeyUsages::DigitalSignature, Some(KeyUsage::DigitalSignature), "digital-signature"),
            (KeyUsages::NonRepudiation, Some(KeyUsage::ContentCommitment), "content-commitment"),
            (KeyUsages::KeyEncipherment, Some(KeyUsage::KeyEncipherment), "key-encipherment"),
            (KeyUsages::DataEncipherment, Some(KeyUsage::DataEncipherment), "data-encipherment"),
            (KeyUsages::KeyAgreement, Some(KeyUsage::KeyAgreement), "key-agreement"),
            (KeyUsages::KeyCertSign, Some(KeyUsage::KeyCertSign), "key-cert-sign"),
            (KeyUsages::CRLSign, Some(KeyUsage::CrlSign), "crl-sign"),
            (KeyUsages::EncipherOnly, None, "encipher-only"),
            (KeyUsages::DecipherOnly, None, "decipher-only"),
        ];
        let (mut known, mut other, mut all) = (Vec::new(), Vec::new(), Vec::new());
        for (flag, mapped, label) in table {
            if ku.0.contains(flag) {
                all.push(label);
                match mapped {
                    Some(k) => known.push(k),
                    None => other.push(label),
                }
            }
        }
        ("keyUsage", Requested::KeyUsage { known, other }, names(all.into_iter()))
    } else if oid == ID_CE_EXT_KEY_USAGE {
        let eku = X509Eku::from_der(bytes).map_err(|e| bad("extendedKeyUsage", e))?;
        let summary = names(eku.0.iter().map(|o| match *o {
            o if o == OID_SERVER_AUTH => "server-auth",
            o if o == OID_CLIENT_AUTH => "client-auth",
            _ => "other",
        }));
        let summary = format!("{summary} ({})", eku.0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "));
        ("extendedKeyUsage", Requested::ExtendedKeyUsage(eku.0), summary)
    } else if oid == ID_CE_SUBJECT_ALT_NAME {
        let san = SubjectAltName::from_der(bytes).map_err(|e| bad("subjectAltName", e))?;
        let summary = format!("{} name(s), ignored: the template decides the certificate's names", san.0.len());
        ("subjectAltName", Requested::SubjectAltName, summary)
    } else if oid == ID_CE_NAME_CONSTRAINTS {
        let nc = NameConstraints::from_der(bytes).map_err(|e| bad("nameConstraints", e))?;
        let count = |s: &Option<Vec<_>>| s.as_ref().map_or(0, Vec::len);
        let summary = format!(
            "{} permitted, {} excluded subtree(s), ignored: the template's constraints apply",
            count(&nc.permitted_subtrees),
            count(&nc.excluded_subtrees)
        );
        ("nameConstraints", Requested::NameConstraints, summary)
    } else {
        return Err(CsrError::UnexpectedExtension { oid, name: oid_name(&oid) });
    };
    Ok(RequestedExtension { oid, name, critical: ext.critical, summary, value })
}
