//! The registration authority: acme-serve's policy layer (Boulder's RA).
//!
//! The web front end (`acme::wfe`) verifies requests and speaks HTTP; every
//! decision about *what* is allowed is made here, in one place each:
//!
//! - accounts: contacts, terms of service, External Account Bindings and
//!   the policy their keys carry ([`accounts`]);
//! - orders: identifiers against the name policy and the EAB key, profiles,
//!   rate limits, `replaces` (RFC 9773), the state machine, finalize
//!   ([`orders`]);
//! - validity: the backdate and every lifetime ceiling ([`validity`]);
//! - authorizations and challenges, and the validation worker they start
//!   ([`authz`]);
//! - revocation: who may revoke, and the issuance log entry it writes
//!   ([`revocation`]);
//! - issuance: the one write path from a reserved serial to a stored,
//!   logged certificate ([`issuance`]).

mod accounts;
mod authz;
pub mod issuance;
mod orders;
mod revocation;
pub mod validity;

use std::net::IpAddr;
use std::sync::Arc;

pub use accounts::{check_contacts, KeyChange, NewAccount};
pub use orders::NewOrder;
pub use revocation::Revoker;

use self::issuance::IssuanceEngine;
use super::clock::{ClockExt, SharedClock};
use super::crl::CrlPublisher;
use super::problem::Problem;
use super::ratelimit::{Denied, LimitName, Limiter, Subject};
use super::store::{blocking, Store, StoreError};
use super::va::Validator;
use crate::config::acme::IssuanceSettings;

/// What the registration authority works with besides its settings.
pub struct RaDeps {
    pub store: Arc<dyn Store>,
    pub clock: SharedClock,
    pub limiter: Arc<Limiter>,
    pub issuance: Arc<IssuanceEngine>,
    pub validator: Arc<Validator>,
    /// The leaves' CRL, when this instance publishes it.
    pub crl: Option<Arc<CrlPublisher>>,
    /// The current intermediate's subjectKeyIdentifier (see `acme::ari`).
    pub issuer_key_id: Vec<u8>,
}

/// The registration authority (see the module documentation).
pub struct Ra {
    settings: IssuanceSettings,
    store: Arc<dyn Store>,
    clock: SharedClock,
    limiter: Arc<Limiter>,
    issuance: Arc<IssuanceEngine>,
    validator: Arc<Validator>,
    crl: Option<Arc<CrlPublisher>>,
    issuer_key_id: Vec<u8>,
}

impl Ra {
    pub fn new(settings: IssuanceSettings, deps: RaDeps) -> Self {
        let RaDeps { store, clock, limiter, issuance, validator, crl, issuer_key_id } = deps;
        Ra { settings, store, clock, limiter, issuance, validator, crl, issuer_key_id }
    }

    /// The issuance policy (the directory advertises its profiles and EAB
    /// requirement).
    pub fn settings(&self) -> &IssuanceSettings {
        &self.settings
    }

    /// `requests_per_ip`, spent for every request.
    pub fn spend_request(&self, ip: IpAddr) -> Result<(), Problem> {
        self.limiter.spend(self.clock.unix_ms(), &[(LimitName::RequestsPerIp, Subject::Ip(ip))]).map_err(rate_limited)
    }

    /// A store call on the blocking pool; any failure is internal.
    async fn db<T: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Problem> {
        blocking(&self.store, f).await.map_err(|e| Problem::internal(what, &e))
    }

    /// A store call whose refusals the caller maps itself.
    async fn db_raw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        blocking(&self.store, f).await
    }
}

/// A refused request, logged and told how long to wait.
fn rate_limited(d: Denied) -> Problem {
    tracing::info!(limit = d.limit.name(), subject = ?d.subject, wait_ms = d.retry_after_ms, "rate limited");
    Problem::rate_limited(d.detail(), d.retry_after_secs())
}
