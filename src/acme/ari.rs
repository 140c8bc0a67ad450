//! ACME Renewal Information (RFC 9773): certificate identifiers and the
//! suggested renewal window.
//!
//! The window is computed, never stored: it follows from the certificate,
//! its revocation state, the current issuer and the configured fraction, so
//! changing `--ari-window-start` or the intermediate takes effect for every
//! certificate on the next poll.
//!
//! ## The spread
//!
//! For a certificate valid from `nb` for `L` seconds and a start fraction
//! `f` (2/3 by default), the nominal window is `[nb + f·L, nb + e·L)` with
//! `e = f + (1 − f)/2` (5/6 for the default). That nominal window, `W`
//! wide, is not handed out whole: each certificate gets a sub-window
//! `W/2` wide, shifted from the nominal start by an offset in `[0, W/2)`
//! taken from SHA-256 of its serial. Serials are random, so the offsets are
//! uniform; for 24 h certificates (`W` = 4 h) 50,000 servers issued in the
//! same minute are told to start renewing spread over two hours, before
//! each client adds its own random pick inside its window (RFC 9773 §4.2).
//! The offset is a pure function of the serial, so every poll and every
//! instance sharing a store answers the same window.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use der::Decode;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

/// How long a client should wait before asking again (Boulder's 6 hours).
pub const RETRY_AFTER_SECS: u32 = 6 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AriError {
    /// The certID is not two unpadded base64url parts joined by a dot.
    #[error("certID is not base64url(keyIdentifier) \".\" base64url(serial)")]
    BadCertId,
    /// A certificate's DER does not parse; the text is the parser's.
    #[error("the certificate does not parse: {0}")]
    Certificate(String),
    /// A leaf without an authorityKeyIdentifier cannot have a certID.
    #[error("the certificate has no authorityKeyIdentifier keyIdentifier")]
    NoAki,
    /// The intermediate names no subjectKeyIdentifier.
    #[error("the issuer certificate has no subjectKeyIdentifier")]
    NoSki,
}

/// An RFC 9773 §4.1 certificate identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    pub key_id: Vec<u8>,
    /// The serial's DER INTEGER value bytes (a leading zero included).
    pub serial: Vec<u8>,
}

impl CertId {
    pub fn parse(s: &str) -> Result<CertId, AriError> {
        let (aki, serial) = s.split_once('.').ok_or(AriError::BadCertId)?;
        // Unpadded base64url only (RFC 9773 §4.1); padding or the standard
        // alphabet would let one certificate have several names.
        let decode = |p: &str| B64.decode(p).map_err(|_| AriError::BadCertId);
        let (key_id, serial) = (decode(aki)?, decode(serial)?);
        if key_id.is_empty() || serial.is_empty() || serial.len() > 20 {
            return Err(AriError::BadCertId);
        }
        Ok(CertId { key_id, serial })
    }

    /// The identifier of a certificate, from its DER.
    pub fn of_certificate(der: &[u8]) -> Result<CertId, AriError> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| AriError::Certificate(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let aki = tbs
            .get_extension::<AuthorityKeyIdentifier>()
            .map_err(|e| AriError::Certificate(e.to_string()))?
            .and_then(|(_, a)| a.key_identifier)
            .ok_or(AriError::NoAki)?;
        Ok(CertId { key_id: aki.as_bytes().to_vec(), serial: tbs.serial_number().as_bytes().to_vec() })
    }

    pub fn serial_hex(&self) -> String {
        hex::encode(&self.serial)
    }

    pub fn encode(&self) -> String {
        format!("{}.{}", B64.encode(&self.key_id), B64.encode(&self.serial))
    }
}

/// The subjectKeyIdentifier of the issuing certificate: a leaf whose AKI
/// differs was issued by another intermediate.
pub fn subject_key_id(der: &[u8]) -> Result<Vec<u8>, AriError> {
    let cert = x509_cert::Certificate::from_der(der).map_err(|e| AriError::Certificate(e.to_string()))?;
    let ski = cert
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
        .map_err(|e| AriError::Certificate(e.to_string()))?
        .ok_or(AriError::NoSki)?;
    Ok(ski.1 .0.as_bytes().to_vec())
}

/// `Some(why)` when the certificate should be replaced right away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewNow {
    Revoked,
    IssuerChanged,
}

/// A suggested window, Unix seconds, `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// The window for a certificate valid `[not_before, not_after]`.
///
/// `start_fraction` must lie in (0, 1); `config::acme::check_fraction` is applied at
/// server start.
pub fn window(
    not_before: i64,
    not_after: i64,
    serial: &[u8],
    start_fraction: f64,
    renew_now: Option<RenewNow>,
    now: i64,
) -> Window {
    if renew_now.is_some() {
        // Boulder's "renew immediately": an hour ago to half an hour ago,
        // entirely in the past, so every ARI client renews on this poll.
        let start = now - 3600;
        return Window { start, end: start + 1800 };
    }
    let lifetime = (not_after - not_before).max(2);
    let end_fraction = start_fraction + (1.0 - start_fraction) / 2.0;
    // Rounded up, so the window never opens before the fraction even when
    // f64 lands a hair below an exact product (2/3 of 86400 s).
    let nominal_start = not_before + (lifetime as f64 * start_fraction).ceil() as i64;
    let nominal_end = (not_before + (lifetime as f64 * end_fraction) as i64).max(nominal_start + 2);
    let half = ((nominal_end - nominal_start) / 2).max(1);
    let offset = spread(serial, half);
    let start = nominal_start + offset;
    Window { start, end: start + half }
}

/// A deterministic offset in `[0, range)` from the serial.
fn spread(serial: &[u8], range: i64) -> i64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, serial);
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest.as_ref()[..8]);
    let r = u64::try_from(range.max(1)).unwrap_or(1);
    i64::try_from(u64::from_be_bytes(b) % r).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_id_round_trips_and_refuses_padding() {
        let id = CertId { key_id: vec![1, 2, 3], serial: vec![0, 0x87, 0x65] };
        assert_eq!(CertId::parse(&id.encode()), Ok(id.clone()));
        assert_eq!(id.encode(), "AQID.AIdl");
        assert_eq!(CertId::parse("AQID"), Err(AriError::BadCertId));
        assert_eq!(CertId::parse("AQI=.AIdl"), Err(AriError::BadCertId));
        assert_eq!(CertId::parse(".AIdl"), Err(AriError::BadCertId));
    }

    #[test]
    fn window_lies_in_the_nominal_range_and_spreads() {
        let (nb, na) = (0, 86_400);
        let mut starts = std::collections::BTreeSet::new();
        for i in 0u32..200 {
            let w = window(nb, na, &i.to_be_bytes(), crate::config::acme::DEFAULT_ARI_WINDOW_START, None, 0);
            assert!(w.start >= 57_600 && w.end <= 72_000 && w.start < w.end, "{w:?}");
            starts.insert(w.start);
        }
        assert!(starts.len() > 190, "offsets should rarely collide");
    }

    #[test]
    fn renew_now_is_in_the_past() {
        let w =
            window(0, 86_400, &[1], crate::config::acme::DEFAULT_ARI_WINDOW_START, Some(RenewNow::Revoked), 1_000_000);
        assert!(w.start < w.end && w.end < 1_000_000);
    }
}
