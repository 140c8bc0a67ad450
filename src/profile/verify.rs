//! Taking certificates apart again: after signing, for witnesses, for lint.

use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Reader, SliceReader};
use time::OffsetDateTime;
use x509_cert::Certificate;

use super::ProfileError;
use crate::hsm::{self, SignatureAlgorithm};
use crate::words::Fingerprint;

/// The DER AlgorithmIdentifier each signature scheme is written with.
///
/// ECDSA has no parameters (RFC 5758 §3.2), PKCS#1 v1.5 has NULL (RFC 4055
/// §5), and PSS carries explicit RSASSA-PSS-params: the hash, MGF1 with the
/// same hash, and a salt as long as the hash (RFC 4055 §3.1; what aws-lc
/// signs and verifies, and what the CA/B BR §7.1.3.2.1 lists byte for byte).
pub(crate) fn algorithm_identifier(alg: SignatureAlgorithm) -> &'static [u8] {
    match alg {
        SignatureAlgorithm::EcdsaSha256 => b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x02",
        SignatureAlgorithm::EcdsaSha384 => b"\x30\x0a\x06\x08\x2a\x86\x48\xce\x3d\x04\x03\x03",
        SignatureAlgorithm::RsaPkcs1Sha256 => b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b\x05\x00",
        SignatureAlgorithm::RsaPkcs1Sha384 => b"\x30\x0d\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0c\x05\x00",
        SignatureAlgorithm::RsaPssSha256 => {
            b"\x30\x41\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a\x30\x34\xa0\x0f\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\xa1\x1c\x30\x1a\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\xa2\x03\x02\x01\x20"
        }
        SignatureAlgorithm::RsaPssSha384 => {
            b"\x30\x41\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a\x30\x34\xa0\x0f\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x02\x05\x00\xa1\x1c\x30\x1a\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x02\x05\x00\xa2\x03\x02\x01\x30"
        }
    }
}

/// The raw pieces of a certificate, as they appear in its DER.
pub(crate) struct RawParts {
    /// The TBSCertificate TLV, exactly the bytes the signature covers.
    pub tbs: Vec<u8>,
    /// The outer signatureAlgorithm TLV.
    pub signature_algorithm: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Splits a certificate without interpreting the TBS, so the bytes compared
/// and verified are the ones on the wire, not a re-encoding.
pub(crate) fn split(der: &[u8]) -> Result<RawParts, ProfileError> {
    let bad = |e: der::Error| ProfileError::Parse(format!("not a DER certificate: {e}"));
    let mut reader = SliceReader::new(der).map_err(bad)?;
    let parts = reader
        .sequence(|seq| {
            let tbs = AnyRef::decode(seq)?;
            let alg = AnyRef::decode(seq)?;
            let sig = BitStringRef::decode(seq)?;
            Ok(RawParts {
                tbs: tbs.to_der()?,
                signature_algorithm: alg.to_der()?,
                signature: sig.as_bytes().ok_or_else(|| der::Tag::BitString.value_error())?.to_vec(),
            })
        })
        .map_err(bad)?;
    reader.finish().map_err(bad)?;
    Ok(parts)
}

/// Writes DER `SEQUENCE { parts... }` from already-encoded TLVs.
pub(crate) fn sequence_of(parts: &[&[u8]]) -> Result<Vec<u8>, ProfileError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let bad = |e: der::Error| ProfileError::Build(format!("DER encoding: {e}"));
    let header = der::Header::new(der::Tag::Sequence, der::Length::try_from(len).map_err(bad)?);
    let mut out = header.to_der().map_err(bad)?;
    for p in parts {
        out.extend_from_slice(p);
    }
    Ok(out)
}

pub(crate) fn parse(der: &[u8]) -> Result<Certificate, ProfileError> {
    Certificate::from_der(der).map_err(|e| ProfileError::Parse(e.to_string()))
}

/// The post-signing checks of step (e) of [`super::issue`].
pub(crate) fn check_signed(
    der: &[u8],
    linted_tbs: &[u8],
    issuer_spki: &[u8],
    alg: SignatureAlgorithm,
) -> Result<(), ProfileError> {
    let fail = |check, problem: String| ProfileError::Verify { check, problem };
    let parts = split(der).map_err(|e| fail("parse", e.to_string()))?;
    let cert = parse(der).map_err(|e| fail("parse", e.to_string()))?;
    if parts.tbs != linted_tbs {
        return Err(fail("tbs-identical", "the signed TBSCertificate differs from the one that was linted".into()));
    }
    let inner = cert.tbs_certificate().signature().to_der().map_err(|e| fail("parse", e.to_string()))?;
    let expected = algorithm_identifier(alg);
    if parts.signature_algorithm != expected || inner != expected {
        return Err(fail(
            "signature-algorithm",
            format!("the certificate's signature algorithm identifiers do not both say {alg}"),
        ));
    }
    hsm::verify_signature(issuer_spki, alg, &parts.tbs, &parts.signature)
        .map_err(|e| fail("signature", format!("{e}; the signer returned a bad signature")))?;
    Ok(())
}

/// What a ceremony shows witnesses about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// RFC 4514 string.
    pub subject: String,
    pub issuer: String,
    /// Lower-case hex of the serial's content octets.
    pub serial_hex: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SHA-256 of the DER SubjectPublicKeyInfo (what a key ceremony recorded).
    pub spki_sha256: Fingerprint,
    /// SHA-256 of the certificate DER.
    pub fingerprint: Fingerprint,
}

/// An RFC 4514 string for a certificate name (most specific attribute first).
pub fn dn_to_string(name: &x509_cert::name::Name) -> String {
    name.to_string()
}

/// Summarises a DER certificate for the witnesses' screen and the paper log.
pub fn certificate_summary(der: &[u8]) -> Result<CertSummary, ProfileError> {
    let cert = parse(der)?;
    let tbs = cert.tbs_certificate();
    let time = |t: &x509_cert::time::Time| {
        let secs = i64::try_from(t.to_unix_duration().as_secs())
            .map_err(|_| ProfileError::Parse("validity date out of range".into()))?;
        OffsetDateTime::from_unix_timestamp(secs).map_err(|e| ProfileError::Parse(format!("validity date: {e}")))
    };
    let spki = tbs.subject_public_key_info().to_der().map_err(|e| ProfileError::Parse(e.to_string()))?;
    Ok(CertSummary {
        subject: dn_to_string(tbs.subject()),
        issuer: dn_to_string(tbs.issuer()),
        serial_hex: hex::encode(tbs.serial_number().as_bytes()),
        not_before: time(&tbs.validity().not_before)?,
        not_after: time(&tbs.validity().not_after)?,
        spki_sha256: Fingerprint::sha256(&spki),
        fingerprint: Fingerprint::sha256(der),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_identifiers_decode_with_the_right_oids() {
        use spki::AlgorithmIdentifierOwned;
        use SignatureAlgorithm::*;
        for (alg, oid) in [
            (EcdsaSha256, "1.2.840.10045.4.3.2"),
            (EcdsaSha384, "1.2.840.10045.4.3.3"),
            (RsaPkcs1Sha256, "1.2.840.113549.1.1.11"),
            (RsaPkcs1Sha384, "1.2.840.113549.1.1.12"),
            (RsaPssSha256, "1.2.840.113549.1.1.10"),
            (RsaPssSha384, "1.2.840.113549.1.1.10"),
        ] {
            let id = AlgorithmIdentifierOwned::from_der(algorithm_identifier(alg)).expect("decodes");
            assert_eq!(id.oid.to_string(), oid, "{alg}");
            assert_eq!(id.to_der().expect("encodes"), algorithm_identifier(alg), "{alg} is DER");
        }
    }

    #[test]
    fn split_refuses_trailing_bytes() {
        assert!(split(b"\x30\x00").is_err());
        assert!(split(b"").is_err());
    }
}
