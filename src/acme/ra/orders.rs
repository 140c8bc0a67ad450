//! Orders: what may be ordered (identifiers, profiles, dates, `replaces`,
//! rate limits), the order state machine, and finalize.

use axum::http::StatusCode;

use super::issuance::IssuanceError;
use super::{rate_limited, validity, Ra};
use crate::acme::ari::{self, CertId, RenewNow};
use crate::acme::ca::check_csr;
use crate::acme::clock::{secs, ClockExt};
use crate::acme::eab::EabPolicy;
use crate::acme::identifier::{check_policy, check_syntax, Checked, Identifier, IdentifierError};
use crate::acme::jws::Jwk;
use crate::acme::model::{
    random_id, random_token, Account, Authorization, AuthzStatus, CertRecord, Challenge, ChallengeStatus,
    ChallengeType, Order, OrderStatus,
};
use crate::acme::problem::{Problem, ProblemType, Subproblem};
use crate::acme::ratelimit::{LimitName, Subject};
use crate::acme::store::StoreError;

/// A newOrder request, parsed (RFC 8555 §7.4, RFC 9773 `replaces`,
/// draft-aaron-acme-profiles `profile`).
#[derive(Debug, Clone, Default)]
pub struct NewOrder {
    pub identifiers: Vec<Identifier>,
    /// Unix seconds.
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub profile: Option<String>,
    /// The certID of the certificate the order replaces.
    pub replaces: Option<String>,
}

fn rng(e: impl std::fmt::Display) -> Problem {
    Problem::internal("random", &e)
}

impl Ra {
    /// Syntax, the server's name policy, then the account's EAB policy.
    fn check_identifiers(&self, ids: &[Identifier], eab: Option<&EabPolicy>) -> Result<Vec<Checked>, Problem> {
        let policy = &self.settings.names;
        if ids.is_empty() {
            return Err(Problem::malformed("an order needs at least one identifier"));
        }
        if ids.len() > policy.max_identifiers {
            return Err(Problem::new(
                ProblemType::RejectedIdentifier,
                StatusCode::BAD_REQUEST,
                format!("an order may hold at most {} identifiers", policy.max_identifiers),
            ));
        }
        let mut checked: Vec<Checked> = Vec::new();
        let mut subs = Vec::new();
        for id in ids {
            let result = check_syntax(id).and_then(|c| check_policy(policy, &c).map(|()| c)).and_then(|c| match eab {
                Some(p) => p.check(&c).map(|()| c).map_err(IdentifierError::Policy),
                None => Ok(c),
            });
            match result {
                Ok(c) => {
                    if !checked.contains(&c) {
                        checked.push(c);
                    }
                }
                Err(e) => {
                    let kind = match e {
                        IdentifierError::Unsupported(_) => ProblemType::UnsupportedIdentifier,
                        IdentifierError::Syntax(_) | IdentifierError::Policy(_) => ProblemType::RejectedIdentifier,
                    };
                    subs.push((
                        kind,
                        Subproblem { kind: kind.urn(), detail: e.to_string(), identifier: Some(id.clone()) },
                    ));
                }
            }
        }
        if subs.is_empty() {
            return Ok(checked);
        }
        let first = subs[0].0;
        let kind = if subs.iter().all(|(k, _)| *k == first) { first } else { ProblemType::Compound };
        let detail = if subs.len() == 1 {
            subs[0].1.detail.clone()
        } else {
            format!("{} identifiers were refused; see subproblems", subs.len())
        };
        Err(Problem::new(kind, StatusCode::BAD_REQUEST, detail)
            .with_subproblems(subs.into_iter().map(|(_, p)| p).collect()))
    }

    /// The profile an order gets: the one it names (which must exist, and
    /// which the account's EAB key must allow), else the default.
    fn choose_profile(&self, asked: Option<String>, eab: Option<&EabPolicy>) -> Result<Option<String>, Problem> {
        let s = &self.settings;
        let name = match asked {
            Some(name) if s.profile(&name).is_none() => {
                return Err(Problem::new(
                    ProblemType::InvalidProfile,
                    StatusCode::BAD_REQUEST,
                    if s.profiles.is_empty() {
                        "this server offers no profiles".to_string()
                    } else {
                        format!("no profile {name:?}; see meta.profiles in the directory")
                    },
                ))
            }
            Some(name) => Some(name),
            None => s.default_profile.clone(),
        };
        if let Some(allowed) = eab.map(|p| &p.profiles).filter(|l| !l.is_empty()) {
            let n = name.as_deref().unwrap_or("");
            if !allowed.iter().any(|a| a == n) {
                return Err(Problem::new(
                    ProblemType::InvalidProfile,
                    StatusCode::BAD_REQUEST,
                    format!("this account may order the profiles {} only", allowed.join(", ")),
                ));
            }
        }
        Ok(name)
    }

    /// newOrder: checks everything, spends the limits (unless it is a
    /// renewal inside its ARI window), stores the order and its
    /// authorizations.
    pub async fn new_order(&self, account: &Account, req: NewOrder) -> Result<Order, Problem> {
        let eab = self.account_eab(account).await?;
        let eab_policy = eab.as_ref().map(|k| &k.policy);
        let checked = self.check_identifiers(&req.identifiers, eab_policy)?;
        let profile_name = self.choose_profile(req.profile.clone(), eab_policy)?;
        let profile_max =
            profile_name.as_deref().and_then(|n| self.settings.profile(n)).map(|p| p.max_validity().whole_seconds());
        let max_lifetime = validity::ceiling(
            secs(self.settings.max_lifetime),
            eab_policy.and_then(|p| p.max_lifetime_secs),
            profile_max,
        );
        let t = self.clock.unix();
        validity::check_requested(t, req.not_before, req.not_after, max_lifetime, self.issuance.issuer())?;
        let replaced = match req.replaces.as_deref() {
            Some(cert_id) => Some(self.check_replaces(account, cert_id, &checked).await?),
            None => None,
        };
        // RFC 9773: a renewal inside its window is what the server asked for;
        // limiting it would punish the clients that behave best.
        let renewal_in_window = match &replaced {
            Some((cert, id)) => self.suggested_window(cert, id)?.start <= t,
            None => false,
        };
        if !renewal_in_window {
            self.check_order_limits(account, &checked, t).await?;
        }
        let expires = t + secs(self.settings.order_lifetime);
        let order_id = random_id().map_err(rng)?;
        let mut authzs = Vec::new();
        for c in &checked {
            let kinds: &[ChallengeType] = match c {
                Checked::Dns { wildcard: true, .. } => &[ChallengeType::Dns01],
                Checked::Dns { .. } => &[ChallengeType::Http01, ChallengeType::Dns01, ChallengeType::TlsAlpn01],
                Checked::Ip(_) => &[ChallengeType::Http01, ChallengeType::TlsAlpn01],
            };
            let mut challenges = Vec::new();
            for k in kinds {
                challenges.push(Challenge {
                    id: random_id().map_err(rng)?,
                    kind: *k,
                    token: random_token().map_err(rng)?,
                    status: ChallengeStatus::Pending,
                    validated: None,
                    error: None,
                });
            }
            authzs.push(Authorization {
                id: random_id().map_err(rng)?,
                account_id: account.id.clone(),
                order_id: order_id.clone(),
                identifier: c.authz_identifier(),
                wildcard: c.is_wildcard(),
                status: AuthzStatus::Pending,
                expires,
                challenges,
                version: 0,
            });
        }
        let order = Order {
            id: order_id,
            account_id: account.id.clone(),
            status: OrderStatus::Pending,
            expires,
            identifiers: checked.iter().map(Checked::order_identifier).collect(),
            not_before: req.not_before,
            not_after: req.not_after,
            authz_ids: authzs.iter().map(|z| z.id.clone()).collect(),
            error: None,
            certificate_id: None,
            created_at: t,
            version: 0,
            profile: profile_name,
            replaces: req.replaces.clone(),
        };
        let (o, z) = (order.clone(), authzs);
        match replaced {
            None => self.db("insert order", move |st| st.insert_order(&o, &z)).await?,
            Some((cert, _)) => match self.db_raw(move |st| st.insert_order_replacing(&o, &z, &cert.id, t)).await {
                Ok(()) => {}
                Err(StoreError::AlreadyReplaced(_)) => return Err(already_replaced()),
                Err(e) => return Err(Problem::internal("insert order", &e)),
            },
        }
        Ok(order)
    }

    /// The pending-authorization cap, then the order rates for the account
    /// and each identifier, spent together or not at all.
    async fn check_order_limits(&self, a: &Account, checked: &[Checked], t: i64) -> Result<(), Problem> {
        if let Some(max) = self.limiter.limits().max_pending_authorizations {
            let aid = a.id.clone();
            let pending = self.db("pending authorizations", move |st| st.pending_authzs(&aid, t)).await?;
            let adding = u64::try_from(checked.len()).unwrap_or(u64::MAX);
            if pending.saturating_add(adding) > max {
                return Err(Problem::rate_limited(
                    format!(
                        "this account holds {pending} pending authorizations and may hold at most {max}; \
                         complete or deactivate some before ordering more"
                    ),
                    60,
                ));
            }
        }
        let mut spend = vec![(LimitName::NewOrdersPerAccount, Subject::Account(a.id.clone()))];
        for c in checked {
            let id = c.authz_identifier();
            spend.push((LimitName::NewOrdersPerIdentifier, Subject::Identifier(id.value.to_ascii_lowercase())));
        }
        self.limiter.spend(self.clock.unix_ms(), &spend).map_err(rate_limited)
    }

    /// RFC 9773 §4.2: the window a certificate's holder is told to renew in.
    fn suggested_window(&self, cert: &CertRecord, id: &CertId) -> Result<ari::Window, Problem> {
        let summary =
            crate::profile::certificate_summary(&cert.der).map_err(|e| Problem::internal("stored certificate", &e))?;
        let renew_now = if cert.revoked_at.is_some() {
            Some(RenewNow::Revoked)
        } else if id.key_id != self.issuer_key_id {
            Some(RenewNow::IssuerChanged)
        } else {
            None
        };
        Ok(ari::window(
            summary.not_before.unix_timestamp(),
            summary.not_after.unix_timestamp(),
            &id.serial,
            self.settings.ari_window_start,
            renew_now,
            self.clock.unix(),
        ))
    }

    /// Looks up the certificate a certID names: by serial, then the AKI must
    /// match too (a serial alone could be another issuer's). `None` if unknown.
    async fn cert_by_id(&self, id: &CertId) -> Result<Option<CertRecord>, Problem> {
        let serial = id.serial_hex();
        let Some(cert) = self.db("certificate", move |st| st.certificate_by_serial(&serial)).await? else {
            return Ok(None);
        };
        let stored = CertId::of_certificate(&cert.der).map_err(|e| Problem::internal("stored certificate", &e))?;
        Ok((stored == *id).then_some(cert))
    }

    /// RFC 9773 §4: the window for the certificate a certID names.
    pub async fn renewal_window(&self, cert_id: &str) -> Result<ari::Window, Problem> {
        let id = CertId::parse(cert_id).map_err(|e| Problem::malformed(e.to_string()))?;
        let cert = self.cert_by_id(&id).await?.ok_or_else(|| Problem::not_found("no certificate with this certID"))?;
        self.suggested_window(&cert, &id)
    }

    /// RFC 9773 §5: the certificate must exist, belong to this account and
    /// share an identifier with the new order.
    async fn check_replaces(
        &self,
        a: &Account,
        cert_id: &str,
        checked: &[Checked],
    ) -> Result<(CertRecord, CertId), Problem> {
        let id = CertId::parse(cert_id).map_err(|e| Problem::malformed(format!("replaces: {e}")))?;
        let cert = self
            .cert_by_id(&id)
            .await?
            .ok_or_else(|| Problem::malformed("replaces: this server issued no certificate with that certID"))?;
        if cert.account_id != a.id {
            return Err(Problem::unauthorized("replaces: the certificate belongs to another account"));
        }
        let ordered: Vec<Identifier> = checked.iter().map(Checked::order_identifier).collect();
        if !cert.identifiers.iter().any(|i| ordered.contains(i)) {
            return Err(Problem::malformed(
                "replaces: the order shares no identifier with the certificate it replaces",
            ));
        }
        // Whether it is replaced already is decided by the store, atomically
        // with inserting the order.
        Ok((cert, id))
    }

    /// Loads an order the account owns and brings its status up to date
    /// (RFC 8555 §7.1.6).
    pub async fn load_order(&self, account: &Account, id: String) -> Result<Order, Problem> {
        for _ in 0..5 {
            let oid = id.clone();
            let mut order =
                self.db("order", move |st| st.order(&oid)).await?.ok_or_else(|| Problem::not_found("no such order"))?;
            if order.account_id != account.id {
                return Err(Problem::unauthorized("the request's account does not own this order"));
            }
            let ids = order.authz_ids.clone();
            let authzs = self
                .db("authorizations", move |st| {
                    ids.iter().filter_map(|i| st.authz(i).transpose()).collect::<Result<Vec<_>, _>>()
                })
                .await?;
            if !order.refresh(&authzs, self.clock.unix()) {
                return Ok(order);
            }
            let o = order.clone();
            match self.db_raw(move |st| st.update_order(&o)).await {
                Ok(()) => {
                    order.version += 1;
                    return Ok(order);
                }
                Err(StoreError::Stale) => continue,
                Err(e) => return Err(Problem::internal("update order", &e)),
            }
        }
        Err(Problem::internal("load order", &"too many concurrent updates"))
    }

    /// finalize: the order must be ready and the CSR fit it; the validity
    /// is decided here and the certificate issued through the one write
    /// path. Returns the order, now valid.
    pub async fn finalize(
        &self,
        account: &Account,
        account_key: &Jwk,
        order_id: String,
        csr_der: &[u8],
    ) -> Result<Order, Problem> {
        let eab = self.account_eab(account).await?;
        let order = self.load_order(account, order_id).await?;
        if order.status != OrderStatus::Ready {
            let why =
                if self.clock.unix() >= order.expires { "the order has expired" } else { "the order is not ready" };
            return Err(Problem::new(
                ProblemType::OrderNotReady,
                StatusCode::FORBIDDEN,
                format!("{why} (status {:?})", order.status).to_lowercase(),
            ));
        }
        let template = match order.profile.as_deref() {
            Some(name) => Some(
                self.settings
                    .profile(name)
                    .cloned()
                    .ok_or_else(|| Problem::internal("finalize", &format!("the order's profile {name:?} is gone")))?,
            ),
            None => None,
        };
        let checked = check_csr(
            csr_der,
            &order.identifiers,
            account_key,
            template.as_ref().unwrap_or(&self.settings.leaf_profile),
        )?;
        let lifetime = match &template {
            Some(p) => p.validity(),
            None => crate::acme::clock::span(self.settings.default_lifetime),
        };
        let validity = validity::for_order(
            self.clock.now_second(),
            order.not_before,
            order.not_after,
            lifetime,
            eab.as_ref().and_then(|k| k.policy.max_lifetime_secs),
            self.issuance.issuer(),
        );
        match self.issuance.issue_order(order, checked, template, validity).await {
            Ok(order) => Ok(order),
            Err(IssuanceError::Claimed) => {
                Err(Problem::new(ProblemType::OrderNotReady, StatusCode::FORBIDDEN, "the order is being finalized"))
            }
            Err(e) => Err(Problem::internal("issuance", &e)),
        }
    }
}

fn already_replaced() -> Problem {
    Problem::new(
        ProblemType::AlreadyReplaced,
        StatusCode::CONFLICT,
        "the certificate named in `replaces` has already been replaced by another order",
    )
}
