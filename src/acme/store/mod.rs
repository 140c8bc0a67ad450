//! Persistence behind a trait, so the SQLite store used for a single node
//! can be joined by a PostgreSQL one for several instances.
//!
//! Every method is synchronous and short; the WFE calls them on tokio's
//! blocking pool. Updates are compare-and-swap on each object's `version`:
//! two instances racing on one authorization cannot both win.

pub mod sqlite;

use super::eab::EabKey;
use super::model::{Account, Authorization, CertRecord, Order};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
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

/// What the ACME server keeps.
pub trait Store: Send + Sync {
    /// Returns the value stored under `key`, storing `init` first if there
    /// is none (used for the shared nonce key).
    fn meta_get_or_init(&self, key: &str, init: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Records a nonce as used; `false` if it already was.
    fn redeem_nonce(&self, id: &str, expires_at: i64) -> Result<bool, StoreError>;
    /// Housekeeping: drops used nonces past their expiry, orders that
    /// expired more than `grace_secs` ago without a certificate, and
    /// authorizations (with their challenges) that expired as long ago.
    /// Certificates, and the valid orders that produced them, are kept.
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

    /// Stores the certificate and the order that now points to it, in one
    /// transaction: a certificate is committed before it is returned.
    fn insert_certificate(&self, cert: &CertRecord, order: &Order) -> Result<(), StoreError>;
    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, StoreError>;
    fn certificate_by_serial(&self, serial_hex: &str) -> Result<Option<CertRecord>, StoreError>;
    /// Versionless: revocation is a one-way latch guarded by `revoked_at IS NULL`.
    fn revoke_certificate(&self, id: &str, reason: u8, at: i64) -> Result<bool, StoreError>;

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
