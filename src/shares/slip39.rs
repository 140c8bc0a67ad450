//! The SLIP-0039 share format: fields, word packing, and the two-level
//! secret sharing with its digest check.

use std::fmt;

use zeroize::Zeroizing;

use super::{cipher, gf256, rs1024, SharesError};
use crate::hsm::RandomSource;
use crate::secret::Secret;
use crate::words;

/// Words holding identifier, extendable flag and iteration exponent (20 bits).
const ID_EXP_WORDS: usize = 2;
/// Words holding group index/threshold/count and member index/threshold.
const PARAM_WORDS: usize = 2;
/// Every word that is not share value.
const METADATA_WORDS: usize = ID_EXP_WORDS + PARAM_WORDS + rs1024::CHECKSUM_WORDS;
/// The shortest secret the spec allows (128 bits).
pub const MIN_SECRET_BYTES: usize = 16;
/// 128 bits of value need 13 words (130 bits with 2 bits of padding).
const MIN_WORDS: usize = METADATA_WORDS + 13;
/// Share indices and counts are 4-bit fields.
pub const MAX_SHARES: u8 = 16;
/// Interpolation points reserved by the spec for the digest and the secret.
const DIGEST_INDEX: u8 = 254;
const SECRET_INDEX: u8 = 255;

/// One custodian's share: the decoded fields of a SLIP-0039 mnemonic.
///
/// Index fields are the x coordinates stored in the share, counting from 0;
/// thresholds and counts are the real values (1 to 16).
#[derive(Clone)]
pub struct Share {
    pub(super) identifier: u16,
    pub(super) extendable: bool,
    pub(super) iteration_exponent: u8,
    pub(super) group_index: u8,
    pub(super) group_threshold: u8,
    pub(super) group_count: u8,
    pub(super) member_index: u8,
    pub(super) member_threshold: u8,
    pub(super) value: Secret,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("identifier", &self.identifier)
            .field("extendable", &self.extendable)
            .field("iteration_exponent", &self.iteration_exponent)
            .field("group_index", &self.group_index)
            .field("group_threshold", &self.group_threshold)
            .field("group_count", &self.group_count)
            .field("member_index", &self.member_index)
            .field("member_threshold", &self.member_threshold)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl Share {
    /// Parses one mnemonic; errors call it "share 1". Use [`Share::parse_nth`]
    /// when reading several so errors name the right one.
    pub fn parse(mnemonic: &str) -> Result<Share, SharesError> {
        Share::parse_nth(mnemonic, 1)
    }

    /// Parses the `position`-th mnemonic (counting from 1) of an input.
    ///
    /// Whitespace and letter case are normalised. Only full words are
    /// accepted: SLIP-0039 discourages guessing what a user meant, and a
    /// four-letter prefix would let a typo in the fifth letter pass unseen.
    pub fn parse_nth(mnemonic: &str, position: usize) -> Result<Share, SharesError> {
        let indices = word_indices(mnemonic, position)?;
        let n = indices.len();
        if n == 0 {
            return Err(SharesError::EmptyShare { share: position });
        }
        let value_words = n.saturating_sub(METADATA_WORDS);
        let padding = (10 * value_words) % 16;
        if n < MIN_WORDS || padding > 8 {
            return Err(SharesError::WrongLength { share: position, words: n });
        }

        let id_exp = (u32::from(indices[0]) << 10) | u32::from(indices[1]);
        let identifier = (id_exp >> 5) as u16;
        let extendable = (id_exp >> 4) & 1 == 1;
        let iteration_exponent = (id_exp & 0xf) as u8;

        if !rs1024::verify(extendable, &indices) {
            return Err(SharesError::BadChecksum { share: position });
        }

        let params = (u32::from(indices[2]) << 10) | u32::from(indices[3]);
        let field = |shift: u32| ((params >> shift) & 0xf) as u8;
        let group_index = field(16);
        let group_threshold = field(12) + 1;
        let group_count = field(8) + 1;
        let member_index = field(4);
        let member_threshold = field(0) + 1;

        let value_start = ID_EXP_WORDS + PARAM_WORDS;
        let mut value = unpack_value(&indices[value_start..n - rs1024::CHECKSUM_WORDS], padding)
            .ok_or(SharesError::BadPadding { share: position })?;

        if group_threshold > group_count {
            return Err(SharesError::GroupThresholdAboveCount {
                share: position,
                threshold: group_threshold,
                count: group_count,
            });
        }

        Ok(Share {
            identifier,
            extendable,
            iteration_exponent,
            group_index,
            group_threshold,
            group_count,
            member_index,
            member_threshold,
            value: Secret::new(std::mem::take(&mut *value)),
        })
    }

    /// The mnemonic: words joined by single spaces, in a zeroizing buffer.
    pub fn to_mnemonic(&self) -> Secret {
        let indices = self.word_indices();
        let list = words::wordlist();
        // Room for the longest words up front, so the buffer never
        // reallocates and leaves a stray copy of the words behind.
        let mut out = Zeroizing::new(String::with_capacity(indices.len() * 9));
        for (i, &w) in indices.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(list[usize::from(w)]);
        }
        Secret::from_string(std::mem::take(&mut *out))
    }

    /// The 10-bit word indices, checksum included.
    pub(super) fn word_indices(&self) -> Zeroizing<Vec<u16>> {
        let value = self.value.expose();
        let value_words = (value.len() * 8).div_ceil(10);
        let mut out = Zeroizing::new(Vec::with_capacity(METADATA_WORDS + value_words));
        let id_exp = (u32::from(self.identifier & 0x7fff) << 5)
            | (u32::from(self.extendable) << 4)
            | u32::from(self.iteration_exponent & 0xf);
        out.push((id_exp >> 10) as u16);
        out.push((id_exp & 0x3ff) as u16);
        let params = (u32::from(self.group_index & 0xf) << 16)
            | (u32::from(self.group_threshold.wrapping_sub(1) & 0xf) << 12)
            | (u32::from(self.group_count.wrapping_sub(1) & 0xf) << 8)
            | (u32::from(self.member_index & 0xf) << 4)
            | u32::from(self.member_threshold.wrapping_sub(1) & 0xf);
        out.push((params >> 10) as u16);
        out.push((params & 0x3ff) as u16);
        pack_value(value, &mut out);
        let checksum = rs1024::create(self.extendable, &out);
        out.extend_from_slice(&checksum);
        out
    }

    /// The 15-bit identifier shared by every share of a set.
    pub fn identifier(&self) -> u16 {
        self.identifier
    }
    /// Whether the set was made extendable (the identifier is not part of
    /// the encryption, so more shares can be made under a new identifier).
    pub fn extendable(&self) -> bool {
        self.extendable
    }
    /// PBKDF2 runs 10000·2^e iterations in total.
    pub fn iteration_exponent(&self) -> u8 {
        self.iteration_exponent
    }
    /// The group's x coordinate, from 0.
    pub fn group_index(&self) -> u8 {
        self.group_index
    }
    pub fn group_threshold(&self) -> u8 {
        self.group_threshold
    }
    pub fn group_count(&self) -> u8 {
        self.group_count
    }
    /// The member's x coordinate within its group, from 0 (share number
    /// `member_index() + 1` on a card).
    pub fn member_index(&self) -> u8 {
        self.member_index
    }
    pub fn member_threshold(&self) -> u8 {
        self.member_threshold
    }
    /// The share value bytes.
    pub fn value(&self) -> &Secret {
        &self.value
    }
}

/// Looks every word up, reporting the first unknown one by position only.
fn word_indices(mnemonic: &str, position: usize) -> Result<Zeroizing<Vec<u16>>, SharesError> {
    let mut out = Zeroizing::new(Vec::with_capacity(33));
    // Longest list word is 8 letters; a longer input word is unknown anyway.
    let mut lower = Zeroizing::new(String::with_capacity(16));
    for (i, word) in mnemonic.split_whitespace().enumerate() {
        lower.clear();
        if word.len() <= 8 {
            lower.extend(word.chars().map(|c| c.to_ascii_lowercase()));
        }
        let index = words::index_of(&lower).ok_or(SharesError::UnknownWord { share: position, word: i + 1 })?;
        out.push(index);
    }
    Ok(out)
}

/// Big-endian bits of `value`, left-padded with zeros to whole words.
fn pack_value(value: &[u8], out: &mut Vec<u16>) {
    let total_bits = value.len() * 8;
    let padding = total_bits.div_ceil(10) * 10 - total_bits;
    let mut acc: u32 = 0;
    let mut bits = padding;
    for &b in value {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        if bits >= 10 {
            bits -= 10;
            out.push(((acc >> bits) & 0x3ff) as u16);
            acc &= (1 << bits) - 1;
        }
    }
}

/// Inverse of [`pack_value`]; `None` if a padding bit is set.
fn unpack_value(value_words: &[u16], padding: usize) -> Option<Zeroizing<Vec<u8>>> {
    let byte_len = (value_words.len() * 10 - padding) / 8;
    let mut out = Zeroizing::new(Vec::with_capacity(byte_len));
    let mut acc: u32 = 0;
    let mut bits = 0usize;
    let mut padding_bits: u32 = 0;
    let mut skip = padding;
    for &w in value_words {
        acc = (acc << 10) | u32::from(w);
        bits += 10;
        if skip > 0 {
            bits -= skip;
            padding_bits = acc >> bits;
            acc &= (1 << bits) - 1;
            skip = 0;
        }
        while bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if padding_bits != 0 || out.len() != byte_len {
        return None;
    }
    Some(out)
}

/// An x coordinate and the secret y vector there.
pub(super) type SharePoint = (u8, Zeroizing<Vec<u8>>);

/// SLIP-0039 SplitSecret: `count` shares at x = 0.., any `threshold` of
/// which give back `secret` and a digest that checks it.
pub(super) fn split_secret(
    threshold: u8,
    count: u8,
    secret: &[u8],
    rng: &dyn RandomSource,
) -> Result<Vec<SharePoint>, SharesError> {
    if threshold == 0 || threshold > count || count > MAX_SHARES {
        return Err(SharesError::InvalidThreshold { threshold, count });
    }
    if threshold == 1 {
        return Ok((0..count).map(|x| (x, Zeroizing::new(secret.to_vec()))).collect());
    }
    let n = secret.len();
    if n < cipher::DIGEST_LEN {
        return Err(SharesError::Internal("shared secret shorter than its digest"));
    }
    let random_part = Zeroizing::new(rng.random_bytes(n - cipher::DIGEST_LEN)?);
    if random_part.len() != n - cipher::DIGEST_LEN {
        return Err(SharesError::Internal("the random source returned the wrong length"));
    }
    let mut digest_share = Zeroizing::new(Vec::with_capacity(n));
    digest_share.extend_from_slice(cipher::digest(&random_part, secret).as_slice());
    digest_share.extend_from_slice(&random_part);

    // The first threshold-2 shares are uniformly random points (every byte
    // 0..=255); with the digest and secret points they fix the polynomial.
    let mut out: Vec<SharePoint> = Vec::with_capacity(usize::from(count));
    for x in 0..threshold - 2 {
        let y = Zeroizing::new(rng.random_bytes(n)?);
        if y.len() != n {
            return Err(SharesError::Internal("the random source returned the wrong length"));
        }
        out.push((x, y));
    }
    let mut base: Vec<(u8, &[u8])> = out.iter().map(|(x, y)| (*x, y.as_slice())).collect();
    base.push((DIGEST_INDEX, &digest_share));
    base.push((SECRET_INDEX, secret));
    let mut rest = Vec::with_capacity(usize::from(count));
    for x in threshold - 2..count {
        rest.push((x, gf256::interpolate(&base, x)?));
    }
    drop(base);
    out.extend(rest);
    Ok(out)
}

/// SLIP-0039 RecoverSecret; `Ok(None)` when the digest does not match.
pub(super) fn recover_secret(threshold: u8, points: &[(u8, &[u8])]) -> Result<Option<Zeroizing<Vec<u8>>>, SharesError> {
    if threshold == 1 {
        return match points.first() {
            Some((_, y)) => Ok(Some(Zeroizing::new(y.to_vec()))),
            None => Err(SharesError::Internal("recovery needs at least one point")),
        };
    }
    let secret = gf256::interpolate(points, SECRET_INDEX)?;
    let digest_share = gf256::interpolate(points, DIGEST_INDEX)?;
    if cipher::digest_matches(&digest_share, &secret) {
        Ok(Some(secret))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_packing_round_trips() {
        for len in [16usize, 18, 20, 32, 64] {
            let value: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let mut words = Vec::new();
            pack_value(&value, &mut words);
            assert_eq!(words.len(), (len * 8).div_ceil(10));
            let padding = (10 * words.len()) % 16;
            assert_eq!(unpack_value(&words, padding).expect("must succeed").as_slice(), value.as_slice());
        }
    }

    #[test]
    fn set_padding_bits_are_refused() {
        let value = [0xffu8; 16];
        let mut words = Vec::new();
        pack_value(&value, &mut words);
        words[0] |= 0x200;
        assert!(unpack_value(&words, 2).is_none());
    }

    #[test]
    fn share_lengths_are_20_and_33_words() {
        for (len, expect) in [(16usize, 20usize), (32, 33)] {
            let share = Share {
                identifier: 0x7fff,
                extendable: true,
                iteration_exponent: 15,
                group_index: 15,
                group_threshold: 16,
                group_count: 16,
                member_index: 15,
                member_threshold: 16,
                value: Secret::new(vec![0xa5; len]),
            };
            let m = share.to_mnemonic();
            let text = m.expose_str().expect("ASCII words");
            assert_eq!(text.split(' ').count(), expect);
            let back = Share::parse(&text.to_uppercase().replace(' ', "  \n\t")).expect("must succeed");
            assert_eq!(back.identifier, 0x7fff);
            assert!(back.extendable);
            assert_eq!(back.iteration_exponent, 15);
            assert_eq!((back.group_index, back.group_threshold, back.group_count), (15, 16, 16));
            assert_eq!((back.member_index, back.member_threshold), (15, 16));
            assert_eq!(back.value.expose(), vec![0xa5; len].as_slice());
            assert!(!format!("{back:?}").contains("165"));
        }
    }

    #[test]
    fn prefixes_and_unknown_words_are_named_by_position() {
        let share = Share {
            identifier: 1,
            extendable: false,
            iteration_exponent: 0,
            group_index: 0,
            group_threshold: 1,
            group_count: 1,
            member_index: 0,
            member_threshold: 1,
            value: Secret::new(vec![1; 16]),
        };
        let m = share.to_mnemonic();
        let mut words: Vec<String> = m.expose_str().expect("must succeed").split(' ').map(String::from).collect();
        words[6].truncate(4);
        let err = Share::parse_nth(&words.join(" "), 3).expect_err("must fail");
        assert!(matches!(err, SharesError::UnknownWord { share: 3, word: 7 }), "{err:?}");
        assert_eq!(err.to_string(), "word 7 of share 3 is not in the SLIP-0039 word list: check its spelling against the share card and re-enter the share (write every word in full)");
    }
}
