//! Fills an acme-serve store's issuance log with many `certificate-issued`
//! entries (the same shape acme-serve writes), signs a checkpoint, then
//! exports it with `keyrite acme issuance-log export`'s code and prints the
//! time and the process's peak RSS (VmHWM) after each step: the export
//! streams, so its memory does not grow with the log.
//!
//! `cargo bench --bench issuance_log -- [--entries N] [--keep DIR]`
//!
//! Without `--keep` the store and the export go to a temporary directory
//! that is removed at the end; with it they stay in DIR (which must not
//! exist), e.g. to time `keyrite audit verify` on the export.

use std::time::Instant;

use keyrite::acme::issuance_log::{issued_event, LogAppender, SignedFacts};
use keyrite::acme::model::{Issuance, IssuanceKind, IssuanceState};
use keyrite::acme::store::sqlite::SqliteStore;
use keyrite::acme::store::{export_issuance_log, Store};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use time::OffsetDateTime;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut entries = 1_000_000u64;
    let mut keep = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--entries" => entries = args.next().ok_or("--entries needs a number")?.parse()?,
            "--keep" => keep = Some(std::path::PathBuf::from(args.next().ok_or("--keep needs a directory")?)),
            _ => {} // cargo bench passes --bench
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = match &keep {
        Some(d) => {
            std::fs::create_dir(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let store = SqliteStore::open(&dir.join("acme.sqlite"))?;
    let audit = SoftKey::generate("audit", KeyAlgorithm::EcdsaP256)?;
    let id = store.log_id()?;
    let name = id.key_name(audit.spki_der());
    let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let signed =
        SignedFacts { certificate_sha256: "ab".repeat(32), tbs_sha256: "cd".repeat(32), lint_warnings: vec![] };

    let started = Instant::now();
    let mut written = 0u64;
    while written < entries {
        let batch = (entries - written).min(10_000);
        store.append_log(now, &mut |app: &mut LogAppender<'_>| {
            for i in written..written + batch {
                let intent = Issuance {
                    serial_hex: format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
                    kind: IssuanceKind::Order,
                    order_id: Some(format!("order-{i}")),
                    account_id: Some(format!("account-{}", i % 10_000)),
                    identifiers: vec![keyrite::acme::identifier::Identifier {
                        kind: "dns".into(),
                        value: format!("host-{i}.bench.test"),
                    }],
                    profile: None,
                    not_before: now.unix_timestamp(),
                    not_after: now.unix_timestamp() + 86_400,
                    spki_sha256: "ef".repeat(32),
                    state: IssuanceState::Issued,
                    created_at: now.unix_timestamp(),
                    deadline: now.unix_timestamp() + 10,
                };
                app.append(issued_event(&intent, &signed, false))?;
            }
            Ok(())
        })?;
        written += batch;
    }
    store.append_log(now, &mut |app| {
        app.announce(&name, audit.spki_der(), audit.signature_algorithm())?;
        app.checkpoint(&name, &audit)?;
        Ok(())
    })?;
    let filled = started.elapsed();
    println!(
        "filled {entries} entries (+ announcement and checkpoint) in {:.2} s; peak RSS {:.1} MB",
        filled.as_secs_f64(),
        peak_rss_mb()
    );

    let out = dir.join("issuance-log.jsonl");
    let started = Instant::now();
    let done = export_issuance_log(&store, &out)?;
    let size = std::fs::metadata(&out)?.len();
    println!(
        "exported {} lines ({:.0} MB) in {:.2} s; peak RSS {:.1} MB",
        done.entries,
        size as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
    println!("audit key SHA-256 {}", keyrite::words::sha256_hex(audit.spki_der()));
    Ok(())
}
