//! C2SP signed notes and checkpoints (c2sp.org/signed-note,
//! c2sp.org/tlog-checkpoint), signed by an HSM-held ECDSA or RSA key.
//!
//! # Signature types
//!
//! signed-note assigns type `0x02` to "ECDSA signatures as implemented by
//! github.com/transparency-dev/witness". That implementation (and Sigstore's
//! Rekor, which it is compatible with) signs `SHA-256(note text)` with ECDSA,
//! carries the signature as an ASN.1 DER `Ecdsa-Sig-Value`, and takes the key
//! ID as the first four bytes of `SHA-256(DER SubjectPublicKeyInfo)`, without
//! the key name or type byte the spec recommends for other types. A P-256 key
//! signing with ECDSA-SHA256, which is exactly what an HSM's `CKM_ECDSA` over a
//! SHA-256 digest gives once converted to DER, therefore uses `0x02` as is,
//! and any Go `note` verifier from transparency-dev/formats accepts our notes.
//! This is the recommended audit key type.
//!
//! Type `0x02` always hashes with SHA-256, so it does not describe a P-384 key
//! signing ECDSA-SHA384 nor any RSA signature, and the spec assigns no byte to
//! those. For them we use `0xff`, which signed-note reserves for types without
//! an assigned byte and recommends following with a longer identifier. Our
//! identifier is `keyrite/<signature algorithm>` (e.g. `keyrite/rsa-pss-sha256`)
//! and the key ID follows the spec's recommended construction:
//! `SHA-256(key name || 0x0A || 0xff || identifier || 0x0A || SPKI DER)[:4]`.
//! The signature bytes are what the signer returns (DER ECDSA, or the RSA
//! octets). Only keyrite verifies these; that is the honest price of keeping
//! the key in an HSM that has no Ed25519.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::merkle::Hash;
use crate::hsm::{self, HsmError, SignatureAlgorithm, Signer};
use crate::words::sha256;

/// signed-note type byte for ECDSA (transparency-dev/witness), SHA-256 digest.
pub const TYPE_ECDSA_SHA256: u8 = 0x02;
/// signed-note type byte for types without an assigned byte.
pub const TYPE_UNASSIGNED: u8 = 0xff;

/// The signed-note type byte and, for `0xff`, the identifier that follows it.
pub fn signature_type(algorithm: SignatureAlgorithm) -> (u8, Option<String>) {
    match algorithm {
        SignatureAlgorithm::EcdsaSha256 => (TYPE_ECDSA_SHA256, None),
        other => (TYPE_UNASSIGNED, Some(format!("keyrite/{}", other.name()))),
    }
}

/// A readable form of the signature type, for the log and the report.
pub fn signature_type_label(algorithm: SignatureAlgorithm) -> String {
    match signature_type(algorithm) {
        (t, None) => format!("0x{t:02x}"),
        (t, Some(id)) => format!("0x{t:02x} {id}"),
    }
}

/// The four-byte signed-note key ID of a key (see the module comment).
pub fn key_id(name: &str, spki_der: &[u8], algorithm: SignatureAlgorithm) -> [u8; 4] {
    let digest = match signature_type(algorithm) {
        (_, None) => sha256(spki_der),
        (t, Some(id)) => {
            let mut buf = Vec::with_capacity(name.len() + id.len() + spki_der.len() + 3);
            buf.extend_from_slice(name.as_bytes());
            buf.push(b'\n');
            buf.push(t);
            buf.extend_from_slice(id.as_bytes());
            buf.push(b'\n');
            buf.extend_from_slice(spki_der);
            sha256(&buf)
        }
    };
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Checks a signed-note key name: non-empty, no Unicode space, no `+`, no
/// control character.
pub fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err(format!("key name {name:?} must be 1 to 200 bytes"));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        return Err(format!("key name {name:?} must not contain spaces, '+' or control characters"));
    }
    Ok(())
}

/// The checkpoint body: origin, tree size, base64 root hash, each ending in a
/// newline. No extension lines (tlog-checkpoint recommends none).
pub fn checkpoint_body(origin: &str, size: u64, root: &Hash) -> String {
    format!("{origin}\n{size}\n{}\n", B64.encode(root))
}

/// Signs `text` (which must end in a newline) and returns the signed note:
/// the text, a blank line, and one signature line.
pub fn sign_note(text: &str, key_name: &str, signer: &dyn Signer) -> Result<String, HsmError> {
    let algorithm = signer.signature_algorithm();
    let signature = signer.sign(text.as_bytes())?;
    // Check before anything is written: a token that returns garbage must not
    // leave an unverifiable checkpoint in the log.
    hsm::verify_signature(signer.spki_der(), algorithm, text.as_bytes(), &signature)?;
    let mut blob = key_id(key_name, signer.spki_der(), algorithm).to_vec();
    blob.extend_from_slice(&signature);
    Ok(format!("{text}\n\u{2014} {key_name} {}\n", B64.encode(blob)))
}

/// One `— name base64(keyID || signature)` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub key_name: String,
    pub key_id: [u8; 4],
    pub signature: Vec<u8>,
}

/// A parsed signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, including its final newline.
    pub text: String,
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note strictly (signed-note "Format").
    pub fn parse(note: &str) -> Result<Self, String> {
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err("the note contains a control character other than newline".into());
        }
        if note.len() > 64 * 1024 {
            return Err("the note is larger than 64 KiB".into());
        }
        let split = note.rfind("\n\n").ok_or("the note has no blank line before its signatures")?;
        let text = &note[..=split];
        let sigs = &note[split + 2..];
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err("the note's signature lines are missing or do not end in a newline".into());
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| format!("signature line {line:?} does not start with an em dash and a space"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| format!("signature line {line:?} has no space between key name and signature"))?;
            check_key_name(name)?;
            let blob = B64.decode(b64).map_err(|e| format!("signature line {line:?}: bad base64: {e}"))?;
            if blob.len() < 5 {
                return Err(format!("signature line {line:?} is too short to hold a key ID and a signature"));
            }
            signatures.push(NoteSignature {
                key_name: name.to_string(),
                key_id: [blob[0], blob[1], blob[2], blob[3]],
                signature: blob[4..].to_vec(),
            });
        }
        if signatures.len() > 16 {
            return Err("the note has more than 16 signatures".into());
        }
        Ok(SignedNote { text: text.to_string(), signatures })
    }
}

/// A public key a verifier trusts for notes.
#[derive(Debug, Clone)]
pub struct NoteKey<'a> {
    pub name: &'a str,
    pub spki_der: &'a [u8],
    pub algorithm: SignatureAlgorithm,
}

/// Verifies `note` against `keys` by the signed-note rules: signatures from
/// unknown keys (name and ID not both matching) are ignored, a known key's
/// failing signature rejects the note, and at least one known key must
/// verify. Returns the indexes of the keys that verified.
pub fn verify_note(note: &SignedNote, keys: &[NoteKey<'_>]) -> Result<Vec<usize>, String> {
    let mut verified = Vec::new();
    for sig in &note.signatures {
        let known =
            keys.iter().position(|k| k.name == sig.key_name && key_id(k.name, k.spki_der, k.algorithm) == sig.key_id);
        let Some(index) = known else { continue };
        let key = &keys[index];
        hsm::verify_signature(key.spki_der, key.algorithm, note.text.as_bytes(), &sig.signature)
            .map_err(|_| format!("the signature by key {:?} does not verify", sig.key_name))?;
        verified.push(index);
    }
    if verified.is_empty() {
        let names: Vec<String> =
            note.signatures.iter().map(|s| format!("{} ({})", s.key_name, hex::encode(s.key_id))).collect();
        return Err(format!("no signature is by an announced audit key (the note is signed by {})", names.join(", ")));
    }
    Ok(verified)
}

/// A parsed checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl CheckpointBody {
    /// Parses the note text of a checkpoint (tlog-checkpoint "Note text").
    /// Extension lines are refused: keyrite never writes them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body = text.strip_suffix('\n').ok_or("the checkpoint text does not end in a newline")?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root] = lines.as_slice() else {
            return Err(format!("the checkpoint text has {} lines, keyrite writes exactly 3", lines.len()));
        };
        if origin.is_empty() {
            return Err("the checkpoint origin line is empty".into());
        }
        let size_ok =
            !size.is_empty() && size.bytes().all(|b| b.is_ascii_digit()) && (*size == "0" || !size.starts_with('0'));
        if !size_ok {
            return Err(format!("tree size {size:?} is not a decimal number without leading zeros"));
        }
        let size: u64 = size.parse().map_err(|_| format!("tree size {size:?} is out of range"))?;
        let raw = B64.decode(root).map_err(|e| format!("root hash {root:?} is not base64: {e}"))?;
        let root: Hash = raw.try_into().map_err(|_| format!("root hash {root:?} is not 32 bytes"))?;
        Ok(CheckpointBody { origin: origin.to_string(), size, root })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::soft::SoftKey;
    use crate::hsm::KeyAlgorithm;

    #[test]
    fn a_signed_checkpoint_round_trips_and_verifies() {
        let key = SoftKey::generate("audit", KeyAlgorithm::EcdsaP256).expect("key");
        let root = crate::audit::merkle::root_of(&[b"a".as_slice(), b"b"]);
        let body = checkpoint_body("keyrite/root-2025", 2, &root);
        assert_eq!(body.lines().count(), 3);
        let note = sign_note(&body, "keyrite/root-2025", &key).expect("sign");
        assert!(note.starts_with(&format!("{body}\n\u{2014} keyrite/root-2025 ")));
        assert!(note.ends_with('\n'));

        let parsed = SignedNote::parse(&note).expect("parse");
        assert_eq!(parsed.text, body);
        assert_eq!(parsed.signatures.len(), 1);
        let id = sha256(key.spki_der());
        assert_eq!(parsed.signatures[0].key_id, [id[0], id[1], id[2], id[3]], "type 0x02 key ID is SHA-256(SPKI)[:4]");
        let cp = CheckpointBody::parse(&parsed.text).expect("body");
        assert_eq!(cp, CheckpointBody { origin: "keyrite/root-2025".into(), size: 2, root });

        let keys =
            [NoteKey { name: "keyrite/root-2025", spki_der: key.spki_der(), algorithm: key.signature_algorithm() }];
        assert_eq!(verify_note(&parsed, &keys).expect("verifies"), vec![0]);
    }

    #[test]
    fn unknown_keys_are_ignored_and_a_bad_known_signature_rejects() {
        let key = SoftKey::generate("audit", KeyAlgorithm::EcdsaP256).expect("key");
        let other = SoftKey::generate("other", KeyAlgorithm::EcdsaP256).expect("key");
        let body = checkpoint_body("o", 0, &crate::audit::merkle::empty_root());
        let note = sign_note(&body, "audit", &other).expect("sign");
        let parsed = SignedNote::parse(&note).expect("parse");
        let keys = [NoteKey { name: "audit", spki_der: key.spki_der(), algorithm: key.signature_algorithm() }];
        assert!(verify_note(&parsed, &keys).expect_err("unknown key").contains("no signature"));

        let good = sign_note(&body, "audit", &key).expect("sign");
        let mut tampered = SignedNote::parse(&good).expect("parse");
        tampered.text = checkpoint_body("o", 1, &crate::audit::merkle::empty_root());
        assert!(verify_note(&tampered, &keys).expect_err("bad sig").contains("does not verify"));
    }

    #[test]
    fn p384_and_rsa_use_the_unassigned_type_with_an_identifier() {
        assert_eq!(signature_type_label(SignatureAlgorithm::EcdsaSha256), "0x02");
        assert_eq!(signature_type_label(SignatureAlgorithm::EcdsaSha384), "0xff keyrite/ecdsa-sha384");
        let key = SoftKey::generate("audit", KeyAlgorithm::EcdsaP384).expect("key");
        let body = checkpoint_body("o", 0, &crate::audit::merkle::empty_root());
        let note = sign_note(&body, "audit", &key).expect("sign");
        let parsed = SignedNote::parse(&note).expect("parse");
        let keys = [NoteKey { name: "audit", spki_der: key.spki_der(), algorithm: key.signature_algorithm() }];
        assert!(verify_note(&parsed, &keys).is_ok());
        assert_ne!(key_id("audit", key.spki_der(), SignatureAlgorithm::EcdsaSha384), {
            let d = sha256(key.spki_der());
            [d[0], d[1], d[2], d[3]]
        });
    }

    #[test]
    fn malformed_notes_and_bodies_are_refused() {
        assert!(SignedNote::parse("no blank line\n\u{2014} k AAAAAAA=\n").is_err());
        assert!(SignedNote::parse("text\n\n- k AAAAAAA=\n").is_err(), "hyphen is not an em dash");
        assert!(SignedNote::parse("text\n\n\u{2014} k AAAAAAA=").is_err(), "missing final newline");
        assert!(SignedNote::parse("te\rxt\n\n\u{2014} k AAAAAAA=\n").is_err());
        assert!(CheckpointBody::parse("o\n01\nAAAA\n").is_err());
        assert!(CheckpointBody::parse("o\n1\n").is_err());
        assert!(CheckpointBody::parse("o\n1\nAAAA\n").is_err(), "root not 32 bytes");
        assert!(CheckpointBody::parse("o\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\n").is_err());
        assert!(check_key_name("a b").is_err() && check_key_name("a+b").is_err() && check_key_name("").is_err());
    }
}
