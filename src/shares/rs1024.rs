//! The RS1024 checksum over 10-bit words (SLIP-0039, "Checksum").
//!
//! A Reed-Solomon code over GF(1024) that detects any error touching at most
//! three words. The customization string ties a checksum to one variant of the
//! format, so a share read under the wrong flag fails instead of decoding.
//!
//! Branches here depend on share words, but the checksum is computed on words
//! the user is typing or reading anyway; it guards against typos, not against
//! a local timing observer who could just as well watch the keyboard.

/// Checksum length in words.
pub const CHECKSUM_WORDS: usize = 3;

const GEN: [u32; 10] =
    [0xe0e040, 0x1c1c080, 0x3838100, 0x7070200, 0xe0e0009, 0x1c0c2412, 0x38086c24, 0x3090fc48, 0x21b1f890, 0x3f3f120];

/// The customization string for a share's extendable flag.
pub fn customization(extendable: bool) -> &'static [u8] {
    if extendable {
        b"shamir_extendable"
    } else {
        b"shamir"
    }
}

fn polymod(customization: &[u8], words: impl IntoIterator<Item = u16>) -> u32 {
    let mut chk: u32 = 1;
    let values = customization.iter().map(|&c| u32::from(c)).chain(words.into_iter().map(u32::from));
    for v in values {
        let top = chk >> 20;
        chk = ((chk & 0xfffff) << 10) ^ v;
        for (i, g) in GEN.iter().enumerate() {
            chk ^= g & 0u32.wrapping_sub((top >> i) & 1);
        }
    }
    chk
}

/// The three checksum words for `data` (the share without its checksum).
pub fn create(extendable: bool, data: &[u16]) -> [u16; CHECKSUM_WORDS] {
    let pm = polymod(customization(extendable), data.iter().copied().chain([0, 0, 0])) ^ 1;
    [((pm >> 20) & 1023) as u16, ((pm >> 10) & 1023) as u16, (pm & 1023) as u16]
}

/// Whether `words` (data followed by checksum) carries a valid checksum.
pub fn verify(extendable: bool, words: &[u16]) -> bool {
    polymod(customization(extendable), words.iter().copied()) == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift so the test needs no RNG crate and is reproducible.
    struct Xs(u64);
    impl Xs {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn sample(rng: &mut Xs, len: usize) -> Vec<u16> {
        (0..len).map(|_| (rng.next() % 1024) as u16).collect()
    }

    fn with_checksum(ext: bool, data: &[u16]) -> Vec<u16> {
        let mut w = data.to_vec();
        w.extend_from_slice(&create(ext, data));
        w
    }

    #[test]
    fn created_checksums_verify_and_depend_on_the_flag() {
        let mut rng = Xs(0x9e3779b97f4a7c15);
        for ext in [false, true] {
            for len in [17usize, 30] {
                let w = with_checksum(ext, &sample(&mut rng, len));
                assert!(verify(ext, &w));
                assert!(!verify(!ext, &w));
            }
        }
    }

    #[test]
    fn every_single_word_change_is_detected() {
        let mut rng = Xs(12345);
        let w = with_checksum(true, &sample(&mut rng, 17));
        for pos in 0..w.len() {
            for v in 0..1024u16 {
                if v != w[pos] {
                    let mut bad = w.clone();
                    bad[pos] = v;
                    assert!(!verify(true, &bad), "pos {pos} value {v}");
                }
            }
        }
    }

    #[test]
    fn random_changes_of_up_to_three_words_are_detected() {
        let mut rng = Xs(0xdead_beef_cafe);
        for round in 0..20_000 {
            let len = if round % 2 == 0 { 20 } else { 33 };
            let ext = round % 3 == 0;
            let w = with_checksum(ext, &sample(&mut rng, len - CHECKSUM_WORDS));
            let mut bad = w.clone();
            let changes = 1 + (rng.next() % 3) as usize;
            for _ in 0..changes {
                let pos = (rng.next() % len as u64) as usize;
                // Never a no-op change: xor with a non-zero value.
                bad[pos] ^= 1 + (rng.next() % 1023) as u16;
            }
            if bad != w {
                assert!(!verify(ext, &bad), "round {round}");
            }
        }
    }

    #[test]
    fn swapped_adjacent_words_are_detected() {
        let mut rng = Xs(77);
        let w = with_checksum(false, &sample(&mut rng, 30));
        for i in 0..w.len() - 1 {
            if w[i] != w[i + 1] {
                let mut bad = w.clone();
                bad.swap(i, i + 1);
                assert!(!verify(false, &bad));
            }
        }
    }
}
