//! Hashes people can read aloud.
//!
//! At a ceremony a witness compares a fingerprint on screen with one on paper
//! (IANA reads SHA-256 values as words for the same reason). keyrite spells
//! digests with the SLIP-0039 word list, the one its share cards already use:
//! 1024 words whose first four letters are unique, so each word carries 10
//! bits and a misheard word is rarely another valid word.

use std::sync::OnceLock;

/// The SLIP-0039 word list (from satoshilabs/slips, `slip-0039/wordlist.txt`).
const WORDLIST_TEXT: &str = include_str!("shares/wordlist.txt");

/// The 1024 words, in list order.
pub fn wordlist() -> &'static [&'static str] {
    static LIST: OnceLock<Vec<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| WORDLIST_TEXT.lines().map(str::trim).filter(|w| !w.is_empty()).collect())
}

/// The index of `word` in the list, if it is one.
pub fn index_of(word: &str) -> Option<u16> {
    wordlist().binary_search(&word).ok().map(|i| i as u16)
}

/// Spells `bytes` as words, 10 bits a word (the last word padded with zero
/// bits). A SHA-256 digest becomes 26 words.
pub fn spell(bytes: &[u8]) -> Vec<&'static str> {
    let list = wordlist();
    let mut out = Vec::with_capacity(bytes.len() * 8 / 10 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 10 {
            bits -= 10;
            out.push(list[((acc >> bits) & 0x3ff) as usize]);
        }
    }
    if bits > 0 {
        out.push(list[((acc << (10 - bits)) & 0x3ff) as usize]);
    }
    out
}

/// A digest for the paper log: lowercase hex and the words, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub hex: String,
    pub words: String,
}

impl Fingerprint {
    pub fn of_digest(digest: &[u8]) -> Self {
        Fingerprint { hex: hex::encode(digest), words: spell(digest).join(" ") }
    }

    /// SHA-256 of `data`, spelled both ways.
    pub fn sha256(data: &[u8]) -> Self {
        Self::of_digest(&sha256(data))
    }

    /// The first `n` words, what a witness reads back to confirm.
    pub fn first_words(&self, n: usize) -> String {
        self.words.split(' ').take(n).collect::<Vec<_>>().join(" ")
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_has_1024_sorted_unique_words() {
        let list = wordlist();
        assert_eq!(list.len(), 1024);
        assert!(list.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(index_of("academic"), Some(0));
        assert_eq!(index_of("zero"), Some(1023));
    }

    #[test]
    fn a_sha256_digest_is_26_words_and_round_trips_its_bits() {
        let d = sha256(b"keyrite");
        let words = spell(&d);
        assert_eq!(words.len(), 26);
        let mut bits: Vec<u8> = Vec::new();
        for w in &words {
            let i = index_of(w).expect("word in list");
            for k in (0..10).rev() {
                bits.push(((i >> k) & 1) as u8);
            }
        }
        for (n, byte) in d.iter().enumerate() {
            let mut b = 0u8;
            for k in 0..8 {
                b = (b << 1) | bits[n * 8 + k];
            }
            assert_eq!(b, *byte);
        }
    }
}
