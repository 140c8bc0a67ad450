//! Threshold behaviour of keyrite's share sets: every quorum recombines,
//! every smaller set fails cleanly, and mistakes are named by position.

use std::cell::Cell;

use keyrite::hsm::{HsmError, RandomSource};
use keyrite::secret::Secret;
use keyrite::shares::{combine, combine_mnemonics, reshare, split, Share, SharesError};

/// xorshift64: reproducible shares, so a failure can be replayed.
struct TestRng(Cell<u64>);

impl TestRng {
    fn new(seed: u64) -> Self {
        TestRng(Cell::new(seed | 1))
    }
    fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x
    }
    fn below(&self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

impl RandomSource for TestRng {
    fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        Ok((0..len).map(|_| (self.next() >> 24) as u8).collect())
    }
}

const PASS: &[u8] = b"custodian passphrase";

fn secret(rng: &TestRng, len: usize) -> Secret {
    Secret::new(rng.random_bytes(len).expect("must succeed"))
}

/// All k-subsets of 0..n, in lexicographic order.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    loop {
        out.push(idx.clone());
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + n - k) else {
            return out;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
}

fn pick(shares: &[Share], which: &[usize]) -> Vec<Share> {
    which.iter().map(|&i| shares[i].clone()).collect()
}

/// Every quorum is tried: 5-of-16 has 4368, each paying a PBKDF2
/// decryption, about 5.5 s in a debug build. The bound only guards against a
/// future case too large to enumerate.
const MAX_QUORUMS: usize = 5000;

#[test]
fn every_quorum_recombines_and_every_smaller_set_fails() {
    let rng = TestRng::new(0x5eed_0001);
    for (t, n, len) in [(2u8, 2u8, 16usize), (2, 3, 32), (3, 5, 16), (4, 7, 32), (5, 16, 16)] {
        let ms = secret(&rng, len);
        let shares = split(&ms, t, n, PASS, 0, &rng).expect("must succeed");
        assert_eq!(shares.len(), usize::from(n));
        for (i, s) in shares.iter().enumerate() {
            assert_eq!(usize::from(s.member_index()), i);
            assert_eq!(s.member_threshold(), t);
            assert_eq!((s.group_threshold(), s.group_count()), (1, 1));
            assert!(s.extendable());
            assert_eq!(s.identifier(), shares[0].identifier());
        }

        let mut quorums = subsets(usize::from(n), usize::from(t));
        if quorums.len() > MAX_QUORUMS {
            let mut sample = Vec::with_capacity(MAX_QUORUMS);
            for _ in 0..MAX_QUORUMS {
                sample.push(quorums.swap_remove(rng.below(quorums.len())));
            }
            quorums = sample;
        }
        for q in &quorums {
            let mut set = pick(&shares, q);
            // Order must not matter.
            set.rotate_left(q.len() / 2);
            let got = combine(&set, PASS).unwrap_or_else(|e| panic!("{t}-of-{n} {q:?}: {e}"));
            assert!(got.ct_eq(&ms), "{t}-of-{n} {q:?}");
        }

        for q in subsets(usize::from(n), usize::from(t) - 1) {
            let err = combine(&pick(&shares, &q), PASS).expect_err("must fail");
            let want_have = usize::from(t) - 1;
            assert!(
                matches!(err, SharesError::TooFew { group: None, have, need } if have == want_have && need == usize::from(t)),
                "{t}-of-{n} {q:?}: {err:?}"
            );
            assert_eq!(err.to_string(), format!("too few shares: have {want_have}, need {t}; bring 1 more"));
        }
    }
}

#[test]
fn quorums_recombine_from_mnemonics() {
    let rng = TestRng::new(0x5eed_0002);
    let ms = secret(&rng, 32);
    let shares = split(&ms, 3, 5, PASS, 1, &rng).expect("must succeed");
    let mnemonics: Vec<Secret> = shares.iter().map(Share::to_mnemonic).collect();
    let text: Vec<&str> = mnemonics.iter().map(|m| m.expose_str().expect("ASCII words")).collect();
    for m in &text {
        assert_eq!(m.split(' ').count(), 33);
    }
    // Shouting and stray whitespace are normalised away.
    let loud = text[4].to_uppercase().replace(' ', " \t\n ");
    assert!(combine_mnemonics(&[text[0], &loud, text[2]], PASS).expect("must succeed").ct_eq(&ms));
    // A different passphrase decrypts, to a different secret.
    assert!(!combine_mnemonics(&[text[0], text[1], text[2]], b"other").expect("must succeed").ct_eq(&ms));
}

#[test]
fn a_changed_word_is_a_checksum_error_naming_that_share() {
    let rng = TestRng::new(0x5eed_0003);
    let shares = split(&secret(&rng, 16), 3, 5, PASS, 0, &rng).expect("must succeed");
    let mnemonics: Vec<Secret> = shares.iter().map(Share::to_mnemonic).collect();
    let list = keyrite::words::wordlist();
    for target in 0..3 {
        for word in 0..20 {
            let mut texts: Vec<String> =
                mnemonics[..3].iter().map(|m| m.expose_str().expect("ASCII words").to_string()).collect();
            let mut words: Vec<&str> = texts[target].split(' ').collect();
            let original = words[word];
            let replacement = loop {
                let w = list[rng.below(list.len())];
                if w != original {
                    break w;
                }
            };
            words[word] = replacement;
            texts[target] = words.join(" ");
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let err = combine_mnemonics(&refs, PASS).expect_err("must fail");
            assert!(
                matches!(err, SharesError::BadChecksum { share } if share == target + 1),
                "share {target} word {word}: {err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("share {} has a bad checksum: a word is mistyped; re-enter it", target + 1)
            );
        }
    }
}

#[test]
fn shares_of_different_sets_are_named() {
    let rng = TestRng::new(0x5eed_0004);
    let ms = secret(&rng, 16);
    let a = split(&ms, 3, 5, PASS, 0, &rng).expect("must succeed");
    let b = split(&ms, 3, 5, PASS, 0, &rng).expect("must succeed");
    assert_ne!(a[0].identifier(), b[0].identifier());
    let err = combine(&[a[0].clone(), a[1].clone(), b[2].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::DifferentSets { first: 1, second: 3, what: "identifiers" }), "{err:?}");
    assert!(err.to_string().starts_with("shares 1 and 3 come from different share sets"), "{err}");

    // Different iteration exponents (same secret) are another set too.
    let c = split(&ms, 3, 5, PASS, 1, &rng).expect("must succeed");
    let err = combine(&[c[0].clone(), a[1].clone(), a[2].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::DifferentSets { first: 1, second: 2, .. }), "{err:?}");
}

#[test]
fn a_duplicate_share_is_named() {
    let rng = TestRng::new(0x5eed_0005);
    let shares = split(&secret(&rng, 16), 3, 5, PASS, 0, &rng).expect("must succeed");
    let err = combine(&[shares[3].clone(), shares[1].clone(), shares[3].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::DuplicateMember { first: 1, second: 3 }), "{err:?}");
    assert!(err.to_string().starts_with("shares 1 and 3 have the same member index"), "{err}");
}

#[test]
fn a_share_of_another_secret_under_the_same_identifier_fails_the_digest() {
    // Two splits drawing the same random bytes share an identifier, so only
    // the digest can tell their shares apart.
    let a = split(&Secret::new(vec![1; 16]), 2, 3, PASS, 0, &TestRng::new(42)).expect("must succeed");
    let b = split(&Secret::new(vec![2; 16]), 2, 3, PASS, 0, &TestRng::new(42)).expect("must succeed");
    assert_eq!(a[0].identifier(), b[0].identifier());
    let err = combine(&[a[0].clone(), b[1].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::DigestMismatch { group: None }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the shares combine but the digest does not match: at least one share is wrong; try another combination of shares"
    );
    // Extra shares are refused rather than silently ignored.
    let err = combine(&[a[0].clone(), a[1].clone(), a[2].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::TooMany { group: None, have: 3, need: 2 }), "{err:?}");
}

#[test]
fn reshare_makes_a_new_set_that_does_not_mix_with_the_old() {
    let rng = TestRng::new(0x5eed_0007);
    let ms = secret(&rng, 32);
    let old = split(&ms, 3, 5, PASS, 0, &rng).expect("must succeed");
    let new = reshare(&old[1..4], PASS, 2, 4, &rng).expect("must succeed");
    assert_eq!(new.len(), 4);
    assert_ne!(new[0].identifier(), old[0].identifier());
    for q in subsets(4, 2) {
        assert!(combine(&pick(&new, &q), PASS).expect("must succeed").ct_eq(&ms), "{q:?}");
    }
    let err = combine(&[old[0].clone(), new[1].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::DifferentSets { first: 1, second: 2, what: "identifiers" }), "{err:?}");
    let err = combine(&[new[0].clone(), old[1].clone(), old[2].clone()], PASS).expect_err("must fail");
    assert!(matches!(err, SharesError::DifferentSets { first: 1, second: 2, .. }), "{err:?}");

    // A quorum is needed, and the new parameters must be valid.
    assert!(matches!(reshare(&old[..2], PASS, 2, 4, &rng), Err(SharesError::TooFew { have: 2, need: 3, .. })));
    assert!(matches!(reshare(&old[..3], PASS, 1, 4, &rng), Err(SharesError::InvalidThreshold { .. })));
    assert!(matches!(reshare(&[], PASS, 2, 3, &rng), Err(SharesError::NoShares)));
}

#[test]
fn reshare_of_a_non_extendable_set_keeps_the_secret() {
    // Vector 4 of the official set: non-extendable 2-of-3, passphrase TREZOR.
    let old: Vec<Share> = [
        "shadow pistol academic always adequate wildlife fancy gross oasis cylinder mustang wrist rescue view short owner flip making coding armed",
        "shadow pistol academic acid actress prayer class unknown daughter sweater depict flip twice unkind craft early superior advocate guest smoking",
    ]
    .iter()
    .map(|m| Share::parse(m).expect("must succeed"))
    .collect();
    assert!(!old[0].extendable());
    let rng = TestRng::new(0x5eed_0008);
    let new = reshare(&old, b"TREZOR", 3, 5, &rng).expect("must succeed");
    assert!(new[0].extendable());
    let got = combine(&new[2..5], b"TREZOR").expect("must succeed");
    assert_eq!(hex::encode(got.expose()), "b43ceb7e57a0ea8766221624d01b0864");
}
