//! The SQLite side of the one write path: serials reserved before signing,
//! certificates stored with their order and log entry in one transaction,
//! interrupted issuances found and resolved, revocations logged, and the
//! issuance log's lines and end.
//!
//! Every transaction that appends to the log is `IMMEDIATE`: it takes the
//! database's write lock before it reads the log's end, so two instances on
//! one file cannot both take the same sequence number.

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use time::OffsetDateTime;

use super::{db, doc_in, from_json, to_json, unique_conflict, versioned, SqliteStore};
use crate::acme::issuance_log::{LogAppender, LogError, LogHead, LogId};
use crate::acme::model::{CertRecord, Issuance, IssuanceState, Order};
use crate::acme::store::{Completion, Store, StoreError, StoredIssuance};
use crate::audit::Event;

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The log's end, as the head row keeps it.
pub(super) fn read_head(conn: &Connection) -> Result<LogHead, StoreError> {
    let (size, prev, range, last, keys): (i64, String, Vec<u8>, Option<i64>, String) = conn
        .query_row("SELECT size, prev, range, last_checkpoint, keys FROM issuance_log_head WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .map_err(db)?;
    let last = last.map(|l| to_u64(l, "the last checkpoint")).transpose()?;
    Ok(LogHead::from_stored(to_u64(size, "the log size")?, prev, &range, last, &keys)?)
}

/// Stores new lines and the head they lead to, inside `tx`.
fn write_log(tx: &Transaction<'_>, head: &LogHead, lines: Vec<(u64, String)>) -> Result<(), StoreError> {
    for (seq, line) in lines {
        tx.execute("INSERT INTO issuance_log (seq, line) VALUES (?1, ?2)", params![to_i64(seq), line])
            .map_err(unique_conflict)?;
    }
    tx.execute(
        "UPDATE issuance_log_head SET size = ?1, prev = ?2, range = ?3, last_checkpoint = ?4, keys = ?5 WHERE id = 1",
        params![
            to_i64(head.size),
            head.prev,
            head.tree.to_bytes(),
            head.last_checkpoint.map(to_i64),
            head.announced_json()
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Appends `events` to the log inside `tx`.
fn log_events(tx: &Transaction<'_>, id: &LogId, now: OffsetDateTime, events: Vec<Event>) -> Result<(), StoreError> {
    let mut head = read_head(tx)?;
    let mut appender = LogAppender::new(&mut head, id, now);
    for e in events {
        appender.append(e)?;
    }
    let lines = appender.into_lines();
    write_log(tx, &head, lines)
}

/// A versioned order update inside `tx`; [`StoreError::Stale`] if it moved.
fn update_order_in(tx: &Transaction<'_>, order: &Order) -> Result<(), StoreError> {
    let mut next = order.clone();
    next.version += 1;
    let n = tx
        .execute(
            "UPDATE orders SET version = ?1, doc = ?2 WHERE id = ?3 AND version = ?4",
            params![next.version, to_json(&next)?, order.id, order.version],
        )
        .map_err(db)?;
    versioned(n)
}

/// The issuance's state, or `None` if the serial was never reserved.
fn state_of(tx: &Transaction<'_>, serial: &str) -> Result<Option<(Issuance, String)>, StoreError> {
    let row: Option<(String, String)> = tx
        .query_row("SELECT doc, state FROM issuances WHERE serial = ?1", [serial], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db)?;
    row.map(|(doc, state)| Ok((from_json(&doc)?, state))).transpose()
}

fn set_state(tx: &Transaction<'_>, mut issuance: Issuance, state: IssuanceState) -> Result<(), StoreError> {
    issuance.state = state;
    tx.execute(
        "UPDATE issuances SET state = ?1, doc = ?2 WHERE serial = ?3",
        params![state.name(), to_json(&issuance)?, issuance.serial_hex],
    )
    .map_err(db)?;
    Ok(())
}

pub(super) fn reserve(store: &SqliteStore, issuance: &Issuance, claim: Option<&Order>) -> Result<(), StoreError> {
    let mut conn = store.grouped()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    if let Some(order) = claim {
        update_order_in(&tx, order)?;
    }
    tx.execute(
        "INSERT INTO issuances (serial, state, deadline, order_id, created_at, der, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
        params![
            issuance.serial_hex,
            issuance.state.name(),
            issuance.deadline,
            issuance.order_id,
            issuance.created_at,
            to_json(issuance)?
        ],
    )
    .map_err(unique_conflict)?;
    tx.commit().map_err(db)?;
    drop(conn);
    // On disk before the signer is called: a serial that may be signed is
    // never forgotten.
    store.durable()
}

pub(super) fn complete(store: &SqliteStore, done: Completion<'_>, now: OffsetDateTime) -> Result<(), StoreError> {
    let id = store.log_id()?;
    let mut conn = store.grouped()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let Some((issuance, state)) = state_of(&tx, done.serial_hex)? else {
        return Err(StoreError::Corrupt(format!("serial {} was never reserved", done.serial_hex)));
    };
    if state != IssuanceState::Pending.name() {
        return Err(StoreError::NotPending(done.serial_hex.to_string()));
    }
    if let Some((cert, order)) = done.acme {
        insert_certificate_row(&tx, cert)?;
        update_order_in(&tx, order)?;
    }
    tx.execute("UPDATE issuances SET der = ?1 WHERE serial = ?2", params![done.der, done.serial_hex]).map_err(db)?;
    set_state(&tx, issuance, IssuanceState::Issued)?;
    log_events(&tx, &id, now, vec![done.event])?;
    tx.commit().map_err(db)?;
    drop(conn);
    // On disk before the caller hands out the certificate URL.
    store.durable()
}

fn insert_certificate_row(tx: &Transaction<'_>, cert: &CertRecord) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO certificates (id, serial, account_id, not_after, revoked_at, revoked_reason, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            cert.id,
            cert.serial_hex,
            cert.account_id,
            cert.not_after,
            cert.revoked_at,
            cert.revoked_reason,
            to_json(cert)?
        ],
    )
    .map_err(unique_conflict)?;
    Ok(())
}

pub(super) fn record_signed(store: &SqliteStore, serial: &str, der: &[u8]) -> Result<(), StoreError> {
    let conn = store.conn()?;
    let n = conn
        .execute("UPDATE issuances SET der = ?1 WHERE serial = ?2 AND state = 'pending'", params![der, serial])
        .map_err(db)?;
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::NotPending(serial.to_string()))
    }
}

pub(super) fn abandon(
    store: &SqliteStore,
    serial: &str,
    order: Option<&Order>,
    event: Event,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let id = store.log_id()?;
    let mut conn = store.grouped()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let Some((issuance, state)) = state_of(&tx, serial)? else { return Ok(false) };
    if state != IssuanceState::Pending.name() {
        return Ok(false);
    }
    if let Some(order) = order {
        update_order_in(&tx, order)?;
    }
    set_state(&tx, issuance, IssuanceState::Abandoned)?;
    log_events(&tx, &id, now, vec![event])?;
    tx.commit().map_err(db)?;
    drop(conn);
    store.durable()?;
    Ok(true)
}

fn rows(conn: &Connection, sql: &str, param: rusqlite::types::Value) -> Result<Vec<StoredIssuance>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(db)?;
    let found = stmt
        .query_map([param], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)))
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db)?;
    found
        .into_iter()
        .map(|(doc, der)| Ok(StoredIssuance { issuance: from_json(&doc)?, certificate_der: der }))
        .collect()
}

pub(super) fn stale(store: &SqliteStore, now: i64) -> Result<Vec<StoredIssuance>, StoreError> {
    let conn = store.conn()?;
    rows(
        &conn,
        "SELECT doc, der FROM issuances WHERE state = 'pending' AND deadline < ?1 ORDER BY deadline LIMIT 1000",
        now.into(),
    )
}

pub(super) fn by_serial(store: &SqliteStore, serial: &str) -> Result<Option<StoredIssuance>, StoreError> {
    let conn = store.conn()?;
    Ok(rows(&conn, "SELECT doc, der FROM issuances WHERE serial = ?1", serial.to_string().into())?.pop())
}

pub(super) fn revoke(
    store: &SqliteStore,
    id: &str,
    reason: u8,
    at: i64,
    event: Event,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let log_id = store.log_id()?;
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let Some(mut cert) = doc_in::<CertRecord>(&tx, "SELECT doc FROM certificates WHERE id = ?1", id)? else {
        return Ok(false);
    };
    if cert.revoked_at.is_some() {
        return Ok(false);
    }
    cert.revoked_reason = Some(reason);
    cert.revoked_at = Some(at);
    tx.execute(
        "UPDATE certificates SET doc = ?1, revoked_at = ?2, revoked_reason = ?3 WHERE id = ?4",
        params![to_json(&cert)?, at, reason, id],
    )
    .map_err(db)?;
    log_events(&tx, &log_id, now, vec![event])?;
    tx.commit().map_err(db)?;
    Ok(true)
}

pub(super) fn append_log(
    store: &SqliteStore,
    now: OffsetDateTime,
    build: &mut dyn FnMut(&mut LogAppender<'_>) -> Result<(), LogError>,
) -> Result<LogHead, StoreError> {
    let id = store.log_id()?;
    let mut conn = store.conn()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
    let mut head = read_head(&tx)?;
    let mut appender = LogAppender::new(&mut head, &id, now);
    build(&mut appender)?;
    let lines = appender.into_lines();
    write_log(&tx, &head, lines)?;
    tx.commit().map_err(db)?;
    Ok(head)
}

/// Lines are read in chunks, the connection released between them, so an
/// export never holds the server's connection for long.
const EXPORT_CHUNK: u64 = 10_000;

pub(super) fn log_lines(
    store: &SqliteStore,
    from: u64,
    to: u64,
    sink: &mut dyn FnMut(u64, &str) -> Result<(), String>,
) -> Result<(), StoreError> {
    let mut next = from;
    while next < to {
        let end = next.saturating_add(EXPORT_CHUNK).min(to);
        let chunk: Vec<(i64, String)> = {
            let conn = store.conn()?;
            let mut stmt = conn
                .prepare_cached("SELECT seq, line FROM issuance_log WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")
                .map_err(db)?;
            let rows = stmt
                .query_map(params![to_i64(next), to_i64(end)], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            rows
        };
        for (seq, line) in chunk {
            let seq = to_u64(seq, "a log seq")?;
            if seq != next {
                return Err(StoreError::Corrupt(format!("the issuance log has no line {next} (next is {seq})")));
            }
            sink(seq, &line).map_err(StoreError::Log)?;
            next += 1;
        }
        if next < end {
            return Err(StoreError::Corrupt(format!("the issuance log ends at line {next}, before {to}")));
        }
    }
    Ok(())
}
