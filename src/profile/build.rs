//! Issuance: request check, deterministic build, lint, sign, verify.

use std::cell::RefCell;

use der::asn1::{AnyRef, BitStringRef, Ia5String};
use der::{Decode, Encode, Reader, SliceReader};
use rcgen::{CertificateParams, DnType, DnValue, KeyIdMethod, PublicKeyData, SigningKey};
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::certpolicy::PolicyInformation;
use x509_cert::ext::pkix::constraints::BasicConstraints;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, CertificatePolicies, KeyUsage as X509KeyUsage,
};

use super::lint::{self, Finding, Severity};
use super::template::{check_dns_labels, CertKind, ExtendedKeyUsage, KeyFamily, KeyUsage, SubjectKeyType};
use super::{verify, DistinguishedName, IssueRequest, Issued, IssuerRef, Profile, ProfileError, San};
use crate::hsm::soft::SoftKey;
use crate::hsm::{self, HsmError, SignatureAlgorithm, Signer};
use crate::words::{self, Fingerprint};

/// Issues one certificate; see the module documentation for the steps.
///
/// The real signer signs exactly once, and only after the same TBS bytes,
/// signed by a throwaway key, have passed every lint rule.
pub fn issue(req: &IssueRequest<'_>, signer: &dyn Signer) -> Result<Issued, ProfileError> {
    // (a) The request against the profile, the issuer and the signer.
    let plan = Plan::check(req, signer)?;
    // (b) Everything fixed in advance, so both builds give the same TBS.
    let params = plan.params()?;

    // (c) Lint a throwaway-key signature over the very same TBS.
    let throwaway = SoftKey::generate("keyrite-lint-throwaway", signer.key_algorithm())
        .and_then(|k| k.with_signature(plan.alg))
        .map_err(|source| ProfileError::Signer { signer: "throwaway lint key".into(), source })?;
    let lint_der = plan.sign(&params, &throwaway)?;
    let lint_tbs = verify::split(&lint_der)?.tbs;
    let mut findings = lint::lint_der(&lint_der, Some(plan.profile.kind()))?;
    findings.extend(plan.request_findings(&lint_der)?);
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return Err(ProfileError::Lint { profile: plan.profile.source().to_string(), findings });
    }

    // (d) The real signature.
    let der = plan.sign(&params, signer)?;

    // (e) Re-parse and check before anyone sees it.
    verify::check_signed(&der, &lint_tbs, &plan.issuer_spki, plan.alg)?;

    let pem = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &der)
        .map_err(|e| ProfileError::Build(format!("PEM encoding: {e}")))?;
    Ok(Issued {
        tbs_sha256_hex: words::sha256_hex(&lint_tbs),
        fingerprint: Fingerprint::sha256(&der),
        serial_hex: hex::encode(&plan.serial),
        pem,
        der,
        findings,
    })
}

/// A request that passed step (a), with everything the builder needs.
struct Plan<'a> {
    profile: &'a Profile,
    subject: DistinguishedName,
    subject_spki: &'a [u8],
    subject_family: KeyFamily,
    ski: Vec<u8>,
    sans: Vec<San>,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    issuer_dn: rcgen::DistinguishedName,
    /// The issuer Name exactly as the new certificate must carry it.
    issuer_name_der: Option<Vec<u8>>,
    aki: Vec<u8>,
    issuer_spki: Vec<u8>,
    alg: SignatureAlgorithm,
}

impl<'a> Plan<'a> {
    fn check(req: &IssueRequest<'a>, signer: &dyn Signer) -> Result<Self, ProfileError> {
        let profile = req.profile;
        let kind = profile.kind();
        let refuse = |field: &'static str, problem: String| ProfileError::Request {
            profile: profile.source().to_string(),
            field,
            problem,
        };
        let wrong_signer = |problem: String| ProfileError::WrongSigner { signer: signer.describe(), problem };

        let alg = signer.signature_algorithm();
        if !alg.fits(signer.key_algorithm()) {
            return Err(wrong_signer(format!("it signs {alg} but holds a {} key", signer.key_algorithm())));
        }
        if let Some(wanted) = profile.signature() {
            if wanted != alg {
                return Err(wrong_signer(format!(
                    "the profile requires {wanted} signatures but the signer makes {alg}; configure the signer for {wanted}"
                )));
            }
        }
        let signer_key = hsm::spki_algorithm(signer.spki_der()).map_err(|e| wrong_signer(e.to_string()))?;
        if signer_key != signer.key_algorithm() {
            return Err(wrong_signer(format!(
                "its public key is {signer_key}, not the {} it claims",
                signer.key_algorithm()
            )));
        }

        let subject = req.subject.clone().or_else(|| profile.subject().cloned()).unwrap_or_default();
        subject.check().map_err(|(f, p)| refuse("subject", format!("{f} {p}")))?;
        if kind.is_ca() && subject.common_name.is_none() {
            return Err(refuse("subject", "a CA certificate needs a common name".into()));
        }
        let subject_family = profile.subject_keys().check(req.subject_spki).map_err(|p| refuse("subject_spki", p))?;
        let subject_bits = spki::SubjectPublicKeyInfoRef::try_from(req.subject_spki)
            .map_err(|e| refuse("subject_spki", e.to_string()))?
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let ski = key_identifier(&subject_bits);

        let serial = normalize_serial(&req.serial).map_err(|p| refuse("serial", p))?;

        // rcgen writes whole seconds; truncating here keeps the checks on
        // the dates that end up in the certificate.
        let not_before = req.not_before.replace_nanosecond(0).map_err(|e| refuse("not_before", e.to_string()))?;
        let not_after = req.not_after.replace_nanosecond(0).map_err(|e| refuse("not_after", e.to_string()))?;
        if not_before >= not_after {
            return Err(refuse("not_after", "must be later than not_before".into()));
        }
        // RFC 5280 §4.1.2.5: both ends are inclusive.
        let period = not_after - not_before + Duration::seconds(1);
        if period > profile.max_validity() {
            return Err(refuse(
                "not_after",
                format!(
                    "validity of {} exceeds the profile's max_validity of {}; shorten it",
                    human(period),
                    human(profile.max_validity())
                ),
            ));
        }

        let sans = check_sans(kind, &subject, &req.sans).map_err(|p| refuse("sans", p))?;

        let (issuer_dn, issuer_name_der, aki, issuer_spki) = match req.issuer {
            IssuerRef::SelfSigned => {
                if kind != CertKind::RootCa {
                    return Err(refuse(
                        "issuer",
                        format!("a {} is signed by its issuer, not self-signed", kind.name()),
                    ));
                }
                if signer.spki_der() != req.subject_spki {
                    return Err(wrong_signer("a self-signed certificate must be signed by its own key, and the signer's public key is not the subject key".into()));
                }
                (to_rcgen_dn(&subject), None, ski.clone(), req.subject_spki.to_vec())
            }
            IssuerRef::Certificate { der } => {
                if kind == CertKind::RootCa {
                    return Err(refuse("issuer", "a root is self-signed; use IssuerRef::SelfSigned".into()));
                }
                let issuer = IssuerInfo::from_der(der, kind)?;
                if signer.spki_der() != issuer.spki.as_slice() {
                    return Err(wrong_signer(
                        "its public key is not the issuer certificate's public key; load the issuer's key or pick the right issuer certificate".into(),
                    ));
                }
                if not_before < issuer.not_before || not_after > issuer.not_after {
                    return Err(refuse(
                        "not_after",
                        format!(
                            "the validity must lie inside the issuer's ({} to {}); shorten it",
                            issuer.not_before, issuer.not_after
                        ),
                    ));
                }
                (issuer.dn, Some(issuer.name_der), issuer.ski, issuer.spki)
            }
        };

        Ok(Plan {
            profile,
            subject,
            subject_spki: req.subject_spki,
            subject_family,
            ski,
            sans,
            serial,
            not_before,
            not_after,
            issuer_dn,
            issuer_name_der,
            aki,
            issuer_spki,
            alg,
        })
    }

    /// Step (b): the rcgen parameters, with nothing left for rcgen to choose.
    fn params(&self) -> Result<CertificateParams, ProfileError> {
        let profile = self.profile;
        let mut p = CertificateParams::default();
        p.not_before = self.not_before;
        p.not_after = self.not_after;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&self.serial));
        p.distinguished_name = to_rcgen_dn(&self.subject);
        p.is_ca = match profile.kind() {
            CertKind::Leaf => rcgen::IsCa::NoCa,
            _ => rcgen::IsCa::Ca(match profile.path_len() {
                Some(n) => rcgen::BasicConstraints::Constrained(n),
                None => rcgen::BasicConstraints::Unconstrained,
            }),
        };
        let is_ec = matches!(self.subject_family, KeyFamily::Ec(_));
        p.key_usages = profile
            .key_usage()
            .iter()
            .filter(|ku| !(is_ec && ku.is_rsa_only()))
            .map(|ku| match ku {
                KeyUsage::DigitalSignature => rcgen::KeyUsagePurpose::DigitalSignature,
                KeyUsage::ContentCommitment => rcgen::KeyUsagePurpose::ContentCommitment,
                KeyUsage::KeyEncipherment => rcgen::KeyUsagePurpose::KeyEncipherment,
                KeyUsage::DataEncipherment => rcgen::KeyUsagePurpose::DataEncipherment,
                KeyUsage::KeyAgreement => rcgen::KeyUsagePurpose::KeyAgreement,
                KeyUsage::KeyCertSign => rcgen::KeyUsagePurpose::KeyCertSign,
                KeyUsage::CrlSign => rcgen::KeyUsagePurpose::CrlSign,
            })
            .collect();
        p.extended_key_usages = profile
            .extended_key_usage()
            .iter()
            .map(|e| match e {
                ExtendedKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        p.name_constraints = profile.name_constraints().map(|nc| {
            let dns = |l: &[String]| l.iter().map(|d| rcgen::GeneralSubtree::DnsName(d.clone())).collect::<Vec<_>>();
            let ips = |l: &[(std::net::IpAddr, u8)]| {
                l.iter()
                    .map(|(a, n)| rcgen::GeneralSubtree::IpAddress(rcgen::CidrSubnet::from_addr_prefix(*a, *n)))
                    .collect::<Vec<_>>()
            };
            let mut permitted = dns(&nc.permitted_dns);
            permitted.extend(ips(&nc.permitted_ip));
            let mut excluded = dns(&nc.excluded_dns);
            excluded.extend(ips(&nc.excluded_ip));
            rcgen::NameConstraints { permitted_subtrees: permitted, excluded_subtrees: excluded }
        });
        if !profile.crl_distribution_points().is_empty() {
            p.crl_distribution_points =
                vec![rcgen::CrlDistributionPoint { uris: profile.crl_distribution_points().to_vec() }];
        }
        p.subject_alt_names = self
            .sans
            .iter()
            .map(|s| match s {
                San::Dns(d) => Ia5(d).map(rcgen::SanType::DnsName),
                San::Ip(ip) => Ok(rcgen::SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        p.custom_extensions = self.custom_extensions()?;
        p.use_authority_key_identifier_extension = true;
        p.key_identifier_method = KeyIdMethod::PreSpecified(self.ski.clone());
        Ok(p)
    }

    /// certificatePolicies and authorityInfoAccess, which rcgen does not
    /// model; encoded with x509-cert and both non-critical (RFC 5280
    /// §4.2.1.4, §4.2.2.1).
    fn custom_extensions(&self) -> Result<Vec<rcgen::CustomExtension>, ProfileError> {
        let enc = |e: der::Error| ProfileError::Build(format!("encoding an extension: {e}"));
        let mut out = Vec::new();
        let policies = self.profile.policies();
        if !policies.is_empty() {
            let value = CertificatePolicies(
                policies
                    .iter()
                    .map(|oid| PolicyInformation { policy_identifier: *oid, policy_qualifiers: None })
                    .collect(),
            )
            .to_der()
            .map_err(enc)?;
            out.push(rcgen::CustomExtension::from_oid_content(
                &arcs(&const_oid::db::rfc5280::ID_CE_CERTIFICATE_POLICIES),
                value,
            ));
        }
        let aia = self.profile.authority_info_access();
        if !aia.is_empty() {
            use const_oid::db::rfc5912::{ID_AD_CA_ISSUERS, ID_AD_OCSP, ID_PE_AUTHORITY_INFO_ACCESS};
            let mut list = Vec::new();
            for (method, uris) in [(ID_AD_OCSP, &aia.ocsp), (ID_AD_CA_ISSUERS, &aia.ca_issuers)] {
                for uri in uris {
                    let location = GeneralName::UniformResourceIdentifier(Ia5String::new(uri).map_err(enc)?);
                    list.push(AccessDescription { access_method: method, access_location: location });
                }
            }
            let value = AuthorityInfoAccessSyntax(list).to_der().map_err(enc)?;
            out.push(rcgen::CustomExtension::from_oid_content(&arcs(&ID_PE_AUTHORITY_INFO_ACCESS), value));
        }
        Ok(out)
    }

    /// Builds and signs with `key`, presenting the issuer's public key and
    /// signature algorithm to rcgen whatever key actually signs.
    fn sign(&self, params: &CertificateParams, key: &dyn Signer) -> Result<Vec<u8>, ProfileError> {
        let (rcgen_alg, native) = rcgen_algorithm(self.alg);
        let issuer_bits = spki::SubjectPublicKeyInfoRef::try_from(self.issuer_spki.as_slice())
            .map_err(|e| ProfileError::Build(format!("issuer public key: {e}")))?
            .subject_public_key
            .raw_bytes()
            .to_vec();
        let adapter = Adapter {
            public_bits: issuer_bits,
            alg: rcgen_alg,
            signer: native.then_some(key),
            error: RefCell::new(None),
        };
        let mut issuer_params = CertificateParams::default();
        issuer_params.distinguished_name = self.issuer_dn.clone();
        issuer_params.key_identifier_method = KeyIdMethod::PreSpecified(self.aki.clone());
        let issuer = rcgen::Issuer::new(issuer_params, adapter);
        let subject =
            SubjectKey { bits: subject_bits(self.subject_spki)?, alg: subject_rcgen_alg(self.subject_family) };
        let cert = params.signed_by(&subject, &issuer).map_err(|e| match issuer.key().error.borrow_mut().take() {
            Some(source) => ProfileError::Signer { signer: key.describe(), source },
            None => ProfileError::Build(e.to_string()),
        })?;
        let der = cert.der().to_vec();
        if native {
            return Ok(der);
        }
        // rcgen 0.14 has no RSASSA-PSS: it built the TBS with a placeholder
        // algorithm and no signature; put the PSS identifier in and sign.
        let alg_id = verify::algorithm_identifier(self.alg);
        let tbs = replace_tbs_algorithm(&verify::split(&der)?.tbs, alg_id)?;
        let sig = key.sign(&tbs).map_err(|source| ProfileError::Signer { signer: key.describe(), source })?;
        let bits = BitStringRef::from_bytes(&sig)
            .and_then(|b| b.to_der())
            .map_err(|e| ProfileError::Build(format!("signature encoding: {e}")))?;
        verify::sequence_of(&[&tbs, alg_id, &bits])
    }

    /// Checks that only make sense with the request in hand: the certificate
    /// certifies the requested key and names its issuer byte for byte as the
    /// issuer certificate names itself (RFC 5280 §4.1.2.4; path building
    /// compares names, and a re-encoded name can silently break chains).
    fn request_findings(&self, der: &[u8]) -> Result<Vec<Finding>, ProfileError> {
        let cert = verify::parse(der)?;
        let tbs = cert.tbs_certificate();
        let enc = |e: der::Error| ProfileError::Parse(e.to_string());
        let mut out = Vec::new();
        if tbs.subject_public_key_info().to_der().map_err(enc)? != self.subject_spki {
            out.push(Finding {
                rule: "request-subject-key",
                severity: Severity::Error,
                message: "the certificate's public key is not byte-identical to the requested subject_spki".into(),
            });
        }
        if let Some(name) = &self.issuer_name_der {
            if &tbs.issuer().to_der().map_err(enc)? != name {
                out.push(Finding {
                    rule: "request-issuer-name",
                    severity: Severity::Error,
                    message: "the issuer name is not byte-identical to the issuer certificate's subject".into(),
                });
            }
        }
        Ok(out)
    }
}

fn human(d: Duration) -> String {
    if d.whole_seconds() % 86_400 == 0 {
        format!("{}d", d.whole_days())
    } else {
        format!("{}h{}s", d.whole_hours(), d.whole_seconds() % 3600)
    }
}

#[allow(non_snake_case)]
fn Ia5(s: &str) -> Result<rcgen::string::Ia5String, ProfileError> {
    rcgen::string::Ia5String::try_from(s).map_err(|e| ProfileError::Build(format!("{s:?}: {e}")))
}

fn arcs(oid: &const_oid::ObjectIdentifier) -> Vec<u64> {
    oid.arcs().map(u64::from).collect()
}

/// RFC 7093 §2 method 1: the leftmost 160 bits of the SHA-256 of the
/// subjectPublicKey BIT STRING value (not of the whole SPKI, which is what
/// rcgen's own `KeyIdMethod::Sha256` hashes).
pub(crate) fn key_identifier(subject_public_key_bits: &[u8]) -> Vec<u8> {
    words::sha256(subject_public_key_bits)[..20].to_vec()
}

fn subject_bits(spki_der: &[u8]) -> Result<Vec<u8>, ProfileError> {
    Ok(spki::SubjectPublicKeyInfoRef::try_from(spki_der)
        .map_err(|e| ProfileError::Build(format!("subject public key: {e}")))?
        .subject_public_key
        .raw_bytes()
        .to_vec())
}

/// See [`IssueRequest::serial`].
pub(crate) fn normalize_serial(random: &[u8]) -> Result<Vec<u8>, String> {
    if !(16..=20).contains(&random.len()) {
        return Err(format!(
            "{} bytes given; draw 16 to 20 random bytes from the token RNG (RFC 5280 §4.1.2.2 allows 20 octets, BR §7.1 wants 64 random bits)",
            random.len()
        ));
    }
    let mut serial = random.to_vec();
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 1;
    }
    Ok(serial)
}

fn check_sans(kind: CertKind, subject: &DistinguishedName, sans: &[San]) -> Result<Vec<San>, String> {
    if kind.is_ca() {
        if !sans.is_empty() {
            return Err("CA certificates carry no subjectAltName; remove the names".into());
        }
        return Ok(Vec::new());
    }
    if sans.is_empty() {
        return Err("a leaf needs at least one DNS name or IP address (BR §7.1.2.7.12)".into());
    }
    let mut out: Vec<San> = Vec::new();
    for san in sans {
        let san = match san {
            San::Dns(d) => {
                if d.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(format!("{d:?}: write DNS names in lower case"));
                }
                let body = d.strip_prefix("*.").unwrap_or(d);
                check_dns_labels(body).map_err(|p| format!("{d:?}: {p}"))?;
                if !body.contains('.') {
                    return Err(format!("{d:?} is not a fully qualified domain name"));
                }
                San::Dns(d.clone())
            }
            San::Ip(ip) => San::Ip(*ip),
        };
        if out.contains(&san) {
            return Err(format!("{san} is listed twice"));
        }
        out.push(san);
    }
    if let Some(cn) = &subject.common_name {
        let listed = out.iter().any(|s| match s {
            San::Dns(d) => d == cn,
            San::Ip(ip) => ip.to_string() == *cn,
        });
        if !listed {
            return Err(format!("the subject common name {cn:?} must also be one of the names (BR §7.1.4.3)"));
        }
    }
    Ok(out)
}

fn to_rcgen_dn(dn: &DistinguishedName) -> rcgen::DistinguishedName {
    let mut out = rcgen::DistinguishedName::new();
    for (short, value) in dn.attributes() {
        let ty = match short {
            "C" => DnType::CountryName,
            "ST" => DnType::StateOrProvinceName,
            "L" => DnType::LocalityName,
            "O" => DnType::OrganizationName,
            "OU" => DnType::OrganizationalUnitName,
            _ => DnType::CommonName,
        };
        // The country is a PrintableString (RFC 5280 Appendix A);
        // DistinguishedName::check has made sure it is two letters.
        let value = match (&ty, rcgen::string::PrintableString::try_from(value)) {
            (DnType::CountryName, Ok(p)) => DnValue::PrintableString(p),
            _ => DnValue::Utf8String(value.to_string()),
        };
        out.push(ty, value);
    }
    out
}

/// What the new certificate needs from its issuer's certificate.
struct IssuerInfo {
    dn: rcgen::DistinguishedName,
    name_der: Vec<u8>,
    ski: Vec<u8>,
    spki: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl IssuerInfo {
    fn from_der(der: &[u8], kind: CertKind) -> Result<Self, ProfileError> {
        let refuse = |p: String| ProfileError::Issuer(p);
        let cert = verify::parse(der).map_err(|e| refuse(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let bc = tbs.get_extension::<BasicConstraints>().map_err(|e| refuse(format!("basicConstraints: {e}")))?;
        let Some((_, bc)) = bc.filter(|(_, bc)| bc.ca) else {
            return Err(refuse("it is not a CA certificate (basicConstraints cA is not TRUE)".into()));
        };
        let ku = tbs.get_extension::<X509KeyUsage>().map_err(|e| refuse(format!("keyUsage: {e}")))?;
        if !ku.is_some_and(|(_, ku)| ku.key_cert_sign()) {
            return Err(refuse("its keyUsage does not allow keyCertSign".into()));
        }
        if kind == CertKind::IntermediateCa && bc.path_len_constraint == Some(0) {
            return Err(refuse("its pathLenConstraint is 0: it may issue leaves only, not intermediates".into()));
        }
        let ski = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| refuse(format!("subjectKeyIdentifier: {e}")))?
            .ok_or_else(|| refuse("it has no subjectKeyIdentifier to use as authorityKeyIdentifier".into()))?
            .1
             .0
            .as_bytes()
            .to_vec();
        let time = |t: &x509_cert::time::Time| {
            i64::try_from(t.to_unix_duration().as_secs())
                .ok()
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                .ok_or_else(|| refuse("validity date out of range".into()))
        };
        let enc = |e: der::Error| refuse(e.to_string());
        Ok(IssuerInfo {
            dn: from_x509_name(tbs.subject())?,
            name_der: tbs.subject().to_der().map_err(enc)?,
            ski,
            spki: tbs.subject_public_key_info().to_der().map_err(enc)?,
            not_before: time(&tbs.validity().not_before)?,
            not_after: time(&tbs.validity().not_after)?,
        })
    }
}

/// The issuer's subject as rcgen can write it back: one attribute per RDN,
/// each type once, string types preserved. Anything else is refused rather
/// than approximated (the request-issuer-name check would catch it anyway).
fn from_x509_name(name: &x509_cert::name::Name) -> Result<rcgen::DistinguishedName, ProfileError> {
    use der::{Tag, Tagged};
    use rcgen::string as s;
    let refuse = |p: &str| ProfileError::Issuer(format!("its subject name cannot be reproduced exactly: {p}"));
    let mut dn = rcgen::DistinguishedName::new();
    for rdn in name.iter_rdn() {
        if rdn.len() != 1 {
            return Err(refuse("multi-valued RDN"));
        }
        for atv in rdn.iter() {
            let ty = DnType::from_oid(&arcs(&atv.oid));
            if dn.get(&ty).is_some() {
                return Err(refuse("an attribute type appears twice"));
            }
            let bytes = atv.value.value();
            let text = || std::str::from_utf8(bytes).map_err(|_| refuse("string is not UTF-8"));
            let bad = |_| refuse("string does not fit its type");
            let value = match atv.value.tag() {
                Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
                Tag::PrintableString => DnValue::PrintableString(s::PrintableString::try_from(text()?).map_err(bad)?),
                Tag::Ia5String => DnValue::Ia5String(s::Ia5String::try_from(text()?).map_err(bad)?),
                Tag::TeletexString => DnValue::TeletexString(s::TeletexString::try_from(text()?).map_err(bad)?),
                Tag::BmpString => DnValue::BmpString(s::BmpString::from_utf16be(bytes.to_vec()).map_err(bad)?),
                other => return Err(refuse(&format!("unsupported string type {other}"))),
            };
            dn.push(ty, value);
        }
    }
    Ok(dn)
}

/// rcgen's algorithm for `alg`, and whether rcgen can write it itself.
/// rcgen 0.14 has no RSASSA-PSS; PSS goes through a PKCS#1 placeholder that
/// [`Plan::sign`] replaces before anything is signed.
fn rcgen_algorithm(alg: SignatureAlgorithm) -> (&'static rcgen::SignatureAlgorithm, bool) {
    match alg {
        SignatureAlgorithm::EcdsaSha256 => (&rcgen::PKCS_ECDSA_P256_SHA256, true),
        SignatureAlgorithm::EcdsaSha384 => (&rcgen::PKCS_ECDSA_P384_SHA384, true),
        SignatureAlgorithm::RsaPkcs1Sha256 => (&rcgen::PKCS_RSA_SHA256, true),
        SignatureAlgorithm::RsaPkcs1Sha384 => (&rcgen::PKCS_RSA_SHA384, true),
        SignatureAlgorithm::RsaPssSha256 | SignatureAlgorithm::RsaPssSha384 => (&rcgen::PKCS_RSA_SHA256, false),
    }
}

/// rcgen writes a SubjectPublicKeyInfo from an algorithm's key OIDs; these
/// give exactly the RFC 5480 / RFC 3279 encodings (checked after the build
/// by the request-subject-key rule).
fn subject_rcgen_alg(family: KeyFamily) -> &'static rcgen::SignatureAlgorithm {
    match family {
        KeyFamily::Ec(SubjectKeyType::EcdsaP384) => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyFamily::Ec(_) => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyFamily::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
    }
}

/// Replaces the third element of a TBSCertificate (its `signature`
/// AlgorithmIdentifier), leaving every other byte as it was.
fn replace_tbs_algorithm(tbs: &[u8], alg_id: &[u8]) -> Result<Vec<u8>, ProfileError> {
    let bad = |e: der::Error| ProfileError::Build(format!("TBS re-encoding: {e}"));
    let mut reader = SliceReader::new(tbs).map_err(bad)?;
    let items = reader
        .sequence(|seq| {
            let mut items = Vec::new();
            while !seq.is_finished() {
                items.push(AnyRef::decode(seq)?.to_der()?);
            }
            Ok(items)
        })
        .map_err(bad)?;
    reader.finish().map_err(bad)?;
    let version_first = items.first().and_then(|v| v.first()) == Some(&0xa0);
    if items.len() < 7 || !version_first {
        return Err(ProfileError::Build("unexpected TBSCertificate layout from rcgen".into()));
    }
    let parts: Vec<&[u8]> =
        items.iter().enumerate().map(|(i, item)| if i == 2 { alg_id } else { item.as_slice() }).collect();
    verify::sequence_of(&parts)
}

/// The subject's public key as rcgen wants it.
struct SubjectKey {
    bits: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// Presents the issuer's public key and algorithm to rcgen and signs with
/// whatever [`Signer`] it is given: the throwaway lint key or the real one.
/// rcgen reduces signer failures to `RemoteKeyError`, so the real
/// [`HsmError`] waits in `error` for [`Plan::sign`] to return.
struct Adapter<'k> {
    public_bits: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
    /// `None` for the PSS placeholder build, which must not sign anything.
    signer: Option<&'k dyn Signer>,
    error: RefCell<Option<HsmError>>,
}

impl PublicKeyData for Adapter<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public_bits
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

impl SigningKey for Adapter<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let Some(signer) = self.signer else {
            return Ok(Vec::new());
        };
        signer.sign(msg).map_err(|e| {
            *self.error.borrow_mut() = Some(e);
            rcgen::Error::RemoteKeyError
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::KeyAlgorithm;

    #[test]
    fn serials_are_positive_and_keep_their_length() {
        assert_eq!(normalize_serial(&[0xff; 16]), Ok([&[0x7f][..], &[0xff; 15]].concat()));
        assert_eq!(normalize_serial(&[0x80; 20]).map(|s| s[0]), Ok(0x01));
        assert!(normalize_serial(&[1; 15]).is_err());
        assert!(normalize_serial(&[1; 21]).is_err());
    }

    #[test]
    fn key_identifier_is_rfc7093_method_1() {
        let key = SoftKey::generate("k", KeyAlgorithm::EcdsaP256).expect("key");
        let bits = subject_bits(key.spki_der()).expect("bits");
        let ki = key_identifier(&bits);
        assert_eq!(ki.len(), 20);
        assert_eq!(ki, words::sha256(&bits)[..20]);
        assert_ne!(ki, words::sha256(key.spki_der())[..20], "hashes the key bits, not the SPKI");
    }

    #[test]
    fn sans_are_checked() {
        let none = DistinguishedName::default();
        let dns = |s: &str| San::Dns(s.into());
        assert!(check_sans(CertKind::Leaf, &none, &[]).is_err());
        assert!(check_sans(CertKind::Leaf, &none, &[dns("WWW.example.com")]).is_err());
        assert!(check_sans(CertKind::Leaf, &none, &[dns("*.example.com")]).is_ok());
        assert!(check_sans(CertKind::Leaf, &none, &[dns("a.*.example.com")]).is_err());
        assert!(check_sans(CertKind::Leaf, &none, &[dns("localhost")]).is_err());
        assert!(check_sans(CertKind::Leaf, &none, &[dns("a.example"), dns("a.example")]).is_err());
        assert!(check_sans(CertKind::RootCa, &none, &[dns("a.example")]).is_err());
        let cn = DistinguishedName { common_name: Some("b.example".into()), ..Default::default() };
        assert!(check_sans(CertKind::Leaf, &cn, &[dns("a.example")]).is_err());
    }

    #[test]
    fn dn_display_is_rfc4514() {
        let dn = DistinguishedName {
            common_name: Some("Root, \"R1\"".into()),
            organization: Some("Example".into()),
            country: Some("DE".into()),
            ..Default::default()
        };
        assert_eq!(dn.to_string(), "CN=Root\\, \\\"R1\\\",O=Example,C=DE");
    }
}
