//! Lint rules, run on every certificate before the real key signs it.
//!
//! Each rule is a small function whose doc comment cites the requirement it
//! enforces. Rules see a [`View`]: the certificate with its extensions decoded
//! once, so that a rule is a few lines and a unit test can break one field at
//! a time. An extension that does not decode is itself a finding.

use std::fmt;

use const_oid::db::rfc5280 as ce;
use const_oid::db::rfc5912::{ID_AD_OCSP, ID_EC_PUBLIC_KEY, ID_PE_AUTHORITY_INFO_ACCESS};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::certificate::Version;
use x509_cert::ext::pkix::constraints::BasicConstraints;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::template::CertKind;
use super::verify;
use super::ProfileError;

/// How bad a finding is. Errors stop issuance; warnings are kept for the
/// audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One rule's complaint about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: &'static str,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev} [{}]: {}", self.rule, self.message)
    }
}

fn error(rule: &'static str, message: impl Into<String>) -> Finding {
    Finding { rule, severity: Severity::Error, message: message.into() }
}

fn warning(rule: &'static str, message: impl Into<String>) -> Finding {
    Finding { rule, severity: Severity::Warning, message: message.into() }
}

/// Lints a DER certificate on its own (no profile): every rule that can be
/// judged from the certificate. Fails only if the DER does not parse.
pub fn lint_certificate(der: &[u8]) -> Result<Vec<Finding>, ProfileError> {
    lint_der(der, None)
}

/// As [`lint_certificate`], plus the checks that the certificate is of the
/// kind the profile issues.
pub(crate) fn lint_der(der: &[u8], expected: Option<CertKind>) -> Result<Vec<Finding>, ProfileError> {
    let raw = verify::split(der)?;
    let cert = verify::parse(der)?;
    let (view, mut findings) = View::new(&cert, raw.signature_algorithm)?;
    for rule in RULES {
        rule(&view, &mut findings);
    }
    if let Some(kind) = expected {
        profile_kind(&view, kind, &mut findings);
    }
    Ok(findings)
}

type Rule = fn(&View, &mut Vec<Finding>);

const RULES: &[Rule] = &[
    version_v3,
    serial_positive,
    serial_length,
    serial_entropy,
    signature_algorithms_match,
    issuer_not_empty,
    validity_time_encoding,
    validity_ordered,
    ca_subject_not_empty,
    no_duplicate_extensions,
    ca_basic_constraints,
    path_len_only_for_ca,
    ca_key_usage,
    key_cert_sign_needs_ca,
    ca_subject_key_identifier,
    authority_key_identifier,
    root_without_eku,
    leaf_san_present,
    san_critical_if_subject_empty,
    leaf_common_name_in_san,
    ec_no_encipherment,
    name_constraints_critical_on_ca,
    uris_are_http,
    revocation_info_present,
];

/// The certificate with its extensions decoded once.
pub(crate) struct View {
    version: Version,
    /// The serial's INTEGER content octets.
    serial: Vec<u8>,
    inner_alg: Vec<u8>,
    outer_alg: Vec<u8>,
    issuer_empty: bool,
    subject_empty: bool,
    /// Issuer and subject names are the same bytes (RFC 5280 §6.1 self-issued).
    self_issued: bool,
    not_before: Time,
    not_after: Time,
    ext_oids: Vec<ObjectIdentifier>,
    ec_key: bool,
    common_name: Option<String>,
    basic_constraints: Option<(bool, BasicConstraints)>,
    key_usage: Option<(bool, KeyUsage)>,
    subject_key_id: bool,
    authority_key_id: bool,
    eku: Option<Vec<ObjectIdentifier>>,
    san: Option<(bool, Vec<GeneralName>)>,
    name_constraints_critical: Option<bool>,
    crl_uris: Vec<String>,
    aia_uris: Vec<String>,
    has_ocsp: bool,
}

impl View {
    fn new(cert: &Certificate, outer_alg: Vec<u8>) -> Result<(View, Vec<Finding>), ProfileError> {
        let enc = |e: der::Error| ProfileError::Parse(e.to_string());
        let tbs = cert.tbs_certificate();
        let mut findings = Vec::new();
        let exts = tbs.extensions().map(|e| e.as_slice()).unwrap_or(&[]);
        let mut view = View {
            version: tbs.version(),
            serial: tbs.serial_number().as_bytes().to_vec(),
            inner_alg: tbs.signature().to_der().map_err(enc)?,
            outer_alg,
            issuer_empty: tbs.issuer().is_empty(),
            subject_empty: tbs.subject().is_empty(),
            self_issued: tbs.issuer().to_der().map_err(enc)? == tbs.subject().to_der().map_err(enc)?,
            not_before: tbs.validity().not_before,
            not_after: tbs.validity().not_after,
            ext_oids: exts.iter().map(|e| e.extn_id).collect(),
            ec_key: tbs.subject_public_key_info().algorithm.oid == ID_EC_PUBLIC_KEY,
            common_name: tbs.subject().common_name().ok().flatten().map(|cn| cn.value().into_owned()),
            basic_constraints: None,
            key_usage: None,
            subject_key_id: false,
            authority_key_id: false,
            eku: None,
            san: None,
            name_constraints_critical: None,
            crl_uris: Vec::new(),
            aia_uris: Vec::new(),
            has_ocsp: false,
        };
        for ext in exts {
            let value = ext.extn_value.as_bytes();
            let bad = |name: &str, e: der::Error| {
                error("extension-decodes", format!("the {name} extension does not decode: {e}"))
            };
            let id = ext.extn_id;
            if id == ce::ID_CE_BASIC_CONSTRAINTS {
                match BasicConstraints::from_der(value) {
                    Ok(bc) => view.basic_constraints = Some((ext.critical, bc)),
                    Err(e) => findings.push(bad("basicConstraints", e)),
                }
            } else if id == ce::ID_CE_KEY_USAGE {
                match KeyUsage::from_der(value) {
                    Ok(ku) => view.key_usage = Some((ext.critical, ku)),
                    Err(e) => findings.push(bad("keyUsage", e)),
                }
            } else if id == ce::ID_CE_SUBJECT_KEY_IDENTIFIER {
                match SubjectKeyIdentifier::from_der(value) {
                    Ok(_) => view.subject_key_id = true,
                    Err(e) => findings.push(bad("subjectKeyIdentifier", e)),
                }
            } else if id == ce::ID_CE_AUTHORITY_KEY_IDENTIFIER {
                match AuthorityKeyIdentifier::from_der(value) {
                    Ok(aki) if aki.key_identifier.is_some() => view.authority_key_id = true,
                    Ok(_) => findings.push(error(
                        "authority-key-identifier",
                        "authorityKeyIdentifier has no keyIdentifier (RFC 5280 §4.2.1.1)",
                    )),
                    Err(e) => findings.push(bad("authorityKeyIdentifier", e)),
                }
            } else if id == ce::ID_CE_EXT_KEY_USAGE {
                match ExtendedKeyUsage::from_der(value) {
                    Ok(eku) => view.eku = Some(eku.0),
                    Err(e) => findings.push(bad("extendedKeyUsage", e)),
                }
            } else if id == ce::ID_CE_SUBJECT_ALT_NAME {
                match SubjectAltName::from_der(value) {
                    Ok(san) => view.san = Some((ext.critical, san.0)),
                    Err(e) => findings.push(bad("subjectAltName", e)),
                }
            } else if id == ce::ID_CE_NAME_CONSTRAINTS {
                view.name_constraints_critical = Some(ext.critical);
            } else if id == ce::ID_CE_CRL_DISTRIBUTION_POINTS {
                match CrlDistributionPoints::from_der(value) {
                    Ok(dps) => {
                        for dp in dps.0 {
                            if let Some(DistributionPointName::FullName(names)) = dp.distribution_point {
                                view.crl_uris.extend(names.iter().map(general_name_text));
                            }
                        }
                    }
                    Err(e) => findings.push(bad("cRLDistributionPoints", e)),
                }
            } else if id == ID_PE_AUTHORITY_INFO_ACCESS {
                match AuthorityInfoAccessSyntax::from_der(value) {
                    Ok(aia) => {
                        for ad in aia.0 {
                            view.has_ocsp |= ad.access_method == ID_AD_OCSP;
                            view.aia_uris.push(general_name_text(&ad.access_location));
                        }
                    }
                    Err(e) => findings.push(bad("authorityInfoAccess", e)),
                }
            }
        }
        Ok((view, findings))
    }

    fn is_ca(&self) -> bool {
        self.basic_constraints.as_ref().is_some_and(|(_, bc)| bc.ca)
    }

    fn key_cert_sign(&self) -> bool {
        self.key_usage.as_ref().is_some_and(|(_, ku)| ku.key_cert_sign())
    }
}

/// URIs as text; other name forms in a quoted description so that the http
/// rule reports them rather than passing them.
fn general_name_text(name: &GeneralName) -> String {
    match name {
        GeneralName::UniformResourceIdentifier(uri) => uri.to_string(),
        other => format!("<non-URI name {other:?}>"),
    }
}

/// RFC 5280 §4.1.2.1: certificates with extensions MUST be version 3.
fn version_v3(v: &View, out: &mut Vec<Finding>) {
    if v.version != Version::V3 {
        out.push(error(
            "version-v3",
            format!("version is {:?}; keyrite writes only v3 (RFC 5280 §4.1.2.1)", v.version),
        ));
    }
}

/// RFC 5280 §4.1.2.2: the serial MUST be a positive integer.
fn serial_positive(v: &View, out: &mut Vec<Finding>) {
    let negative = v.serial.first().is_some_and(|b| b & 0x80 != 0);
    let zero = v.serial.iter().all(|b| *b == 0);
    if negative || zero {
        out.push(error("serial-positive", "serial number is zero or negative (RFC 5280 §4.1.2.2)"));
    }
}

/// RFC 5280 §4.1.2.2: conforming CAs MUST NOT use serials longer than 20
/// octets.
fn serial_length(v: &View, out: &mut Vec<Finding>) {
    if v.serial.len() > 20 {
        out.push(error(
            "serial-length",
            format!("serial number is {} octets; at most 20 (RFC 5280 §4.1.2.2)", v.serial.len()),
        ));
    }
}

/// CA/B BR §7.1: serials carry at least 64 bits from a CSPRNG. With the sign
/// bit clear, that takes at least 9 content octets.
fn serial_entropy(v: &View, out: &mut Vec<Finding>) {
    let significant = v.serial.iter().skip_while(|b| **b == 0).count();
    if significant < 9 {
        out.push(error(
            "serial-entropy",
            format!("serial number has {significant} octets; at least 9 are needed for 64 random bits (BR §7.1)"),
        ));
    }
}

/// RFC 5280 §4.1.1.2: signatureAlgorithm MUST equal the TBS signature field.
fn signature_algorithms_match(v: &View, out: &mut Vec<Finding>) {
    if v.inner_alg != v.outer_alg {
        out.push(error(
            "signature-algorithms-match",
            "outer signatureAlgorithm differs from tbsCertificate.signature (RFC 5280 §4.1.1.2)",
        ));
    }
}

/// RFC 5280 §4.1.2.4: the issuer field MUST contain a non-empty name.
fn issuer_not_empty(v: &View, out: &mut Vec<Finding>) {
    if v.issuer_empty {
        out.push(error("issuer-not-empty", "issuer name is empty (RFC 5280 §4.1.2.4)"));
    }
}

/// RFC 5280 §4.1.2.5: dates through 2049 MUST be UTCTime, from 2050 on
/// GeneralizedTime.
fn validity_time_encoding(v: &View, out: &mut Vec<Finding>) {
    for (name, t) in [("notBefore", &v.not_before), ("notAfter", &v.not_after)] {
        let year = t.to_date_time().year();
        let utc = matches!(t, Time::UtcTime(_));
        if (year < 2050) != utc {
            out.push(error(
                "validity-time-encoding",
                format!(
                    "{name} in {year} is {}; RFC 5280 §4.1.2.5 requires UTCTime before 2050 and GeneralizedTime after",
                    if utc { "UTCTime" } else { "GeneralizedTime" }
                ),
            ));
        }
    }
}

/// RFC 5280 §4.1.2.5: the validity period runs from notBefore to notAfter.
fn validity_ordered(v: &View, out: &mut Vec<Finding>) {
    if v.not_before.to_unix_duration() >= v.not_after.to_unix_duration() {
        out.push(error("validity-ordered", "notBefore is not before notAfter (RFC 5280 §4.1.2.5)"));
    }
}

/// RFC 5280 §4.1.2.6: a CA's subject MUST be a non-empty name.
fn ca_subject_not_empty(v: &View, out: &mut Vec<Finding>) {
    if v.is_ca() && v.subject_empty {
        out.push(error("ca-subject-not-empty", "CA certificate with an empty subject (RFC 5280 §4.1.2.6)"));
    }
}

/// RFC 5280 §4.2: a certificate MUST NOT include more than one instance of
/// an extension.
fn no_duplicate_extensions(v: &View, out: &mut Vec<Finding>) {
    for (i, oid) in v.ext_oids.iter().enumerate() {
        if v.ext_oids[..i].contains(oid) {
            out.push(error(
                "no-duplicate-extensions",
                format!("extension {oid} appears more than once (RFC 5280 §4.2)"),
            ));
        }
    }
}

/// RFC 5280 §4.2.1.9: a CA certificate MUST have basicConstraints, critical,
/// with cA TRUE. A certificate asserting keyCertSign is a CA certificate.
fn ca_basic_constraints(v: &View, out: &mut Vec<Finding>) {
    if !(v.is_ca() || v.key_cert_sign()) {
        return;
    }
    match &v.basic_constraints {
        Some((true, bc)) if bc.ca => {}
        Some((false, _)) => {
            out.push(error("ca-basic-constraints", "basicConstraints on a CA is not critical (RFC 5280 §4.2.1.9)"))
        }
        _ => {
            out.push(error("ca-basic-constraints", "keyCertSign without basicConstraints cA=TRUE (RFC 5280 §4.2.1.9)"))
        }
    }
}

/// RFC 5280 §4.2.1.9: pathLenConstraint only when cA is TRUE and keyUsage
/// asserts keyCertSign.
fn path_len_only_for_ca(v: &View, out: &mut Vec<Finding>) {
    if let Some((_, bc)) = &v.basic_constraints {
        if bc.path_len_constraint.is_some() && !(bc.ca && v.key_cert_sign()) {
            out.push(error(
                "path-len-only-for-ca",
                "pathLenConstraint without cA=TRUE and keyCertSign (RFC 5280 §4.2.1.9)",
            ));
        }
    }
}

/// RFC 5280 §4.2.1.3: CA certificates that sign certificates MUST have
/// keyUsage, SHOULD mark it critical (BR §7.1.2.10.7: MUST), with keyCertSign.
fn ca_key_usage(v: &View, out: &mut Vec<Finding>) {
    if !v.is_ca() {
        return;
    }
    match &v.key_usage {
        None => out.push(error("ca-key-usage", "CA certificate without keyUsage (RFC 5280 §4.2.1.3)")),
        Some((false, _)) => {
            out.push(error("ca-key-usage", "keyUsage on a CA is not critical (RFC 5280 §4.2.1.3, BR §7.1.2.10.7)"))
        }
        Some((true, ku)) if !ku.key_cert_sign() => {
            out.push(error("ca-key-usage", "CA certificate without keyCertSign (RFC 5280 §4.2.1.3)"))
        }
        _ => {}
    }
}

/// RFC 5280 §4.2.1.3: keyCertSign MUST NOT be asserted unless cA is TRUE.
fn key_cert_sign_needs_ca(v: &View, out: &mut Vec<Finding>) {
    if v.key_cert_sign() && !v.is_ca() {
        out.push(error("key-cert-sign-needs-ca", "keyCertSign asserted but cA is not TRUE (RFC 5280 §4.2.1.3)"));
    }
}

/// RFC 5280 §4.2.1.2: subjectKeyIdentifier MUST appear in CA certificates.
fn ca_subject_key_identifier(v: &View, out: &mut Vec<Finding>) {
    if v.is_ca() && !v.subject_key_id {
        out.push(error("ca-subject-key-identifier", "CA certificate without subjectKeyIdentifier (RFC 5280 §4.2.1.2)"));
    }
}

/// RFC 5280 §4.2.1.1: authorityKeyIdentifier with keyIdentifier MUST be
/// present except in self-signed certificates.
fn authority_key_identifier(v: &View, out: &mut Vec<Finding>) {
    if !v.self_issued && !v.authority_key_id {
        out.push(error("authority-key-identifier", "authorityKeyIdentifier missing (RFC 5280 §4.2.1.1)"));
    }
}

/// CA/B BR §7.1.2.1.2: root certificates MUST NOT contain extendedKeyUsage.
fn root_without_eku(v: &View, out: &mut Vec<Finding>) {
    if v.is_ca() && v.self_issued && v.eku.is_some() {
        out.push(error("root-without-eku", "root certificate with extendedKeyUsage (BR §7.1.2.1.2)"));
    }
}

/// RFC 5280 §4.2.1.6 and BR §7.1.2.7.12: a subscriber certificate names its
/// subjects in subjectAltName.
fn leaf_san_present(v: &View, out: &mut Vec<Finding>) {
    if !v.is_ca() && v.san.as_ref().is_none_or(|(_, names)| names.is_empty()) {
        out.push(error("leaf-san-present", "leaf without subjectAltName (RFC 5280 §4.2.1.6, BR §7.1.2.7.12)"));
    }
}

/// RFC 5280 §4.2.1.6: with an empty subject, subjectAltName MUST be critical.
fn san_critical_if_subject_empty(v: &View, out: &mut Vec<Finding>) {
    if v.subject_empty && v.san.as_ref().is_some_and(|(critical, _)| !critical) {
        out.push(error(
            "san-critical-if-subject-empty",
            "empty subject but subjectAltName is not critical (RFC 5280 §4.2.1.6)",
        ));
    }
}

/// BR §7.1.4.3: a leaf's commonName, if present, repeats one of its SANs.
fn leaf_common_name_in_san(v: &View, out: &mut Vec<Finding>) {
    let (Some(cn), false) = (&v.common_name, v.is_ca()) else {
        return;
    };
    let listed = v.san.as_ref().is_some_and(|(_, names)| {
        names.iter().any(|n| match n {
            GeneralName::DnsName(d) => d.to_string().eq_ignore_ascii_case(cn),
            GeneralName::IpAddress(ip) => {
                let b = ip.as_bytes();
                let text = match b.len() {
                    4 => <[u8; 4]>::try_from(b).map(|a| std::net::IpAddr::from(a).to_string()).ok(),
                    16 => <[u8; 16]>::try_from(b).map(|a| std::net::IpAddr::from(a).to_string()).ok(),
                    _ => None,
                };
                text.as_deref() == Some(cn.as_str())
            }
            _ => false,
        })
    });
    if !listed {
        out.push(error(
            "leaf-common-name-in-san",
            format!("commonName {cn:?} is not one of the subjectAltNames (BR §7.1.4.3)"),
        ));
    }
}

/// RFC 8813 §3: an EC public key MUST NOT be certified with keyEncipherment
/// or dataEncipherment. (RSA leaf keys may carry keyEncipherment.)
fn ec_no_encipherment(v: &View, out: &mut Vec<Finding>) {
    if let (true, Some((_, ku))) = (v.ec_key, &v.key_usage) {
        if ku.key_encipherment() || ku.data_encipherment() {
            out.push(error("ec-no-encipherment", "EC key with keyEncipherment or dataEncipherment (RFC 8813 §3)"));
        }
    }
}

/// RFC 5280 §4.2.1.10: nameConstraints MUST be critical and only in CA
/// certificates.
fn name_constraints_critical_on_ca(v: &View, out: &mut Vec<Finding>) {
    match v.name_constraints_critical {
        Some(false) => out.push(error("name-constraints", "nameConstraints is not critical (RFC 5280 §4.2.1.10)")),
        Some(true) if !v.is_ca() => {
            out.push(error("name-constraints", "nameConstraints in a non-CA certificate (RFC 5280 §4.2.1.10)"))
        }
        _ => {}
    }
}

/// RFC 5280 §4.2.1.13 / §4.2.2.1 and BR §7.1.2.11.2, §7.1.2.10.3: CRL and
/// AIA locations are plain http URIs (https would need the very validation
/// they serve).
fn uris_are_http(v: &View, out: &mut Vec<Finding>) {
    for (ext, uris) in [("cRLDistributionPoints", &v.crl_uris), ("authorityInfoAccess", &v.aia_uris)] {
        for uri in uris {
            if super::template::check_http_uri(uri).is_err() {
                out.push(error(
                    "uris-are-http",
                    format!("{ext} location {uri} is not an http:// URI (BR §7.1.2.11.2)"),
                ));
            }
        }
    }
}

/// BR §7.1.2.11.2 / §4.9: a certificate below a root should tell relying
/// parties where revocation information is. A warning: short-lived leaves
/// (BR §4.9.1.1) may rightly have none.
fn revocation_info_present(v: &View, out: &mut Vec<Finding>) {
    if !v.self_issued && v.crl_uris.is_empty() && !v.has_ocsp {
        out.push(warning("revocation-info-present", "neither cRLDistributionPoints nor an OCSP URI"));
    }
}

/// The certificate is what the profile issues: CA-ness matches, and roots
/// (and only roots) are self-issued.
fn profile_kind(v: &View, kind: CertKind, out: &mut Vec<Finding>) {
    if kind.is_ca() != v.is_ca() {
        out.push(error(
            "profile-kind",
            format!("a {} profile produced a certificate with cA={}", kind.name(), v.is_ca()),
        ));
    }
    if (kind == CertKind::RootCa) != v.self_issued {
        out.push(error(
            "profile-kind",
            format!(
                "a {} profile produced a certificate whose issuer {} its subject",
                kind.name(),
                if v.self_issued { "is" } else { "is not" }
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints as Bc, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose as Ku};

    fn key() -> KeyPair {
        KeyPair::generate().expect("key")
    }

    fn ca_params() -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "Test Root");
        p.is_ca = IsCa::Ca(Bc::Unconstrained);
        p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign];
        p.serial_number = Some(vec![0x11; 16].into());
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2045, 1, 1);
        p
    }

    fn lint_params(p: &CertificateParams) -> Vec<Finding> {
        let der = p.self_signed(&key()).expect("sign").der().to_vec();
        lint_certificate(&der).expect("parses")
    }

    fn rules(f: &[Finding]) -> Vec<&'static str> {
        f.iter().filter(|f| f.severity == Severity::Error).map(|f| f.rule).collect()
    }

    /// A clean root view, to be broken one field at a time.
    fn view() -> View {
        let der = ca_params().self_signed(&key()).expect("sign").der().to_vec();
        let raw = verify::split(&der).expect("split");
        let cert = verify::parse(&der).expect("parse");
        let (v, f) = View::new(&cert, raw.signature_algorithm).expect("view");
        assert!(f.is_empty());
        v
    }

    fn run(rule: Rule, v: &View) -> Vec<&'static str> {
        let mut out = Vec::new();
        rule(v, &mut out);
        out.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn a_good_root_is_clean() {
        let findings = lint_params(&ca_params());
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn version_serial_and_algorithm_rules() {
        let good = view();
        assert!(run(version_v3, &good).is_empty());
        let mut v = view();
        v.version = Version::V1;
        assert_eq!(run(version_v3, &v), ["version-v3"]);

        assert!(run(serial_positive, &good).is_empty());
        v.serial = vec![0x80; 16];
        assert_eq!(run(serial_positive, &v), ["serial-positive"]);
        v.serial = vec![0; 16];
        assert_eq!(run(serial_positive, &v), ["serial-positive"]);

        assert!(run(serial_length, &good).is_empty());
        v.serial = vec![0x11; 21];
        assert_eq!(run(serial_length, &v), ["serial-length"]);

        assert!(run(serial_entropy, &good).is_empty());
        v.serial = vec![0x7f; 8];
        assert_eq!(run(serial_entropy, &v), ["serial-entropy"]);

        assert!(run(signature_algorithms_match, &good).is_empty());
        v.outer_alg = verify::algorithm_identifier(crate::hsm::SignatureAlgorithm::EcdsaSha384).to_vec();
        assert_eq!(run(signature_algorithms_match, &v), ["signature-algorithms-match"]);
    }

    #[test]
    fn serial_rules_on_real_certificates() {
        let mut p = ca_params();
        p.serial_number = Some(vec![0x01; 8].into());
        assert_eq!(rules(&lint_params(&p)), ["serial-entropy"]);
    }

    #[test]
    fn name_and_validity_rules() {
        let good = view();
        assert!(run(issuer_not_empty, &good).is_empty());
        assert!(run(ca_subject_not_empty, &good).is_empty());
        let mut v = view();
        v.issuer_empty = true;
        v.subject_empty = true;
        assert_eq!(run(issuer_not_empty, &v), ["issuer-not-empty"]);
        assert_eq!(run(ca_subject_not_empty, &v), ["ca-subject-not-empty"]);

        assert!(run(validity_time_encoding, &good).is_empty());
        assert!(run(validity_ordered, &good).is_empty());
        let mut p = ca_params();
        p.not_after = rcgen::date_time_ymd(2060, 1, 1);
        assert!(lint_params(&p).is_empty(), "rcgen writes GeneralizedTime from 2050");
        let mut v = view();
        std::mem::swap(&mut v.not_before, &mut v.not_after);
        assert_eq!(run(validity_ordered, &v), ["validity-ordered"]);
        v.not_after = Time::GeneralTime(der::asn1::GeneralizedTime::from_date_time(
            der::DateTime::new(2030, 1, 1, 0, 0, 0).expect("date"),
        ));
        assert_eq!(run(validity_time_encoding, &v), ["validity-time-encoding"]);
    }

    #[test]
    fn extension_rules_on_cas() {
        let good = view();
        for rule in [
            no_duplicate_extensions,
            ca_basic_constraints,
            path_len_only_for_ca,
            ca_key_usage,
            key_cert_sign_needs_ca,
            ca_subject_key_identifier,
            authority_key_identifier,
            root_without_eku,
            name_constraints_critical_on_ca,
        ] {
            assert!(run(rule, &good).is_empty());
        }
        let mut v = view();
        v.ext_oids.push(v.ext_oids[0]);
        assert_eq!(run(no_duplicate_extensions, &v), ["no-duplicate-extensions"]);

        let mut v = view();
        if let Some((crit, _)) = &mut v.basic_constraints {
            *crit = false;
        }
        assert_eq!(run(ca_basic_constraints, &v), ["ca-basic-constraints"]);

        let mut v = view();
        v.key_usage = None;
        assert_eq!(run(ca_key_usage, &v), ["ca-key-usage"]);
        let mut v = view();
        if let Some((crit, _)) = &mut v.key_usage {
            *crit = false;
        }
        assert_eq!(run(ca_key_usage, &v), ["ca-key-usage"]);

        let mut v = view();
        v.subject_key_id = false;
        assert_eq!(run(ca_subject_key_identifier, &v), ["ca-subject-key-identifier"]);

        let mut v = view();
        v.self_issued = false;
        v.authority_key_id = false;
        assert_eq!(run(authority_key_identifier, &v), ["authority-key-identifier"]);

        let mut v = view();
        v.eku = Some(vec![const_oid::db::rfc5280::ID_KP_SERVER_AUTH]);
        assert_eq!(run(root_without_eku, &v), ["root-without-eku"]);

        let mut v = view();
        v.name_constraints_critical = Some(false);
        assert_eq!(run(name_constraints_critical_on_ca, &v), ["name-constraints"]);
    }

    #[test]
    fn key_cert_sign_and_path_len_need_a_ca() {
        let mut p = ca_params();
        p.is_ca = IsCa::ExplicitNoCa;
        p.subject_alt_names = vec![rcgen::SanType::DnsName("a.example".try_into().expect("name"))];
        let r = rules(&lint_params(&p));
        assert!(r.contains(&"key-cert-sign-needs-ca") && r.contains(&"ca-basic-constraints"), "{r:?}");

        let mut v = view();
        v.key_usage = None;
        if let Some((_, bc)) = &mut v.basic_constraints {
            bc.path_len_constraint = Some(0);
        }
        assert_eq!(run(path_len_only_for_ca, &v), ["path-len-only-for-ca"]);
    }

    fn leaf_params(ku: Vec<Ku>) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names = vec![rcgen::SanType::DnsName("www.example.com".try_into().expect("name"))];
        p.key_usages = ku;
        p.serial_number = Some(vec![0x22; 16].into());
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2025, 2, 1);
        p.crl_distribution_points = vec![rcgen::CrlDistributionPoint { uris: vec!["http://crl.example/x.crl".into()] }];
        p
    }

    fn leaf_lint(p: &CertificateParams) -> Vec<Finding> {
        // Signed by a separate issuer, so the leaf is not self-issued.
        let issuer_key = key();
        let issuer = rcgen::Issuer::new(ca_params(), &issuer_key);
        let mut p = p.clone();
        p.use_authority_key_identifier_extension = true;
        let der = p.signed_by(&key(), &issuer).expect("sign").der().to_vec();
        lint_certificate(&der).expect("parses")
    }

    #[test]
    fn leaf_rules() {
        let good = leaf_params(vec![Ku::DigitalSignature]);
        let findings = leaf_lint(&good);
        assert!(findings.is_empty(), "{findings:?}");

        // rcgen's default EC key with keyEncipherment: RFC 8813 forbids it.
        let r = rules(&leaf_lint(&leaf_params(vec![Ku::DigitalSignature, Ku::KeyEncipherment])));
        assert_eq!(r, ["ec-no-encipherment"]);

        let mut p = good.clone();
        p.subject_alt_names.clear();
        p.distinguished_name.push(DnType::CommonName, "www.example.com");
        let r = rules(&leaf_lint(&p));
        assert!(r.contains(&"leaf-san-present") && r.contains(&"leaf-common-name-in-san"), "{r:?}");

        let mut p = good.clone();
        p.distinguished_name.push(DnType::CommonName, "www.example.com");
        assert!(rules(&leaf_lint(&p)).is_empty());

        let mut p = good.clone();
        p.crl_distribution_points =
            vec![rcgen::CrlDistributionPoint { uris: vec!["https://crl.example/x.crl".into()] }];
        assert_eq!(rules(&leaf_lint(&p)), ["uris-are-http"]);

        let mut p = good.clone();
        p.crl_distribution_points.clear();
        let f = leaf_lint(&p);
        assert!(rules(&f).is_empty());
        assert!(f.iter().any(|f| f.rule == "revocation-info-present" && f.severity == Severity::Warning));

        let mut p = good.clone();
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName("example.com".into())],
            excluded_subtrees: vec![],
        });
        assert_eq!(rules(&leaf_lint(&p)), ["name-constraints"]);
    }

    #[test]
    fn san_must_be_critical_for_an_empty_subject() {
        let der = {
            let issuer_key = key();
            let issuer = rcgen::Issuer::new(ca_params(), &issuer_key);
            let mut p = leaf_params(vec![Ku::DigitalSignature]);
            p.use_authority_key_identifier_extension = true;
            p.signed_by(&key(), &issuer).expect("sign").der().to_vec()
        };
        let raw = verify::split(&der).expect("split");
        let cert = verify::parse(&der).expect("parse");
        let (mut v, _) = View::new(&cert, raw.signature_algorithm).expect("view");
        assert!(v.san.as_ref().is_some_and(|(c, _)| *c), "rcgen marks it critical");
        assert!(run(san_critical_if_subject_empty, &v).is_empty());
        if let Some((crit, _)) = &mut v.san {
            *crit = false;
        }
        assert_eq!(run(san_critical_if_subject_empty, &v), ["san-critical-if-subject-empty"]);
    }

    #[test]
    fn profile_kind_rule() {
        let v = view();
        assert!(run(|v, o| profile_kind(v, CertKind::RootCa, o), &v).is_empty());
        assert_eq!(run(|v, o| profile_kind(v, CertKind::Leaf, o), &v), ["profile-kind", "profile-kind"]);
    }
}
