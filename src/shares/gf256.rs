//! GF(256) with the Rijndael polynomial, as SLIP-0039 requires.
//!
//! Share values are secret, so every operation here runs in time and memory
//! access pattern independent of its operands: no log/exp tables (their index
//! would leak through the cache) and no branches on operand bits (masks
//! instead). The cost is a few dozen instructions per multiply, which is
//! nothing next to the PBKDF2 rounds that follow.

use zeroize::Zeroizing;

use super::SharesError;

/// x^8 + x^4 + x^3 + x + 1 without the x^8 term, which the shift drops.
const REDUCTION: u8 = 0x1b;

/// Multiplies two field elements: carry-less multiply, reducing as we go.
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    let mut a = a;
    let mut b = b;
    let mut product = 0u8;
    for _ in 0..8 {
        // 0x00 or 0xff from the low bit of b, so the xor happens either way.
        product ^= a & 0u8.wrapping_sub(b & 1);
        let high = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (REDUCTION & high);
        b >>= 1;
    }
    product
}

/// The multiplicative inverse, as a^254 (Fermat), which maps 0 to 0.
///
/// A fixed square-and-multiply chain keeps the timing independent of `a`.
pub fn inv(a: u8) -> u8 {
    let a2 = mul(a, a);
    let a3 = mul(a2, a);
    let a6 = mul(a3, a3);
    let a12 = mul(a6, a6);
    let a15 = mul(a12, a3);
    let a30 = mul(a15, a15);
    let a60 = mul(a30, a30);
    let a63 = mul(a60, a3);
    let a126 = mul(a63, a63);
    let a127 = mul(a126, a);
    mul(a127, a127)
}

/// Evaluates at `x` the lowest-degree polynomial through `points`
/// (x_i, y_i), one polynomial per byte position of the y vectors.
///
/// The x values are share indices (public); the y vectors are secret and are
/// only ever combined with constant-time multiplies and xors.
pub fn interpolate(points: &[(u8, &[u8])], x: u8) -> Result<Zeroizing<Vec<u8>>, SharesError> {
    let Some((_, first)) = points.first() else {
        return Err(SharesError::Internal("interpolation needs at least one point"));
    };
    let len = first.len();
    if points.iter().any(|(_, y)| y.len() != len) {
        return Err(SharesError::Internal("interpolation points of different lengths"));
    }
    for (i, (xi, _)) in points.iter().enumerate() {
        if points[..i].iter().any(|(xj, _)| xj == xi) {
            return Err(SharesError::Internal("interpolation points with equal x"));
        }
    }
    // x is a point itself: the Lagrange formula would divide by zero there.
    if let Some((_, y)) = points.iter().find(|(xi, _)| *xi == x) {
        return Ok(Zeroizing::new(y.to_vec()));
    }
    let mut out = Zeroizing::new(vec![0u8; len]);
    for (i, (xi, yi)) in points.iter().enumerate() {
        let mut numerator = 1u8;
        let mut denominator = 1u8;
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                numerator = mul(numerator, x ^ xj);
                denominator = mul(denominator, xi ^ xj);
            }
        }
        let basis = mul(numerator, inv(denominator));
        for (o, y) in out.iter_mut().zip(yi.iter()) {
            *o ^= mul(basis, *y);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Schoolbook multiply of the 15-bit product, then long division: slow,
    /// branchy and obviously right.
    fn reference_mul(a: u8, b: u8) -> u8 {
        let mut p: u16 = 0;
        for i in 0..8 {
            if (b >> i) & 1 == 1 {
                p ^= u16::from(a) << i;
            }
        }
        for bit in (8..15).rev() {
            if (p >> bit) & 1 == 1 {
                p ^= 0x11b << (bit - 8);
            }
        }
        p as u8
    }

    #[test]
    fn multiply_matches_the_reference_for_all_pairs() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), reference_mul(a, b), "{a} * {b}");
            }
        }
    }

    #[test]
    fn field_axioms_hold_exhaustively() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            if a != 0 {
                assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
            }
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul(b, a), "commutes {a} {b}");
            }
        }
        assert_eq!(inv(0), 0);
        // Associativity and distributivity over all triples would be 16M
        // products; a stride through c covers every a, b with varied c.
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for c in [0u8, 1, 2, 3, 0x53, 0x8f, 0xca, 0xff, a ^ b, a.wrapping_add(b)] {
                    assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)));
                    assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
                }
            }
        }
    }

    #[test]
    fn known_products() {
        // FIPS-197 section 4.2 examples.
        assert_eq!(mul(0x57, 0x83), 0xc1);
        assert_eq!(mul(0x57, 0x13), 0xfe);
        assert_eq!(inv(0x53), 0xca);
    }

    #[test]
    fn interpolation_recovers_a_polynomial() {
        // f(x) = 7 + 3x + 200x^2, per byte with a second coefficient set.
        let f = |x: u8, c: [u8; 3]| c[0] ^ mul(c[1], x) ^ mul(c[2], mul(x, x));
        let c1 = [7u8, 3, 200];
        let c2 = [0u8, 255, 1];
        let pts: Vec<(u8, Vec<u8>)> = [1u8, 5, 9].iter().map(|&x| (x, vec![f(x, c1), f(x, c2)])).collect();
        let refs: Vec<(u8, &[u8])> = pts.iter().map(|(x, y)| (*x, y.as_slice())).collect();
        for x in 0..=255u8 {
            let got = interpolate(&refs, x).expect("must succeed");
            assert_eq!(got.as_slice(), &[f(x, c1), f(x, c2)]);
        }
    }

    #[test]
    fn interpolation_rejects_bad_input() {
        assert!(interpolate(&[], 0).is_err());
        let a = [1u8, 2];
        let b = [3u8];
        assert!(interpolate(&[(1, &a), (2, &b)], 0).is_err());
        assert!(interpolate(&[(1, &a), (1, &a)], 0).is_err());
    }
}
