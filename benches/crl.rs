//! Builds, lints, signs and verifies one CRL with many entries and prints
//! the elapsed time and the process's peak RSS (VmHWM).
//!
//! `cargo bench --bench crl -- [--entries N] [--write-index FILE]`
//!
//! `--write-index` writes the same entries as an OpenSSL `index.txt` after
//! the measurement, for `benches/openssl-crl.sh` to hand to `openssl ca
//! -gencrl`.

use std::io::Write;
use std::time::Instant;

use keyrite::ca::{build_crl, CrlParams, RevocationReason};
use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{KeyAlgorithm, Signer};
use keyrite::profile::{issue, IssueRequest, IssuerRef, Profile};
use time::{Duration, OffsetDateTime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut entries = 1_000_000usize;
    let mut index_out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--entries" => entries = args.next().ok_or("--entries needs a number")?.parse()?,
            "--write-index" => index_out = Some(args.next().ok_or("--write-index needs a path")?),
            _ => {} // cargo bench passes --bench
        }
    }

    let key = SoftKey::generate("bench-root", KeyAlgorithm::EcdsaP256)?;
    let profile = Profile::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/root-ca.toml"))?;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0)?;
    let root = issue(
        &IssueRequest {
            profile: &profile,
            subject: None,
            subject_spki: key.spki_der(),
            sans: vec![],
            serial: vec![0x42; 16],
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
            issuer: IssuerRef::SelfSigned,
        },
        &key,
    )?;

    // 16-byte positive serials from a fixed xorshift stream: the same
    // entries every run, and for openssl.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let serials: Vec<[u8; 16]> = (0..entries)
        .map(|_| {
            let mut s = [0u8; 16];
            s[..8].copy_from_slice(&next().to_be_bytes());
            s[8..].copy_from_slice(&next().to_be_bytes());
            s[0] = (s[0] & 0x7f).max(1);
            s
        })
        .collect();
    let revoked_at = now - Duration::hours(1);
    let reasons = [RevocationReason::KeyCompromise, RevocationReason::Superseded, RevocationReason::Unspecified];

    let start = Instant::now();
    let crl = build_crl(
        CrlParams {
            issuer_cert_der: &root.der,
            crl_number: 1,
            previous_crl_number: None,
            this_update: now,
            next_update: now + Duration::days(7),
            revoked: serials.iter().enumerate().map(|(i, s)| (&s[..], revoked_at, reasons[i % 3])),
            issuing_distribution_point: None,
        },
        &key,
    )?;
    let elapsed = start.elapsed();
    let hwm = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!(
        "keyrite build_crl: {entries} entries, {:.3} s, peak RSS {hwm}, DER {} bytes, PEM {} bytes (ECDSA P-256, lint + sign + verify)",
        elapsed.as_secs_f64(),
        crl.der.len(),
        crl.pem.len()
    );

    if let Some(path) = index_out {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let fmt = |t: OffsetDateTime| {
            format!(
                "{:02}{:02}{:02}{:02}{:02}{:02}Z",
                t.year() % 100,
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        };
        let expiry = fmt(now + Duration::days(365));
        let revoked = fmt(revoked_at);
        let names = ["keyCompromise", "superseded", "unspecified"];
        for (i, s) in serials.iter().enumerate() {
            writeln!(out, "R\t{expiry}\t{revoked},{}\t{}\tunknown\t/CN=bench {i}", names[i % 3], hex::encode_upper(s))?;
        }
        out.flush()?;
    }
    Ok(())
}
