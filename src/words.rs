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

    /// The first `n` words.
    pub fn first_words(&self, n: usize) -> String {
        self.words.split(' ').take(n).collect::<Vec<_>>().join(" ")
    }

    /// What a witness reads back: the first [`READ_BACK_WORDS`] words.
    pub fn read_back_words(&self) -> String {
        self.first_words(READ_BACK_WORDS)
    }

    /// The read-back words in groups of four (the last group takes a lone
    /// word), separated by " · ": easier to say aloud and to find one's
    /// place on paper. The separators are ignored when a read-back is
    /// compared.
    pub fn read_back_grouped(&self) -> String {
        let words: Vec<&str> = self.words.split(' ').take(READ_BACK_WORDS).collect();
        let mut groups: Vec<Vec<&str>> = words.chunks(4).map(<[&str]>::to_vec).collect();
        if groups.len() > 1 && groups.last().is_some_and(|g| g.len() == 1) {
            if let Some(lone) = groups.pop() {
                if let Some(prev) = groups.last_mut() {
                    prev.extend(lone);
                }
            }
        }
        groups.iter().map(|g| g.join(" ")).collect::<Vec<_>>().join(" · ")
    }

    /// Compares what a witness read from paper with this digest. A
    /// read-back is either words (each in full, or its first four letters,
    /// which are unique in the list) or hex digits (colons and spaces
    /// allowed), in either case a prefix of the digest carrying at least
    /// [`READ_BACK_BITS`] bits; case and spacing do not matter.
    pub fn check_read_back(&self, text: &str) -> ReadBackCheck {
        let lower = text.to_ascii_lowercase();
        let tokens: Vec<&str> = lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|t| !t.is_empty()).collect();
        if tokens.is_empty() {
            return ReadBackCheck::Mismatch;
        }
        let words: Vec<&str> = self.words.split(' ').collect();
        let as_words = tokens.len() <= words.len()
            && tokens.iter().zip(&words).all(|(t, w)| t == w || (t.len() >= 4 && w.starts_with(t)));
        if as_words {
            return ReadBackCheck::strength(tokens.len() * 10);
        }
        let digits: String = tokens.concat();
        let as_hex = digits.bytes().all(|b| b.is_ascii_hexdigit())
            && digits.len() <= self.hex.len()
            && self.hex.starts_with(&digits);
        if as_hex {
            return ReadBackCheck::strength(digits.len() * 4);
        }
        ReadBackCheck::Mismatch
    }
}

/// Words a witness reads back: 13 words are 130 bits. Whoever writes a plan
/// or a template can prepare two variants whose digests share their first
/// n bits with about 2^(n/2) work (a birthday search), then have one
/// approved and run the other; at 30 bits that is a moment, at 80 bits
/// 2^40 hashes, at 128 bits 2^64, out of reach.
pub const READ_BACK_WORDS: usize = 13;

/// The least a read-back must carry: 128 bits, 13 words or 32 hex digits.
pub const READ_BACK_BITS: usize = 128;

/// The outcome of comparing a read-back with a digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBackCheck {
    /// The read-back agrees with the digest over `bits` bits (at least
    /// [`READ_BACK_BITS`]).
    Confirmed { bits: usize },
    /// It agrees, but carries only `bits` bits: not a full-strength check.
    TooShort { bits: usize },
    /// It differs from the digest.
    Mismatch,
}

impl ReadBackCheck {
    fn strength(bits: usize) -> Self {
        if bits >= READ_BACK_BITS {
            ReadBackCheck::Confirmed { bits }
        } else {
            ReadBackCheck::TooShort { bits }
        }
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

    /// A read-back that agrees with `fp` on its first `same` words and
    /// differs in every word after, up to `len` words.
    fn near_miss(fp: &Fingerprint, same: usize, len: usize) -> String {
        fp.words
            .split(' ')
            .take(len)
            .enumerate()
            .map(|(i, w)| {
                if i < same {
                    w
                } else {
                    let next = (usize::from(index_of(w).expect("word")) + 1) % 1024;
                    wordlist()[next]
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn a_read_back_must_carry_128_bits_and_agree_with_every_one() {
        let fp = Fingerprint::sha256(b"the approved plan");
        let words = fp.read_back_words();
        assert_eq!(words.split(' ').count(), 13);
        assert_eq!(fp.check_read_back(&words), ReadBackCheck::Confirmed { bits: 130 });
        // What the paper shows, separators and all, in any case.
        assert_eq!(fp.check_read_back(&fp.read_back_grouped().to_uppercase()), ReadBackCheck::Confirmed { bits: 130 });
        // All 26 words, or each word by its first four letters.
        assert_eq!(fp.check_read_back(&fp.words), ReadBackCheck::Confirmed { bits: 260 });
        let short: Vec<String> = words.split(' ').map(|w| w.chars().take(4).collect()).collect();
        assert_eq!(fp.check_read_back(&short.join(" ")), ReadBackCheck::Confirmed { bits: 130 });
        // Hex, as printed or with colons; 32 digits at least.
        assert_eq!(fp.check_read_back(&fp.hex[..32]), ReadBackCheck::Confirmed { bits: 128 });
        let colons: Vec<&str> = (0..16).map(|i| &fp.hex[2 * i..2 * i + 2]).collect();
        assert_eq!(fp.check_read_back(&colons.join(":")), ReadBackCheck::Confirmed { bits: 128 });
        assert_eq!(fp.check_read_back(&fp.hex[..31]), ReadBackCheck::TooShort { bits: 124 });

        // The old three words, and any prefix short of 128 bits, are not enough.
        assert_eq!(fp.check_read_back(&fp.first_words(3)), ReadBackCheck::TooShort { bits: 30 });
        assert_eq!(fp.check_read_back(&fp.first_words(12)), ReadBackCheck::TooShort { bits: 120 });
        // A digest prepared to share the first 30 or 80 bits is refused.
        assert_eq!(fp.check_read_back(&near_miss(&fp, 3, 13)), ReadBackCheck::Mismatch);
        assert_eq!(fp.check_read_back(&near_miss(&fp, 8, 13)), ReadBackCheck::Mismatch);
        assert_eq!(fp.check_read_back(&near_miss(&fp, 12, 13)), ReadBackCheck::Mismatch);
        // Three letters are not a word; a word is not a longer one's prefix.
        let three: Vec<String> = words.split(' ').map(|w| w.chars().take(3).collect()).collect();
        assert_eq!(fp.check_read_back(&three.join(" ")), ReadBackCheck::Mismatch);
        assert_eq!(fp.check_read_back(""), ReadBackCheck::Mismatch);
        assert_eq!(fp.check_read_back(&format!("{} extra", fp.words)), ReadBackCheck::Mismatch);
    }

    #[test]
    fn the_read_back_words_are_grouped_four_by_four_without_a_lone_word() {
        let fp = Fingerprint::sha256(b"keyrite");
        let grouped = fp.read_back_grouped();
        let groups: Vec<usize> = grouped.split(" · ").map(|g| g.split(' ').count()).collect();
        assert_eq!(groups, vec![4, 4, 5]);
        assert_eq!(grouped.replace(" · ", " "), fp.read_back_words());
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
