//! Writes a synthetic audit log of N entries, shaped like an export of
//! acme-serve's issuance records (one `certificate-issued` entry per leaf, a
//! signed checkpoint every K entries, a closing checkpoint), then verifies it
//! the way `keyrite audit verify --checkpoint` does, streaming, and prints
//! the time and the process's peak RSS (VmHWM) after each phase.
//!
//! `cargo bench --bench audit_verify -- [--entries N] [--checkpoint-every K] [--keep FILE]`
//!
//! `--keep` writes the log to FILE and leaves it there, to measure the
//! binary too: `/usr/bin/time -v keyrite audit verify --checkpoint HEX FILE`.

use std::time::Instant;

use keyrite::audit::{self, Artifact, AuditLog, Event, VerifyOptions};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut entries = 1_000_000u64;
    let mut every = 10_000u64;
    let mut keep = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--entries" => entries = args.next().ok_or("--entries needs a number")?.parse()?,
            "--checkpoint-every" => every = args.next().ok_or("--checkpoint-every needs a number")?.parse()?,
            "--keep" => keep = Some(std::path::PathBuf::from(args.next().ok_or("--keep needs a path")?)),
            _ => {} // cargo bench passes --bench
        }
    }
    let dir = tempfile::tempdir()?;
    let path = keep.clone().unwrap_or_else(|| dir.path().join("audit.jsonl"));

    let key = SoftKey::generate("acme-export-audit", KeyAlgorithm::EcdsaP256)?;
    let started = Instant::now();
    let mut log = AuditLog::create(&path, "acme-export-2025")?.sync_at_checkpoints_only();
    let name = log.origin().to_string();
    log.append(Event::new("export", "ceremony-started").detail("kind", "acme-issuance-export"))?;
    log.announce_key(&name, key.spki_der(), key.signature_algorithm())?;
    let mut last = None;
    while log.len() < entries.saturating_sub(2) {
        let i = log.len();
        log.append(
            Event::new("issue", "certificate-issued")
                .actor(format!("acct-{}", i % 5000))
                .input(Artifact::of("csr", &i.to_be_bytes()))
                .output(Artifact::of("certificate", &(i ^ 0x5a5a).to_be_bytes()))
                .detail("serial", format!("{:040x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15))
                .detail("names", vec![format!("host-{i}.fleet.example")])
                .detail("not_after", "2025-03-08T10:00:00Z"),
        )?;
        if log.len().is_multiple_of(every) {
            last = Some(log.checkpoint(&key, &name)?);
        }
    }
    log.append(Event::new("export", "ceremony-closed"))?;
    let final_cp = log.checkpoint(&key, &name)?;
    let _ = last;
    let total = log.len();
    drop(log);
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "wrote {total} entries ({} MiB, a checkpoint every {every}) in {:.1} s; peak RSS so far {} KiB",
        bytes >> 20,
        started.elapsed().as_secs_f64(),
        peak_rss_kib()
    );

    let started = Instant::now();
    let report = audit::verify(
        &path,
        &VerifyOptions {
            paper_checkpoints: vec![final_cp.fingerprint.hex.clone()],
            expect_closed: true,
            ..VerifyOptions::default()
        },
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(report.entries, total);
    println!(
        "verified {} entries and {} checkpoints against the paper checkpoint in {elapsed:.1} s ({:.0} entries/s); peak RSS {} KiB",
        report.entries,
        report.checkpoints,
        report.entries as f64 / elapsed,
        peak_rss_kib()
    );
    if keep.is_some() {
        println!("kept {}; paper checkpoint {}", path.display(), final_cp.fingerprint.hex);
    }
    Ok(())
}

/// The process's peak resident set (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
