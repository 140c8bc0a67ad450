//! The one write path for issuance: every certificate acme-serve has the
//! intermediate sign (an order's leaf, the server's own HTTPS certificate)
//! goes through [`IssuanceEngine`], the same way:
//!
//! 1. a serial is drawn and stored with the intent (order, account, names,
//!    profile, validity, the key's SHA-256), and the order claimed
//!    (`processing`), durably, before the signer is called;
//! 2. the signer builds, lints, signs and verifies, unless the issuance's
//!    deadline has passed;
//! 3. the certificate, the order made valid, the issuance marked issued and
//!    its `certificate-issued` log entry are stored in one transaction.
//!
//! An issuance interrupted between 1 and 3 (a crash, a `kill -9`, a store
//! that failed after the signature) is resolved by [`IssuanceEngine::recover`]
//! once its deadline has passed, by whichever instance looks first: if the
//! signed certificate reached the store beside its serial, the issuance is
//! *completed* (the certificate is stored, the order turns valid); if not,
//! it is *failed*: the order turns invalid with a `serverInternal` error,
//! the serial is retired (never reused: it may have been signed in the
//! process that died) and logged as `issuance-abandoned`. Re-signing instead
//! would risk two different certificates under one serial; a client whose
//! order failed simply orders again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use der::{Decode, Encode};

use super::validity::{IssuerWindow, Validity};
use crate::acme::ca::{self, CaError, CheckedCsr, LeafRequest, SignerHandle};
use crate::acme::clock::{span, ClockExt, SharedClock};
use crate::acme::issuance_log::{abandoned_event, issued_event, LogHead, SignedFacts};
use crate::acme::jws::Jwk;
use crate::acme::model::{CertRecord, Issuance, IssuanceKind, IssuanceState, Order, OrderStatus};
use crate::acme::problem::{Problem, ProblemType};
use crate::acme::store::{blocking, Completion, Store, StoreError, StoredIssuance};
use crate::faults;
use crate::profile::{Issued, Profile, San};
use crate::words::sha256_hex;

/// How often a failed final write is tried before the certificate is left
/// beside its serial for recovery.
const COMMIT_ATTEMPTS: u32 = 3;
/// How long past a deadline recovery waits, for clocks of instances that
/// disagree a little.
const DEADLINE_GRACE_SECS: i64 = 2;

/// Why an issuance did not end with a stored certificate. Messages carry
/// their cause's text; no variant has a `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssuanceError {
    /// Another finalize claimed the order first.
    #[error("the order is being finalized")]
    Claimed,
    /// The serial could not be drawn or reserved; nothing was signed.
    #[error("the serial could not be reserved: {0}")]
    Reserve(String),
    /// The signer refused or failed; the serial was retired.
    #[error("the signer failed: {0}")]
    Signer(CaError),
    /// The certificate was signed but not stored; it is kept beside its
    /// serial when the store allows, and recovery completes the issuance.
    #[error("serial {serial} was signed but not stored ({cause}); the issuance is completed or failed once the store answers again")]
    Unstored { serial: String, cause: String },
    /// The issuance was resolved elsewhere after its deadline; the
    /// certificate was not handed out.
    #[error("serial {0} was resolved after its deadline; its certificate is not handed out")]
    Resolved(String),
    /// The issuance log could not be checkpointed.
    #[error("issuance log: {0}")]
    Log(String),
}

/// What one recovery pass resolved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Issuances completed from a certificate stored beside their serial.
    pub completed: usize,
    /// Issuances failed and their serials retired.
    pub abandoned: usize,
}

/// The one write path for issuance (see the module documentation).
pub struct IssuanceEngine {
    store: Arc<dyn Store>,
    signer: Arc<SignerHandle>,
    clock: SharedClock,
    /// What follows a leaf in a download.
    chain_pem: String,
    /// How long the signer may take for one issuance.
    deadline: Duration,
    issuer: IssuerWindow,
}

impl IssuanceEngine {
    pub fn new(
        store: Arc<dyn Store>,
        signer: Arc<SignerHandle>,
        clock: SharedClock,
        chain_pem: String,
        deadline: Duration,
        issuer: IssuerWindow,
    ) -> Self {
        IssuanceEngine { store, signer, clock, chain_pem, deadline, issuer }
    }

    /// The issuing CA's validity.
    pub fn issuer(&self) -> &IssuerWindow {
        &self.issuer
    }

    /// The signer thread (the CRL publisher signs there too).
    pub fn signer(&self) -> &Arc<SignerHandle> {
        &self.signer
    }

    fn intent(&self, kind: IssuanceKind, serial: &[u8], spki_der: &[u8], validity: &Validity) -> Issuance {
        let now = self.clock.now_second();
        Issuance {
            serial_hex: hex::encode(serial),
            kind,
            order_id: None,
            account_id: None,
            identifiers: Vec::new(),
            profile: None,
            not_before: validity.not_before.unix_timestamp(),
            not_after: validity.not_after.unix_timestamp(),
            spki_sha256: sha256_hex(spki_der),
            state: IssuanceState::Pending,
            created_at: now.unix_timestamp(),
            deadline: (now + span(self.deadline)).unix_timestamp(),
        }
    }

    /// Issues the leaf of a `ready` order: returns the order, now valid
    /// and pointing at its certificate.
    pub async fn issue_order(
        &self,
        mut order: Order,
        csr: CheckedCsr,
        template: Option<Profile>,
        validity: Validity,
    ) -> Result<Order, IssuanceError> {
        let serial = ca::new_serial().map_err(|e| IssuanceError::Reserve(e.to_string()))?;
        let mut intent = self.intent(IssuanceKind::Order, &serial, &csr.spki_der, &validity);
        intent.order_id = Some(order.id.clone());
        intent.account_id = Some(order.account_id.clone());
        intent.identifiers = order.identifiers.clone();
        intent.profile = order.profile.clone();

        // Step 1: the serial and intent, and the claim on the order.
        order.status = OrderStatus::Processing;
        let (i, o) = (intent.clone(), order.clone());
        match blocking(&self.store, move |st| st.reserve_issuance(&i, Some(&o))).await {
            Ok(()) => order.version += 1,
            Err(StoreError::Stale) => return Err(IssuanceError::Claimed),
            Err(e) => return Err(IssuanceError::Reserve(e.to_string())),
        }
        faults::point("issuance:after-reserve");

        // Step 2: the signature.
        let spki_der = csr.spki_der.clone();
        let issued = self.sign(serial, csr.spki_der, csr.sans, template, &validity).await;
        let issued = match issued {
            Ok(i) => i,
            Err(e) => {
                let problem = Problem::internal("issuance", &e);
                order.status = OrderStatus::Invalid;
                order.error = Some(problem.document());
                self.retire(&intent, Some(order), &format!("the signer failed: {e}")).await;
                return Err(IssuanceError::Signer(e));
            }
        };
        faults::point("issuance:after-sign");

        // Step 3: certificate, order and log entry together.
        let cert = self.cert_record(&intent, &issued.der, &issued.pem, &spki_der)?;
        order.status = OrderStatus::Valid;
        order.certificate_id = Some(cert.id.clone());
        self.complete(&intent, &issued, Some((cert, order.clone())), false).await?;
        order.version += 1;
        tracing::info!(order = %order.id, serial = %intent.serial_hex, "certificate issued");
        Ok(order)
    }

    /// Issues the server's own HTTPS certificate through the same path (no
    /// order; recorded and logged like every other certificate).
    pub async fn issue_server(
        &self,
        names: &[San],
        spki_der: Vec<u8>,
        validity: Validity,
    ) -> Result<Issued, IssuanceError> {
        let serial = ca::new_serial().map_err(|e| IssuanceError::Reserve(e.to_string()))?;
        let mut intent = self.intent(IssuanceKind::ServerTls, &serial, &spki_der, &validity);
        intent.identifiers = names.iter().map(san_identifier).collect();
        let i = intent.clone();
        blocking(&self.store, move |st| st.reserve_issuance(&i, None))
            .await
            .map_err(|e| IssuanceError::Reserve(e.to_string()))?;
        let issued = match self.sign(serial, spki_der, names.to_vec(), None, &validity).await {
            Ok(i) => i,
            Err(e) => {
                self.retire(&intent, None, &format!("the signer failed: {e}")).await;
                return Err(IssuanceError::Signer(e));
            }
        };
        self.complete(&intent, &issued, None, false).await?;
        tracing::info!(serial = %intent.serial_hex, "the server's own certificate issued");
        Ok(issued)
    }

    async fn sign(
        &self,
        serial: Vec<u8>,
        spki_der: Vec<u8>,
        sans: Vec<San>,
        profile: Option<Profile>,
        validity: &Validity,
    ) -> Result<Issued, CaError> {
        let req = LeafRequest {
            serial,
            spki_der,
            sans,
            not_before: validity.not_before,
            not_after: validity.not_after,
            profile,
            deadline: Instant::now() + self.deadline,
        };
        self.signer.issue(req).await
    }

    fn cert_record(
        &self,
        intent: &Issuance,
        der: &[u8],
        pem: &str,
        spki_der: &[u8],
    ) -> Result<CertRecord, IssuanceError> {
        let unstored = |cause: String| IssuanceError::Unstored { serial: intent.serial_hex.clone(), cause };
        Ok(CertRecord {
            id: crate::acme::model::random_id().map_err(|e| unstored(e.to_string()))?,
            account_id: intent.account_id.clone().unwrap_or_default(),
            order_id: intent.order_id.clone().unwrap_or_default(),
            serial_hex: intent.serial_hex.clone(),
            chain_pem: format!("{pem}{}", self.chain_pem),
            der: der.to_vec(),
            identifiers: intent.identifiers.clone(),
            key_thumbprint: Jwk::from_spki_der(spki_der).map(|k| k.thumbprint()).unwrap_or_default(),
            not_after: intent.not_after,
            revoked_reason: None,
            revoked_at: None,
        })
    }

    /// Step 3, retried; if it keeps failing, the signed certificate is kept
    /// beside its serial so that recovery can complete the issuance.
    async fn complete(
        &self,
        intent: &Issuance,
        issued: &Issued,
        acme: Option<(CertRecord, Order)>,
        completed_later: bool,
    ) -> Result<(), IssuanceError> {
        let facts = SignedFacts::new(&issued.der, &issued.tbs_sha256_hex, &issued.findings);
        let mut last = String::new();
        for attempt in 0..COMMIT_ATTEMPTS {
            let (intent_c, der, acme_c) = (intent.clone(), issued.der.clone(), acme.clone());
            let event = issued_event(intent, &facts, completed_later);
            let now = self.clock.now();
            // The injected failure hits an order's certificate on its way
            // in (never the server's own, never the completion by recovery).
            let inject = acme.is_some() && !completed_later && faults::fails("issuance:store-certificate");
            let result = if inject {
                Err(StoreError::Database("injected failure (KEYRITE_FAIL_AT=issuance:store-certificate)".into()))
            } else {
                blocking(&self.store, move |st| {
                    let acme = acme_c.as_ref().map(|(c, o)| (c, o));
                    st.complete_issuance(Completion { serial_hex: &intent_c.serial_hex, der: &der, acme, event }, now)
                })
                .await
            };
            match result {
                Ok(()) => return Ok(()),
                Err(StoreError::NotPending(serial)) => return Err(IssuanceError::Resolved(serial)),
                Err(e) => {
                    last = e.to_string();
                    tracing::warn!(serial = %intent.serial_hex, attempt, error = %e, "storing a signed certificate failed");
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }
        let (serial, der) = (intent.serial_hex.clone(), issued.der.clone());
        match blocking(&self.store, move |st| st.record_signed(&serial, &der)).await {
            Ok(()) => tracing::error!(serial = %intent.serial_hex, error = %last,
                "a signed certificate could not be stored; it is kept beside its serial and the issuance will be completed"),
            Err(e) => tracing::error!(serial = %intent.serial_hex, error = %last, record_error = %e,
                "a signed certificate could not be stored nor kept; its serial stays reserved and will be retired"),
        }
        Err(IssuanceError::Unstored { serial: intent.serial_hex.clone(), cause: last })
    }

    /// Retires a serial that has no stored certificate: its order (given
    /// already invalid) and the `issuance-abandoned` entry go in with it.
    async fn retire(&self, intent: &Issuance, order: Option<Order>, why: &str) -> bool {
        let event = abandoned_event(intent, why);
        let serial = intent.serial_hex.clone();
        let now = self.clock.now();
        match blocking(&self.store, move |st| st.abandon_issuance(&serial, order.as_ref(), event, now)).await {
            Ok(done) => {
                if done {
                    tracing::warn!(serial = %intent.serial_hex, reason = why, "issuance abandoned; the serial is retired");
                }
                done
            }
            Err(e) => {
                tracing::error!(serial = %intent.serial_hex, error = %e, "could not retire a serial; recovery retries");
                false
            }
        }
    }

    /// Resolves every issuance left pending past its deadline (see the
    /// module documentation): completed if its certificate was stored,
    /// failed otherwise.
    pub async fn recover(&self) -> Result<Recovered, StoreError> {
        let cutoff = self.clock.unix() - DEADLINE_GRACE_SECS;
        let stale = blocking(&self.store, move |st| st.stale_issuances(cutoff)).await?;
        let mut done = Recovered::default();
        for StoredIssuance { issuance: intent, certificate_der: der } in stale {
            let order = match &intent.order_id {
                Some(id) => {
                    let id = id.clone();
                    blocking(&self.store, move |st| st.order(&id)).await?
                }
                None => None,
            };
            match der {
                Some(der) => match self.complete_stored(&intent, der, order).await {
                    Ok(()) => done.completed += 1,
                    Err(e) => {
                        tracing::error!(serial = %intent.serial_hex, error = %e, "completing an interrupted issuance failed; retrying later")
                    }
                },
                None => {
                    let order = order.filter(|o| o.status == OrderStatus::Processing).map(|mut o| {
                        o.status = OrderStatus::Invalid;
                        o.error = Some(interrupted(&intent.serial_hex).document());
                        o
                    });
                    if self.retire(&intent, order, "interrupted before its certificate was stored").await {
                        done.abandoned += 1;
                    }
                }
            }
        }
        if done != Recovered::default() {
            tracing::info!(completed = done.completed, abandoned = done.abandoned, "interrupted issuances resolved");
        }
        Ok(done)
    }

    /// Completes an interrupted issuance from the certificate stored beside
    /// its serial.
    async fn complete_stored(
        &self,
        intent: &Issuance,
        der: Vec<u8>,
        order: Option<Order>,
    ) -> Result<(), IssuanceError> {
        let bad = |cause: String| IssuanceError::Unstored { serial: intent.serial_hex.clone(), cause };
        let cert = x509_cert::Certificate::from_der(&der).map_err(|e| bad(format!("stored certificate: {e}")))?;
        let tbs = cert.tbs_certificate().to_der().map_err(|e| bad(format!("stored certificate: {e}")))?;
        let spki = cert
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| bad(format!("stored certificate: {e}")))?;
        let pem = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &der)
            .map_err(|e| bad(format!("stored certificate: {e}")))?;
        let issued = Issued {
            pem: pem.clone(),
            tbs_sha256_hex: sha256_hex(&tbs),
            fingerprint: crate::words::Fingerprint::sha256(&der),
            serial_hex: intent.serial_hex.clone(),
            findings: Vec::new(),
            der,
        };
        let acme = match (intent.kind, order) {
            (IssuanceKind::Order, Some(mut order)) if order.status == OrderStatus::Processing => {
                let cert = self.cert_record(intent, &issued.der, &pem, &spki)?;
                order.status = OrderStatus::Valid;
                order.certificate_id = Some(cert.id.clone());
                Some((cert, order))
            }
            _ => None,
        };
        self.complete(intent, &issued, acme, true).await
    }

    /// Appends a signed checkpoint when the log has entries no checkpoint
    /// covers yet, announcing the audit key first if this log has not seen
    /// it. Returns the log's end when it signed.
    pub async fn checkpoint(&self) -> Result<Option<LogHead>, IssuanceError> {
        let log = |e: &dyn std::fmt::Display| IssuanceError::Log(e.to_string());
        let head = blocking(&self.store, |st| st.log_head()).await.map_err(|e| log(&e))?;
        let key = self.signer.audit_signer().map_err(|e| log(&e))?;
        let id = blocking(&self.store, |st| st.log_id()).await.map_err(|e| log(&e))?;
        let name = id.key_name(&self.signer.audit_key().spki_der);
        if head.is_checkpointed() && head.announced.contains(&name) {
            return Ok(None);
        }
        let now = self.clock.now();
        let head = blocking(&self.store, move |st| {
            st.append_log(now, &mut |app| {
                use crate::hsm::Signer;
                if !app.head().announced.contains(&name) {
                    app.announce(&name, key.spki_der(), key.signature_algorithm())?;
                }
                if !app.head().is_checkpointed() {
                    app.checkpoint(&name, &key)?;
                }
                Ok(())
            })
        })
        .await
        .map_err(|e| log(&e))?;
        tracing::info!(size = head.size, "issuance log checkpoint signed");
        Ok(Some(head))
    }
}

/// The problem an order gets when its issuance was interrupted.
fn interrupted(serial: &str) -> Problem {
    Problem::new(
        ProblemType::ServerInternal,
        StatusCode::INTERNAL_SERVER_ERROR,
        format!(
            "the issuance was interrupted before its certificate was stored; serial {serial} was retired \
             and will never be used; place a new order"
        ),
    )
}

fn san_identifier(san: &San) -> crate::acme::identifier::Identifier {
    match san {
        San::Dns(d) => crate::acme::identifier::Identifier { kind: "dns".into(), value: d.clone() },
        San::Ip(ip) => crate::acme::identifier::Identifier { kind: "ip".into(), value: ip.to_string() },
    }
}
