//! Revocation (RFC 8555 §7.6): who may revoke, which reasons a subscriber
//! may give, the issuance log entry, and the CRL that follows at once.

use axum::http::StatusCode;

use super::Ra;
use crate::acme::clock::ClockExt;
use crate::acme::issuance_log::revoked_event;
use crate::acme::jws::Jwk;
use crate::acme::model::{Account, CertRecord};
use crate::acme::problem::{Problem, ProblemType};

/// Who asks to revoke.
pub enum Revoker {
    /// An account (`kid`): the one that ordered the certificate, or one
    /// holding valid authorizations for every name in it.
    Account(Account),
    /// The certificate's own key (`jwk`).
    CertificateKey(Jwk),
}

/// RFC 5280 §5.3.1 codes a subscriber may give: not caCompromise (2), not
/// the unused 7, not removeFromCRL (8), not aACompromise (10).
const SUBSCRIBER_REASONS: [u8; 6] = [0, 1, 3, 4, 5, 9];

impl Ra {
    /// A certificate the account owns.
    pub async fn certificate(&self, account: &Account, id: String) -> Result<CertRecord, Problem> {
        let cert = self
            .db("certificate", move |st| st.certificate(&id))
            .await?
            .ok_or_else(|| Problem::not_found("no such certificate"))?;
        if cert.account_id != account.id {
            return Err(Problem::unauthorized("the request's account does not own this certificate"));
        }
        Ok(cert)
    }

    /// Revokes `der` if `who` may, logs it, and publishes a new CRL before
    /// returning (so a client that revokes and then fetches the CRL finds
    /// its certificate on it).
    pub async fn revoke(&self, who: Revoker, der: Vec<u8>, reason: Option<u8>) -> Result<(), Problem> {
        let reason = reason.unwrap_or(0);
        if !SUBSCRIBER_REASONS.contains(&reason) {
            return Err(Problem::new(
                ProblemType::BadRevocationReason,
                StatusCode::BAD_REQUEST,
                "revocation reason not allowed",
            ));
        }
        let summary =
            crate::profile::certificate_summary(&der).map_err(|_| Problem::malformed("certificate does not parse"))?;
        let serial = summary.serial_hex.clone();
        let cert = self
            .db("certificate", move |st| st.certificate_by_serial(&serial))
            .await?
            .filter(|c| c.der == der)
            .ok_or_else(|| Problem::not_found("this server did not issue that certificate"))?;
        let authority = match &who {
            Revoker::CertificateKey(key) => (key.thumbprint() == cert.key_thumbprint).then_some("certificate-key"),
            Revoker::Account(a) if a.id == cert.account_id => Some("account"),
            Revoker::Account(a) => {
                let aid = a.id.clone();
                let now = self.clock.unix();
                let valid = self.db("authorizations", move |st| st.valid_authzs_of(&aid, now)).await?;
                cert.identifiers
                    .iter()
                    .all(|id| {
                        let base = id.value.trim_start_matches("*.");
                        valid.iter().any(|z| z.identifier.kind == id.kind && z.identifier.value == base)
                    })
                    .then_some("authorized-account")
            }
        };
        let Some(authority) = authority else {
            return Err(Problem::unauthorized("not authorized to revoke this certificate"));
        };
        let (id, at, now) = (cert.id.clone(), self.clock.unix(), self.clock.now());
        let event = revoked_event(&cert.serial_hex, reason, at, authority);
        let done = self.db("revoke", move |st| st.revoke_certificate(&id, reason, at, event, now)).await?;
        if !done {
            return Err(Problem::new(
                ProblemType::AlreadyRevoked,
                StatusCode::BAD_REQUEST,
                "the certificate is already revoked",
            ));
        }
        tracing::info!(serial = %cert.serial_hex, reason, authority, "certificate revoked");
        // The revocation is committed either way; a failed CRL is retried on
        // the publisher's next check.
        if let Some(crl) = &self.crl {
            if let Err(e) = crl.regenerate().await {
                tracing::error!(error = %e, "leaf CRL not regenerated after a revocation; retrying on schedule");
            }
        }
        Ok(())
    }
}
