//! Accounts: who may have one (terms, contacts, External Account Binding),
//! what the binding's key allows afterwards, and key changes.

use std::net::IpAddr;

use axum::http::StatusCode;
use serde_json::Value;

use super::{rate_limited, Ra};
use crate::acme::clock::ClockExt;
use crate::acme::eab::{Binding, EabError, EabKey};
use crate::acme::identifier::{check_syntax, Identifier};
use crate::acme::jws::Jwk;
use crate::acme::model::{random_id, Account, AccountStatus};
use crate::acme::problem::{Problem, ProblemType};
use crate::acme::ratelimit::{LimitName, Subject};
use crate::acme::store::StoreError;

/// A newAccount request, as the client sent it (RFC 8555 §7.3).
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub contact: Vec<String>,
    pub terms_of_service_agreed: bool,
    pub only_return_existing: bool,
    /// The `externalAccountBinding` JWS, unparsed.
    pub external_account_binding: Option<Value>,
}

/// Why a key change was refused.
#[derive(Debug)]
pub enum KeyChange {
    /// The request is wrong (same key, …).
    Refused(Problem),
    /// RFC 8555 §7.3.5: the new key belongs to this other account (its id),
    /// answered 409 with its URL in `Location`.
    TakenBy(String),
}

/// RFC 8555 §7.3: mailto: only, one address, no header fields.
pub fn check_contacts(contacts: &[String]) -> Result<(), Problem> {
    let invalid = |m: String| Problem::new(ProblemType::InvalidContact, StatusCode::BAD_REQUEST, m);
    if contacts.len() > 10 {
        return Err(invalid("at most 10 contacts".into()));
    }
    for c in contacts {
        let Some(addr) = c.strip_prefix("mailto:") else {
            return Err(Problem::new(
                ProblemType::UnsupportedContact,
                StatusCode::BAD_REQUEST,
                format!("contact {c:?}: only mailto: is supported"),
            ));
        };
        let mut parts = addr.split('@');
        let (local, domain, extra) = (parts.next(), parts.next(), parts.next());
        let ok = matches!((local, domain, extra), (Some(l), Some(d), None) if !l.is_empty() && !d.is_empty())
            && !addr.contains(['?', ',', ' ', '<', '>', '%'])
            && addr.len() <= 254
            && domain.is_some_and(|d| {
                check_syntax(&Identifier { kind: "dns".into(), value: d.to_ascii_lowercase() }).is_ok()
            });
        if !ok {
            return Err(invalid(format!("contact {c:?} is not a single plain e-mail address")));
        }
    }
    Ok(())
}

fn eab_problem(e: EabError) -> Problem {
    match e {
        EabError::Malformed(m) => Problem::malformed(m),
        EabError::Unauthorized(m) => Problem::unauthorized(m),
    }
}

impl Ra {
    /// newAccount: the existing account of this key (`false`), or a new
    /// one (`true`). `outer_url` is the JWS's `url`, which a binding must
    /// repeat.
    pub async fn new_account(
        &self,
        key: &Jwk,
        req: NewAccount,
        outer_url: &str,
        client: Option<IpAddr>,
        terms_required: bool,
    ) -> Result<(Account, bool), Problem> {
        let thumbprint = key.thumbprint();
        let tp = thumbprint.clone();
        if let Some(existing) = self.db("account", move |st| st.account_by_thumbprint(&tp)).await? {
            if existing.status != AccountStatus::Valid {
                return Err(Problem::unauthorized("the account of this key is deactivated"));
            }
            return Ok((existing, false));
        }
        if req.only_return_existing {
            return Err(Problem::new(
                ProblemType::AccountDoesNotExist,
                StatusCode::BAD_REQUEST,
                "no account for this key",
            ));
        }
        if terms_required && !req.terms_of_service_agreed {
            return Err(Problem::new(
                ProblemType::UserActionRequired,
                StatusCode::FORBIDDEN,
                "agree to the terms of service (termsOfServiceAgreed)",
            ));
        }
        check_contacts(&req.contact)?;
        if let Some(ip) = client {
            self.limiter
                .spend(self.clock.unix_ms(), &[(LimitName::NewAccountsPerIp, Subject::Ip(ip))])
                .map_err(rate_limited)?;
        }
        let eab_kid = match &req.external_account_binding {
            Some(b) => Some(self.check_binding(key, b, outer_url).await?),
            None if self.settings.require_eab => {
                return Err(Problem::new(
                    ProblemType::ExternalAccountRequired,
                    StatusCode::FORBIDDEN,
                    "this server requires an external account binding (externalAccountBinding)",
                ))
            }
            None => None,
        };
        let now = self.clock.unix();
        let account = Account {
            id: random_id().map_err(|e| Problem::internal("account id", &e))?,
            jwk: key.to_value(),
            thumbprint,
            status: AccountStatus::Valid,
            contact: req.contact,
            created_at: now,
            version: 0,
            eab_kid,
        };
        let a = account.clone();
        let inserted = match a.eab_kid.clone() {
            Some(kid) => self.db_raw(move |st| st.insert_account_bound(&a, &kid, now)).await,
            None => self.db_raw(move |st| st.insert_account(&a)).await,
        };
        match inserted {
            Ok(()) => {}
            Err(StoreError::Refused(why)) => return Err(Problem::unauthorized(why)),
            // Lost a race with the same key.
            Err(StoreError::Conflict(_)) => {
                return Err(Problem::malformed("an account for this key was just created; retry"))
            }
            Err(e) => return Err(Problem::internal("insert account", &e)),
        }
        tracing::info!(account = %account.id, eab = account.eab_kid.as_deref().unwrap_or("-"), "account created");
        Ok((account, true))
    }

    /// RFC 8555 §7.3.4: the binding's structure, then its MAC with the
    /// named key, then that the key may still bind. Returns the key's id.
    async fn check_binding(&self, key: &Jwk, binding: &Value, outer_url: &str) -> Result<String, Problem> {
        let b = Binding::parse(binding, outer_url, key).map_err(eab_problem)?;
        let kid = b.kid.clone();
        let Some((eab, secret)) = self.db("eab key", move |st| st.eab_key(&kid)).await? else {
            return Err(Problem::unauthorized("unknown external account key"));
        };
        b.verify(&secret).map_err(eab_problem)?;
        drop(secret);
        if let Some(why) = eab.binding_refusal(self.clock.unix()) {
            return Err(Problem::unauthorized(why));
        }
        Ok(eab.kid)
    }

    /// The EAB key an account is bound to, if any. A key revoked (or gone)
    /// since binding stops the account's issuance.
    pub(super) async fn account_eab(&self, a: &Account) -> Result<Option<EabKey>, Problem> {
        let Some(kid) = a.eab_kid.clone() else { return Ok(None) };
        match self.db("eab key", move |st| st.eab_key(&kid)).await? {
            Some((key, _secret)) if key.revoked_at.is_none() => Ok(Some(key)),
            _ => Err(Problem::unauthorized("the external account key this account is bound to has been revoked")),
        }
    }

    /// An account update: deactivation and contacts (RFC 8555 §7.3.2, §7.3.6).
    pub async fn update_account(
        &self,
        mut account: Account,
        status: Option<&str>,
        contact: Option<Vec<String>>,
    ) -> Result<Account, Problem> {
        match status {
            None => {}
            Some("deactivated") => account.status = AccountStatus::Deactivated,
            Some(other) => return Err(Problem::malformed(format!("account status {other:?} cannot be requested"))),
        }
        if let Some(contact) = contact {
            check_contacts(&contact)?;
            account.contact = contact;
        }
        let updated = account.clone();
        match self.db_raw(move |st| st.update_account(&updated)).await {
            Ok(()) => Ok(account),
            Err(StoreError::Stale) => Err(Problem::malformed("the account changed concurrently; retry")),
            Err(e) => Err(Problem::internal("update account", &e)),
        }
    }

    /// The orders of an account, oldest first (their ids).
    pub async fn orders_of(&self, account: &Account) -> Result<Vec<String>, Problem> {
        let id = account.id.clone();
        self.db("orders", move |st| st.orders_of(&id)).await
    }

    /// RFC 8555 §7.3.5, once the WFE has verified both signatures: swaps the
    /// account's key unless the new one is in use.
    pub async fn change_key(&self, account: &Account, new_key: &Jwk) -> Result<Account, KeyChange> {
        let new_tp = new_key.thumbprint();
        if new_tp == account.thumbprint {
            return Err(KeyChange::Refused(Problem::malformed("the new key is the current key")));
        }
        let tp = new_tp.clone();
        let other = self.db("account", move |st| st.account_by_thumbprint(&tp)).await.map_err(KeyChange::Refused)?;
        if let Some(other) = other {
            return Err(KeyChange::TakenBy(other.id));
        }
        let mut updated = account.clone();
        updated.jwk = new_key.to_value();
        updated.thumbprint = new_tp.clone();
        let u = updated.clone();
        match self.db_raw(move |st| st.update_account(&u)).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                // Lost a race to the same new key: name the winner.
                let tp = new_tp;
                let winner =
                    self.db("account", move |st| st.account_by_thumbprint(&tp)).await.map_err(KeyChange::Refused)?;
                return Err(match winner {
                    Some(w) => KeyChange::TakenBy(w.id),
                    None => KeyChange::Refused(Problem::malformed("the new key was taken concurrently; retry")),
                });
            }
            Err(StoreError::Stale) => {
                return Err(KeyChange::Refused(Problem::malformed("the account changed concurrently; retry")))
            }
            Err(e) => return Err(KeyChange::Refused(Problem::internal("key change", &e))),
        }
        tracing::info!(account = %account.id, "account key changed");
        Ok(updated)
    }
}
