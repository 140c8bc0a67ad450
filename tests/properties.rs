//! Property tests: statements about every input of a kind, checked on
//! inputs proptest draws (and shrinks to a smallest counterexample when one
//! fails). Each states something that can be false, not only "no panic".

use std::cell::Cell;

use keyrite::hsm::{HsmError, RandomSource};
use keyrite::secret::Secret;
use keyrite::shares::{combine, combine_mnemonics, split};
use proptest::prelude::*;

/// A reproducible random source from proptest's seed, so a failing split
/// can be replayed exactly.
struct SeededRng(Cell<u64>);

impl RandomSource for SeededRng {
    fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        Ok((0..len)
            .map(|_| {
                let mut x = self.0.get();
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.0.set(x);
                (x >> 24) as u8
            })
            .collect())
    }
}

/// Every `k`-element subset of `0..n`, in order.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![Vec::new()];
    }
    (k - 1..n)
        .flat_map(|last| {
            subsets(last, k - 1).into_iter().map(move |mut s| {
                s.push(last);
                s
            })
        })
        .collect()
}

fn split_params() -> impl Strategy<Value = (Vec<u8>, u8, u8, String, u64)> {
    (8usize..=16, 2u8..=6).prop_flat_map(|(half, n)| {
        (proptest::collection::vec(any::<u8>(), half * 2), 2u8..=n, Just(n), "[ -~]{0,12}", any::<u64>())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// SLIP-0039: split, then combine any quorum, gives the secret back, for
    /// every quorum of the set; one share fewer is refused; and the words on
    /// the cards recombine to the same secret.
    #[test]
    fn split_then_combine_returns_the_secret_for_every_quorum((bytes, t, n, pass, seed) in split_params()) {
        let secret = Secret::new(bytes);
        let rng = SeededRng(Cell::new(seed | 1));
        let shares = split(&secret, t, n, pass.as_bytes(), 0, &rng).expect("valid parameters split");
        prop_assert_eq!(shares.len(), usize::from(n));
        for quorum in subsets(usize::from(n), usize::from(t)) {
            let set: Vec<_> = quorum.iter().map(|&i| shares[i].clone()).collect();
            let got = combine(&set, pass.as_bytes()).expect("a quorum combines");
            prop_assert!(got.ct_eq(&secret), "quorum {:?} of {}-of-{} gave another secret", quorum, t, n);
            prop_assert!(combine(&set[1..], pass.as_bytes()).is_err(), "{} shares of a {}-of-{} set combined", t - 1, t, n);
        }
        let words: Vec<Secret> = shares.iter().take(usize::from(t)).map(|s| s.to_mnemonic()).collect();
        let texts: Vec<&str> = words.iter().map(|w| w.expose_str().expect("words are text")).collect();
        let got = combine_mnemonics(&texts, pass.as_bytes()).expect("the cards' words combine");
        prop_assert!(got.ct_eq(&secret));
    }
}
