//! Certificate templates: TOML in, a validated [`Profile`] out.
//!
//! The TOML is read into `Raw*` structs with `deny_unknown_fields` (a typo
//! must fail loudly, not silently drop a constraint) and then turned into a
//! [`Profile`] whose fields are private: once a `Profile` exists it is known
//! to be consistent, and issuance does not re-check the template.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;
use time::Duration;

use super::{DistinguishedName, ProfileError};
use crate::hsm::SignatureAlgorithm;

/// What a profile issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    RootCa,
    IntermediateCa,
    Leaf,
}

impl CertKind {
    pub fn name(self) -> &'static str {
        match self {
            CertKind::RootCa => "root-ca",
            CertKind::IntermediateCa => "intermediate-ca",
            CertKind::Leaf => "leaf",
        }
    }

    pub fn is_ca(self) -> bool {
        self != CertKind::Leaf
    }

    /// The longest validity keyrite allows at all for this kind: 25 years for
    /// a root, 8 for an intermediate (the CA/B Forum's root programs' usual
    /// ceilings) and 398 days for a TLS leaf (BR §6.3.2).
    pub fn validity_ceiling(self) -> Duration {
        match self {
            CertKind::RootCa => Duration::days(9132),
            CertKind::IntermediateCa => Duration::days(2922),
            CertKind::Leaf => Duration::days(398),
        }
    }
}

/// keyUsage bits (RFC 5280 §4.2.1.3), by their template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUsage {
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
}

impl KeyUsage {
    const ALL: [(&'static str, KeyUsage); 7] = [
        ("digital-signature", KeyUsage::DigitalSignature),
        ("content-commitment", KeyUsage::ContentCommitment),
        ("key-encipherment", KeyUsage::KeyEncipherment),
        ("data-encipherment", KeyUsage::DataEncipherment),
        ("key-agreement", KeyUsage::KeyAgreement),
        ("key-cert-sign", KeyUsage::KeyCertSign),
        ("crl-sign", KeyUsage::CrlSign),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("?", |(n, _)| n)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    /// Encipherment only makes sense for RSA subject keys: RFC 8813 §3
    /// forbids these bits on EC keys, so the builder leaves them out there.
    pub fn is_rsa_only(self) -> bool {
        matches!(self, KeyUsage::KeyEncipherment | KeyUsage::DataEncipherment)
    }
}

/// extendedKeyUsage purposes keyrite issues (RFC 5280 §4.2.1.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtendedKeyUsage {
    ServerAuth,
    ClientAuth,
}

impl ExtendedKeyUsage {
    pub fn name(self) -> &'static str {
        match self {
            ExtendedKeyUsage::ServerAuth => "server-auth",
            ExtendedKeyUsage::ClientAuth => "client-auth",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "server-auth" => Some(ExtendedKeyUsage::ServerAuth),
            "client-auth" => Some(ExtendedKeyUsage::ClientAuth),
            _ => None,
        }
    }
}

/// Subject key types a template can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKeyType {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl SubjectKeyType {
    const ALL: [(&'static str, SubjectKeyType); 5] = [
        ("ecdsa-p256", SubjectKeyType::EcdsaP256),
        ("ecdsa-p384", SubjectKeyType::EcdsaP384),
        ("rsa-2048", SubjectKeyType::Rsa2048),
        ("rsa-3072", SubjectKeyType::Rsa3072),
        ("rsa-4096", SubjectKeyType::Rsa4096),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, k)| *k == self).map_or("?", |(n, _)| n)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }

    fn rsa_bits(self) -> Option<usize> {
        match self {
            SubjectKeyType::Rsa2048 => Some(2048),
            SubjectKeyType::Rsa3072 => Some(3072),
            SubjectKeyType::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

/// Which public keys may be certified.
///
/// Unlike [`crate::hsm::KeyAlgorithm`] (keys keyrite itself holds), this
/// covers keys other people generate, so it checks the key itself: an RSA
/// modulus of an allowed size or larger (up to 8192 bits, a multiple of 8,
/// BR §6.1.5) with public exponent 65537, or an EC point that aws-lc accepts
/// as lying on P-256 or P-384 (BR §6.1.6 asks CAs to validate it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKeyPolicy {
    allowed: Vec<SubjectKeyType>,
}

/// The family of a key that passed [`SubjectKeyPolicy::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Ec(SubjectKeyType),
    Rsa { bits: usize },
}

impl SubjectKeyPolicy {
    pub fn allowed(&self) -> &[SubjectKeyType] {
        &self.allowed
    }

    /// Checks a DER SubjectPublicKeyInfo against the policy.
    pub fn check(&self, spki_der: &[u8]) -> Result<KeyFamily, String> {
        use aws_lc_rs::signature as sig;
        use const_oid::db::rfc5912::{ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1};
        use der::Encode;

        let spki = spki::SubjectPublicKeyInfoRef::try_from(spki_der)
            .map_err(|e| format!("the public key is not DER SubjectPublicKeyInfo: {e}"))?;
        if spki.to_der().ok().as_deref() != Some(spki_der) {
            return Err("the public key has trailing or non-canonical bytes".into());
        }
        let names = || self.allowed.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
        let bits = spki.subject_public_key.raw_bytes();
        let oid = spki.algorithm.oid;
        if oid == ID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|_| "EC public key without a named curve (RFC 5480 §2.1.1)".to_string())?;
            let (kind, alg): (_, &'static sig::EcdsaVerificationAlgorithm) = if curve == SECP_256_R_1 {
                (SubjectKeyType::EcdsaP256, &sig::ECDSA_P256_SHA256_ASN1)
            } else if curve == SECP_384_R_1 {
                (SubjectKeyType::EcdsaP384, &sig::ECDSA_P384_SHA384_ASN1)
            } else {
                return Err(format!("EC curve {curve} is not allowed; allowed: {}", names()));
            };
            if !self.allowed.contains(&kind) {
                return Err(format!("{} keys are not allowed by this profile; allowed: {}", kind.name(), names()));
            }
            if bits.first() != Some(&0x04) {
                return Err("EC point is not in uncompressed form (RFC 5480 §2.2)".into());
            }
            sig::ParsedPublicKey::new(alg, bits)
                .map_err(|_| format!("the {} point is not on the curve", kind.name()))?;
            return Ok(KeyFamily::Ec(kind));
        }
        if oid == RSA_ENCRYPTION {
            // RFC 3279 §2.3.1: the parameters MUST be NULL.
            if !spki.algorithm.parameters.is_some_and(|p| p.is_null()) {
                return Err("RSA public key parameters are not NULL (RFC 3279 §2.3.1)".into());
            }
            let Some(min) = self.allowed.iter().filter_map(|k| k.rsa_bits()).min() else {
                return Err(format!("RSA keys are not allowed by this profile; allowed: {}", names()));
            };
            let (n, e) = crate::hsm::rsa_public_key_parts(bits).map_err(|e| e.to_string())?;
            let bits_len = crate::hsm::rsa_modulus_bits(bits).map_err(|e| e.to_string())?;
            let e = e.iter().skip_while(|b| **b == 0).copied().collect::<Vec<_>>();
            if e != [0x01, 0x00, 0x01] {
                return Err("RSA public exponent is not 65537".into());
            }
            if bits_len < min || bits_len > 8192 || bits_len % 8 != 0 {
                return Err(format!(
                    "RSA modulus of {bits_len} bits is not allowed: use at least {min} bits, at most 8192, a multiple of 8"
                ));
            }
            if n.last().is_some_and(|b| b % 2 == 0) {
                return Err("RSA modulus is even".into());
            }
            if super::roca::has_fingerprint(&n) {
                return Err("the RSA key has the ROCA fingerprint (CVE-2017-15361): it was made by a flawed \
                            Infineon library and can be factored; generate a new key with other software"
                    .into());
            }
            sig::ParsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, bits)
                .map_err(|_| "aws-lc rejects the RSA public key".to_string())?;
            return Ok(KeyFamily::Rsa { bits: bits_len });
        }
        Err(format!("public key algorithm {oid} is not allowed; allowed: {}", names()))
    }
}

/// Where relying parties find the issuer's certificate and OCSP responder
/// (RFC 5280 §4.2.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessInfo {
    pub ca_issuers: Vec<String>,
    pub ocsp: Vec<String>,
}

impl AccessInfo {
    pub fn is_empty(&self) -> bool {
        self.ca_issuers.is_empty() && self.ocsp.is_empty()
    }
}

/// Name constraints for an intermediate (RFC 5280 §4.2.1.10), always
/// written critical.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameConstraintsSpec {
    pub permitted_dns: Vec<String>,
    pub excluded_dns: Vec<String>,
    /// (network address, prefix length)
    pub permitted_ip: Vec<(IpAddr, u8)>,
    pub excluded_ip: Vec<(IpAddr, u8)>,
}

/// A validated certificate template.
#[derive(Debug, Clone)]
pub struct Profile {
    source: String,
    kind: CertKind,
    subject: Option<DistinguishedName>,
    validity: Duration,
    max_validity: Duration,
    signature: Option<SignatureAlgorithm>,
    key_usage: Vec<KeyUsage>,
    path_len: Option<u8>,
    extended_key_usage: Vec<ExtendedKeyUsage>,
    policies: Vec<const_oid::ObjectIdentifier>,
    crl_distribution_points: Vec<String>,
    authority_info_access: AccessInfo,
    name_constraints: Option<NameConstraintsSpec>,
    subject_keys: SubjectKeyPolicy,
}

impl Profile {
    /// Reads and validates a template file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ProfileError::Read { source_name: path.to_path_buf(), source })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates template text; `source_name` appears in errors.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Profile, ProfileError> {
        let raw: RawTemplate = toml::from_str(text)
            .map_err(|e| ProfileError::Syntax { source_name: source_name.into(), message: e.to_string() })?;
        raw.validate(source_name)
    }

    /// The template file (or name) this profile came from.
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn kind(&self) -> CertKind {
        self.kind
    }
    pub fn subject(&self) -> Option<&DistinguishedName> {
        self.subject.as_ref()
    }
    pub fn validity(&self) -> Duration {
        self.validity
    }
    pub fn max_validity(&self) -> Duration {
        self.max_validity
    }
    pub fn signature(&self) -> Option<SignatureAlgorithm> {
        self.signature
    }
    pub fn key_usage(&self) -> &[KeyUsage] {
        &self.key_usage
    }
    pub fn path_len(&self) -> Option<u8> {
        self.path_len
    }
    pub fn extended_key_usage(&self) -> &[ExtendedKeyUsage] {
        &self.extended_key_usage
    }
    pub fn policies(&self) -> &[const_oid::ObjectIdentifier] {
        &self.policies
    }
    pub fn crl_distribution_points(&self) -> &[String] {
        &self.crl_distribution_points
    }
    pub fn authority_info_access(&self) -> &AccessInfo {
        &self.authority_info_access
    }
    pub fn name_constraints(&self) -> Option<&NameConstraintsSpec> {
        self.name_constraints.as_ref()
    }
    pub fn subject_keys(&self) -> &SubjectKeyPolicy {
        &self.subject_keys
    }

    /// The notAfter for a certificate starting at `not_before` with the
    /// template's default validity. RFC 5280 §4.1.2.5 makes notAfter
    /// inclusive, so one second is taken off to keep the period exact.
    pub fn not_after_for(&self, not_before: time::OffsetDateTime) -> time::OffsetDateTime {
        not_before + self.validity - Duration::seconds(1)
    }
}

/// The template as written. Every field is documented in
/// `templates/root-ca.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    /// "root-ca", "intermediate-ca" or "leaf".
    kind: String,
    /// Required for CAs; optional for leaves (ACME leaves usually have none).
    subject: Option<RawSubject>,
    /// Default validity, a duration such as "24h", "90d", "7305d".
    validity: String,
    /// The longest validity a request may ask for; at most 9132d for a
    /// root, 2922d for an intermediate, 398d for a leaf.
    max_validity: String,
    /// Requires the signer to sign with this scheme (e.g. "rsa-pss-sha256");
    /// absent, the signer's own scheme is used.
    signature: Option<String>,
    /// keyUsage bits; CAs need key-cert-sign and crl-sign, leaves must not
    /// have them. key-encipherment/data-encipherment apply to RSA subject
    /// keys only and are left out for EC keys (RFC 8813).
    key_usage: Vec<String>,
    /// basicConstraints pathLenConstraint: required for intermediates,
    /// optional for roots, forbidden for leaves.
    path_len: Option<u8>,
    /// "server-auth", "client-auth"; required for leaves, forbidden on roots.
    #[serde(default)]
    extended_key_usage: Vec<String>,
    /// certificatePolicies OIDs in dotted form.
    #[serde(default)]
    policies: Vec<String>,
    /// http:// URIs of the issuer's CRL (not on roots).
    #[serde(default)]
    crl_distribution_points: Vec<String>,
    /// http:// URIs of the issuer's certificate and OCSP responder (not on roots).
    authority_info_access: Option<RawAccess>,
    /// Critical name constraints (intermediates only).
    name_constraints: Option<RawNameConstraints>,
    /// Subject key types this profile certifies.
    allowed_key_algorithms: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubject {
    common_name: Option<String>,
    organization: Option<String>,
    organizational_unit: Option<String>,
    country: Option<String>,
    locality: Option<String>,
    state: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccess {
    #[serde(default)]
    ca_issuers: Vec<String>,
    #[serde(default)]
    ocsp: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNameConstraints {
    #[serde(default)]
    permitted_dns: Vec<String>,
    #[serde(default)]
    excluded_dns: Vec<String>,
    #[serde(default)]
    permitted_ip: Vec<String>,
    #[serde(default)]
    excluded_ip: Vec<String>,
}

impl RawTemplate {
    fn validate(self, source: &str) -> Result<Profile, ProfileError> {
        let err = |field: &str, problem: String| ProfileError::Template {
            source_name: source.to_string(),
            field: field.to_string(),
            problem,
        };

        let kind = match self.kind.as_str() {
            "root-ca" => CertKind::RootCa,
            "intermediate-ca" => CertKind::IntermediateCa,
            "leaf" => CertKind::Leaf,
            other => {
                return Err(err("kind", format!("{other:?} is not one of \"root-ca\", \"intermediate-ca\", \"leaf\"")))
            }
        };

        let subject = match self.subject {
            Some(s) => {
                let dn = DistinguishedName {
                    common_name: s.common_name,
                    organization: s.organization,
                    organizational_unit: s.organizational_unit,
                    country: s.country,
                    locality: s.locality,
                    state: s.state,
                };
                dn.check().map_err(|(f, p)| err(&format!("subject.{f}"), p))?;
                Some(dn)
            }
            None => None,
        };
        if kind.is_ca() && subject.as_ref().and_then(|s| s.common_name.as_ref()).is_none() {
            return Err(err(
                "subject.common_name",
                "a CA certificate needs a subject with a common name (RFC 5280 §4.1.2.6); add [subject] common_name"
                    .into(),
            ));
        }

        let validity = parse_duration(&self.validity).map_err(|p| err("validity", p))?;
        let max_validity = parse_duration(&self.max_validity).map_err(|p| err("max_validity", p))?;
        let ceiling = kind.validity_ceiling();
        if max_validity > ceiling {
            return Err(err(
                "max_validity",
                format!(
                    "{} exceeds the {}d keyrite allows for a {}",
                    self.max_validity,
                    ceiling.whole_days(),
                    kind.name()
                ),
            ));
        }
        if validity > max_validity {
            return Err(err(
                "validity",
                format!("{} is longer than max_validity {}", self.validity, self.max_validity),
            ));
        }

        let signature = match self.signature.as_deref() {
            None => None,
            Some(name) => Some(parse_signature(name).ok_or_else(|| {
                err(
                    "signature",
                    format!("{name:?} is not one of ecdsa-sha256, ecdsa-sha384, rsa-pkcs1-sha256, rsa-pkcs1-sha384, rsa-pss-sha256, rsa-pss-sha384"),
                )
            })?),
        };

        let mut key_usage = Vec::new();
        for (i, name) in self.key_usage.iter().enumerate() {
            let ku = KeyUsage::from_name(name).ok_or_else(|| {
                let all = KeyUsage::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                err(&format!("key_usage[{i}]"), format!("{name:?} is not one of {all}"))
            })?;
            if key_usage.contains(&ku) {
                return Err(err(&format!("key_usage[{i}]"), format!("{name} is listed twice")));
            }
            key_usage.push(ku);
        }
        let signs_certs = key_usage.contains(&KeyUsage::KeyCertSign) || key_usage.contains(&KeyUsage::CrlSign);
        if kind.is_ca() {
            for needed in [KeyUsage::KeyCertSign, KeyUsage::CrlSign] {
                if !key_usage.contains(&needed) {
                    return Err(err(
                        "key_usage",
                        format!("a {} must have {} (RFC 5280 §4.2.1.3)", kind.name(), needed.name()),
                    ));
                }
            }
            if let Some(ku) = key_usage.iter().find(|k| k.is_rsa_only() || **k == KeyUsage::KeyAgreement) {
                return Err(err("key_usage", format!("a CA key only signs; remove {}", ku.name())));
            }
        } else {
            if signs_certs {
                return Err(err(
                    "key_usage",
                    "a leaf must not have key-cert-sign or crl-sign (RFC 5280 §4.2.1.3); remove them".into(),
                ));
            }
            if !key_usage.contains(&KeyUsage::DigitalSignature) {
                return Err(err("key_usage", "a TLS leaf needs digital-signature (BR §7.1.2.7.11)".into()));
            }
        }

        match (kind, self.path_len) {
            (CertKind::IntermediateCa, None) => {
                return Err(err("path_len", "an intermediate must set path_len (0: it may only issue leaves)".into()))
            }
            (CertKind::Leaf, Some(_)) => {
                return Err(err("path_len", "a leaf is not a CA; remove path_len (RFC 5280 §4.2.1.9)".into()))
            }
            _ => {}
        }

        let mut extended_key_usage = Vec::new();
        for (i, name) in self.extended_key_usage.iter().enumerate() {
            let eku = ExtendedKeyUsage::from_name(name).ok_or_else(|| {
                err(&format!("extended_key_usage[{i}]"), format!("{name:?} is not one of server-auth, client-auth"))
            })?;
            if !extended_key_usage.contains(&eku) {
                extended_key_usage.push(eku);
            }
        }
        match kind {
            CertKind::RootCa if !extended_key_usage.is_empty() => {
                return Err(err(
                    "extended_key_usage",
                    "a root must not have extendedKeyUsage (BR §7.1.2.1.2); remove it".into(),
                ))
            }
            CertKind::Leaf if extended_key_usage.is_empty() => {
                return Err(err(
                    "extended_key_usage",
                    "a leaf needs at least one of server-auth, client-auth (BR §7.1.2.7.10)".into(),
                ))
            }
            _ => {}
        }

        let mut policies = Vec::new();
        for (i, text) in self.policies.iter().enumerate() {
            let oid = const_oid::ObjectIdentifier::new(text)
                .map_err(|e| err(&format!("policies[{i}]"), format!("{text:?} is not a dotted OID: {e}")))?;
            policies.push(oid);
        }

        for (i, uri) in self.crl_distribution_points.iter().enumerate() {
            check_http_uri(uri).map_err(|p| err(&format!("crl_distribution_points[{i}]"), p))?;
        }
        let authority_info_access = match self.authority_info_access {
            None => AccessInfo::default(),
            Some(a) => {
                for (i, uri) in a.ca_issuers.iter().enumerate() {
                    check_http_uri(uri).map_err(|p| err(&format!("authority_info_access.ca_issuers[{i}]"), p))?;
                }
                for (i, uri) in a.ocsp.iter().enumerate() {
                    check_http_uri(uri).map_err(|p| err(&format!("authority_info_access.ocsp[{i}]"), p))?;
                }
                AccessInfo { ca_issuers: a.ca_issuers, ocsp: a.ocsp }
            }
        };
        if kind == CertKind::RootCa {
            if !self.crl_distribution_points.is_empty() {
                return Err(err(
                    "crl_distribution_points",
                    "a root has no issuer CRL to point at; remove it (BR §7.1.2.1)".into(),
                ));
            }
            if !authority_info_access.is_empty() {
                return Err(err(
                    "authority_info_access",
                    "a root has no issuer to point at; remove it (BR §7.1.2.1)".into(),
                ));
            }
        }

        let name_constraints = match self.name_constraints {
            None => None,
            Some(_) if kind != CertKind::IntermediateCa => {
                return Err(err(
                    "name_constraints",
                    "only intermediates carry name constraints (RFC 5280 §4.2.1.10, BR §7.1.2.1); remove it".into(),
                ))
            }
            Some(nc) => {
                let dns = |list: &[String], field: &str| -> Result<Vec<String>, ProfileError> {
                    list.iter()
                        .enumerate()
                        .map(|(i, d)| {
                            check_dns_constraint(d).map_err(|p| err(&format!("name_constraints.{field}[{i}]"), p))?;
                            Ok(d.to_ascii_lowercase())
                        })
                        .collect()
                };
                let ips = |list: &[String], field: &str| -> Result<Vec<(IpAddr, u8)>, ProfileError> {
                    list.iter()
                        .enumerate()
                        .map(|(i, c)| parse_cidr(c).map_err(|p| err(&format!("name_constraints.{field}[{i}]"), p)))
                        .collect()
                };
                let spec = NameConstraintsSpec {
                    permitted_dns: dns(&nc.permitted_dns, "permitted_dns")?,
                    excluded_dns: dns(&nc.excluded_dns, "excluded_dns")?,
                    permitted_ip: ips(&nc.permitted_ip, "permitted_ip")?,
                    excluded_ip: ips(&nc.excluded_ip, "excluded_ip")?,
                };
                if spec == NameConstraintsSpec::default() {
                    return Err(err(
                        "name_constraints",
                        "is empty; list at least one subtree or remove the table".into(),
                    ));
                }
                Some(spec)
            }
        };

        let mut allowed = Vec::new();
        for (i, name) in self.allowed_key_algorithms.iter().enumerate() {
            let field = format!("allowed_key_algorithms[{i}]");
            let k = SubjectKeyType::from_name(name).ok_or_else(|| {
                err(&field, format!("{name:?} is not one of ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096"))
            })?;
            if k == SubjectKeyType::Rsa2048 && kind.is_ca() {
                return Err(err(&field, "rsa-2048 is too weak for a CA key; use rsa-3072 or larger".into()));
            }
            if !allowed.contains(&k) {
                allowed.push(k);
            }
        }
        if allowed.is_empty() {
            return Err(err("allowed_key_algorithms", "is empty; list the key types this profile may certify".into()));
        }

        Ok(Profile {
            source: source.to_string(),
            kind,
            subject,
            validity,
            max_validity,
            signature,
            key_usage,
            path_len: self.path_len,
            extended_key_usage,
            policies,
            crl_distribution_points: self.crl_distribution_points,
            authority_info_access,
            name_constraints,
            subject_keys: SubjectKeyPolicy { allowed },
        })
    }
}

fn parse_signature(name: &str) -> Option<SignatureAlgorithm> {
    use SignatureAlgorithm::*;
    [EcdsaSha256, EcdsaSha384, RsaPkcs1Sha256, RsaPkcs1Sha384, RsaPssSha256, RsaPssSha384]
        .into_iter()
        .find(|s| s.name() == name)
}

/// "36h" or "90d": a whole number of hours or days. Months and years are
/// refused because their length varies and max-validity rules are in days.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like \"24h\" or \"90d\"");
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n <= 0 || n > 100_000 {
        return Err(format!("{text:?} must be positive and under 100000"));
    }
    match unit {
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        _ => Err(bad()),
    }
}

/// CRL and AIA URIs must be plain http: a relying party fetches them while
/// validating a TLS connection, and https would need that very validation
/// (RFC 5280 §4.2.1.13, BR §7.1.2.11.2 and §7.1.2.10.3).
pub(crate) fn check_http_uri(uri: &str) -> Result<(), String> {
    let Some(rest) = uri.strip_prefix("http://") else {
        return Err(format!("{uri:?} must be an http:// URI (relying parties fetch it without TLS)"));
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host.is_empty() || !uri.is_ascii() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{uri:?} is not a valid http URI with a host"));
    }
    Ok(())
}

/// A dNSName constraint: a domain (RFC 5280 §4.2.1.10), optionally with a
/// leading dot meaning "subdomains only".
fn check_dns_constraint(name: &str) -> Result<(), String> {
    let body = name.strip_prefix('.').unwrap_or(name);
    check_dns_labels(body).map_err(|p| format!("{name:?}: {p}"))
}

/// LDH labels, 1-63 characters each, 253 in all, no trailing dot.
pub(crate) fn check_dns_labels(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name must have 1 to 253 characters".into());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "label {label:?} is not a valid DNS label (letters, digits, hyphens; 1-63 characters)"
            ));
        }
    }
    Ok(())
}

/// "10.0.0.0/8" or "2001:db8::/32", with no host bits set.
fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) =
        text.split_once('/').ok_or_else(|| format!("{text:?} is not CIDR notation like \"10.0.0.0/8\""))?;
    let addr: IpAddr = addr.parse().map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
    let prefix: u8 = prefix.parse().map_err(|_| format!("{text:?}: prefix is not a number"))?;
    let (max, bits) = match addr {
        IpAddr::V4(a) => (32u8, u128::from(u32::from(a)) << 96),
        IpAddr::V6(a) => (128u8, u128::from(a)),
    };
    if prefix > max {
        return Err(format!("{text:?}: prefix /{prefix} is longer than {max}"));
    }
    let host_mask = if prefix == 0 { u128::MAX } else { u128::MAX >> prefix };
    if bits & host_mask != 0 {
        return Err(format!("{text:?}: host bits are set; write the network address"));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = include_str!("../../templates/root-ca.toml");
    const INTERMEDIATE: &str = include_str!("../../templates/intermediate-ca.toml");
    const CONSTRAINED: &str = include_str!("../../templates/intermediate-ca-constrained.toml");
    const LEAF: &str = include_str!("../../templates/tls-leaf.toml");

    #[test]
    fn shipped_templates_parse() {
        let root = Profile::from_toml_str(ROOT, "root-ca.toml").expect("root");
        assert_eq!(root.kind(), CertKind::RootCa);
        let inter = Profile::from_toml_str(INTERMEDIATE, "intermediate-ca.toml").expect("intermediate");
        assert_eq!(inter.path_len(), Some(0));
        assert!(inter.name_constraints().is_none(), "the default intermediate is unconstrained");
        let constrained =
            Profile::from_toml_str(CONSTRAINED, "intermediate-ca-constrained.toml").expect("constrained intermediate");
        assert!(constrained.name_constraints().is_some());
        let leaf = Profile::from_toml_str(LEAF, "tls-leaf.toml").expect("leaf");
        assert_eq!(leaf.validity(), Duration::hours(24 * 7));
        assert!(leaf.subject_keys().allowed().contains(&SubjectKeyType::Rsa2048));
    }

    fn err_of(text: &str) -> String {
        Profile::from_toml_str(text, "t.toml").err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn template_errors_name_file_and_field() {
        let e = err_of(&ROOT.replace("validity = \"7305d\"", "validity = \"7305d\"\ncolour = \"red\""));
        assert!(e.contains("t.toml") && e.contains("colour"), "{e}");
        let e = err_of(&ROOT.replace("max_validity = \"9132d\"", "max_validity = \"9500d\""));
        assert!(e.contains("t.toml: field `max_validity`"), "{e}");
        let e = err_of(&ROOT.replace("\"crl-sign\"", "\"digital-signature\""));
        assert!(e.contains("field `key_usage`") && e.contains("crl-sign"), "{e}");
        let e = err_of(&ROOT.replace("country = \"DE\"", "country = \"Germany\""));
        assert!(e.contains("field `subject.country`"), "{e}");
        let e = err_of(&LEAF.replace("\"digital-signature\"", "\"digital-signature\", \"key-cert-sign\""));
        assert!(e.contains("field `key_usage`"), "{e}");
        let e = err_of(&INTERMEDIATE.replace("path_len = 0", ""));
        assert!(e.contains("field `path_len`"), "{e}");
        let e = err_of(&INTERMEDIATE.replace("http://crl.", "https://crl."));
        assert!(e.contains("field `crl_distribution_points[0]`"), "{e}");
        let e = err_of(&CONSTRAINED.replace("10.0.0.0/8", "10.0.0.1/8"));
        assert!(e.contains("name_constraints.permitted_ip[0]") && e.contains("host bits"), "{e}");
        let e = err_of(&ROOT.replace("[subject]", "extended_key_usage = [\"server-auth\"]\n[subject]"));
        assert!(e.contains("field `extended_key_usage`"), "{e}");
        let e = err_of(&ROOT.replace("\"rsa-3072\"", "\"rsa-2048\""));
        assert!(e.contains("allowed_key_algorithms"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h"), Ok(Duration::hours(24)));
        assert_eq!(parse_duration("90d"), Ok(Duration::days(90)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("0d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn subject_key_policy_checks_keys() {
        use crate::hsm::{soft::SoftKey, KeyAlgorithm, Signer};
        let policy = SubjectKeyPolicy { allowed: vec![SubjectKeyType::EcdsaP256, SubjectKeyType::Rsa3072] };
        let ec = SoftKey::generate("t", KeyAlgorithm::EcdsaP256).expect("key");
        assert_eq!(policy.check(ec.spki_der()), Ok(KeyFamily::Ec(SubjectKeyType::EcdsaP256)));
        let p384 = SoftKey::generate("t", KeyAlgorithm::EcdsaP384).expect("key");
        assert!(policy.check(p384.spki_der()).is_err_and(|e| e.contains("ecdsa-p384")));
        // A point off the curve: flip a bit of the y coordinate.
        let mut bad = ec.spki_der().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(policy.check(&bad).is_err_and(|e| e.contains("not on the curve")));
        assert!(policy.check(b"\x30\x00").is_err());
    }
}
