//! The single-node store: SQLite in WAL mode, objects as JSON documents with
//! their lookup columns beside them.
//!
//! `synchronous=FULL` because an issued certificate must survive a power
//! cut once a client has it; WAL keeps readers off the writer's back.
//!
//! The hot path of an issuance (nonce redemption, account, order,
//! authorization and certificate writes) commits without its own fsync and
//! then waits for a group fsync of the WAL instead ([`GroupSync`]): one
//! fsync covers every commit made before it started, so concurrent flows
//! share it and each still returns only once its write is on disk. Any
//! other write keeps `synchronous=FULL`.

mod issuance;
mod schema;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use super::{Completion, Purged, Revoked, Store, StoreError, StoredIssuance};
use crate::acme::eab::EabKey;
use crate::acme::issuance_log::{LogAppender, LogError, LogHead, LogId};
use crate::acme::model::{Account, Authorization, AuthzStatus, CertRecord, Issuance, Order, OrderStatus};
use crate::audit::Event;
use crate::secret::Secret;
use schema::{migrate, owner_only, SCHEMA};

/// The SQLite store: one connection, behind a mutex, and the group fsync
/// of its write-ahead log.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    wal: GroupSync,
    /// The issuance log's identity, read once.
    log_id: OnceLock<LogId>,
}

/// Group commit for the WAL: a writer that committed under
/// `synchronous=NORMAL` (appended to the WAL, no fsync) calls
/// [`GroupSync::wait`]; the first waiter fsyncs the WAL file for everyone
/// who committed before it started, the others wait for that fsync or the
/// next. fsync(2) flushes the file whatever descriptor wrote it, so our own
/// descriptor of the `-wal` file is as good as SQLite's; the WAL keeps its
/// inode while any connection is open, and ours stays open.
struct GroupSync {
    file: File,
    path: PathBuf,
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Commits that asked to be made durable, counted in order.
    committed: u64,
    /// Every commit up to this count is on disk.
    synced: u64,
    /// An fsync is under way.
    syncing: bool,
    /// The last fsync failed: the commits it covered may not be on disk.
    failed: Option<String>,
}

impl GroupSync {
    fn open(db: &Path) -> Result<Self, StoreError> {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        // Opening the database in WAL mode and running the schema created it.
        let file = File::open(&path).map_err(|e| {
            StoreError::Database(format!("{}: cannot open the write-ahead log for fsync: {e}", path.display()))
        })?;
        Ok(GroupSync { file, path, state: Mutex::new(SyncState::default()), done: Condvar::new() })
    }

    /// Returns once every commit made before the call is on disk.
    fn wait(&self) -> Result<(), StoreError> {
        let poisoned = |_| StoreError::Database("WAL sync mutex poisoned".into());
        let mut st = self.state.lock().map_err(poisoned)?;
        st.committed += 1;
        let mine = st.committed;
        loop {
            if st.synced >= mine {
                return match &st.failed {
                    Some(e) => Err(StoreError::Database(format!(
                        "fsync of {} failed ({e}): the write may not be on disk; check the disk and restart",
                        self.path.display()
                    ))),
                    None => Ok(()),
                };
            }
            if st.syncing {
                st = self.done.wait(st).map_err(poisoned)?;
                continue;
            }
            // Everything counted so far was committed before this fsync
            // starts, so it covers them all.
            st.syncing = true;
            let upto = st.committed;
            drop(st);
            let result = self.file.sync_data();
            st = self.state.lock().map_err(poisoned)?;
            st.syncing = false;
            st.synced = upto;
            // Once an fsync has failed, the kernel may have dropped the
            // dirty pages: no later commit is trusted either.
            if let Err(e) = result {
                st.failed.get_or_insert(e.to_string());
            }
            self.done.notify_all();
        }
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        owner_only(path)?;
        let mut conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        migrate(&mut conn)?;
        let wal = GroupSync::open(path)?;
        Ok(SqliteStore { conn: Mutex::new(conn), wal, log_id: OnceLock::new() })
    }

    /// The connection, committing with its own fsync (`synchronous=FULL`).
    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.lock_with("FULL")
    }

    /// The connection for a hot-path write: its commit is not synced by
    /// SQLite, so the caller must drop the guard and then call
    /// [`Self::durable`] before reporting success (nonce redemption
    /// excepted, see [`Store::redeem_nonce`]).
    fn grouped(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.lock_with("NORMAL")
    }

    fn lock_with(&self, synchronous: &str) -> Result<MutexGuard<'_, Connection>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Database("connection mutex poisoned".into()))?;
        conn.pragma_update(None, "synchronous", synchronous).map_err(db)?;
        Ok(conn)
    }

    /// Waits for the group fsync covering the caller's commit.
    fn durable(&self) -> Result<(), StoreError> {
        self.wal.wait()
    }

    fn get<T: DeserializeOwned>(&self, sql: &str, key: &str) -> Result<Option<T>, StoreError> {
        let conn = self.conn()?;
        let doc: Option<String> = conn.query_row(sql, [key], |r| r.get(0)).optional().map_err(db)?;
        doc.map(|d| from_json(&d)).transpose()
    }
}

/// The document a row keyed by `key` holds, read inside a transaction.
fn doc_in<T: DeserializeOwned>(tx: &rusqlite::Transaction<'_>, sql: &str, key: &str) -> Result<Option<T>, StoreError> {
    let doc: Option<String> = tx.query_row(sql, [key], |r| r.get(0)).optional().map_err(db)?;
    doc.map(|d| from_json(&d)).transpose()
}

fn status_name(s: AuthzStatus) -> &'static str {
    match s {
        AuthzStatus::Pending => "pending",
        AuthzStatus::Valid => "valid",
        AuthzStatus::Invalid => "invalid",
        AuthzStatus::Deactivated => "deactivated",
        AuthzStatus::Expired => "expired",
        AuthzStatus::Revoked => "revoked",
    }
}

/// An order and its authorizations, inside the caller's transaction.
fn insert_order_rows(
    tx: &rusqlite::Transaction<'_>,
    order: &Order,
    authzs: &[Authorization],
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO orders (id, account_id, created_at, expires, version, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![order.id, order.account_id, order.created_at, order.expires, order.version, to_json(order)?],
    )
    .map_err(db)?;
    for a in authzs {
        tx.execute(
            "INSERT INTO authzs (id, account_id, status, expires, version, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![a.id, a.account_id, status_name(a.status), a.expires, a.version, to_json(a)?],
        )
        .map_err(db)?;
    }
    Ok(())
}

fn versioned(changed: usize) -> Result<(), StoreError> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::Stale)
    }
}

fn unique_conflict(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict("a unique value is already in use".into())
        }
        e => db(e),
    }
}

impl Store for SqliteStore {
    fn meta_get_or_init(&self, key: &str, init: &[u8]) -> Result<Vec<u8>, StoreError> {
        let conn = self.conn()?;
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", params![key, init]).map_err(db)?;
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).map_err(db)
    }

    /// Committed without waiting for an fsync. The row goes into the WAL
    /// before the request it guards does anything, so any later fsync (the
    /// request's own durable write included) puts it on disk too; a power
    /// cut can drop it only together with everything the request changed,
    /// and replaying such a request does again what was lost. Read-only
    /// requests (POST-as-GET) can be replayed after a power cut within the
    /// nonce's lifetime, which gives away nothing their first answer did not.
    fn redeem_nonce(&self, id: &str, expires_at: i64) -> Result<bool, StoreError> {
        let conn = self.grouped()?;
        let n = conn
            .execute("INSERT OR IGNORE INTO used_nonces (id, expires_at) VALUES (?1, ?2)", params![id, expires_at])
            .map_err(db)?;
        Ok(n == 1)
    }

    fn purge_expired(&self, now: i64, grace_secs: i64) -> Result<Purged, StoreError> {
        let cutoff = now.saturating_sub(grace_secs);
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db)?;
        let nonces = tx.execute("DELETE FROM used_nonces WHERE expires_at < ?1", [now]).map_err(db)?;
        // A valid order stays with its certificate: it is what an ARI
        // replacement points at, so `alreadyReplaced` holds for as long as
        // the certificate is kept.
        let orders = tx
            .execute("DELETE FROM orders WHERE expires < ?1 AND json_extract(doc, '$.status') != 'valid'", [cutoff])
            .map_err(db)?;
        // Challenges live inside their authorization's document.
        let authzs = tx.execute("DELETE FROM authzs WHERE expires < ?1", [cutoff]).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Purged { nonces, orders, authzs })
    }

    fn pending_authzs(&self, account_id: &str, now: i64) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM authzs WHERE account_id = ?1 AND status = 'pending' AND expires > ?2",
                params![account_id, now],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn revoked_unexpired(&self, now: i64) -> Result<Vec<Revoked>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare(
                "SELECT serial, revoked_at, revoked_reason FROM certificates
                 WHERE revoked_at IS NOT NULL AND not_after >= ?1 ORDER BY revoked_at, serial",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([now], |r| {
                Ok(Revoked {
                    serial_hex: r.get(0)?,
                    revoked_at: r.get(1)?,
                    reason: r.get::<_, Option<u8>>(2)?.unwrap_or(0),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    fn revocation_mark(&self) -> Result<(i64, i64), StoreError> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT count(*), COALESCE(max(revoked_at), 0) FROM certificates WHERE revoked_at IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(db)
    }

    fn next_sequence(&self, name: &str) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let v: i64 = conn
            .query_row(
                "INSERT INTO sequences (name, value) VALUES (?1, 1)
                 ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                [name],
                |r| r.get(0),
            )
            .map_err(db)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("sequence {name} is negative")))
    }

    fn insert_account(&self, a: &Account) -> Result<(), StoreError> {
        let conn = self.grouped()?;
        conn.execute(
            "INSERT INTO accounts (id, thumbprint, version, doc) VALUES (?1, ?2, ?3, ?4)",
            params![a.id, a.thumbprint, a.version, to_json(a)?],
        )
        .map_err(unique_conflict)?;
        drop(conn);
        self.durable()
    }

    fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.get("SELECT doc FROM accounts WHERE id = ?1", id)
    }

    fn account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<Account>, StoreError> {
        self.get("SELECT doc FROM accounts WHERE thumbprint = ?1", thumbprint)
    }

    fn update_account(&self, a: &Account) -> Result<(), StoreError> {
        let mut next = a.clone();
        next.version += 1;
        let conn = self.conn()?;
        let n = conn
            .execute(
                "UPDATE accounts SET thumbprint = ?1, version = ?2, doc = ?3 WHERE id = ?4 AND version = ?5",
                params![next.thumbprint, next.version, to_json(&next)?, a.id, a.version],
            )
            .map_err(unique_conflict)?;
        versioned(n)
    }

    fn insert_order(&self, order: &Order, authzs: &[Authorization]) -> Result<(), StoreError> {
        let mut conn = self.grouped()?;
        let tx = conn.transaction().map_err(db)?;
        insert_order_rows(&tx, order, authzs)?;
        tx.commit().map_err(db)?;
        drop(conn);
        self.durable()
    }

    fn insert_order_replacing(
        &self,
        order: &Order,
        authzs: &[Authorization],
        cert_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        // Immediate: the check and the insert must not interleave with
        // another instance's.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
        let previous: Option<String> = tx
            .query_row("SELECT order_id FROM replacements WHERE cert_id = ?1", [cert_id], |r| r.get(0))
            .optional()
            .map_err(db)?;
        if let Some(prev_id) = previous {
            let doc: Option<String> = tx
                .query_row("SELECT doc FROM orders WHERE id = ?1", [&prev_id], |r| r.get(0))
                .optional()
                .map_err(db)?;
            let live = match doc {
                Some(d) => {
                    let prev: Order = from_json(&d)?;
                    match prev.status {
                        OrderStatus::Valid | OrderStatus::Processing => true,
                        OrderStatus::Pending | OrderStatus::Ready => prev.expires > now,
                        OrderStatus::Invalid => false,
                    }
                }
                None => false,
            };
            if live {
                return Err(StoreError::AlreadyReplaced(prev_id));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO replacements (cert_id, order_id, account_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![cert_id, order.id, order.account_id, now],
        )
        .map_err(db)?;
        insert_order_rows(&tx, order, authzs)?;
        tx.commit().map_err(db)
    }

    fn replacement_of(&self, cert_id: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn()?;
        conn.query_row("SELECT order_id FROM replacements WHERE cert_id = ?1", [cert_id], |r| r.get(0))
            .optional()
            .map_err(db)
    }

    fn order(&self, id: &str) -> Result<Option<Order>, StoreError> {
        self.get("SELECT doc FROM orders WHERE id = ?1", id)
    }

    fn update_order(&self, o: &Order) -> Result<(), StoreError> {
        let mut next = o.clone();
        next.version += 1;
        let conn = self.grouped()?;
        let n = conn
            .execute(
                "UPDATE orders SET version = ?1, doc = ?2 WHERE id = ?3 AND version = ?4",
                params![next.version, to_json(&next)?, o.id, o.version],
            )
            .map_err(db)?;
        drop(conn);
        versioned(n)?;
        self.durable()
    }

    fn orders_of(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id FROM orders WHERE account_id = ?1 ORDER BY created_at, id").map_err(db)?;
        let rows = stmt.query_map([account_id], |r| r.get::<_, String>(0)).map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    fn authz(&self, id: &str) -> Result<Option<Authorization>, StoreError> {
        self.get("SELECT doc FROM authzs WHERE id = ?1", id)
    }

    fn update_authz(&self, a: &Authorization) -> Result<(), StoreError> {
        let mut next = a.clone();
        next.version += 1;
        let conn = self.grouped()?;
        let n = conn
            .execute(
                "UPDATE authzs SET status = ?1, expires = ?2, version = ?3, doc = ?4 WHERE id = ?5 AND version = ?6",
                params![status_name(next.status), next.expires, next.version, to_json(&next)?, a.id, a.version],
            )
            .map_err(db)?;
        drop(conn);
        versioned(n)?;
        self.durable()
    }

    fn valid_authzs_of(&self, account_id: &str, now: i64) -> Result<Vec<Authorization>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT doc FROM authzs WHERE account_id = ?1 AND status = 'valid' AND expires > ?2")
            .map_err(db)?;
        let rows = stmt.query_map(params![account_id, now], |r| r.get::<_, String>(0)).map_err(db)?;
        let docs = rows.collect::<Result<Vec<_>, _>>().map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    fn reserve_issuance(&self, issuance: &Issuance, claim: Option<&Order>) -> Result<(), StoreError> {
        issuance::reserve(self, issuance, claim)
    }

    fn complete_issuance(&self, done: Completion<'_>, now: OffsetDateTime) -> Result<(), StoreError> {
        issuance::complete(self, done, now)
    }

    fn record_signed(&self, serial_hex: &str, der: &[u8]) -> Result<(), StoreError> {
        issuance::record_signed(self, serial_hex, der)
    }

    fn abandon_issuance(
        &self,
        serial_hex: &str,
        order: Option<&Order>,
        event: Event,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        issuance::abandon(self, serial_hex, order, event, now)
    }

    fn stale_issuances(&self, now: i64) -> Result<Vec<StoredIssuance>, StoreError> {
        issuance::stale(self, now)
    }

    fn issuance(&self, serial_hex: &str) -> Result<Option<StoredIssuance>, StoreError> {
        issuance::by_serial(self, serial_hex)
    }

    fn certificate(&self, id: &str) -> Result<Option<CertRecord>, StoreError> {
        self.get("SELECT doc FROM certificates WHERE id = ?1", id)
    }

    fn certificate_by_serial(&self, serial_hex: &str) -> Result<Option<CertRecord>, StoreError> {
        self.get("SELECT doc FROM certificates WHERE serial = ?1", serial_hex)
    }

    fn revoke_certificate(
        &self,
        id: &str,
        reason: u8,
        at: i64,
        event: Event,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        issuance::revoke(self, id, reason, at, event, now)
    }

    fn log_id(&self) -> Result<LogId, StoreError> {
        if let Some(id) = self.log_id.get() {
            return Ok(id.clone());
        }
        let mut fresh = [0u8; 8];
        aws_lc_rs::rand::fill(&mut fresh).map_err(|_| StoreError::Database("random number generator failed".into()))?;
        let stored = self.meta_get_or_init(crate::acme::issuance_log::LOG_ID_META, &fresh)?;
        Ok(self.log_id.get_or_init(|| LogId::from_random(&stored)).clone())
    }

    fn log_head(&self) -> Result<LogHead, StoreError> {
        let conn = self.conn()?;
        issuance::read_head(&conn)
    }

    fn append_log(
        &self,
        now: OffsetDateTime,
        build: &mut dyn FnMut(&mut LogAppender<'_>) -> Result<(), LogError>,
    ) -> Result<LogHead, StoreError> {
        issuance::append_log(self, now, build)
    }

    fn log_lines(
        &self,
        from: u64,
        to: u64,
        sink: &mut dyn FnMut(u64, &str) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        issuance::log_lines(self, from, to, sink)
    }

    fn insert_eab_key(&self, key: &EabKey, secret: &Secret) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO eab_keys (kid, created_at, hmac, doc) VALUES (?1, ?2, ?3, ?4)",
            params![key.kid, key.created_at, secret.expose(), to_json(key)?],
        )
        .map_err(unique_conflict)?;
        Ok(())
    }

    fn eab_key(&self, kid: &str) -> Result<Option<(EabKey, Secret)>, StoreError> {
        let conn = self.conn()?;
        let row: Option<(String, Vec<u8>)> = conn
            .query_row("SELECT doc, hmac FROM eab_keys WHERE kid = ?1", [kid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db)?;
        match row {
            None => Ok(None),
            Some((doc, mac)) => Ok(Some((from_json(&doc)?, Secret::new(mac)))),
        }
    }

    fn eab_keys(&self) -> Result<Vec<EabKey>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT doc FROM eab_keys ORDER BY created_at, kid").map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        let docs = rows.collect::<Result<Vec<_>, _>>().map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    fn revoke_eab_key(&self, kid: &str, at: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
        let Some(mut key) = doc_in::<EabKey>(&tx, "SELECT doc FROM eab_keys WHERE kid = ?1", kid)? else {
            return Ok(false);
        };
        if key.revoked_at.is_some() {
            return Ok(false);
        }
        key.revoked_at = Some(at);
        tx.execute("UPDATE eab_keys SET doc = ?1 WHERE kid = ?2", params![to_json(&key)?, kid]).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn insert_account_bound(&self, a: &Account, kid: &str, now: i64) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
        let Some(mut key) = doc_in::<EabKey>(&tx, "SELECT doc FROM eab_keys WHERE kid = ?1", kid)? else {
            return Err(StoreError::Refused("no such external account key".into()));
        };
        if let Some(why) = key.binding_refusal(now) {
            return Err(StoreError::Refused(why.into()));
        }
        key.bound_accounts = key.bound_accounts.saturating_add(1);
        tx.execute("UPDATE eab_keys SET doc = ?1 WHERE kid = ?2", params![to_json(&key)?, kid]).map_err(db)?;
        tx.execute(
            "INSERT INTO accounts (id, thumbprint, version, doc) VALUES (?1, ?2, ?3, ?4)",
            params![a.id, a.thumbprint, a.version, to_json(a)?],
        )
        .map_err(unique_conflict)?;
        tx.commit().map_err(db)
    }
}

#[cfg(test)]
mod group_sync_tests {
    use super::*;
    use crate::acme::model::AccountStatus;

    fn account(i: usize) -> Account {
        Account {
            id: format!("acct{i}"),
            jwk: serde_json::json!({"kty": "EC", "n": i}),
            thumbprint: format!("thumb{i}"),
            status: AccountStatus::Valid,
            contact: Vec::new(),
            created_at: 0,
            version: 0,
            eab_kid: None,
        }
    }

    #[test]
    fn concurrent_writers_share_fsyncs_and_every_write_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("acme.sqlite");
        let store = std::sync::Arc::new(SqliteStore::open(&path).expect("open"));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        store.insert_account(&account(t * 100 + i)).expect("insert");
                        assert!(store.redeem_nonce(&format!("n{t}-{i}"), 9_999_999_999).expect("redeem"));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        let st = store.wal.state.lock().expect("state");
        assert_eq!(st.committed, 200, "one durable wait per account");
        assert_eq!(st.synced, st.committed, "every wait was covered by an fsync");
        assert!(st.failed.is_none());
        drop(st);
        // Single use survives the grouped path.
        assert!(!store.redeem_nonce("n3-7", 9_999_999_999).expect("redeem"));
        drop(store);
        let reopened = SqliteStore::open(&path).expect("reopen");
        for i in [0, 24, 700, 724] {
            assert!(reopened.account(&format!("acct{i}")).expect("read").is_some(), "acct{i}");
        }
        assert!(!reopened.redeem_nonce("n7-24", 9_999_999_999).expect("redeem"));
    }
}
