//! The SQLite schema and its migrations, and the file's permissions.

use std::path::Path;

use rusqlite::Connection;

use super::db;
use crate::acme::store::StoreError;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS used_nonces (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, thumbprint TEXT NOT NULL UNIQUE, version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, account_id TEXT NOT NULL, created_at INTEGER NOT NULL, version INTEGER NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS orders_account ON orders (account_id, created_at);
CREATE TABLE IF NOT EXISTS authzs (
    id TEXT PRIMARY KEY, account_id TEXT NOT NULL, status TEXT NOT NULL, expires INTEGER NOT NULL,
    version INTEGER NOT NULL, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS authzs_account ON authzs (account_id, status, expires);
CREATE TABLE IF NOT EXISTS certificates (
    id TEXT PRIMARY KEY, serial TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL, doc TEXT NOT NULL);
";

/// Schema changes after [`SCHEMA`], applied in order; `PRAGMA user_version`
/// records how many ran, so an existing database is upgraded in place and a
/// database from a newer keyrite is refused rather than misread.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: managed External Account Binding keys. The MAC secret has its own
    // column so that the JSON document can be logged or listed safely.
    "CREATE TABLE IF NOT EXISTS eab_keys (
        kid TEXT PRIMARY KEY, created_at INTEGER NOT NULL, hmac BLOB NOT NULL, doc TEXT NOT NULL);",
    // 2: ARI replacements (RFC 9773 §5): which order replaces which
    // certificate (by its store id), so `alreadyReplaced` survives restarts.
    "CREATE TABLE IF NOT EXISTS replacements (
        cert_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, account_id TEXT NOT NULL, created_at INTEGER NOT NULL);",
    // 3: housekeeping and the leaf CRL. Orders get their expiry as a column
    // so expired ones can be purged by index; certificates get expiry and
    // revocation columns so the CRL is one indexed scan, not a walk over
    // every document. Existing rows are filled from their documents.
    "ALTER TABLE orders ADD COLUMN expires INTEGER NOT NULL DEFAULT 0;
     UPDATE orders SET expires = COALESCE(json_extract(doc, '$.expires'), 0);
     CREATE INDEX IF NOT EXISTS orders_expires ON orders (expires);
     CREATE INDEX IF NOT EXISTS authzs_expires ON authzs (expires);
     ALTER TABLE certificates ADD COLUMN not_after INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE certificates ADD COLUMN revoked_at INTEGER;
     ALTER TABLE certificates ADD COLUMN revoked_reason INTEGER;
     UPDATE certificates SET not_after = COALESCE(json_extract(doc, '$.not_after'), 0),
         revoked_at = json_extract(doc, '$.revoked_at'), revoked_reason = json_extract(doc, '$.revoked_reason');
     CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (revoked_at) WHERE revoked_at IS NOT NULL;
     CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // 4: one write path for issuance and the issuance log. Every serial is
    // stored with its intent before it is signed (`issuances`, pending),
    // and never deleted: a serial that may have been signed is never
    // reused or forgotten. The log's lines, and its end (size, last hash,
    // compact Merkle range, last checkpoint) in one row every appending
    // transaction updates. Certificates issued before this migration are
    // not in the log; it starts where the migration ran.
    "CREATE TABLE IF NOT EXISTS issuances (
        serial TEXT PRIMARY KEY, state TEXT NOT NULL, deadline INTEGER NOT NULL, order_id TEXT,
        created_at INTEGER NOT NULL, der BLOB, doc TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS issuances_pending ON issuances (deadline) WHERE state = 'pending';
     CREATE TABLE IF NOT EXISTS issuance_log (seq INTEGER PRIMARY KEY, line TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS issuance_log_head (
        id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, prev TEXT NOT NULL,
        range BLOB NOT NULL, last_checkpoint INTEGER, keys TEXT NOT NULL);
     INSERT OR IGNORE INTO issuance_log_head (id, size, prev, range, last_checkpoint, keys)
        VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', zeroblob(8), NULL, '[]');",
];

/// The database holds the nonce HMAC key and the EAB keys' HMACs: it is
/// created readable by its owner only (SQLite gives its WAL and shared-memory
/// files the same mode), and an existing one others can read is refused.
pub(super) fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mode = std::fs::metadata(path)
                .map_err(|e| StoreError::Database(format!("{}: {e}", path.display())))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(StoreError::Database(format!(
                    "{} holds key material and is readable by group or others; chmod 600 it",
                    path.display()
                )));
            }
            Ok(())
        }
        Err(e) => Err(StoreError::Database(format!("{}: cannot create: {e}", path.display()))),
    }
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(db)?;
    let done: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(db)?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if done > known {
        return Err(StoreError::Database(format!(
            "the database has schema version {done}; this keyrite knows up to {known}"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(done).unwrap_or(0)) {
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap_or(i64::MAX)).map_err(db)?;
    }
    tx.commit().map_err(db)
}

#[cfg(test)]
mod permission_tests {
    use super::*;
    use crate::acme::store::sqlite::SqliteStore;
    use crate::acme::store::{Revoked, Store};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_store_is_created_owner_only_and_a_readable_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("acme.sqlite");
        SqliteStore::open(&fresh).expect("open");
        let mode = std::fs::metadata(&fresh).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let open_to_all = dir.path().join("shared.sqlite");
        std::fs::write(&open_to_all, b"").expect("write");
        std::fs::set_permissions(&open_to_all, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = SqliteStore::open(&open_to_all).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    /// A database made by a keyrite that knew migrations 1–2 is upgraded in
    /// place: its orders can be purged and its revocations reach the CRL.
    #[test]
    fn migration_3_fills_the_new_columns_from_existing_documents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(SCHEMA).expect("schema");
            for sql in &MIGRATIONS[..2] {
                conn.execute_batch(sql).expect("old migration");
            }
            conn.pragma_update(None, "user_version", 2).expect("version");
            let order = r#"{"id":"o1","account_id":"a1","status":"pending","expires":1000,"identifiers":[],
                "not_before":null,"not_after":null,"authz_ids":[],"error":null,"certificate_id":null,
                "created_at":900,"version":0}"#;
            conn.execute(
                "INSERT INTO orders (id, account_id, created_at, version, doc) VALUES ('o1','a1',900,0,?1)",
                [order],
            )
            .expect("order");
            let cert = r#"{"id":"c1","account_id":"a1","order_id":"o1","serial_hex":"0abc","der":[],"chain_pem":"",
                "identifiers":[],"key_thumbprint":"t","not_after":5000,"revoked_reason":4,"revoked_at":1500}"#;
            conn.execute("INSERT INTO certificates (id, serial, account_id, doc) VALUES ('c1','0abc','a1',?1)", [cert])
                .expect("certificate");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let store = SqliteStore::open(&path).expect("upgraded");
        let revoked = store.revoked_unexpired(4000).expect("revoked");
        assert_eq!(revoked, vec![Revoked { serial_hex: "0abc".into(), revoked_at: 1500, reason: 4 }]);
        assert!(store.revoked_unexpired(5001).expect("revoked").is_empty(), "expired leaves leave the CRL");
        assert_eq!(store.revocation_mark().expect("mark"), (1, 1500));
        assert_eq!(store.purge_expired(1500, 100).expect("purge").orders, 1);
        assert_eq!(store.next_sequence("n").expect("seq"), 1);
        assert_eq!(store.next_sequence("n").expect("seq"), 2);
    }
}
