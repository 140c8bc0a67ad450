//! The `shares` room: splitting a secret among custodians with SLIP-0039.
//!
//! The codec is written in-house (see `docs/design.md`): the one maintained
//! Rust Shamir crate carries an unpatched advisory (RUSTSEC-2024-0398, it drew
//! coefficients from 1..=255) and the SLIP-0039 crates are unmaintained. Only
//! aws-lc-rs supplies primitives (PBKDF2, HMAC, SHA-256, constant-time
//! compare). The format is checked against the official test vectors and,
//! in tests, against the reference Python implementation.
//!
//! Share sets made here have one group: `threshold` of `count` custodians.
//! Combining accepts any valid SLIP-0039 set, groups included, so a secret
//! backed up elsewhere can be recovered too.

mod cipher;
mod gf256;
mod rs1024;
mod slip39;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use zeroize::Zeroizing;

use crate::hsm::{HsmError, RandomSource};
use crate::secret::Secret;

pub use slip39::Share;
use slip39::{MAX_SHARES, MIN_SECRET_BYTES};

/// Why shares could not be made, read or combined.
///
/// Shares are named by their position in the input, counting from 1; groups
/// by their number, counting from 1. No message carries share words, secret
/// bytes or passphrases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharesError {
    #[error("no shares were entered: enter the threshold number of shares")]
    NoShares,
    #[error("share {share} is empty: enter its words")]
    EmptyShare { share: usize },
    #[error(
        "word {word} of share {share} is not in the SLIP-0039 word list: check its spelling against the share card and re-enter the share (write every word in full)"
    )]
    UnknownWord { share: usize, word: usize },
    #[error(
        "share {share} has {words} words, which no SLIP-0039 share has (a 128-bit secret gives 20 words, a 256-bit secret 33): look for a missing or extra word"
    )]
    WrongLength { share: usize, words: usize },
    #[error("share {share} has a bad checksum: a word is mistyped; re-enter it")]
    BadChecksum { share: usize },
    #[error("share {share} has non-zero padding bits, so it is not a valid SLIP-0039 share: re-enter it or use another share")]
    BadPadding { share: usize },
    #[error(
        "share {share} states a group threshold of {threshold} but only {count} groups, so it is not a valid share: use another share"
    )]
    GroupThresholdAboveCount { share: usize, threshold: u8, count: u8 },
    #[error("shares {first} and {second} come from different share sets (their {what} differ): combine only shares of one set")]
    DifferentSets { first: usize, second: usize, what: &'static str },
    #[error(
        "shares {first} and {second} are in the same group but state different member thresholds: at least one is corrupt; use another share"
    )]
    MemberThresholdMismatch { first: usize, second: usize },
    #[error(
        "shares {first} and {second} have the same member index (the same share was entered twice, or two copies of one share exist): remove one and bring another custodian's share"
    )]
    DuplicateMember { first: usize, second: usize },
    #[error("too few shares{}: have {have}, need {need}; bring {} more", in_group(*.group), .need.saturating_sub(*.have))]
    TooFew {
        /// The group, counting from 1, when the set has more than one.
        group: Option<u8>,
        have: usize,
        need: usize,
    },
    #[error("too many shares{}: have {have}, need exactly {need}; leave out {}", in_group(*.group), .have.saturating_sub(*.need))]
    TooMany { group: Option<u8>, have: usize, need: usize },
    #[error(
        "too few groups: shares from {have} groups were entered, {need} are needed; bring shares of another group"
    )]
    TooFewGroups { have: usize, need: usize },
    #[error(
        "too many groups: shares from {have} groups were entered, exactly {need} are needed; leave out the shares of {} group(s)",
        .have.saturating_sub(*.need)
    )]
    TooManyGroups { have: usize, need: usize },
    #[error(
        "the shares combine but the digest does not match{}: at least one share is wrong; try another combination of shares",
        in_group(*.group)
    )]
    DigestMismatch { group: Option<u8> },
    #[error(
        "a threshold of {threshold} out of {count} shares is not possible: use 1 <= threshold <= count <= 16, and threshold 1 only with a single share"
    )]
    InvalidThreshold { threshold: u8, count: u8 },
    #[error("a secret of {len} bytes cannot be shared: use at least 16 bytes and an even number of bytes")]
    SecretLength { len: usize },
    #[error("iteration exponent {exponent} is out of range: use 0 to 15")]
    IterationExponent { exponent: u8 },
    #[error("the passphrase must be printable ASCII (codes 32 to 126) so any SLIP-0039 tool can use it: choose another passphrase")]
    Passphrase,
    #[error("the random source failed: {0}")]
    Random(HsmError),
    #[error("internal error in the shares codec ({0}): please report it")]
    Internal(&'static str),
}

fn in_group(group: Option<u8>) -> String {
    group.map(|g| format!(" in group {g}")).unwrap_or_default()
}

/// Splits `master_secret` into `count` shares, any `threshold` of which
/// recover it (one group; extendable; a fresh random identifier).
///
/// The spec forbids threshold 1 with more than one share (every share would
/// be the secret itself), so 1-of-1 is the only threshold-1 split. The
/// passphrase must be printable ASCII; the secret at least 16 bytes and of
/// even length. PBKDF2 runs 10000·2^`iteration_exponent` iterations.
pub fn split(
    master_secret: &Secret,
    threshold: u8,
    count: u8,
    passphrase: &[u8],
    iteration_exponent: u8,
    rng: &dyn RandomSource,
) -> Result<Vec<Share>, SharesError> {
    check_split_parameters(threshold, count, iteration_exponent)?;
    let len = master_secret.len();
    if len < MIN_SECRET_BYTES || !len.is_multiple_of(2) {
        return Err(SharesError::SecretLength { len });
    }
    if !passphrase.iter().all(|c| (32..=126).contains(c)) {
        return Err(SharesError::Passphrase);
    }
    let identifier = random_identifier(rng)?;
    let ems = cipher::encrypt(master_secret.expose(), passphrase, iteration_exponent, identifier, true)?;
    split_ems(&ems, identifier, iteration_exponent, threshold, count, rng)
}

/// Recovers the master secret from a quorum of shares.
///
/// SLIP-0039 asks for exactly the threshold: exactly `group threshold`
/// groups, each with exactly its member threshold of shares. Extra shares
/// are refused rather than ignored, so an unchecked share is never taken for
/// a checked one. A wrong passphrase is not detectable: it yields a
/// different secret, as the spec intends.
pub fn combine(shares: &[Share], passphrase: &[u8]) -> Result<Secret, SharesError> {
    let ems = recover_ems(shares)?;
    let first = shares.first().ok_or(SharesError::NoShares)?;
    let mut ms = cipher::decrypt(&ems, passphrase, first.iteration_exponent, first.identifier, first.extendable)?;
    Ok(Secret::new(std::mem::take(&mut *ms)))
}

/// Parses each mnemonic (named by its position) and combines them.
pub fn combine_mnemonics(mnemonics: &[&str], passphrase: &[u8]) -> Result<Secret, SharesError> {
    let shares =
        mnemonics.iter().enumerate().map(|(i, m)| Share::parse_nth(m, i + 1)).collect::<Result<Vec<_>, _>>()?;
    combine(&shares, passphrase)
}

/// Makes a new set (new identifier, new threshold and count) for the secret
/// that a quorum of `old` recovers; shares of the two sets do not mix.
///
/// For an extendable old set the encrypted secret is re-split as is, so the
/// master secret is never decrypted and every passphrase keeps opening the
/// same secret it did before; `passphrase` is not used. For a non-extendable
/// set the encryption is bound to the old identifier, so the secret is
/// decrypted with `passphrase` and re-encrypted as extendable under it.
pub fn reshare(
    old: &[Share],
    passphrase: &[u8],
    new_threshold: u8,
    new_count: u8,
    rng: &dyn RandomSource,
) -> Result<Vec<Share>, SharesError> {
    let first = old.first().ok_or(SharesError::NoShares)?;
    let exponent = first.iteration_exponent;
    check_split_parameters(new_threshold, new_count, exponent)?;
    let ems = recover_ems(old)?;
    let mut identifier = random_identifier(rng)?;
    if identifier == first.identifier {
        // Equal identifiers would let old and new shares pass the set check
        // together and fail only later, at the digest, with a vaguer error.
        identifier = (identifier + 1) & 0x7fff;
    }
    let ems = if first.extendable {
        ems
    } else {
        let ms = cipher::decrypt(&ems, passphrase, exponent, first.identifier, false)?;
        cipher::encrypt(&ms, passphrase, exponent, identifier, true)?
    };
    split_ems(&ems, identifier, exponent, new_threshold, new_count, rng)
}

fn check_split_parameters(threshold: u8, count: u8, iteration_exponent: u8) -> Result<(), SharesError> {
    if threshold == 0 || threshold > count || count > MAX_SHARES || (threshold == 1 && count > 1) {
        return Err(SharesError::InvalidThreshold { threshold, count });
    }
    if iteration_exponent > 15 {
        return Err(SharesError::IterationExponent { exponent: iteration_exponent });
    }
    Ok(())
}

fn random_identifier(rng: &dyn RandomSource) -> Result<u16, SharesError> {
    let bytes = rng.random_bytes(2)?;
    match bytes.as_slice() {
        [a, b] => Ok(u16::from_be_bytes([*a, *b]) & 0x7fff),
        _ => Err(SharesError::Internal("the random source returned the wrong length")),
    }
}

/// One group (group threshold 1 of 1) holding `threshold`-of-`count` shares.
fn split_ems(
    ems: &[u8],
    identifier: u16,
    iteration_exponent: u8,
    threshold: u8,
    count: u8,
    rng: &dyn RandomSource,
) -> Result<Vec<Share>, SharesError> {
    // With one group the group share is the encrypted secret itself
    // (SplitSecret with threshold 1), so the members split it directly.
    let members = slip39::split_secret(threshold, count, ems, rng)?;
    Ok(members
        .into_iter()
        .map(|(x, mut y)| Share {
            identifier,
            extendable: true,
            iteration_exponent,
            group_index: 0,
            group_threshold: 1,
            group_count: 1,
            member_index: x,
            member_threshold: threshold,
            value: Secret::new(std::mem::take(&mut *y)),
        })
        .collect())
}

/// Checks a set of shares as SLIP-0039 "Combining the shares" requires and
/// recovers the encrypted master secret.
fn recover_ems(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, SharesError> {
    let first = shares.first().ok_or(SharesError::NoShares)?;
    for (i, s) in shares.iter().enumerate().skip(1) {
        let what = if s.identifier != first.identifier {
            Some("identifiers")
        } else if s.extendable != first.extendable {
            Some("extendable flags")
        } else if s.iteration_exponent != first.iteration_exponent {
            Some("iteration exponents")
        } else if s.group_threshold != first.group_threshold {
            Some("group thresholds")
        } else if s.group_count != first.group_count {
            Some("group counts")
        } else if s.value.len() != first.value.len() {
            Some("lengths")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(SharesError::DifferentSets { first: 1, second: i + 1, what });
        }
    }

    // Positions (from 0) of the shares in each group, by group index.
    let mut groups: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, s) in shares.iter().enumerate() {
        let members = groups.entry(s.group_index).or_default();
        for &j in members.iter() {
            let other = &shares[j];
            if other.member_threshold != s.member_threshold {
                return Err(SharesError::MemberThresholdMismatch { first: j + 1, second: i + 1 });
            }
            if other.member_index == s.member_index {
                return Err(SharesError::DuplicateMember { first: j + 1, second: i + 1 });
            }
        }
        members.push(i);
    }

    let need_groups = usize::from(first.group_threshold);
    let multi_group = first.group_count > 1;
    if groups.len() < need_groups {
        return Err(SharesError::TooFewGroups { have: groups.len(), need: need_groups });
    }
    if groups.len() > need_groups {
        return Err(SharesError::TooManyGroups { have: groups.len(), need: need_groups });
    }
    for (&gi, members) in &groups {
        let group = multi_group.then_some(gi + 1);
        let need = members
            .first()
            .map(|&j| usize::from(shares[j].member_threshold))
            .ok_or(SharesError::Internal("an empty group"))?;
        if members.len() < need {
            return Err(SharesError::TooFew { group, have: members.len(), need });
        }
        if members.len() > need {
            return Err(SharesError::TooMany { group, have: members.len(), need });
        }
    }

    let mut group_secrets: Vec<(u8, Zeroizing<Vec<u8>>)> = Vec::with_capacity(groups.len());
    for (&gi, members) in &groups {
        let points: Vec<(u8, &[u8])> =
            members.iter().map(|&j| (shares[j].member_index, shares[j].value.expose())).collect();
        let threshold = shares[members[0]].member_threshold;
        let secret = slip39::recover_secret(threshold, &points)?
            .ok_or(SharesError::DigestMismatch { group: multi_group.then_some(gi + 1) })?;
        group_secrets.push((gi, secret));
    }
    let points: Vec<(u8, &[u8])> = group_secrets.iter().map(|(x, y)| (*x, y.as_slice())).collect();
    slip39::recover_secret(first.group_threshold, &points)?.ok_or(SharesError::DigestMismatch { group: None })
}

/// The commitment to one share that the audit log records, so a single
/// share can later be checked and named without bringing a quorum.
///
/// Encoding (auditors re-implement this): the lowercase hex of
///
/// ```text
/// SHA-256( F("keyrite-share-commitment-v1")
///       || F(ceremony_id as UTF-8)
///       || F(identifier as 2 bytes, big-endian)
///       || F(member index as 1 byte, the 0-based x value stored in the share)
///       || F(mnemonic) )
/// ```
///
/// where `F(b)` is the length of `b` as a 4-byte big-endian unsigned integer
/// followed by `b`, and `mnemonic` is the share's words in lowercase ASCII
/// joined by single spaces (0x20), without leading or trailing space.
///
/// The share value has at least 128 bits of entropy, so the commitment does
/// not help guess the words.
pub fn commitment(ceremony_id: &str, share: &Share) -> String {
    let mnemonic = share.to_mnemonic();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let fields: [&[u8]; 5] = [
        b"keyrite-share-commitment-v1",
        ceremony_id.as_bytes(),
        &share.identifier.to_be_bytes(),
        &[share.member_index],
        mnemonic.expose(),
    ];
    for field in fields {
        // A field longer than 4 GiB cannot come from a share or an id; the
        // saturated length still keeps the encoding injective for real input.
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        ctx.update(&len.to_be_bytes());
        ctx.update(field);
    }
    hex::encode(ctx.finish().as_ref())
}

/// Words per row on a share card.
const CARD_WORDS_PER_ROW: usize = 4;

/// A printable plain-text card for one custodian's share.
///
/// `share_count` is the number of shares in the set (a share does not record
/// it). Control characters in the ceremony id and custodian name are shown
/// as `?` so they cannot break the layout.
pub fn render_card(ceremony_id: &str, custodian: &str, share: &Share, share_count: u8) -> Secret {
    let mnemonic = share.to_mnemonic();
    let words: Vec<&str> = mnemonic.expose_str().unwrap_or_default().split(' ').collect();
    let clean = |s: &str| -> String { s.chars().map(|c| if c.is_control() { '?' } else { c }).collect() };
    // Sized up front so the buffer never reallocates and strews copies of
    // the words over freed memory.
    let mut card = Zeroizing::new(String::with_capacity(2048 + 4 * (ceremony_id.len() + custodian.len())));
    let _ = writeln!(card, "KEYRITE SHARE CARD (SLIP-0039)");
    let _ = writeln!(card, "==============================");
    let _ = writeln!(card, "Ceremony:        {}", clean(ceremony_id));
    let _ = writeln!(card, "Custodian:       {}", clean(custodian));
    let _ = writeln!(
        card,
        "Share:           share {} of {}, threshold {}",
        u16::from(share.member_index) + 1,
        share_count,
        share.member_threshold
    );
    if share.group_count > 1 {
        let _ = writeln!(
            card,
            "Group:           group {} of {}, group threshold {}",
            u16::from(share.group_index) + 1,
            share.group_count,
            share.group_threshold
        );
    }
    let _ = writeln!(card, "Set identifier:  {:05}", share.identifier);
    let _ = writeln!(card, "Commitment:      {}", commitment(ceremony_id, share));
    let _ = writeln!(card);
    let _ = writeln!(card, "Words ({}):", words.len());
    for (row, chunk) in words.chunks(CARD_WORDS_PER_ROW).enumerate() {
        let _ = write!(card, " ");
        for (col, word) in chunk.iter().enumerate() {
            let _ = write!(card, " {:>2}. {:<9}", row * CARD_WORDS_PER_ROW + col + 1, word);
        }
        // Trailing padding would only make the card harder to diff.
        let trimmed = card.trim_end_matches(' ').len();
        card.truncate(trimmed);
        let _ = writeln!(card);
    }
    let _ = writeln!(card);
    let _ = writeln!(
        card,
        "Keep this card secret. Any {} shares of this set recover the secret; fewer reveal nothing.",
        share.member_threshold
    );
    let _ = writeln!(card);
    let _ = writeln!(card, "Custodian signature: ________________________________   Date: ____________");
    Secret::from_string(std::mem::take(&mut *card))
}

/// The words of a share from a card made by [`render_card`] (the numbered
/// words after the "Words" line), or from a file holding only the words.
/// Nothing is checked here: [`Share::parse`] does that and names problems.
pub fn words_from_card(card: &Secret) -> Secret {
    let text = card.expose_str().unwrap_or_default();
    let mut words = Zeroizing::new(String::with_capacity(text.len()));
    let mut push = |w: &str| {
        if !words.is_empty() {
            words.push(' ');
        }
        words.push_str(w);
    };
    match text.lines().position(|l| l.starts_with("Words (")) {
        Some(start) => {
            for line in text.lines().skip(start + 1).take_while(|l| !l.trim().is_empty()) {
                for token in line.split_whitespace().filter(|t| !t.ends_with('.')) {
                    push(token);
                }
            }
        }
        None => text.split_whitespace().for_each(&mut push),
    }
    Secret::from_string(std::mem::take(&mut *words))
}

// Not `#[from]`: the message already carries the cause, and a `source` as
// well would print it twice in an error chain.
impl From<HsmError> for SharesError {
    fn from(e: HsmError) -> Self {
        SharesError::Random(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Deterministic bytes, so tests can pin identifiers and values.
    struct CountingRng(Cell<u8>);
    impl RandomSource for CountingRng {
        fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
            Ok((0..len)
                .map(|_| {
                    let v = self.0.get();
                    self.0.set(v.wrapping_mul(5).wrapping_add(17));
                    v
                })
                .collect())
        }
    }

    fn secret16() -> Secret {
        Secret::new((1..=16).collect())
    }

    #[test]
    fn split_and_combine_round_trip() {
        let rng = CountingRng(Cell::new(3));
        let shares = split(&secret16(), 3, 5, b"pw", 0, &rng).expect("must succeed");
        assert_eq!(shares.len(), 5);
        let got = combine(&shares[1..4], b"pw").expect("must succeed");
        assert!(got.ct_eq(&secret16()));
        let mnemonics: Vec<Secret> = shares.iter().map(Share::to_mnemonic).collect();
        let strs: Vec<&str> = mnemonics.iter().map(|m| m.expose_str().expect("ASCII words")).collect();
        assert!(combine_mnemonics(&[strs[4], strs[0], strs[2]], b"pw").expect("must succeed").ct_eq(&secret16()));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let rng = CountingRng(Cell::new(0));
        let s = secret16();
        for (t, n) in [(0u8, 3u8), (4, 3), (1, 2), (2, 17)] {
            assert!(matches!(split(&s, t, n, b"", 0, &rng), Err(SharesError::InvalidThreshold { .. })), "{t}/{n}");
        }
        assert!(split(&s, 1, 1, b"", 0, &rng).is_ok());
        assert!(matches!(split(&s, 2, 3, b"", 16, &rng), Err(SharesError::IterationExponent { exponent: 16 })));
        assert!(matches!(split(&s, 2, 3, "pässword".as_bytes(), 0, &rng), Err(SharesError::Passphrase)));
        for len in [0usize, 14, 17] {
            let short = Secret::new(vec![1; len]);
            assert!(matches!(split(&short, 2, 3, b"", 0, &rng), Err(SharesError::SecretLength { .. })));
        }
    }

    #[test]
    fn too_many_shares_are_refused() {
        let rng = CountingRng(Cell::new(9));
        let shares = split(&secret16(), 2, 3, b"", 0, &rng).expect("must succeed");
        let err = combine(&shares, b"").expect_err("must fail");
        assert!(matches!(err, SharesError::TooMany { group: None, have: 3, need: 2 }), "{err}");
    }

    #[test]
    fn commitment_encoding_is_as_documented() {
        let rng = CountingRng(Cell::new(1));
        let share = &split(&secret16(), 2, 2, b"", 0, &rng).expect("must succeed")[1];
        let mnemonic = share.to_mnemonic();
        let mut buf = Vec::new();
        for f in [
            &b"keyrite-share-commitment-v1"[..],
            b"ceremony-7",
            &share.identifier().to_be_bytes(),
            &[1u8],
            mnemonic.expose(),
        ] {
            buf.extend_from_slice(&(f.len() as u32).to_be_bytes());
            buf.extend_from_slice(f);
        }
        assert_eq!(commitment("ceremony-7", share), crate::words::sha256_hex(&buf));
        assert_ne!(commitment("ceremony-8", share), commitment("ceremony-7", share));
    }

    #[test]
    fn card_lists_every_word_numbered() {
        let rng = CountingRng(Cell::new(4));
        let share = &split(&Secret::new(vec![7; 32]), 2, 3, b"", 0, &rng).expect("must succeed")[2];
        let card = render_card("root-2025", "Alice\nEvil", share, 3);
        let text = card.expose_str().expect("ASCII words");
        assert!(text.contains("Ceremony:        root-2025"));
        assert!(text.contains("Custodian:       Alice?Evil"));
        assert!(text.contains("share 3 of 3, threshold 2"));
        assert!(text.contains("Custodian signature:"));
        let mnemonic = share.to_mnemonic();
        for (i, w) in mnemonic.expose_str().expect("ASCII words").split(' ').enumerate() {
            assert!(text.contains(&format!("{:>2}. {w}", i + 1)), "word {}", i + 1);
        }
        assert!(text.contains("33. "));
        assert!(!text.contains("34. "));
        assert!(!format!("{card:?}").contains("Alice"));
    }

    #[test]
    fn errors_name_positions_and_carry_no_words() {
        let rng = CountingRng(Cell::new(2));
        let shares = split(&secret16(), 2, 3, b"", 0, &rng).expect("must succeed");
        let m = shares[0].to_mnemonic();
        let text = m.expose_str().expect("ASCII words");
        let mut words: Vec<&str> = text.split(' ').collect();
        words[5] = if words[5] == "academic" { "acid" } else { "academic" };
        let bad = words.join(" ");
        let err = combine_mnemonics(&[text, &bad], b"").expect_err("must fail");
        assert!(matches!(err, SharesError::BadChecksum { share: 2 }));
        let msg = err.to_string();
        assert_eq!(msg, "share 2 has a bad checksum: a word is mistyped; re-enter it");
    }
}
