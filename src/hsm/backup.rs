//! Key backups and token activation for n-of-m custody.
//!
//! A root key generated with [`Extractability::WrapWithTrustedOnly`] can
//! leave its token only wrapped (`CKM_AES_KEY_WRAP_PAD`, RFC 5649) under a
//! key-encryption key (KEK) that the security officer marked `CKA_TRUSTED`.
//! The KEK is 32 bytes drawn from the token's RNG by the caller and split
//! among custodians with [`crate::shares::split`]; it exists on the token only
//! for the few calls a backup or restore takes, as a session object
//! (`CKA_TOKEN` false), and is destroyed after. Being a session object, it
//! never reaches the token's storage: if keyrite dies between creating and
//! destroying it, the token drops it with the session, so no trusted key is
//! left behind for anyone to wrap the root with later.
//! The wrapped blob is ciphertext: it can be copied freely, and is useless
//! without a quorum of shares.
//!
//! What SoftHSM 2.6.1 allows, measured by `tests/custody_softhsm.rs` (see
//! `docs/tokens.md`): a user session may not set `CKA_TRUSTED`, only the
//! security officer can; SO and user cannot be logged in to one token at once
//! in one process (`CKR_USER_ANOTHER_ALREADY_LOGGED_IN`); logging out
//! invalidates private-key handles; the user may wrap with the SO's trusted
//! KEK and destroy it; unwrapping needs no trust, so a restore needs no SO.
//!
//! Activation: a ceremony can make the user PIN random and never shown. The
//! custodians then hold shares of a 16-byte *PIN seed* (SLIP-0039 needs at
//! least 16 bytes, of even length), and the PIN is the seed in RFC 4648
//! base32 ([`pin_from_seed`]), so it can be rebuilt by hand with any base32
//! tool if keyrite is unavailable.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use serde::{Deserialize, Serialize};

use super::pkcs11::{
    auth_pin, bool_attr, call, curve_oid_der, Extractability, Module, Pkcs11Error, Token, TokenKey, TokenSelector,
};
use super::{
    rsa_public_key_parts, spki_algorithm, verify_signature, HsmError, KeyAlgorithm, RandomSource, SignatureAlgorithm,
    Signer,
};
use crate::secret::Secret;

/// The length of a key-encryption key: AES-256.
pub const KEK_LEN: usize = 32;
/// The wrapping mechanism, as the backup file names it.
pub const WRAP_MECHANISM: &str = "CKM_AES_KEY_WRAP_PAD";
/// The backup file's format name; a new layout gets a new name.
pub const FORMAT: &str = "keyrite-wrapped-key-v1";
/// Every KEK keyrite puts on a token carries this label prefix, so an
/// auditor listing a token's objects can tell one apart.
pub const KEK_LABEL_PREFIX: &str = "keyrite-kek-";
/// The length of an activation PIN seed (the secret custodians share).
pub const PIN_SEED_LEN: usize = 16;

const KEK_CHECK_INPUT: &[u8] = b"keyrite KEK check v1";
/// Symbols of [`random_pin`]: digits and capitals without 0, 1, I, L, O,
/// which are misread on paper and on small displays.
const PIN_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const RANDOM_PIN_LEN: usize = 26;

/// A private key wrapped under a KEK, with what a restore needs to rebuild
/// and check the key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub key_label: String,
    /// The key's `CKA_ID` on the source token; a restore reuses it so that
    /// PKCS#11 URIs naming the key keep working.
    pub key_id: Vec<u8>,
    pub algorithm: KeyAlgorithm,
    /// DER SubjectPublicKeyInfo of the key pair.
    pub public_key_spki: Vec<u8>,
    /// The private key as `C_WrapKey` returned it: RFC 5649 AES key wrap
    /// with padding of the token's PKCS#8 encoding.
    pub blob: Vec<u8>,
    /// See [`kek_check`].
    pub kek_check: String,
}

/// The backup file, as JSON. Field order is the order written.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlobFile {
    format: String,
    key_label: String,
    key_id: String,
    algorithm: String,
    public_key: String,
    wrapping_mechanism: String,
    kek_check: String,
    blob: String,
    blob_sha256: String,
}

impl WrappedKey {
    /// The backup file: pretty JSON with a trailing newline.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let file = BlobFile {
            format: FORMAT.into(),
            key_label: self.key_label.clone(),
            key_id: hex::encode(&self.key_id),
            algorithm: self.algorithm.name().into(),
            public_key: B64.encode(&self.public_key_spki),
            wrapping_mechanism: WRAP_MECHANISM.into(),
            kek_check: self.kek_check.clone(),
            blob: B64.encode(&self.blob),
            blob_sha256: crate::words::sha256_hex(&self.blob),
        };
        // Serialising a struct of strings cannot fail.
        let mut out = serde_json::to_vec_pretty(&file).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Reads a backup file strictly: unknown fields, a foreign format or
    /// mechanism, bad encodings and a blob whose SHA-256 differs from the
    /// recorded one are all refused, naming `path` and the field.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<WrappedKey, BackupError> {
        let bad =
            |field: &str, what: String| BackupError::BadFile { path: path.to_path_buf(), field: field.into(), what };
        let file: BlobFile =
            serde_json::from_slice(bytes).map_err(|e| bad("(document)", format!("not a keyrite backup file: {e}")))?;
        if file.format != FORMAT {
            return Err(bad("format", format!("is {:?}, this keyrite reads {FORMAT:?}", file.format)));
        }
        if file.wrapping_mechanism != WRAP_MECHANISM {
            return Err(bad(
                "wrapping_mechanism",
                format!("is {:?}, only {WRAP_MECHANISM} is supported", file.wrapping_mechanism),
            ));
        }
        if file.key_label.is_empty() {
            return Err(bad("key_label", "is empty".into()));
        }
        let key_id = hex::decode(&file.key_id).map_err(|e| bad("key_id", format!("is not hex: {e}")))?;
        let algorithm = KeyAlgorithm::from_name(&file.algorithm).map_err(|e| bad("algorithm", e.to_string()))?;
        let public_key_spki =
            B64.decode(&file.public_key).map_err(|e| bad("public_key", format!("is not base64: {e}")))?;
        let stated = spki_algorithm(&public_key_spki).map_err(|e| bad("public_key", e.to_string()))?;
        if stated != algorithm {
            return Err(bad("public_key", format!("is a {stated} key but `algorithm` says {algorithm}")));
        }
        if file.kek_check.len() != 16
            || !file.kek_check.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        {
            return Err(bad("kek_check", "is not 16 lowercase hex digits".into()));
        }
        let blob = B64.decode(&file.blob).map_err(|e| bad("blob", format!("is not base64: {e}")))?;
        // RFC 5649 output is whole 64-bit blocks, at least two.
        if blob.len() < 16 || blob.len() % 8 != 0 {
            return Err(bad("blob", format!("is {} bytes, not an AES key-wrap output", blob.len())));
        }
        if crate::words::sha256_hex(&blob) != file.blob_sha256.to_ascii_lowercase() {
            return Err(bad("blob_sha256", "does not match `blob`: the file is damaged; use another copy".into()));
        }
        Ok(WrappedKey {
            key_label: file.key_label,
            key_id,
            algorithm,
            public_key_spki,
            blob,
            kek_check: file.kek_check,
        })
    }
}

/// The key check value of a KEK: the first 8 bytes of
/// HMAC-SHA256(KEK, "keyrite KEK check v1"), as 16 lowercase hex digits.
///
/// A restore compares it before touching a token, so a quorum that includes
/// a share of another set is told apart from a damaged blob. HMAC is one-way
/// and 64 bits say nothing usable about a 256-bit key.
pub fn kek_check(kek: &Secret) -> Result<String, BackupError> {
    if kek.len() != KEK_LEN {
        return Err(BackupError::KekLength { len: kek.len() });
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, kek.expose());
    let tag = aws_lc_rs::hmac::sign(&key, KEK_CHECK_INPUT);
    Ok(hex::encode(&tag.as_ref()[..8]))
}

/// Wraps the private key `key_label` on `token` under `kek` for an n-of-m
/// backup.
///
/// Only the security officer may create a trusted key, and PKCS#11 lets one
/// process be logged in to a token as user or as SO, not both; so this logs
/// the token's session out, in as SO to create the KEK, and back in as user
/// (hence `user_pin`) to wrap. Logging out invalidates private-key handles,
/// which is why it takes `&mut Token`: no [`TokenKey`] of the token can be
/// alive across the call; find the key again afterwards.
///
/// The KEK is a session object, destroyed on every path once created and
/// its absence checked; a crash in between takes it away with the session.
pub fn backup_key(
    token: &mut Token,
    user_pin: &Secret,
    so_pin: &Secret,
    key_label: &str,
    kek: &Secret,
) -> Result<WrappedKey, HsmError> {
    let kek_check = kek_check(kek)?;
    let token_label = token.facts().label.clone();
    require_mechanism(token, MechanismType::AES_KEY_WRAP_PAD, "wrapping a key for backup")?;
    let (algorithm, spki, key_id) = {
        let key = token.find_key(key_label, None, None)?;
        check_backupable(token.session(), key.private_handle(), key_label, &token_label)?;
        (key.key_algorithm(), key.spki_der().to_vec(), key.id().to_vec())
    };
    // Converted before logging out, so a PIN that is not text cannot leave
    // the session logged out.
    let user_auth = auth_pin(user_pin)?;
    let so_auth = auth_pin(so_pin)?;
    let kek_label = format!("{KEK_LABEL_PREFIX}{}", hex::encode(token.random_bytes(8)?));
    let session = token.session();

    session.logout().map_err(|e| call("C_Logout", e, format!("user of token {token_label:?}")))?;
    let created = create_trusted_kek(session, &so_auth, kek, &kek_label, &token_label);
    let relogin = session
        .login(UserType::User, Some(&user_auth))
        .map_err(|e| call("C_Login", e, format!("user of token {token_label:?} (after creating the backup KEK)")));
    if created.is_ok() {
        if let Err(e) = &relogin {
            // A read-write public session may still destroy a public object.
            let detail = format!("logging the user back in failed: {e}");
            return Err(destroy_kek(session, &kek_label, &token_label)
                .err()
                .unwrap_or_else(|| BackupError::Relogin { token: token_label.clone(), detail }.into()));
        }
    }
    created?;
    relogin?;
    // Tests kill the process here to show the trusted key dies with it.
    crate::faults::point("backup:kek-created");

    let wrapped = wrap_with(session, &kek_label, key_label, &key_id, &token_label);
    let cleanup = destroy_kek(session, &kek_label, &token_label);
    match (wrapped, cleanup) {
        (Ok(blob), Ok(())) => {
            Ok(WrappedKey { key_label: key_label.into(), key_id, algorithm, public_key_spki: spki, blob, kek_check })
        }
        (Err(e), Ok(())) => Err(e),
        (_, Err(left)) => Err(left),
    }
}

fn require_mechanism(token: &Token, mechanism: MechanismType, purpose: &str) -> Result<(), HsmError> {
    if token.supports(mechanism) {
        return Ok(());
    }
    Err(Pkcs11Error::MechanismUnsupported {
        token: token.facts().label.clone(),
        mechanism: format!("{mechanism}"),
        purpose: purpose.into(),
    }
    .into())
}

/// Refuses, before any login changes, a key that can never be wrapped.
fn check_backupable(session: &Session, key: ObjectHandle, label: &str, token: &str) -> Result<(), HsmError> {
    let attrs = session
        .get_attributes(key, &[AttributeType::Extractable, AttributeType::WrapWithTrusted])
        .map_err(|e| call("C_GetAttributeValue", e, format!("key {label:?}")))?;
    let mut extractable = None;
    let mut with_trusted = None;
    for a in attrs {
        match a {
            Attribute::Extractable(v) => extractable = Some(v),
            Attribute::WrapWithTrusted(v) => with_trusted = Some(v),
            _ => {}
        }
    }
    let why = match (extractable, with_trusted) {
        (Some(true), Some(true)) => return Ok(()),
        (Some(false), _) => "it is not extractable (CKA_EXTRACTABLE is false, and can never become true)",
        (Some(true), _) => "it is extractable without CKA_WRAP_WITH_TRUSTED, which keyrite refuses to rely on",
        (None, _) => "the token does not say whether it is extractable",
    };
    Err(BackupError::NotBackupable { label: label.into(), token: token.into(), why: why.into() }.into())
}

/// Logs in as SO, creates the trusted wrap-only KEK, and logs out again,
/// whatever happened in between.
fn create_trusted_kek(
    session: &Session,
    so_auth: &cryptoki::types::AuthPin,
    kek: &Secret,
    kek_label: &str,
    token: &str,
) -> Result<(), HsmError> {
    session
        .login(UserType::So, Some(so_auth))
        .map_err(|e| call("C_Login", e, format!("security officer of token {token:?}")))?;
    // A public session object: SO sessions cannot create private objects,
    // the user, logged in on the same session after the SO logs out, must
    // see it (logging out destroys only private session objects), and as a
    // session object it never reaches the token's storage, so no crash can
    // leave a trusted key behind. Sensitive, unextractable and unmodifiable,
    // it can wrap and do nothing else while it exists.
    let mut template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(kek.expose().to_vec()),
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Trusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(false),
        Attribute::Label(kek_label.as_bytes().to_vec()),
    ];
    let created = session
        .create_object(&template)
        .map_err(|e| call("C_CreateObject", e, format!("trusted key-encryption key on token {token:?}")));
    wipe(&mut template);
    let logout = session.logout().map_err(|e| call("C_Logout", e, format!("security officer of token {token:?}")));
    if let (Ok(_), Err(e)) = (&created, &logout) {
        // Still the SO: remove the KEK now, while we can see it.
        let detail = format!("logging the security officer out failed: {e}");
        return Err(destroy_kek(session, kek_label, token)
            .err()
            .unwrap_or_else(|| BackupError::Relogin { token: token.into(), detail }.into()));
    }
    created?;
    logout
}

fn wrap_with(
    session: &Session,
    kek_label: &str,
    key_label: &str,
    key_id: &[u8],
    token: &str,
) -> Result<Vec<u8>, HsmError> {
    let kek = find_one(session, &[Attribute::Class(ObjectClass::SECRET_KEY), label(kek_label)], kek_label, token)?;
    // The handle from before the logout is gone; look the key up again.
    let private = find_one(
        session,
        &[Attribute::Class(ObjectClass::PRIVATE_KEY), label(key_label), Attribute::Id(key_id.to_vec())],
        key_label,
        token,
    )?;
    session.wrap_key(&Mechanism::AesKeyWrapPad, kek, private).map_err(|e| match e {
        CkError::Pkcs11(rv @ (RvError::KeyNotWrappable | RvError::KeyUnextractable), _) => BackupError::NotBackupable {
            label: key_label.into(),
            token: token.into(),
            why: format!("the token refused to wrap it with the trusted key-encryption key ({rv})"),
        }
        .into(),
        other => call("C_WrapKey", other, format!("key {key_label:?} on token {token:?}")),
    })
}

/// Overwrites key bytes a template carried, once the token has them.
fn wipe(template: &mut [Attribute]) {
    for attribute in template {
        if let Attribute::Value(bytes) = attribute {
            zeroize::Zeroize::zeroize(bytes);
        }
    }
}

fn label(text: &str) -> Attribute {
    Attribute::Label(text.as_bytes().to_vec())
}

fn find_one(session: &Session, template: &[Attribute], what: &str, token: &str) -> Result<ObjectHandle, HsmError> {
    let found = session.find_objects(template).map_err(|e| call("C_FindObjects", e, format!("object {what:?}")))?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Pkcs11Error::KeyNotFound { label: what.into(), token: token.into() }.into()),
        _ => Err(Pkcs11Error::KeyAmbiguous { label: what.into(), token: token.into() }.into()),
    }
}

/// Destroys every object labelled `kek_label` and checks none is left.
fn destroy_kek(session: &Session, kek_label: &str, token: &str) -> Result<(), HsmError> {
    let left =
        |detail: String| BackupError::KekLeftOnToken { kek_label: kek_label.into(), token: token.into(), detail };
    let found = session.find_objects(&[label(kek_label)]).map_err(|e| left(format!("C_FindObjects failed: {e}")))?;
    for handle in found {
        session.destroy_object(handle).map_err(|e| left(format!("C_DestroyObject failed: {e}")))?;
    }
    let after = session.find_objects(&[label(kek_label)]).map_err(|e| left(format!("C_FindObjects failed: {e}")))?;
    if !after.is_empty() {
        return Err(left(format!("{} object(s) still carry the label after C_DestroyObject", after.len())).into());
    }
    Ok(())
}

/// How [`restore_key`] makes the restored key.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions<'a> {
    /// The label on the new token; the backup's own label when `None`.
    pub label: Option<&'a str>,
    /// `WrapWithTrustedOnly` (the default) keeps the key backup-capable on
    /// the new token; `Never` makes the restored copy unextractable.
    pub extractability: Extractability,
    /// The signature the returned key makes; the key type's default when `None`.
    pub signature: Option<SignatureAlgorithm>,
}

impl Default for RestoreOptions<'_> {
    fn default() -> Self {
        RestoreOptions { label: None, extractability: Extractability::WrapWithTrustedOnly, signature: None }
    }
}

/// Restores a backup onto `token` (logged in as user) and proves it: the
/// restored key signs a random challenge that verifies under the backup's
/// public key. On any failure after the unwrap, both halves are destroyed.
///
/// Unwrapping needs no trusted key, so the KEK here is a session object the
/// user creates: it never reaches the token's storage, and disappears with
/// the session even if the process dies before destroying it. No SO PIN is
/// needed.
///
/// The KEK's check value is compared first: a wrong quorum fails with
/// [`BackupError::WrongKek`] before anything is created.
pub fn restore_key<'t>(
    token: &'t Token,
    wrapped: &WrappedKey,
    kek: &Secret,
    options: &RestoreOptions<'_>,
) -> Result<TokenKey<'t>, HsmError> {
    let check = kek_check(kek)?;
    if aws_lc_rs::constant_time::verify_slices_are_equal(check.as_bytes(), wrapped.kek_check.as_bytes()).is_err() {
        return Err(BackupError::WrongKek { label: wrapped.key_label.clone() }.into());
    }
    let stated = spki_algorithm(&wrapped.public_key_spki)?;
    if stated != wrapped.algorithm {
        return Err(HsmError::BadPublicKey(format!(
            "the backup of {:?} holds a {stated} public key but says {}",
            wrapped.key_label, wrapped.algorithm
        )));
    }
    let token_label = token.facts().label.clone();
    let new_label = options.label.unwrap_or(&wrapped.key_label);
    let signature = options.signature.unwrap_or(wrapped.algorithm.default_signature());
    if !signature.fits(wrapped.algorithm) {
        return Err(HsmError::SignatureMismatch { sig: signature, key: wrapped.algorithm });
    }
    require_mechanism(token, MechanismType::AES_KEY_WRAP_PAD, "restoring a wrapped key")?;
    token.check_algorithm(wrapped.algorithm, signature)?;
    token.check_label_free(new_label)?;
    let session = token.session();
    if !wrapped.key_id.is_empty() {
        let taken = session
            .find_objects(&[Attribute::Id(wrapped.key_id.clone())])
            .map_err(|e| call("C_FindObjects", e, "checking the key ID".into()))?;
        if !taken.is_empty() {
            return Err(BackupError::IdTaken { id: hex::encode(&wrapped.key_id), token: token_label }.into());
        }
    }
    let key_id = if wrapped.key_id.is_empty() { token.random_bytes(16)? } else { wrapped.key_id.clone() };
    let public_template = public_key_template(wrapped, new_label, &key_id)?;

    let kek_label = format!("{KEK_LABEL_PREFIX}{}", hex::encode(token.random_bytes(8)?));
    let mut kek_template = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(kek.expose().to_vec()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Unwrap(true),
        Attribute::Wrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        label(&kek_label),
    ];
    let kek_handle = session.create_object(&kek_template);
    wipe(&mut kek_template);
    let kek_handle = kek_handle
        .map_err(|e| call("C_CreateObject", e, format!("session key-encryption key on token {token_label:?}")))?;
    let unwrapped = session.unwrap_key(
        &Mechanism::AesKeyWrapPad,
        kek_handle,
        &wrapped.blob,
        &private_key_template(wrapped.algorithm, new_label, &key_id, options.extractability),
    );
    let cleanup = destroy_kek(session, &kek_label, &token_label);
    let private = match unwrapped {
        Ok(handle) => handle,
        // The KEK is known to be right here, so a refusal of the blob means
        // the blob. SoftHSM 2.6.1 reports a failed RFC 5649 integrity check
        // as CKR_GENERAL_ERROR (measured), others as WRAPPED_KEY_INVALID.
        Err(CkError::Pkcs11(
            rv @ (RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::GeneralError),
            _,
        )) => {
            cleanup?;
            return Err(BackupError::BlobRejected {
                label: wrapped.key_label.clone(),
                token: token_label,
                rv: format!("{rv}"),
            }
            .into());
        }
        Err(e) => {
            cleanup?;
            return Err(call(
                "C_UnwrapKey",
                e,
                format!("backup of key {:?} onto token {token_label:?}", wrapped.key_label),
            ));
        }
    };
    if let Err(e) = cleanup {
        let _ = session.destroy_object(private);
        return Err(e);
    }
    let public = match session.create_object(&public_template) {
        Ok(handle) => handle,
        Err(e) => {
            let _ = session.destroy_object(private);
            return Err(call("C_CreateObject", e, format!("public key {new_label:?} on token {token_label:?}")));
        }
    };
    let proved = check_restored(session, private, new_label, &token_label, options.extractability)
        .and_then(|()| prove(token, wrapped, new_label, &key_id, signature));
    match proved {
        Ok(key) => Ok(key),
        Err(e) => {
            let _ = session.destroy_object(private);
            let _ = session.destroy_object(public);
            Err(e)
        }
    }
}

/// The template for `C_UnwrapKey`. Key-type parameters (EC curve, RSA
/// modulus) come from the wrapped PKCS#8 and must not be given: SoftHSM
/// answers `CKR_ATTRIBUTE_READ_ONLY` to `CKA_EC_PARAMS` here (measured).
fn private_key_template(
    algorithm: KeyAlgorithm,
    label: &str,
    id: &[u8],
    extractability: Extractability,
) -> Vec<Attribute> {
    let key_type = if algorithm.is_rsa() { KeyType::RSA } else { KeyType::EC };
    let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::KeyType(key_type)];
    template.extend(super::pkcs11::private_key_policy(label, id, extractability));
    template
}

/// The public half, rebuilt from the backup's SubjectPublicKeyInfo.
fn public_key_template(wrapped: &WrappedKey, label: &str, id: &[u8]) -> Result<Vec<Attribute>, HsmError> {
    use der::Encode;
    let spki = spki::SubjectPublicKeyInfoRef::try_from(wrapped.public_key_spki.as_slice())
        .map_err(|e| HsmError::BadPublicKey(format!("the backup's public key is not DER SubjectPublicKeyInfo: {e}")))?;
    let raw = spki.subject_public_key.raw_bytes();
    let mut template = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    template.extend(super::pkcs11::public_key_policy(label, id));
    if wrapped.algorithm.is_rsa() {
        let (n, e) = rsa_public_key_parts(raw)?;
        template.extend([Attribute::KeyType(KeyType::RSA), Attribute::Modulus(n), Attribute::PublicExponent(e)]);
    } else {
        // CKA_EC_POINT is the point inside a DER OCTET STRING (PKCS#11 2.40).
        let point = der::asn1::OctetStringRef::new(raw)
            .and_then(|o| o.to_der())
            .map_err(|e| HsmError::BadPublicKey(format!("cannot encode the EC point: {e}")))?;
        template.extend([
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(curve_oid_der(wrapped.algorithm)),
            Attribute::EcPoint(point),
        ]);
    }
    Ok(template)
}

/// Reads the restored private key's protection back, as generation does.
fn check_restored(
    session: &Session,
    key: ObjectHandle,
    label: &str,
    token: &str,
    extractability: Extractability,
) -> Result<(), HsmError> {
    let extractable = extractability == Extractability::WrapWithTrustedOnly;
    let mut wanted = vec![
        (AttributeType::Token, true),
        (AttributeType::Private, true),
        (AttributeType::Sensitive, true),
        (AttributeType::Extractable, extractable),
        (AttributeType::Sign, true),
        (AttributeType::Decrypt, false),
        (AttributeType::Unwrap, false),
        (AttributeType::Derive, false),
    ];
    if extractable {
        wanted.push((AttributeType::WrapWithTrusted, true));
    }
    let types: Vec<AttributeType> = wanted.iter().map(|(t, _)| *t).collect();
    let attrs =
        session.get_attributes(key, &types).map_err(|e| call("C_GetAttributeValue", e, format!("key {label:?}")))?;
    for (attribute, expected) in wanted {
        let got = attrs.iter().find_map(|a| bool_attr(a, attribute));
        if got != Some(expected) {
            return Err(Pkcs11Error::ProtectionWrong {
                label: label.into(),
                token: token.into(),
                attribute: format!("{attribute}"),
                expected,
                got: got.map_or("unreadable".into(), |g| g.to_string()),
            }
            .into());
        }
    }
    Ok(())
}

/// The proof of a restore: the token's public key is the backup's, and the
/// restored private key makes signatures that verify under it.
fn prove<'t>(
    token: &'t Token,
    wrapped: &WrappedKey,
    label: &str,
    id: &[u8],
    signature: SignatureAlgorithm,
) -> Result<TokenKey<'t>, HsmError> {
    let failed =
        |what: String| BackupError::ProofFailed { label: label.into(), token: token.facts().label.clone(), what };
    let key = token.find_key(label, Some(id), Some(signature))?;
    if key.spki_der() != wrapped.public_key_spki.as_slice() {
        return Err(failed("the public key on the token differs from the backup's".into()).into());
    }
    let challenge = token.random_bytes(32)?;
    let sig = key.sign(&challenge)?;
    verify_signature(&wrapped.public_key_spki, signature, &challenge, &sig).map_err(|e| {
        failed(format!("a signature by the restored key does not verify under the backup's public key: {e}"))
    })?;
    Ok(key)
}

/// A new activation PIN seed: [`PIN_SEED_LEN`] random bytes, the secret the
/// custodians' shares hold. Draw it from the token's RNG.
pub fn random_pin_seed(rng: &dyn RandomSource) -> Result<Secret, HsmError> {
    Ok(Secret::new(rng.random_bytes(PIN_SEED_LEN)?))
}

/// The PIN a seed stands for: the seed in RFC 4648 base32 without padding
/// (26 characters from A-Z and 2-7). Deterministic and reproducible by hand,
/// e.g. `xxd -r -p <<< SEEDHEX | base32 | tr -d =`.
pub fn pin_from_seed(seed: &Secret) -> Result<Secret, BackupError> {
    if seed.len() != PIN_SEED_LEN {
        return Err(BackupError::PinSeedLength { len: seed.len() });
    }
    Ok(Secret::new(base32(seed.expose())))
}

fn base32(bytes: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = (buffer << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[usize::from((buffer >> bits) & 31)]);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[usize::from((buffer << (5 - bits)) & 31)]);
    }
    out
}

/// A random PIN that is not shared: 26 characters from a 31-symbol
/// alphabet without look-alikes (about 128 bits), drawn without bias by
/// rejecting random bytes at or above the largest multiple of 31.
pub fn random_pin(rng: &dyn RandomSource) -> Result<Secret, HsmError> {
    let n = PIN_ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut pin = Vec::with_capacity(RANDOM_PIN_LEN);
    while pin.len() < RANDOM_PIN_LEN {
        let batch = zeroize::Zeroizing::new(rng.random_bytes(2 * (RANDOM_PIN_LEN - pin.len()))?);
        for &b in batch.iter().filter(|b| usize::from(**b) < limit) {
            if pin.len() < RANDOM_PIN_LEN {
                pin.push(PIN_ALPHABET[usize::from(b) % n]);
            }
        }
    }
    Ok(Secret::new(pin))
}

/// Changes the logged-in user's PIN (`C_SetPIN`). The session stays logged
/// in; the next login needs `new_pin`.
pub fn set_user_pin(token: &Token, old_pin: &Secret, new_pin: &Secret) -> Result<(), HsmError> {
    token
        .session()
        .set_pin(&auth_pin(old_pin)?, &auth_pin(new_pin)?)
        .map_err(|e| call("C_SetPIN", e, format!("user PIN of token {:?}", token.facts().label)))
}

/// Sets the user PIN as security officer (`C_InitPIN`), for when the old
/// user PIN is unknown or locked. Nobody in this process may be logged in
/// to the token.
pub fn init_user_pin(
    module: &Module,
    selector: &TokenSelector,
    so_pin: &Secret,
    new_pin: &Secret,
) -> Result<(), HsmError> {
    module.open_so_session(selector, so_pin)?.init_user_pin(new_pin)
}

/// Changes the security officer's PIN (`C_SetPIN` in an SO session).
pub fn set_so_pin(
    module: &Module,
    selector: &TokenSelector,
    old_pin: &Secret,
    new_pin: &Secret,
) -> Result<(), HsmError> {
    module.open_so_session(selector, old_pin)?.set_so_pin(old_pin, new_pin)
}

/// Errors of backup, restore and activation. None carries a key, a share
/// or a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(
        "the key-encryption key must be {KEK_LEN} bytes, not {len}: recombine the custodians' shares of the backup key"
    )]
    KekLength { len: usize },
    #[error("the recombined key does not match this backup of key {label:?}: a share is from another set, or the shares belong to another backup; compare each card's set with the ceremony record and try another combination of shares")]
    WrongKek { label: String },
    #[error("key {label:?} on token {token:?} cannot be backed up: {why}. Only a key generated as wrap-with-trusted (a backup-enabled ceremony) can be; this one stays on its token")]
    NotBackupable { label: String, token: String, why: String },
    #[error("the key-encryption key {kek_label:?} could not be removed from token {token:?} ({detail}); it is a session object and goes with keyrite's session: stop here, and check with `pkcs11-tool --list-objects --type secrkey` that no object labelled {kek_label} remains before the token leaves the ceremony")]
    KekLeftOnToken { kek_label: String, token: String, detail: String },
    #[error("token {token:?} is logged out after the backup KEK was created and removed ({detail}); log in again before using it")]
    Relogin { token: String, detail: String },
    #[error("token {token:?} refused the wrapped key {label:?} ({rv}) although the shares match the backup, so the blob is damaged: use another copy of the backup file")]
    BlobRejected { label: String, token: String, rv: String },
    #[error("the restored key {label:?} on token {token:?} failed its proof: {what}; it was destroyed. Use another copy of the backup file")]
    ProofFailed { label: String, token: String, what: String },
    #[error("key ID {id} is already used on token {token:?}: restore onto a token that does not hold this key")]
    IdTaken { id: String, token: String },
    #[error("{path}: field `{field}` {what}")]
    BadFile { path: PathBuf, field: String, what: String },
    #[error("an activation PIN seed must be {PIN_SEED_LEN} bytes, not {len}: recombine the custodians' shares of the activation PIN")]
    PinSeedLength { len: usize },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::soft::{SealingKey, SoftError, SoftStore, SystemRng};
    use crate::shares;

    #[test]
    fn base32_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), expected.as_bytes(), "{input}");
        }
        let pin = pin_from_seed(&Secret::new(vec![0xff; PIN_SEED_LEN])).expect("pin");
        assert_eq!(pin.len(), 26);
        assert!(pin_from_seed(&Secret::new(vec![0; 15])).is_err());
    }

    #[test]
    fn random_pins_use_the_alphabet_and_differ() {
        let a = random_pin(&SystemRng).expect("pin");
        let b = random_pin(&SystemRng).expect("pin");
        assert_eq!(a.len(), RANDOM_PIN_LEN);
        assert!(a.expose().iter().all(|c| PIN_ALPHABET.contains(c)));
        assert!(!a.ct_eq(&b));
    }

    /// A source that returns only bytes the sampler must reject, then good ones.
    struct Biased(std::cell::Cell<u32>);
    impl RandomSource for Biased {
        fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
            self.0.set(self.0.get() + 1);
            Ok(vec![if self.0.get() < 3 { 250 } else { 30 }; len])
        }
    }

    #[test]
    fn random_pin_rejects_bytes_that_would_bias_it() {
        let pin = random_pin(&Biased(std::cell::Cell::new(0))).expect("pin");
        assert_eq!(pin.expose(), vec![PIN_ALPHABET[30]; RANDOM_PIN_LEN].as_slice());
    }

    #[test]
    fn kek_check_is_stable_and_needs_32_bytes() {
        let kek = Secret::new(vec![7; 32]);
        let check = kek_check(&kek).expect("check");
        assert_eq!(check.len(), 16);
        assert_eq!(check, kek_check(&kek).expect("again"));
        assert_ne!(check, kek_check(&Secret::new(vec![8; 32])).expect("other"));
        assert!(matches!(kek_check(&Secret::new(vec![7; 16])), Err(BackupError::KekLength { len: 16 })));
    }

    fn sample() -> WrappedKey {
        let key = crate::hsm::soft::SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("gen");
        WrappedKey {
            key_label: "root".into(),
            key_id: vec![1, 2, 3],
            algorithm: KeyAlgorithm::EcdsaP256,
            public_key_spki: key.spki_der().to_vec(),
            blob: vec![9; 40],
            kek_check: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn the_backup_file_round_trips_and_is_parsed_strictly() {
        let path = Path::new("/backups/root.wrapped.json");
        let wrapped = sample();
        let bytes = wrapped.to_file_bytes();
        assert_eq!(WrappedKey::parse(&bytes, path).expect("parse"), wrapped);

        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let reject = |doc: &serde_json::Value, field: &str| {
            let err = WrappedKey::parse(&serde_json::to_vec(doc).expect("json"), path).expect_err("must fail");
            let text = err.to_string();
            assert!(text.contains("/backups/root.wrapped.json") && text.contains(field), "{text}");
        };
        doc["extra"] = "x".into();
        reject(&doc, "extra");
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        doc["blob"] = B64.encode([8u8; 40]).into();
        reject(&doc, "blob_sha256");
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        doc["wrapping_mechanism"] = "CKM_AES_KEY_WRAP".into();
        reject(&doc, "wrapping_mechanism");
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        doc["algorithm"] = "ecdsa-p384".into();
        reject(&doc, "public_key");
        let mut doc: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        doc["kek_check"] = "XYZ".into();
        reject(&doc, "kek_check");
    }

    #[test]
    fn a_soft_root_sealed_under_a_shared_key_unseals_from_three_of_five_shares() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SoftStore::open(dir.path()).expect("store");
        let sealing = Secret::new(SystemRng.random_bytes(32).expect("rng"));
        let shares = shares::split(&sealing, 3, 5, b"", 0, &SystemRng).expect("split");
        let key = store.generate("root", KeyAlgorithm::EcdsaP384, &SealingKey::Raw(sealing)).expect("generate");

        let recombined =
            shares::combine(&[shares[4].clone(), shares[0].clone(), shares[2].clone()], b"").expect("combine");
        let opened = store.load("root", &SealingKey::Raw(recombined)).expect("unseal");
        assert_eq!(opened.spki_der(), key.spki_der());
        let sig = opened.sign(b"tbs").expect("sign");
        verify_signature(key.spki_der(), SignatureAlgorithm::EcdsaSha384, b"tbs", &sig).expect("verify");

        let other = Secret::new(SystemRng.random_bytes(32).expect("rng"));
        let foreign = shares::split(&other, 3, 5, b"", 0, &SystemRng).expect("split");
        let wrong = shares::combine(&foreign[..3], b"").expect("combine");
        match store.load("root", &SealingKey::Raw(wrong)) {
            Err(HsmError::Soft(e)) if matches!(*e, SoftError::Unseal { .. }) => {}
            Err(other) => panic!("expected an unseal failure, got {other}"),
            Ok(_) => panic!("a foreign share set must not unseal"),
        }
    }
}
