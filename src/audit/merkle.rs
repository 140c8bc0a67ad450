//! RFC 6962 §2.1 Merkle tree hashing over the log's lines.
//!
//! Leaves are the exact bytes of each line without its newline. The tree is
//! kept as a compact range: the roots of the perfect subtrees that make up
//! the current size, largest first. Appending is amortised O(1) and a root is
//! O(log n), so a CA log of 100k entries never re-reads the file or rehashes
//! old leaves to sign a checkpoint, and `verify` checks every checkpoint in
//! one pass.

use crate::words::sha256;

/// A 32-byte SHA-256 value.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the RFC 6962 leaf hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut buf = Vec::with_capacity(data.len() + 1);
    buf.push(0u8);
    buf.extend_from_slice(data);
    sha256(&buf)
}

/// `SHA-256(0x01 || left || right)`: the RFC 6962 interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// The root of the empty tree: `SHA-256()` of nothing.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// An append-only Merkle tree that remembers only what it needs for roots.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    size: u64,
    /// (height, hash) of each perfect subtree, heights strictly decreasing.
    range: Vec<(u32, Hash)>,
}

impl MerkleTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given its data (a line without its newline).
    pub fn push(&mut self, data: &[u8]) {
        self.push_leaf_hash(leaf_hash(data));
    }

    /// Appends a leaf given its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        // Two subtrees of equal height are siblings: merge them, as binary
        // addition carries.
        while let Some(&(height, left)) = self.range.last() {
            if height != node.0 {
                break;
            }
            self.range.pop();
            node = (height + 1, node_hash(&left, &node.1));
        }
        self.range.push(node);
        self.size += 1;
    }

    /// The compact range as bytes, for a log whose end is kept in a
    /// database row (acme-serve's issuance log): the size (8 bytes,
    /// big-endian), then each subtree's height (4 bytes) and hash.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.range.len() * 36);
        out.extend_from_slice(&self.size.to_be_bytes());
        for (height, hash) in &self.range {
            out.extend_from_slice(&height.to_be_bytes());
            out.extend_from_slice(hash);
        }
        out
    }

    /// Reads [`Self::to_bytes`] back, refusing a range that cannot belong
    /// to its size (the subtrees' heights are exactly the size's set bits,
    /// largest first).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let bad = || "not a compact Merkle range".to_string();
        let (size, mut rest) = bytes.split_first_chunk::<8>().ok_or_else(bad)?;
        let size = u64::from_be_bytes(*size);
        let mut range = Vec::new();
        while !rest.is_empty() {
            let (height, tail) = rest.split_first_chunk::<4>().ok_or_else(bad)?;
            let (hash, tail) = tail.split_first_chunk::<32>().ok_or_else(bad)?;
            range.push((u32::from_be_bytes(*height), *hash));
            rest = tail;
        }
        let expected: Vec<u32> = (0..64u32).rev().filter(|bit| size >> bit & 1 == 1).collect();
        if range.iter().map(|(h, _)| *h).collect::<Vec<_>>() != expected {
            return Err(format!("the compact Merkle range does not fit a tree of {size} leaves"));
        }
        Ok(MerkleTree { size, range })
    }

    /// The RFC 6962 Merkle Tree Hash of all leaves so far.
    ///
    /// MTH splits at the largest power of two below n, which is exactly the
    /// leftmost perfect subtree of the compact range; folding the range from
    /// the right therefore reproduces the recursive definition.
    pub fn root(&self) -> Hash {
        let mut iter = self.range.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// The Merkle Tree Hash of `leaves` (their data), by the recursive definition
/// of RFC 6962 §2.1: the textbook form, which the tests hold [`MerkleTree`]
/// to.
pub fn root_of<T: AsRef<[u8]>>(leaves: &[T]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaf_hash(leaves[0].as_ref()),
        n => {
            let k = largest_power_of_two_below(n);
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly less than `n` (n ≥ 2).
fn largest_power_of_two_below(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    #[test]
    fn incremental_roots_match_the_recursive_definition_for_sizes_0_to_9() {
        for n in 0..=9 {
            let data = leaves(n);
            let mut tree = MerkleTree::new();
            for d in &data {
                tree.push(d);
            }
            assert_eq!(tree.size(), n as u64);
            assert_eq!(hex::encode(tree.root()), hex::encode(root_of(&data)), "size {n}");
        }
    }

    #[test]
    fn incremental_roots_match_for_larger_odd_sizes() {
        let data = leaves(1000);
        let mut tree = MerkleTree::new();
        for (i, d) in data.iter().enumerate() {
            tree.push(d);
            if [17, 63, 64, 65, 333, 999].contains(&i) {
                assert_eq!(tree.root(), root_of(&data[..=i]), "size {}", i + 1);
            }
        }
    }

    /// Known answers computed independently with Python's hashlib, by the
    /// RFC 6962 definition (leaf = H(0x00||d), node = H(0x01||l||r), split
    /// at the largest power of two < n), over the leaves b"entry 0".."entry N-1":
    ///
    /// ```text
    /// import hashlib
    /// H = lambda b: hashlib.sha256(b).digest()
    /// def mth(d):
    ///     if not d: return H(b"")
    ///     if len(d) == 1: return H(b"\x00" + d[0])
    ///     k = 1
    ///     while k * 2 < len(d): k *= 2
    ///     return H(b"\x01" + mth(d[:k]) + mth(d[k:]))
    /// ```
    /// A compact range kept in a database row comes back as the same tree,
    /// and a range that cannot belong to its size is refused.
    #[test]
    fn compact_range_round_trips_and_refuses_a_wrong_shape() {
        let data = leaves(13);
        let mut tree = MerkleTree::new();
        for d in &data[..11] {
            tree.push(d);
        }
        let mut back = MerkleTree::from_bytes(&tree.to_bytes()).expect("round trip");
        for d in &data[11..] {
            tree.push(d);
            back.push(d);
        }
        assert_eq!(back.root(), tree.root());
        assert_eq!(back.root(), root_of(&data));
        let mut wrong = tree.to_bytes();
        wrong[7] ^= 1; // size 13 -> 12: the heights no longer fit
        assert!(MerkleTree::from_bytes(&wrong).is_err());
        assert!(MerkleTree::from_bytes(&[0u8; 5]).is_err());
    }

    #[test]
    fn known_answers() {
        let cases = [
            (0usize, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            (1, KNOWN_1),
            (3, KNOWN_3),
            (7, KNOWN_7),
        ];
        for (n, want) in cases {
            let mut tree = MerkleTree::new();
            for d in leaves(n) {
                tree.push(&d);
            }
            assert_eq!(hex::encode(tree.root()), want, "size {n}");
        }
    }

    /// The first eight leaves of the RFC 6962 reference test vectors (as used
    /// by certificate-transparency-go's merkle tests): the empty string, 0x00,
    /// 0x10, 0x2021, 0x3031, 0x40414243, 0x5051525354555657,
    /// 0x606162636465666768696a6b6c6d6e6f; root of all eight.
    #[test]
    fn rfc6962_reference_vector_root_of_eight() {
        let data: Vec<Vec<u8>> =
            ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
                .iter()
                .map(|h| hex::decode(h).expect("hex"))
                .collect();
        let mut tree = MerkleTree::new();
        for d in &data {
            tree.push(d);
        }
        assert_eq!(hex::encode(tree.root()), KNOWN_RFC6962_8);
    }

    const KNOWN_1: &str = "773885a613489e24ce2cf76199d6a423f042e4bbf12d7eecee912ef276c65701";
    const KNOWN_3: &str = "94fbd0dd836f50301692e6d0eade728ee19ec52bfff1606ed807c8575d5aaa19";
    const KNOWN_7: &str = "98c97f0ba3175cd08b031dd084b9dc4e649b64d1a28e6ea694646503173ab587";
    const KNOWN_RFC6962_8: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";
}
