//! Persistence behind a trait, so the SQLite store used for a single node
//! can be joined by a PostgreSQL one for several instances.
//!
//! Every method is synchronous and short; the server calls them on tokio's
//! blocking pool. Updates are compare-and-swap on each object's `version`:
//! two instances racing on one authorization cannot both win.
//!
//! # The one write path for issuance
//!
//! A certificate is issued in two transactions around the signature, the
//! same on every backend:
//!
//! 1. [`Store::reserve_issuance`]: the serial and the intent (order,
//!    account, names, profile, validity, the CSR's key) are stored, and the
//!    order claimed (`processing`), durably, *before* the signer is called.
//! 2. [`Store::complete_issuance`]: the certificate, the order made valid,
//!    the issuance marked issued and its `certificate-issued` log entry, in
//!    one transaction, only while the issuance is still pending.
//!
//! If the second fails after signing, [`Store::record_signed`] keeps the
//! signed certificate beside its serial, and [`Store::stale_issuances`]
//! finds every issuance left pending past its deadline: one with a stored
//! certificate is completed, one without is abandoned
//! ([`Store::abandon_issuance`]: its order fails, its serial is retired and
//! logged). On PostgreSQL the same steps are `INSERT … ` and `UPDATE …
//! WHERE state = 'pending'` in `SERIALIZABLE` or `SELECT … FOR UPDATE`
//! transactions on the log's head row; nothing here assumes one process.

pub mod sqlite;

use time::OffsetDateTime;

use super::eab::EabKey;
use super::issuance_log::{LogAppender, LogError, LogHead, LogId};
use super::model::{Account, Authorization, CertRecord, Issuance, Order};
use crate::audit::Event;
use crate::secret::Secret;

/// What went wrong in the store. Messages carry their cause's text; no
/// variant has a `#[source]` (one cause policy: the message, never both).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, a full disk, a lock held too long); the
    /// text is the database's.
    #[error("database error: {0}")]
    Database(String),
    /// A stored document does not decode: the database was edited or is
    /// from an incompatible version.
    #[error("stored object does not decode: {0}")]
    Corrupt(String),
    /// A unique value (an account key) is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A versioned update lost a race; the caller re-reads.
    #[error("the object changed concurrently")]
    Stale,
    /// The store refused a state change (an EAB key that can no longer
    /// bind); the text is safe to show a client.
    #[error("{0}")]
    Refused(String),
    /// RFC 9773 §5: the certificate already has a live replacement order.
    #[error("the certificate is already replaced by order {0}")]
    AlreadyReplaced(String),
    /// An issuance was no longer pending when it was to be completed:
    /// another instance resolved it after its deadline.
    #[error("issuance of serial {0} is no longer pending: it was resolved after its deadline")]
    NotPending(String),
    /// An issuance log entry could not be made.
    #[error("{0}")]
    Log(String),
}

impl From<LogError> for StoreError {
    fn from(e: LogError) -> Self {
        StoreError::Log(e.to_string())
    }
}

/// What one housekeeping pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub nonces: usize,
    pub orders: usize,
    pub authzs: usize,
}

/// One CRL entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub serial_hex: String,
    pub revoked_at: i64,
    pub reason: u8,
}

/// How an issuance ends, written in one transaction.
pub struct Completion<'a> {
    pub serial_hex: &'a str,
    /// The signed certificate (DER), kept with its serial.
    pub der: &'a [u8],
    /// The ACME certificate record and its order (now valid), for an order;
    /// `None` for the server's own certificate.
    pub acme: Option<(&'a CertRecord, &'a Order)>,
    /// The `certificate-issued` entry.
    pub event: Event,
}

/// A reserved serial as stored: the issuance and, once signed and stored
/// (or kept after a failed write), its certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredIssuance {
    pub issuance: Issuance,
    pub certificate_der: Option<Vec<u8>>,
}

/// What the ACME server keeps.
pub trait Store: Send + Sync {
    /// Returns the value stored under `key`, storing `init` first if there
    /// is none (the shared nonce key, the issuance log's identity).
    fn meta_get_or_init(&self, key: &str, init: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Records a nonce as used; `false` if it already was.
    fn redeem_nonce(&self, id: &str, expires_at: i64) -> Result<bool, StoreError>;
    /// Housekeeping: drops used nonces past their expiry, orders that
    /// expired more than `grace_secs` ago without a certificate, and
    /// authorizations (with their challenges) that expired as long ago.
    /// Certificates, the valid orders that produced them, and issuances
    /// are kept.
    fn purge_expired(&self, now: i64, grace_secs: i64) -> Result<Purged, StoreError>;
    /// How many pending, unexpired authorizations an account holds.
    fn pending_authzs(&self, account_id: &str, now: i64) -> Result<u64, StoreError>;
    /// Revoked certificates not yet expired at `now`: what the CRL lists.
    fn revoked_unexpired(&self, now: i64) -> Result<Vec<Revoked>, StoreError>;
    /// A cheap summary (count, latest time) of revocations, so an instance
    /// notices another's revocation without reading every entry.
    fn revocation_mark(&self) -> Result<(i64, i64), StoreError>;
    /// The next value of a named counter (1, 2, …), shared by every
    /// instance on this store (CRL numbers).
    fn next_sequence(&self, name: &str) -> Result<u64, StoreError>;

    fn insert_account(&self, account: &Account) -> Result<(), StoreError>;
    fn account(&self, id: &str) -> Result<Option<Account>, StoreError>;
    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, StoreError>;
    /// Versioned update; also how a key change is stored (the thumbprint
    /// column is unique, so a key in use by another account conflicts).
    fn update_account(&self, account: &Account) -> Result<(), StoreError>;

    /// Inserts an order with its authorizations, atomically.
    fn insert_order(&self, order: &Order, authzs: &[Authorization]) -> Result<(), StoreError>;
    /// Inserts an order that replaces certificate `cert_id` (RFC 9773 §5),
    /// in one transaction with the replacement record, so two racing
    /// orders cannot both replace it. A previous replacement order that
    /// ended invalid (or expired unfinished) no longer counts, so a failed
    /// renewal does not lock the certificate out of `replaces`.
    fn insert_order_replacing(
        &self,
        order: &Order,
        authzs: &[Authorization],
        cert_id: &str,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The order recorded as replacing certificate `cert_id`, if any.
    fn replacement_of(&self, cert_id: &str) -> Result<Option<String>, StoreError>;
    fn order(&self, id: &str) -> Result<Option<Order>, StoreError>;
    fn update_order(&self, order: &Order) -> Result<(), StoreError>;
    fn orders_of(&self, account_id: &str) -> Result<Vec<String>, StoreError>;

    fn authz(&self, id: &str) -> Result<Option<Authorization>, StoreError>;
    fn update_authz(&self, authz: &Authorization) -> Result<(), StoreError>;
    /// Authorizations of `account_id` that are valid until after `now`.
    fn valid_authzs_of(&self, account_id: &str, now: i64) -> Result<Vec<Authorization>, StoreError>;

    /// Step 1 of an issuance: stores the serial and intent, and the order
    /// (already set to `processing`) with a compare-and-swap on its version,
    /// in one durable transaction. [`StoreError::Stale`] when the order
    /// changed (another finalize claimed it); [`StoreError::Conflict`] when
    /// the serial was ever used.
    fn reserve_issuance(&self, issuance: &Issuance, claim: Option<&Order>) -> Result<(), StoreError>;
    /// Step 2: stores the certificate, the order (valid) and the log entry,
    /// and marks the issuance issued, in one durable transaction, only if
    /// the issuance is still pending ([`StoreError::NotPending`] otherwise).
    fn complete_issuance(&self, done: Completion<'_>, now: OffsetDateTime) -> Result<(), StoreError>;
    /// Keeps a signed certificate beside its still-pending serial, when
    /// step 2 failed: recovery then completes the issuance from it.
    fn record_signed(&self, serial_hex: &str, der: &[u8]) -> Result<(), StoreError>;
    /// Retires a pending serial without a certificate: the issuance is
    /// marked abandoned, its order (if any, given already `invalid` with
    /// its error) stored, and `event` logged, in one durable transaction;
    /// `false` if it was no longer pending.
    fn abandon_issuance(
        &self,
        serial_hex: &str,
        order: Option<&Order>,
        event: Event,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Issuances still pending after their deadline (`deadline < now`),
    /// each with the signed certificate if one was recorded.
    fn stale_issuances(&self, now: i64) -> Result<Vec<StoredIssuance>, StoreError>;
    /// An issuance by serial, with its certificate if signed and stored.
    fn issuance(&self, serial_hex: &str) -> Result<Option<StoredIssuance>, StoreError>;

    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, StoreError>;
    fn certificate_by_serial(&self, serial_hex: &str) -> Result<Option<CertRecord>, StoreError>;
    /// Revokes a certificate and logs `event`, in one transaction.
    /// Versionless: revocation is a one-way latch guarded by
    /// `revoked_at IS NULL`; `false` if it was revoked already.
    fn revoke_certificate(
        &self,
        id: &str,
        reason: u8,
        at: i64,
        event: Event,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// The issuance log's identity (made once per store).
    fn log_id(&self) -> Result<LogId, StoreError>;
    /// The issuance log's end.
    fn log_head(&self) -> Result<LogHead, StoreError>;
    /// Appends what `build` writes (announcements, checkpoints) at the
    /// log's end, in one durable transaction holding the log: no other
    /// entry can take a sequence number while `build` signs.
    fn append_log(
        &self,
        now: OffsetDateTime,
        build: &mut dyn FnMut(&mut LogAppender<'_>) -> Result<(), LogError>,
    ) -> Result<LogHead, StoreError>;
    /// Hands the lines with seq in `from..to` to `sink`, in order, without
    /// holding them all in memory (an export of tens of millions of lines).
    fn log_lines(
        &self,
        from: u64,
        to: u64,
        sink: &mut dyn FnMut(u64, &str) -> Result<(), String>,
    ) -> Result<(), StoreError>;

    /// Stores a new EAB key with its MAC secret.
    fn insert_eab_key(&self, key: &EabKey, secret: &Secret) -> Result<(), StoreError>;
    /// An EAB key and its MAC secret.
    fn eab_key(&self, kid: &str) -> Result<Option<(EabKey, Secret)>, StoreError>;
    /// Every EAB key (no secrets), oldest first.
    fn eab_keys(&self) -> Result<Vec<EabKey>, StoreError>;
    /// `false` if there is no such key or it already was revoked.
    fn revoke_eab_key(&self, kid: &str, at: i64) -> Result<bool, StoreError>;
    /// Inserts an account bound to EAB key `kid`, in one transaction with
    /// the key's re-check (not revoked, not expired, not already bound if
    /// single-use) and its use count: two racing accounts cannot both bind
    /// a single-use key. A refused binding is [`StoreError::Refused`].
    fn insert_account_bound(&self, account: &Account, kid: &str, now: i64) -> Result<(), StoreError>;
}

/// Runs a store call on tokio's blocking pool (every store call blocks).
pub async fn blocking<T: Send + 'static>(
    store: &std::sync::Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Database(format!("store task: {e}")))?
}

/// Mints an EAB key (`keyrite acme eab create`) and stores it with its MAC
/// secret; the secret is returned once, for the operator to hand over.
pub fn create_eab_key(
    store: &dyn Store,
    policy: super::eab::EabPolicy,
    expires_at: Option<i64>,
    multi_use: bool,
    note: String,
    now: i64,
) -> Result<(EabKey, Secret), StoreError> {
    let (key, secret) =
        super::eab::mint(policy, expires_at, multi_use, note, now).map_err(|e| StoreError::Database(e.to_string()))?;
    store.insert_eab_key(&key, &secret)?;
    Ok((key, secret))
}

/// What an issuance log export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Lines written: the log from its first line through its latest
    /// checkpoint.
    pub entries: u64,
    /// Lines the log holds after that checkpoint, left for the next export
    /// (they are not covered by a signature yet).
    pub after_checkpoint: u64,
    /// The audit key names announced in the log.
    pub audit_keys: Vec<String>,
}

/// Writes the issuance log from its first line through its latest
/// checkpoint to `out`, which must not exist (written once, streamed: the
/// log is never held in memory). Every export is a prefix of every later
/// one. Fails if the log has no checkpoint yet.
pub fn export_issuance_log(store: &dyn Store, out: &std::path::Path) -> Result<Exported, StoreError> {
    let head = store.log_head()?;
    let Some(last) = head.last_checkpoint else {
        return Err(StoreError::Log(
            "the issuance log has no checkpoint yet: start acme-serve once (it signs one at start)".into(),
        ));
    };
    let end = last + 1;
    let mut failure: Option<StoreError> = None;
    let written = crate::files::write_new_with(out, crate::files::Mode::Public, |w| {
        let result = store.log_lines(0, end, &mut |_, line| {
            super::issuance_log::write_line(w, line).map_err(|e| format!("{}: {e}", out.display()))
        });
        result.map_err(|e| {
            let text = e.to_string();
            failure = Some(e);
            std::io::Error::other(text)
        })
    });
    match (written, failure) {
        (Ok(()), _) => {}
        (Err(_), Some(e)) => return Err(e),
        (Err(e), None) => return Err(StoreError::Log(e.to_string())),
    }
    Ok(Exported { entries: end, after_checkpoint: head.size - end, audit_keys: head.announced })
}
