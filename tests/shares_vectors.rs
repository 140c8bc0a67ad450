//! The official SLIP-0039 test vectors (trezor/python-shamir-mnemonic,
//! `vectors.json`): each entry is [description, mnemonics, master secret hex
//! (empty when the mnemonics must be refused), xprv], passphrase "TREZOR".

use keyrite::shares::{combine_mnemonics, Share, SharesError};

const PASSPHRASE: &[u8] = b"TREZOR";

type Vector = (String, Vec<String>, String, String);

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/slip39-vectors.json");
    let text = std::fs::read_to_string(path).expect("read the vectors file");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("parse the vectors file");
    assert_eq!(vectors.len(), 45, "the vectors file changed; review this test");
    vectors
}

fn combine(v: &Vector) -> Result<Vec<u8>, SharesError> {
    let mnemonics: Vec<&str> = v.1.iter().map(String::as_str).collect();
    combine_mnemonics(&mnemonics, PASSPHRASE).map(|s| s.expose().to_vec())
}

#[test]
fn valid_vectors_recombine_to_the_expected_secret() {
    let mut checked = 0;
    for v in vectors().iter().filter(|v| !v.2.is_empty()) {
        let expected = hex::decode(&v.2).expect("hex secret");
        match combine(v) {
            Ok(got) => assert_eq!(got, expected, "{}", v.0),
            Err(e) => panic!("{}: {e}", v.0),
        }
        checked += 1;
    }
    assert_eq!(checked, 15);
}

#[test]
fn valid_vector_mnemonics_reencode_identically() {
    for v in vectors().iter().filter(|v| !v.2.is_empty()) {
        for (i, m) in v.1.iter().enumerate() {
            let share = Share::parse_nth(m, i + 1).expect("valid share");
            assert_eq!(share.to_mnemonic().expose_str(), Some(m.as_str()), "{}", v.0);
        }
    }
}

/// The error each invalid vector should raise, by the number its
/// description starts with. Kept loose where the spec allows more than one
/// reading of which check fires first.
fn expected_failure(description: &str, err: &SharesError) -> bool {
    let number: u32 = description.split('.').next().and_then(|n| n.parse().ok()).expect("numbered description");
    match number {
        2 | 21 => matches!(err, SharesError::BadChecksum { share: 1 }),
        3 | 22 => matches!(err, SharesError::BadPadding { share: 1 }),
        5 | 24 => matches!(err, SharesError::TooFew { have: 1, need: 2, .. }),
        6 | 25 => matches!(err, SharesError::DifferentSets { what: "identifiers", .. }),
        7 | 26 => matches!(err, SharesError::DifferentSets { what: "iteration exponents", .. }),
        8 | 27 => matches!(err, SharesError::DifferentSets { what: "group thresholds", .. }),
        9 | 28 => matches!(err, SharesError::DifferentSets { what: "group counts", .. }),
        10 | 29 => matches!(err, SharesError::GroupThresholdAboveCount { .. }),
        11 | 30 => matches!(err, SharesError::DuplicateMember { first: 1, second: 2 }),
        12 | 31 => matches!(err, SharesError::MemberThresholdMismatch { .. }),
        13 | 32 => matches!(err, SharesError::DigestMismatch { .. }),
        14 | 15 | 33 | 34 => matches!(err, SharesError::TooFewGroups { .. }),
        16 | 35 => matches!(err, SharesError::TooFew { group: Some(_), .. }),
        39 | 40 => matches!(err, SharesError::WrongLength { share: 1, .. }),
        _ => false,
    }
}

#[test]
fn invalid_vectors_are_refused_with_a_fitting_error() {
    let mut checked = 0;
    for v in vectors().iter().filter(|v| v.2.is_empty()) {
        match combine(v) {
            Ok(_) => panic!("{}: accepted", v.0),
            Err(e) => {
                assert!(expected_failure(&v.0, &e), "{}: unexpected error {e:?}", v.0);
                let msg = e.to_string();
                for m in &v.1 {
                    // No message may quote a share: check the distinctive
                    // value words (the first four are set metadata).
                    for w in m.split_whitespace().skip(4) {
                        assert!(!msg.split(|c: char| !c.is_ascii_alphabetic()).any(|t| t == w), "{}: {msg}", v.0);
                    }
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 30);
}
