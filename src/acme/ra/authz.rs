//! Authorizations and challenges: deactivation, claiming a challenge for
//! validation, and the validation worker that records the result.

use std::sync::Arc;
use std::time::Duration;

use super::Ra;
use crate::acme::clock::{secs, ClockExt, SharedClock};
use crate::acme::model::{Account, Authorization, AuthzStatus, ChallengeStatus};
use crate::acme::problem::Problem;
use crate::acme::store::{blocking, Store, StoreError};
use crate::acme::va::Validator;

impl Ra {
    /// An authorization the account owns.
    pub async fn authz(&self, account: &Account, id: String) -> Result<Authorization, Problem> {
        let z = self
            .db("authorization", move |st| st.authz(&id))
            .await?
            .ok_or_else(|| Problem::not_found("no such authorization"))?;
        if z.account_id != account.id {
            return Err(Problem::unauthorized("the request's account does not own this authorization"));
        }
        Ok(z)
    }

    /// RFC 8555 §7.5.2: a pending or valid authorization may be deactivated.
    pub async fn deactivate_authz(&self, mut z: Authorization) -> Result<Authorization, Problem> {
        if !matches!(z.effective_status(self.clock.unix()), AuthzStatus::Pending | AuthzStatus::Valid) {
            return Err(Problem::malformed("only a pending or valid authorization can be deactivated"));
        }
        z.status = AuthzStatus::Deactivated;
        let u = z.clone();
        match self.db_raw(move |st| st.update_authz(&u)).await {
            Ok(()) => {
                z.version += 1;
                Ok(z)
            }
            Err(StoreError::Stale) => Err(Problem::malformed("the authorization changed concurrently; retry")),
            Err(e) => Err(Problem::internal("deactivate authz", &e)),
        }
    }

    /// RFC 8555 §7.5.1: the client says a challenge is ready. Claims it
    /// (`processing`, one challenge of an authorization at a time) and
    /// starts its validation in the background; returns the claimed
    /// authorization. `account_uri` is the account's URL (CAA's
    /// `accounturi`).
    pub async fn respond_to_challenge(
        &self,
        account: &Account,
        mut z: Authorization,
        index: usize,
        account_uri: String,
    ) -> Result<Authorization, Problem> {
        if z.effective_status(self.clock.unix()) != AuthzStatus::Pending {
            return Err(Problem::malformed("the authorization is no longer pending"));
        }
        if z.challenges.iter().any(|c| c.status == ChallengeStatus::Processing) {
            return Err(Problem::malformed("another challenge of this authorization is being validated"));
        }
        z.challenges[index].status = ChallengeStatus::Processing;
        let claim = z.clone();
        match self.db_raw(move |st| st.update_authz(&claim)).await {
            Ok(()) => z.version += 1,
            Err(StoreError::Stale) => {
                return Err(Problem::malformed("another challenge of this authorization is being validated"))
            }
            Err(e) => return Err(Problem::internal("claim challenge", &e)),
        }
        let task = ValidationTask {
            store: self.store.clone(),
            validator: self.validator.clone(),
            clock: self.clock.clone(),
            valid_for: self.settings.authz_valid_lifetime,
        };
        let key_authorization = format!("{}.{}", z.challenges[index].token, account.thumbprint);
        tokio::spawn(task.run(z.id.clone(), z.challenges[index].id.clone(), key_authorization, account_uri));
        Ok(z)
    }
}

/// What a validation worker needs, and nothing more: the store, the
/// validator, the clock and how long a valid authorization lasts.
struct ValidationTask {
    store: Arc<dyn Store>,
    validator: Arc<Validator>,
    clock: SharedClock,
    valid_for: Duration,
}

impl ValidationTask {
    /// Validates the challenge (and CAA, when configured) and records the
    /// result, retrying a lost compare-and-swap a few times.
    async fn run(self, authz_id: String, chall_id: String, key_authorization: String, account_uri: String) {
        let id = authz_id.clone();
        let Ok(Some(z)) = blocking(&self.store, move |st| st.authz(&id)).await else {
            tracing::error!(authz = %authz_id, "authorization vanished before validation");
            return;
        };
        let Some(c) = z.challenges.iter().find(|c| c.id == chall_id).cloned() else { return };
        let mut result = self.validator.validate(c.kind, &z.identifier, &c.token, &key_authorization).await;
        if result.is_ok() {
            result = self.validator.check_caa(&z.identifier, z.wildcard, &account_uri, c.kind).await;
        }
        for _ in 0..10 {
            let id = authz_id.clone();
            let Ok(Some(mut z)) = blocking(&self.store, move |st| st.authz(&id)).await else { return };
            let Some(c) = z.challenges.iter_mut().find(|c| c.id == chall_id) else { return };
            let now = self.clock.unix();
            match &result {
                Ok(()) => {
                    c.status = ChallengeStatus::Valid;
                    c.validated = Some(now);
                    z.status = AuthzStatus::Valid;
                    z.expires = now + secs(self.valid_for);
                }
                Err(p) => {
                    c.status = ChallengeStatus::Invalid;
                    c.error = Some(p.document());
                    z.status = AuthzStatus::Invalid;
                }
            }
            let u = z.clone();
            match blocking(&self.store, move |st| st.update_authz(&u)).await {
                Ok(()) => {
                    tracing::info!(authz = %authz_id, valid = result.is_ok(), "validation finished");
                    return;
                }
                Err(StoreError::Stale) => continue,
                Err(e) => {
                    tracing::error!(authz = %authz_id, error = %e, "could not record the validation result");
                    return;
                }
            }
        }
    }
}
