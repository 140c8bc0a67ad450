//! What the paper record holds, as typed back by a person: a SHA-256 (of an
//! audit key or of a checkpoint note) in hex or SLIP-0039 words, or a
//! checkpoint copied whole.
//!
//! A witness types what the paper says, so the parser is forgiving about
//! form (any case, hex with or without colons or spaces, words separated by
//! any whitespace) and strict about strength: a prefix shorter than 128 bits
//! (13 words, 32 hex digits) is refused. The log and its checkpoints are
//! written by the insider the pin defends against, who can grind a forged
//! checkpoint until its digest shares a short prefix with the real one;
//! 2^64 work to collide a 128-bit prefix is out of reach, 2^15 for three
//! words is not.

use crate::words;

/// The fewest bits a paper value may carry.
pub const MIN_BITS: usize = 128;
/// The fewest words of a spelled digest that carry [`MIN_BITS`].
pub const MIN_WORDS: usize = MIN_BITS.div_ceil(10);
/// The fewest hex digits that carry [`MIN_BITS`].
pub const MIN_HEX: usize = MIN_BITS / 4;

/// A digest, or a prefix of one, as copied on paper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperDigest {
    /// The bits given, packed from the most significant bit of byte 0.
    bytes: Vec<u8>,
    bits: usize,
    /// Given in hex (so it may also name a tree root, which the paper shows
    /// in hex only) or in words.
    hex: bool,
    text: String,
}

impl PaperDigest {
    /// Parses hex (any case; colons, spaces and dashes ignored) or SLIP-0039
    /// words (any case), full or a prefix of at least 128 bits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let compact: String = trimmed.chars().filter(|c| !matches!(c, ':' | '-' | ' ' | '\t')).collect();
        if compact.is_empty() {
            return Err("nothing was given".into());
        }
        if compact.chars().all(|c| c.is_ascii_hexdigit()) {
            if compact.len() > 64 {
                return Err(format!("{} hex digits is longer than a SHA-256 (64)", compact.len()));
            }
            if compact.len() < MIN_HEX {
                return Err(format!(
                    "{} hex digits is {} bits; give at least {MIN_HEX} hex digits ({MIN_BITS} bits) from the paper, or all 64",
                    compact.len(),
                    compact.len() * 4
                ));
            }
            let mut bytes = vec![0u8; compact.len().div_ceil(2)];
            for (i, c) in compact.bytes().enumerate() {
                let nibble = (c as char).to_digit(16).unwrap_or_default() as u8;
                bytes[i / 2] |= if i % 2 == 0 { nibble << 4 } else { nibble };
            }
            return Ok(PaperDigest { bytes, bits: compact.len() * 4, hex: true, text: compact.to_ascii_lowercase() });
        }
        let words: Vec<String> = trimmed.split_whitespace().map(str::to_ascii_lowercase).collect();
        let mut acc = BitWriter::default();
        for (i, w) in words.iter().enumerate() {
            let index = words::index_of(w).ok_or_else(|| {
                format!("word {} ({w:?}) is not a SLIP-0039 word, and the text is not hex either", i + 1)
            })?;
            acc.push(u32::from(index), 10);
        }
        // 26 words spell 256 bits plus 4 bits of padding.
        let bits = (words.len() * 10).min(256);
        if words.len() > 26 {
            return Err(format!("{} words is longer than a SHA-256 (26 words)", words.len()));
        }
        if words.len() < MIN_WORDS {
            return Err(format!(
                "{} words is {} bits; read at least {MIN_WORDS} words ({MIN_BITS} bits) from the paper, or all 26",
                words.len(),
                words.len() * 10
            ));
        }
        let mut bytes = acc.bytes;
        bytes.truncate(bits.div_ceil(8));
        Ok(PaperDigest { bytes, bits, hex: false, text: words.join(" ") })
    }

    /// Whether `digest` begins with these bits.
    pub fn matches(&self, digest: &[u8]) -> bool {
        if digest.len() * 8 < self.bits {
            return false;
        }
        let full = self.bits / 8;
        if self.bytes[..full] != digest[..full] {
            return false;
        }
        let rest = self.bits % 8;
        if rest == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rest);
        self.bytes[full] & mask == digest[full] & mask
    }

    /// Whether `hex_digest` (lowercase hex) begins with these bits.
    pub fn matches_hex(&self, hex_digest: &str) -> bool {
        hex::decode(hex_digest).map(|d| self.matches(&d)).unwrap_or(false)
    }

    /// Given as hex digits (a tree root can only be given this way).
    pub fn is_hex(&self) -> bool {
        self.hex
    }

    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The value as typed, normalised (lowercase, no separators).
    pub fn text(&self) -> &str {
        &self.text
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn push(&mut self, value: u32, width: usize) {
        for k in (0..width).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (value >> k) & 1 == 1 {
                let last = self.bytes.len() - 1;
                self.bytes[last] |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }
}

/// A checkpoint as the paper log holds it: the signed note copied whole, its
/// three-line body, or its note SHA-256 or tree root (hex or words, 128 bits
/// at least).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaperCheckpoint {
    /// The note or its body, as text.
    Text(String),
    Digest(PaperDigest),
}

impl PaperCheckpoint {
    pub fn parse(text: &str) -> Result<Self, String> {
        let normalized = text.replace("\r\n", "\n");
        let trimmed = normalized.trim();
        if trimmed.lines().count() >= 3 {
            return Ok(PaperCheckpoint::Text(trimmed.to_string()));
        }
        PaperDigest::parse(trimmed).map(PaperCheckpoint::Digest).map_err(|e| {
            format!("{e} (a paper checkpoint is its note SHA-256 in words or hex, its tree root in hex, or the note copied whole)")
        })
    }

    /// Whether the checkpoint with this note, note SHA-256 and root (hex) is
    /// the one on paper.
    pub fn matches(&self, note_text: &str, note_sha256_hex: &str, root_hex: &str) -> bool {
        match self {
            PaperCheckpoint::Text(want) => {
                let body = super::checkpoint::SignedNote::parse(note_text).map(|n| n.text).unwrap_or_default();
                want == note_text.trim() || want == body.trim()
            }
            PaperCheckpoint::Digest(d) => d.matches_hex(note_sha256_hex) || (d.is_hex() && d.matches_hex(root_hex)),
        }
    }

    /// A short form for messages.
    pub fn describe(&self) -> String {
        match self {
            PaperCheckpoint::Text(t) => format!("the note beginning {:?}", t.lines().next().unwrap_or_default()),
            PaperCheckpoint::Digest(d) => format!("{:?}", d.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words::Fingerprint;

    #[test]
    fn hex_is_accepted_in_any_case_with_or_without_colons() {
        let fp = Fingerprint::sha256(b"audit key");
        let colons: String =
            fp.hex.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap_or("")).collect::<Vec<_>>().join(":");
        for text in [fp.hex.clone(), fp.hex.to_uppercase(), colons.to_uppercase(), fp.hex[..32].to_string()] {
            let d = PaperDigest::parse(&text).expect("parses");
            assert!(d.matches_hex(&fp.hex), "{text}");
            assert!(!d.matches_hex(&Fingerprint::sha256(b"other").hex), "{text}");
        }
    }

    #[test]
    fn words_are_accepted_full_or_as_a_128_bit_prefix() {
        let fp = Fingerprint::sha256(b"checkpoint note");
        for n in [13, 20, 26] {
            let d = PaperDigest::parse(&fp.first_words(n).to_uppercase()).expect("parses");
            assert!(d.matches_hex(&fp.hex), "{n} words");
            assert!(!d.matches_hex(&Fingerprint::sha256(b"x").hex), "{n} words");
        }
    }

    #[test]
    fn short_prefixes_and_nonsense_are_refused() {
        let fp = Fingerprint::sha256(b"k");
        let err = PaperDigest::parse(&fp.first_words(12)).expect_err("12 words");
        assert!(err.contains("at least 13 words"), "{err}");
        let err = PaperDigest::parse(&fp.hex[..31]).expect_err("31 hex");
        assert!(err.contains("at least 32 hex digits"), "{err}");
        assert!(PaperDigest::parse("not a word list at all really truly no").is_err());
        assert!(PaperDigest::parse("").is_err());
    }

    #[test]
    fn a_prefix_differing_in_its_last_bit_does_not_match() {
        let fp = Fingerprint::sha256(b"k");
        let mut words: Vec<&str> = fp.words.split(' ').take(13).collect();
        let last = crate::words::index_of(words[12]).expect("word");
        let flipped = crate::words::wordlist()[usize::from(last ^ 1)];
        words[12] = flipped;
        let d = PaperDigest::parse(&words.join(" ")).expect("parses");
        assert!(!d.matches_hex(&fp.hex));
    }
}
