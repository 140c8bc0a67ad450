//! Certificate revocation lists: build, lint, sign, verify.
//!
//! The TBSCertList is written straight into its final buffer by a two-pass
//! encoder: the first pass over the entries checks each one and adds up the
//! lengths, so every DER length is known before a byte is written; the
//! second pass writes the entries. No entry becomes a heap object, which is
//! what lets a million-entry CRL build in a fraction of a second and in
//! little more memory than its own DER and PEM. (rcgen's CRL builder wants a
//! `Vec` of owned entry structs and encodes through nested buffers; at a
//! million entries that costs several times the output size.)
//!
//! The steps mirror [`crate::profile::issue`]: check the signer against the
//! issuer certificate, encode, sign the TBS once with a throwaway key and
//! lint that CRL (re-parsing every field with x509-cert), sign the identical
//! TBS with the real key, then split the result again and require that its
//! TBS is the linted one and that the signature verifies under the issuer's
//! public key.

use const_oid::db::rfc5280::{
    ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_NUMBER, ID_CE_CRL_REASONS, ID_CE_ISSUING_DISTRIBUTION_POINT,
};
use der::asn1::{AnyRef, BitStringRef, Ia5String, IntRef, OctetString};
use der::{Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use time::OffsetDateTime;
use x509_cert::ext::pkix::crl::dp::IssuingDistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::time::Time;

use super::{CaError, RevocationReason};
use crate::hsm::soft::SoftKey;
use crate::hsm::{self, SignatureAlgorithm, Signer};
use crate::words::{self, Fingerprint};

/// What goes into one CRL.
///
/// `revoked` yields `(serial, revocation time, reason)`, the serial as the
/// unsigned big-endian value (what `hex::decode` of an index serial gives;
/// a leading zero octet is accepted and ignored). The iterator is walked
/// twice, once to size and once to write, hence `Clone`.
#[derive(Debug, Clone)]
pub struct CrlParams<'a, I> {
    pub issuer_cert_der: &'a [u8],
    pub crl_number: u64,
    /// The last CRL number this issuer used, if any; the new one must be
    /// larger (RFC 5280 §5.2.3).
    pub previous_crl_number: Option<u64>,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    pub revoked: I,
    /// An http URI written as the critical issuingDistributionPoint's full
    /// name; it must equal the cRLDistributionPoints URI in the certificates
    /// the CRL covers, or relying parties treat the CRL as out of scope.
    pub issuing_distribution_point: Option<String>,
}

/// A signed, linted and verified CRL.
#[derive(Debug, Clone)]
pub struct SignedCrl {
    pub der: Vec<u8>,
    pub pem: String,
    /// SHA-256 of the DER.
    pub fingerprint: Fingerprint,
    pub crl_number: u64,
    pub entries: usize,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
}

/// Builds and signs a CRL; see the module documentation.
pub fn build_crl<'a, I>(params: CrlParams<'_, I>, signer: &dyn Signer) -> Result<SignedCrl, CaError>
where
    I: IntoIterator<Item = (&'a [u8], OffsetDateTime, RevocationReason)>,
    I::IntoIter: Clone,
{
    let issuer = Issuer::from_der(params.issuer_cert_der)?;
    if signer.spki_der() != issuer.spki.as_slice() {
        return Err(CaError::WrongSigner {
            signer: signer.describe(),
            problem: "its public key is not the issuer certificate's public key; load the CA key that matches the root certificate".into(),
        });
    }
    let alg = signer.signature_algorithm();
    let alg_id = crate::profile::algorithm_identifier(alg);
    let this_update = whole_seconds(params.this_update);
    let next_update = whole_seconds(params.next_update);
    if this_update >= next_update {
        return Err(CaError::CrlRequest(format!(
            "thisUpdate {this_update} is not before nextUpdate {next_update}; choose a later nextUpdate"
        )));
    }
    if let Some(prev) = params.previous_crl_number {
        if params.crl_number <= prev {
            return Err(CaError::CrlRequest(format!(
                "CRL number {} is not larger than the previous CRL's {prev}; CRL numbers only ever grow",
                params.crl_number
            )));
        }
    }

    // Everything except the entries, as finished TLVs.
    let version: &[u8] = b"\x02\x01\x01";
    let this_tlv = time_tlv(this_update)?;
    let next_tlv = time_tlv(next_update)?;
    let exts = crl_extensions(&issuer.ski, params.crl_number, params.issuing_distribution_point.as_deref())?;

    // Pass 1: check each entry and add up the lengths.
    let entries = params.revoked.into_iter();
    let mut count = 0usize;
    let mut entries_len = 0usize;
    for (serial, time, reason) in entries.clone() {
        let magnitude = serial_magnitude(serial).map_err(|p| CaError::CrlRequest(format!("entry {count}: {p}")))?;
        reason_allowed_on_crl(reason).map_err(|p| CaError::CrlRequest(format!("entry {count}: {p}")))?;
        let body = entry_body_len(magnitude, time_len(time)?, reason);
        entries_len += tlv_len(body);
        count += 1;
    }
    let revoked_tlv_len = if count == 0 { 0 } else { tlv_len(entries_len) };
    let tbs_body = version.len()
        + alg_id.len()
        + issuer.name.len()
        + this_tlv.len()
        + next_tlv.len()
        + revoked_tlv_len
        + exts.len();
    let tbs_len = tlv_len(tbs_body);

    // The outer header is written last, in front; its length depends on the
    // signature's, so the TBS starts after room for the longest header.
    const ROOM: usize = 6;
    let mut out = Vec::with_capacity(ROOM + tbs_len + alg_id.len() + 16 + 1024);
    out.resize(ROOM, 0);
    write_header(&mut out, 0x30, tbs_body);
    out.extend_from_slice(version);
    out.extend_from_slice(alg_id);
    out.extend_from_slice(&issuer.name);
    out.extend_from_slice(&this_tlv);
    out.extend_from_slice(&next_tlv);
    if count > 0 {
        write_header(&mut out, 0x30, entries_len);
        // Pass 2: write the entries.
        for (serial, time, reason) in entries {
            let magnitude = serial_magnitude(serial).map_err(|p| CaError::CrlRequest(p.to_string()))?;
            let body = entry_body_len(magnitude, time_len(time)?, reason);
            write_header(&mut out, 0x30, body);
            write_serial(&mut out, magnitude);
            write_time(&mut out, whole_seconds(time))?;
            if let Some(code) = reason_code(reason) {
                out.extend_from_slice(&[
                    0x30, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d, 0x15, 0x04, 0x03, 0x0a, 0x01, code,
                ]);
            }
        }
    }
    out.extend_from_slice(&exts);
    if out.len() != ROOM + tbs_len {
        return Err(CaError::CrlBuild(format!(
            "the encoder wrote {} TBS bytes but computed {tbs_len}; this is a keyrite bug",
            out.len() - ROOM
        )));
    }
    let tbs_range = ROOM..ROOM + tbs_len;

    // Lint a throwaway-key CRL over the very same TBS bytes.
    let throwaway = SoftKey::generate("keyrite-crl-lint-throwaway", signer.key_algorithm())
        .and_then(|k| k.with_signature(alg))
        .map_err(|source| CaError::Signer { signer: "throwaway lint key".into(), source: Box::new(source) })?;
    let lint_sig = throwaway
        .sign(&out[tbs_range.clone()])
        .map_err(|source| CaError::Signer { signer: throwaway.describe(), source: Box::new(source) })?;
    hsm::verify_signature(throwaway.spki_der(), alg, &out[tbs_range.clone()], &lint_sig)
        .map_err(|e| CaError::CrlBuild(format!("the throwaway lint signature does not verify: {e}")))?;
    let expect = Expected {
        alg_id,
        issuer_name: &issuer.name,
        ski: &issuer.ski,
        crl_number: params.crl_number,
        previous: params.previous_crl_number,
        idp: params.issuing_distribution_point.as_deref(),
        this_update,
        next_update,
        count,
    };
    let findings = lint_tbs(&out[tbs_range.clone()], &expect)?;
    if !findings.is_empty() {
        return Err(CaError::Lint { crl_number: params.crl_number, findings });
    }
    let linted_tbs_sha256 = words::sha256(&out[tbs_range.clone()]);

    // The real signature, over the bytes that were linted.
    let sig = signer
        .sign(&out[tbs_range.clone()])
        .map_err(|source| CaError::Signer { signer: signer.describe(), source: Box::new(source) })?;
    out.extend_from_slice(alg_id);
    write_header(&mut out, 0x03, sig.len() + 1);
    out.push(0);
    out.extend_from_slice(&sig);
    let outer_body = out.len() - ROOM;
    let mut header = Vec::with_capacity(ROOM);
    write_header(&mut header, 0x30, outer_body);
    let start = ROOM - header.len();
    out[start..ROOM].copy_from_slice(&header);
    out.drain(..start);
    let der = out;

    verify_signed(&der, &linted_tbs_sha256, &issuer.spki, alg, alg_id)?;

    let pem = pem_rfc7468::encode_string("X509 CRL", pem_rfc7468::LineEnding::LF, &der)
        .map_err(|e| CaError::CrlBuild(format!("PEM encoding: {e}")))?;
    Ok(SignedCrl {
        fingerprint: Fingerprint::sha256(&der),
        der,
        pem,
        crl_number: params.crl_number,
        entries: count,
        this_update,
        next_update,
    })
}

/// What the issuer certificate contributes to its CRLs.
struct Issuer {
    /// The subject Name TLV, byte for byte: the CRL's issuer.
    name: Vec<u8>,
    spki: Vec<u8>,
    ski: Vec<u8>,
}

impl Issuer {
    fn from_der(der: &[u8]) -> Result<Issuer, CaError> {
        let refuse = |p: String| CaError::Issuer(p);
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| refuse(format!("does not parse: {e}")))?;
        let tbs = cert.tbs_certificate();
        let bc = tbs.get_extension::<BasicConstraints>().map_err(|e| refuse(format!("basicConstraints: {e}")))?;
        if !bc.is_some_and(|(_, bc)| bc.ca) {
            return Err(refuse("it is not a CA certificate (basicConstraints cA is not TRUE)".into()));
        }
        let ku = tbs.get_extension::<KeyUsage>().map_err(|e| refuse(format!("keyUsage: {e}")))?;
        if !ku.is_some_and(|(_, ku)| ku.crl_sign()) {
            return Err(refuse("its keyUsage does not allow cRLSign (RFC 5280 §4.2.1.3)".into()));
        }
        let ski = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .map_err(|e| refuse(format!("subjectKeyIdentifier: {e}")))?
            .ok_or_else(|| refuse("it has no subjectKeyIdentifier for the CRL's authorityKeyIdentifier".into()))?
            .1
             .0
            .as_bytes()
            .to_vec();
        let enc = |e: der::Error| refuse(e.to_string());
        Ok(Issuer {
            name: tbs.subject().to_der().map_err(enc)?,
            spki: tbs.subject_public_key_info().to_der().map_err(enc)?,
            ski,
        })
    }
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t)
}

/// The value without leading zero octets; refuses zero and anything that
/// needs more than 20 content octets as a positive INTEGER (RFC 5280
/// §4.1.2.2).
fn serial_magnitude(serial: &[u8]) -> Result<&[u8], &'static str> {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    let m = &serial[start..];
    if m.is_empty() {
        return Err("serial number zero is not a valid certificate serial (RFC 5280 §4.1.2.2)");
    }
    if m.len() + usize::from(m[0] >= 0x80) > 20 {
        return Err("serial number is longer than the 20 octets RFC 5280 §4.1.2.2 allows");
    }
    Ok(m)
}

fn serial_content_len(m: &[u8]) -> usize {
    m.len() + usize::from(m[0] >= 0x80)
}

fn write_serial(out: &mut Vec<u8>, m: &[u8]) {
    let pad = m[0] >= 0x80;
    out.push(0x02);
    out.push((m.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(m);
}

fn entry_body_len(magnitude: &[u8], time_len: usize, reason: RevocationReason) -> usize {
    2 + serial_content_len(magnitude) + time_len + if reason_code(reason).is_some() { 14 } else { 0 }
}

/// The reasonCode to write; `unspecified` is expressed by leaving the
/// extension out (RFC 5280 §5.3.1 recommends it, BR §7.2.2 requires it).
fn reason_code(reason: RevocationReason) -> Option<u8> {
    match reason {
        RevocationReason::Unspecified => None,
        r => Some(r.code()),
    }
}

fn reason_allowed_on_crl(reason: RevocationReason) -> Result<(), &'static str> {
    match reason {
        RevocationReason::RemoveFromCrl => {
            Err("removeFromCRL only appears on delta CRLs (RFC 5280 §5.3.1); keyrite never writes it")
        }
        _ => Ok(()),
    }
}

/// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §5.1.2.4).
fn uses_utc_time(t: OffsetDateTime) -> bool {
    (1950..2050).contains(&t.year())
}

fn time_len(t: OffsetDateTime) -> Result<usize, CaError> {
    let t = whole_seconds(t);
    if !(0..=9999).contains(&t.year()) {
        return Err(CaError::CrlRequest(format!("{t} cannot be written as an X.509 time")));
    }
    Ok(if uses_utc_time(t) { 15 } else { 17 })
}

fn write_time(out: &mut Vec<u8>, t: OffsetDateTime) -> Result<(), CaError> {
    let t = whole_seconds(t);
    if !(0..=9999).contains(&t.year()) {
        return Err(CaError::CrlRequest(format!("{t} cannot be written as an X.509 time")));
    }
    let two = |out: &mut Vec<u8>, v: u32| {
        out.push(b'0' + (v / 10 % 10) as u8);
        out.push(b'0' + (v % 10) as u8);
    };
    let year = t.year() as u32;
    if uses_utc_time(t) {
        out.extend_from_slice(&[0x17, 13]);
    } else {
        out.extend_from_slice(&[0x18, 15]);
        two(out, year / 100);
    }
    two(out, year % 100);
    two(out, u32::from(u8::from(t.month())));
    two(out, u32::from(t.day()));
    two(out, u32::from(t.hour()));
    two(out, u32::from(t.minute()));
    two(out, u32::from(t.second()));
    out.push(b'Z');
    Ok(())
}

fn time_tlv(t: OffsetDateTime) -> Result<Vec<u8>, CaError> {
    let mut out = Vec::with_capacity(17);
    write_time(&mut out, t)?;
    Ok(out)
}

/// Length of a TLV whose value is `body` bytes (single-byte tag).
fn tlv_len(body: usize) -> usize {
    1 + length_octets(body) + body
}

fn length_octets(len: usize) -> usize {
    match len {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xff_ffff => 4,
        _ => 5,
    }
}

fn write_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    let n = length_octets(len);
    if n == 1 {
        out.push(len as u8);
        return;
    }
    out.push(0x80 | (n - 1) as u8);
    for i in (0..n - 1).rev() {
        out.push((len >> (8 * i)) as u8);
    }
}

/// `[0] EXPLICIT Extensions`: authorityKeyIdentifier, cRLNumber and, if
/// asked for, a critical issuingDistributionPoint.
fn crl_extensions(ski: &[u8], number: u64, idp: Option<&str>) -> Result<Vec<u8>, CaError> {
    let enc = |e: der::Error| CaError::CrlBuild(format!("encoding CRL extensions: {e}"));
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(ski).map_err(enc)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    let mut exts = vec![
        Extension {
            extn_id: ID_CE_AUTHORITY_KEY_IDENTIFIER,
            critical: false,
            extn_value: OctetString::new(aki.to_der().map_err(enc)?).map_err(enc)?,
        },
        Extension {
            extn_id: ID_CE_CRL_NUMBER,
            critical: false,
            extn_value: OctetString::new(number.to_der().map_err(enc)?).map_err(enc)?,
        },
    ];
    if let Some(uri) = idp {
        crate::profile::check_http_uri(uri)
            .map_err(|p| CaError::CrlRequest(format!("issuing_distribution_point: {p}")))?;
        let value = IssuingDistributionPoint {
            distribution_point: Some(DistributionPointName::FullName(vec![GeneralName::UniformResourceIdentifier(
                Ia5String::new(uri).map_err(enc)?,
            )])),
            only_contains_user_certs: false,
            only_contains_ca_certs: false,
            only_some_reasons: None,
            indirect_crl: false,
            only_contains_attribute_certs: false,
        };
        exts.push(Extension {
            extn_id: ID_CE_ISSUING_DISTRIBUTION_POINT,
            critical: true,
            extn_value: OctetString::new(value.to_der().map_err(enc)?).map_err(enc)?,
        });
    }
    let seq = exts.to_der().map_err(enc)?;
    let mut out = Vec::with_capacity(seq.len() + 4);
    write_header(&mut out, 0xa0, seq.len());
    out.extend_from_slice(&seq);
    Ok(out)
}

/// What the lint compares the encoded TBS with.
struct Expected<'a> {
    alg_id: &'a [u8],
    issuer_name: &'a [u8],
    ski: &'a [u8],
    crl_number: u64,
    previous: Option<u64>,
    idp: Option<&'a str>,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    count: usize,
}

/// Re-parses the TBSCertList field by field with x509-cert types, entry by
/// entry so memory stays flat, and returns every rule it breaks.
fn lint_tbs(tbs: &[u8], exp: &Expected<'_>) -> Result<Vec<String>, CaError> {
    let mut findings = Vec::new();
    let mut keys: Vec<[u8; 20]> = Vec::with_capacity(exp.count);
    let parse_err = |e: der::Error| CaError::Lint {
        crl_number: exp.crl_number,
        findings: vec![format!("the TBSCertList does not parse: {e}")],
    };
    let mut reader = SliceReader::new(tbs).map_err(parse_err)?;
    let f = &mut findings;
    let k = &mut keys;
    reader
        .sequence(|t| {
            let version = x509_cert::Version::decode(t)?;
            if version != x509_cert::Version::V2 {
                f.push("crl-version: version is not v2 (RFC 5280 §5.1.2.1)".into());
            }
            if t.tlv_bytes()? != exp.alg_id {
                f.push("crl-signature-algorithm: the TBS signature algorithm is not the signer's".into());
            }
            let issuer = t.tlv_bytes()?;
            x509_cert::name::Name::from_der(issuer)?;
            if issuer != exp.issuer_name {
                f.push("crl-issuer: the issuer is not byte-identical to the issuer certificate's subject".into());
            }
            let this_update = Time::decode(t)?;
            let next_update: Option<Time> = Option::decode(t)?;
            let this_secs = this_update.to_unix_duration().as_secs();
            match next_update {
                None => f.push("crl-next-update: nextUpdate is missing (RFC 5280 §5.1.2.5 requires it)".into()),
                Some(n) if n.to_unix_duration().as_secs() <= this_secs => {
                    f.push("crl-validity: thisUpdate is not before nextUpdate".into())
                }
                Some(_) => {}
            }
            for (time, wanted) in [(Some(this_update), exp.this_update), (next_update, exp.next_update)] {
                if let Some(time) = time {
                    if !matches!(time, Time::UtcTime(_)) == uses_utc_time(wanted) {
                        f.push("crl-time-encoding: a date is not UTCTime before 2050 / GeneralizedTime after (RFC 5280 §5.1.2.4)".into());
                    }
                }
            }
            let mut seen = 0usize;
            if !t.is_finished() && Tag::peek(t)? == Tag::Sequence {
                t.sequence(|list| {
                    while !list.is_finished() {
                        let index = seen;
                        seen += 1;
                        list.sequence(|e| {
                            let serial = IntRef::decode(e)?;
                            let bytes = serial.as_bytes();
                            let positive = bytes.first().is_some_and(|b| *b < 0x80);
                            let magnitude = bytes.iter().position(|b| *b != 0).map_or(&[][..], |i| &bytes[i..]);
                            if !positive || magnitude.is_empty() {
                                f.push(format!("crl-entry-serial: entry {index}: the serial is not a positive integer"));
                            } else if bytes.len() > 20 {
                                f.push(format!("crl-entry-serial: entry {index}: the serial is longer than 20 octets"));
                            } else {
                                let mut key = [0u8; 20];
                                key[20 - magnitude.len()..].copy_from_slice(magnitude);
                                k.push(key);
                            }
                            let date = Time::decode(e)?;
                            if date.to_unix_duration().as_secs() > this_secs {
                                f.push(format!("crl-entry-date: entry {index}: the revocation date is after thisUpdate"));
                            }
                            if !matches!(date, Time::UtcTime(_)) == (date.to_unix_duration().as_secs() < 2_524_608_000) {
                                f.push(format!("crl-time-encoding: entry {index}: revocation date encoding"));
                            }
                            let exts: Option<Vec<Extension>> = Option::decode(e)?;
                            for ext in exts.iter().flatten() {
                                if ext.extn_id != ID_CE_CRL_REASONS || ext.critical {
                                    f.push(format!("crl-entry-extension: entry {index}: unexpected extension {}", ext.extn_id));
                                    continue;
                                }
                                let code = AnyRef::from_der(ext.extn_value.as_bytes()).ok().and_then(|a| {
                                    (a.tag() == Tag::Enumerated && a.value().len() == 1).then(|| a.value()[0])
                                });
                                match code.and_then(RevocationReason::from_code) {
                                    Some(RevocationReason::Unspecified) => f.push(format!(
                                        "crl-entry-reason: entry {index}: unspecified must be written by omitting reasonCode"
                                    )),
                                    Some(RevocationReason::RemoveFromCrl) => {
                                        f.push(format!("crl-entry-reason: entry {index}: removeFromCRL on a full CRL"))
                                    }
                                    Some(_) => {}
                                    None => f.push(format!("crl-entry-reason: entry {index}: not a valid CRLReason")),
                                }
                            }
                            Ok::<_, der::Error>(())
                        })?;
                    }
                    Ok::<_, der::Error>(())
                })?;
                if seen == 0 {
                    f.push("crl-empty-list: revokedCertificates is present but empty (RFC 5280 §5.1.2.6: omit it)".into());
                }
            }
            if seen != exp.count {
                f.push(format!("crl-entry-count: {seen} entries encoded, {} requested", exp.count));
            }
            let exts = AnyRef::decode(t)?;
            if exts.tag() != (Tag::ContextSpecific { constructed: true, number: TagNumber(0) }) {
                f.push("crl-extensions: crlExtensions are missing".into());
                return Ok(());
            }
            let exts: Vec<Extension> = Vec::from_der(exts.value())?;
            lint_crl_extensions(&exts, exp, f);
            Ok::<_, der::Error>(())
        })
        .map_err(parse_err)?;
    reader.finish().map_err(parse_err)?;
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        let hexed = hex::encode(w[0]);
        findings.push(format!("crl-entry-unique: serial {} is listed twice", hexed.trim_start_matches('0')));
    }
    Ok(findings)
}

fn lint_crl_extensions(exts: &[Extension], exp: &Expected<'_>, f: &mut Vec<String>) {
    let mut seen = Vec::new();
    for ext in exts {
        if seen.contains(&ext.extn_id) {
            f.push(format!("crl-extension-unique: {} appears twice", ext.extn_id));
        }
        seen.push(ext.extn_id);
    }
    let find = |oid| exts.iter().find(|e| e.extn_id == oid);
    match find(ID_CE_AUTHORITY_KEY_IDENTIFIER).map(|e| AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes())) {
        Some(Ok(aki)) if aki.key_identifier.as_ref().map(OctetString::as_bytes) == Some(exp.ski) => {}
        Some(_) => f.push("crl-aki: authorityKeyIdentifier is not the issuer's subjectKeyIdentifier".into()),
        None => f.push("crl-aki: authorityKeyIdentifier is missing (RFC 5280 §5.2.1)".into()),
    }
    match find(ID_CE_CRL_NUMBER).map(|e| (e.critical, IntRef::from_der(e.extn_value.as_bytes()))) {
        Some((false, Ok(n))) => {
            let bytes = n.as_bytes();
            let value = (bytes.len() <= 9 && bytes.first().is_some_and(|b| *b < 0x80))
                .then(|| bytes.iter().fold(0u128, |acc, b| acc << 8 | u128::from(*b)));
            if bytes.len() > 20 {
                f.push("crl-number: longer than 20 octets (RFC 5280 §5.2.3)".into());
            }
            if value != Some(u128::from(exp.crl_number)) {
                f.push(format!("crl-number: encoded number is not {}", exp.crl_number));
            }
            if let Some(prev) = exp.previous {
                if exp.crl_number <= prev {
                    f.push(format!("crl-number: {} is not larger than the previous {prev}", exp.crl_number));
                }
            }
        }
        Some(_) => f.push("crl-number: cRLNumber is critical or not an INTEGER".into()),
        None => f.push("crl-number: cRLNumber is missing (RFC 5280 §5.2.3)".into()),
    }
    let idp = find(ID_CE_ISSUING_DISTRIBUTION_POINT);
    match (idp, exp.idp) {
        (None, None) => {}
        (Some(e), Some(_)) if e.critical && IssuingDistributionPoint::from_der(e.extn_value.as_bytes()).is_ok() => {}
        _ => f.push("crl-idp: issuingDistributionPoint is not the critical extension requested".into()),
    }
    for ext in exts {
        if ![ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_CRL_NUMBER, ID_CE_ISSUING_DISTRIBUTION_POINT].contains(&ext.extn_id)
        {
            f.push(format!("crl-extension: unexpected extension {}", ext.extn_id));
        }
    }
}

/// Splits the signed CRL again and checks it is what was linted and that
/// the signature verifies under the issuer's key.
fn verify_signed(
    der: &[u8],
    linted_tbs_sha256: &[u8; 32],
    issuer_spki: &[u8],
    alg: SignatureAlgorithm,
    alg_id: &[u8],
) -> Result<(), CaError> {
    let fail = |check: &'static str, problem: String| CaError::Verify { check, problem };
    let mut reader = SliceReader::new(der).map_err(|e| fail("parse", e.to_string()))?;
    let (tbs, outer_alg, sig) = reader
        .sequence(|seq| {
            let tbs = seq.tlv_bytes()?;
            let alg = seq.tlv_bytes()?;
            let sig = BitStringRef::decode(seq)?;
            Ok::<_, der::Error>((tbs, alg, sig.as_bytes().ok_or_else(|| Tag::BitString.value_error())?))
        })
        .map_err(|e| fail("parse", e.to_string()))?;
    reader.finish().map_err(|e| fail("parse", e.to_string()))?;
    if words::sha256(tbs) != *linted_tbs_sha256 {
        return Err(fail("tbs-identical", "the signed TBSCertList differs from the one that was linted".into()));
    }
    if outer_alg != alg_id {
        return Err(fail("signature-algorithm", format!("the outer signature algorithm is not {alg}")));
    }
    hsm::verify_signature(issuer_spki, alg, tbs, sig)
        .map_err(|e| fail("signature", format!("{e}; the signer returned a bad signature")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_match_der() {
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536, 16_777_215, 16_777_216] {
            let mut out = Vec::new();
            write_header(&mut out, 0x30, len);
            let expected =
                der::Header::new(Tag::Sequence, der::Length::try_from(len).expect("len")).to_der().expect("header");
            assert_eq!(out, expected, "{len}");
            assert_eq!(tlv_len(len), out.len() + len);
        }
    }

    #[test]
    fn times_switch_encoding_in_2050() {
        let t = time::macros::datetime!(2049-12-31 23:59:59 UTC);
        assert_eq!(time_tlv(t).expect("t"), b"\x17\x0d491231235959Z");
        let t = time::macros::datetime!(2050-01-01 00:00:00 UTC);
        assert_eq!(time_tlv(t).expect("t"), b"\x18\x0f20500101000000Z");
    }

    #[test]
    fn serials_are_positive_and_short() {
        assert_eq!(serial_magnitude(&[0, 0x80]), Ok(&[0x80][..]));
        assert!(serial_magnitude(&[0, 0]).is_err());
        assert!(serial_magnitude(&[0x80; 20]).is_err(), "needs a 21st pad octet");
        assert!(serial_magnitude(&[0x7f; 20]).is_ok());
        let mut out = Vec::new();
        write_serial(&mut out, &[0x80, 1]);
        assert_eq!(out, [2, 3, 0, 0x80, 1]);
    }
}
