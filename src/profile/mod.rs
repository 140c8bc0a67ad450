//! The `profile` room: certificate templates in, linted and verified
//! certificates out.
//!
//! A template (`templates/*.toml`) is parsed once into a [`Profile`]; after
//! that nothing re-checks it. [`issue`] then walks the same path Let's
//! Encrypt's ceremony tool does: check the request against the profile, build
//! the to-be-signed certificate with every field fixed in advance, sign it once
//! with a throwaway key and lint the result, sign it for real, and finally
//! re-parse the real certificate and require that its TBS bytes are exactly
//! the ones that were linted and that its signature verifies under the
//! issuer's key. A certificate that fails any step is never returned.

mod build;
pub mod lint;
mod roca;
mod template;
mod verify;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use time::OffsetDateTime;

use crate::hsm::HsmError;
use crate::words::Fingerprint;

pub use build::issue;
pub(crate) use build::normalize_serial;
pub use lint::{lint_certificate, Finding, Severity};
pub(crate) use template::check_http_uri;
pub use template::{
    AccessInfo, CertKind, ExtendedKeyUsage, KeyUsage, NameConstraintsSpec, Profile, SubjectKeyPolicy, SubjectKeyType,
};
pub(crate) use verify::algorithm_identifier;
pub use verify::{certificate_summary, dn_to_string, CertSummary};

/// A subject or issuer name as keyrite writes it.
///
/// Attributes are written in the conventional order C, ST, L, O, OU, CN; the
/// country is a PrintableString (RFC 5280 Appendix A), everything else a
/// UTF8String (RFC 5280 §4.1.2.6 requires UTF8String for new certificates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistinguishedName {
    pub common_name: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    /// Two upper-case letters (ISO 3166-1 alpha-2).
    pub country: Option<String>,
    pub locality: Option<String>,
    pub state: Option<String>,
}

impl DistinguishedName {
    /// Whether no attribute is set (an empty subject: RFC 5280 then requires a
    /// critical subjectAltName).
    pub fn is_empty(&self) -> bool {
        self.attributes().next().is_none()
    }

    /// (short name, value) pairs in encoding order.
    pub fn attributes(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("C", &self.country),
            ("ST", &self.state),
            ("L", &self.locality),
            ("O", &self.organization),
            ("OU", &self.organizational_unit),
            ("CN", &self.common_name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }

    /// Checks the upper bounds of RFC 5280 Appendix A and the country format.
    /// Returns the offending attribute's name and the problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let limits = [
            ("common_name", &self.common_name, 64),
            ("organization", &self.organization, 64),
            ("organizational_unit", &self.organizational_unit, 64),
            ("locality", &self.locality, 128),
            ("state", &self.state, 128),
        ];
        for (name, value, max) in limits {
            if let Some(v) = value {
                if v.trim().is_empty() {
                    return Err((name, "is empty; remove it or give a value".into()));
                }
                if v.chars().count() > max {
                    return Err((name, format!("is longer than the {max} characters RFC 5280 allows")));
                }
                if v.chars().any(char::is_control) {
                    return Err((name, "contains control characters".into()));
                }
            }
        }
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
                return Err(("country", format!("{c:?} is not a two-letter upper-case ISO 3166 code such as \"DE\"")));
            }
        }
        Ok(())
    }
}

/// RFC 4514 order (most specific first), with RFC 4514 §2.4 escaping.
impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attrs: Vec<_> = self.attributes().collect();
        for (i, (k, v)) in attrs.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={}", escape_rfc4514(v))?;
        }
        Ok(())
    }
}

fn escape_rfc4514(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, ch) in v.chars().enumerate() {
        let special = matches!(ch, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (ch == ' ' || ch == '#'))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A subject alternative name of a leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name, lower-case, optionally a leading `*.` wildcard.
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "DNS:{d}"),
            San::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

/// Who signs the new certificate.
#[derive(Debug, Clone, Copy)]
pub enum IssuerRef<'a> {
    /// The subject key signs its own certificate (a root).
    SelfSigned,
    /// An existing CA certificate; its subject becomes the issuer name
    /// (byte for byte) and its subjectKeyIdentifier the new certificate's
    /// authorityKeyIdentifier.
    Certificate { der: &'a [u8] },
}

/// Everything needed to issue one certificate.
pub struct IssueRequest<'a> {
    pub profile: &'a Profile,
    /// `None` uses the template's subject (for a leaf without one: an empty
    /// subject, and the SAN extension becomes critical).
    pub subject: Option<DistinguishedName>,
    /// The subject's public key as DER SubjectPublicKeyInfo.
    pub subject_spki: &'a [u8],
    /// DNS names and IP addresses; leaves only, at least one.
    pub sans: Vec<San>,
    /// 16 to 20 random bytes the caller drew from the token's RNG. keyrite
    /// clears the top bit of the first byte (so the INTEGER is positive and
    /// needs no padding octet, keeping it within RFC 5280's 20 octets) and,
    /// should that byte then be zero, sets it to 1 (so the encoding is
    /// exactly as long as the input and lint can count the entropy). At least
    /// 121 random bits remain, well over the CA/B Forum's 64.
    pub serial: Vec<u8>,
    pub not_before: OffsetDateTime,
    /// Inclusive, as in RFC 5280 §4.1.2.5: a one-day certificate has
    /// `not_after = not_before + 1 day - 1 second` (see
    /// [`Profile::not_after_for`]).
    pub not_after: OffsetDateTime,
    pub issuer: IssuerRef<'a>,
}

/// An issued, linted and verified certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    pub der: Vec<u8>,
    pub pem: String,
    /// SHA-256 of the TBSCertificate that was linted and signed (hex).
    pub tbs_sha256_hex: String,
    /// SHA-256 of the certificate DER, hex and words.
    pub fingerprint: Fingerprint,
    /// The serial number as it is encoded, lower-case hex.
    pub serial_hex: String,
    /// Warning-level lint findings, for the audit log.
    pub findings: Vec<Finding>,
}

/// Errors of template loading, issuance, lint and verification.
///
/// Each names the template file and field, the rule, or the check that
/// failed, and says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("{source_name}: cannot read the template: {source}")]
    Read {
        source_name: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: not a valid template: {message}")]
    Syntax { source_name: String, message: String },
    #[error("{source_name}: field `{field}`: {problem}")]
    Template { source_name: String, field: String, problem: String },
    #[error("request refused by profile {profile}: {field}: {problem}")]
    Request { profile: String, field: &'static str, problem: String },
    #[error("issuer certificate refused: {0}")]
    Issuer(String),
    #[error("signer {signer} cannot issue this certificate: {problem}")]
    WrongSigner { signer: String, problem: String },
    #[error("lint refused the certificate for profile {profile}; nothing was signed with the real key. Fix the template or request:\n{}", format_findings(.findings))]
    Lint { profile: String, findings: Vec<Finding> },
    #[error("signer {signer} failed: {source}")]
    Signer {
        signer: String,
        #[source]
        source: HsmError,
    },
    #[error("building the certificate failed: {0}")]
    Build(String),
    #[error("post-signing check `{check}` failed: {problem}. The certificate must not be used or published; check the signer and the audit log")]
    Verify { check: &'static str, problem: String },
    #[error("certificate does not parse: {0}")]
    Parse(String),
}

fn format_findings(findings: &[Finding]) -> String {
    findings.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
}
