//! The PKCS#11 backend: tokens chosen by label and serial, keys born inside
//! them, and signatures made by them.
//!
//! Boulder picks an HSM by numeric slot, which changes between the rehearsal
//! laptop and the real one; keyrite picks a token by its label and serial
//! number, which a ceremony script can name. Every failure says which PKCS#11
//! function failed and what the operator can do about it.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use serde::Serialize;

use super::{ecdsa_raw_to_der, HsmError, KeyAlgorithm, RandomSource, SignatureAlgorithm, Signer};
use crate::secret::Secret;

/// A loaded and initialised PKCS#11 module.
pub struct Module {
    ctx: Pkcs11,
    path: PathBuf,
}

/// Which token to use: by label, and by serial when more than one token could
/// carry the label (a rehearsal token and the real one, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSelector {
    pub label: String,
    pub serial: Option<String>,
}

/// What the audit log records about a token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenFacts {
    pub label: String,
    pub serial: String,
    pub manufacturer: String,
    pub model: String,
    pub firmware: String,
    pub hardware: String,
    pub module: String,
}

impl Module {
    /// Loads the module library and calls `C_Initialize`.
    pub fn load(path: &Path) -> Result<Self, HsmError> {
        if !path.exists() {
            return Err(Pkcs11Error::ModuleMissing { path: path.to_path_buf() }.into());
        }
        let ctx = Pkcs11::new(path)
            .map_err(|e| Pkcs11Error::ModuleLoad { path: path.to_path_buf(), detail: e.to_string() })?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| call("C_Initialize", e, format!("module {}", path.display())))?;
        Ok(Module { ctx, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token the module shows, as (label, serial): for error messages
    /// and for `keyrite hsm list`.
    pub fn tokens(&self) -> Result<Vec<(Slot, TokenInfo)>, HsmError> {
        let slots = self.ctx.get_slots_with_token().map_err(|e| call("C_GetSlotList", e, "listing tokens".into()))?;
        let mut out = Vec::new();
        for slot in slots {
            let info = self.ctx.get_token_info(slot).map_err(|e| call("C_GetTokenInfo", e, format!("slot {slot}")))?;
            out.push((slot, info));
        }
        Ok(out)
    }

    /// Finds exactly one initialised token matching `selector`.
    pub fn find_token(&self, selector: &TokenSelector) -> Result<(Slot, TokenInfo), HsmError> {
        let mut matches = Vec::new();
        let mut seen = Vec::new();
        for (slot, info) in self.tokens()? {
            if !info.token_initialized() {
                continue;
            }
            let label = info.label().trim().to_string();
            let serial = info.serial_number().trim().to_string();
            seen.push(format!("{label:?} (serial {serial})"));
            if label == selector.label && selector.serial.as_deref().is_none_or(|s| s == serial) {
                matches.push((slot, info));
            }
        }
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(Pkcs11Error::TokenNotFound {
                label: selector.label.clone(),
                serial: selector.serial.clone(),
                module: self.path.clone(),
                available: if seen.is_empty() { "none".into() } else { seen.join(", ") },
            }
            .into()),
            n => Err(Pkcs11Error::TokenAmbiguous { label: selector.label.clone(), count: n }.into()),
        }
    }

    /// Initialises the first uninitialised token slot with `label` and sets
    /// its user PIN. Only rehearsals and tests do this; a real HSM is
    /// initialised with its vendor's tools before the ceremony.
    pub fn init_token(&self, label: &str, so_pin: &Secret, user_pin: &Secret) -> Result<TokenSelector, HsmError> {
        let slots = self.ctx.get_slots_with_token().map_err(|e| call("C_GetSlotList", e, "listing tokens".into()))?;
        let mut free = None;
        for slot in slots {
            let info = self.ctx.get_token_info(slot).map_err(|e| call("C_GetTokenInfo", e, format!("slot {slot}")))?;
            if !info.token_initialized() {
                free = Some(slot);
                break;
            }
        }
        let slot = free.ok_or_else(|| Pkcs11Error::NoFreeSlot { module: self.path.clone() })?;
        self.ctx
            .init_token(slot, &auth_pin(so_pin)?, label)
            .map_err(|e| call("C_InitToken", e, format!("token {label:?}")))?;
        let session =
            self.ctx.open_rw_session(slot).map_err(|e| call("C_OpenSession", e, format!("token {label:?}")))?;
        session
            .login(UserType::So, Some(&auth_pin(so_pin)?))
            .map_err(|e| call("C_Login", e, format!("security officer of token {label:?}")))?;
        session.init_pin(&auth_pin(user_pin)?).map_err(|e| call("C_InitPIN", e, format!("token {label:?}")))?;
        let _ = session.logout();
        let info = self.ctx.get_token_info(slot).map_err(|e| call("C_GetTokenInfo", e, format!("slot {slot}")))?;
        Ok(TokenSelector { label: label.to_string(), serial: Some(info.serial_number().trim().to_string()) })
    }

    /// Opens a read-write session on the selected token and logs in as user.
    pub fn open(&self, selector: &TokenSelector, pin: &Secret) -> Result<Token, HsmError> {
        let (slot, info) = self.find_token(selector)?;
        let facts = TokenFacts {
            label: info.label().trim().to_string(),
            serial: info.serial_number().trim().to_string(),
            manufacturer: info.manufacturer_id().trim().to_string(),
            model: info.model().trim().to_string(),
            firmware: info.firmware_version().to_string(),
            hardware: info.hardware_version().to_string(),
            module: self.path.display().to_string(),
        };
        if info.user_pin_locked() {
            return Err(Pkcs11Error::PinLocked { token: facts.label }.into());
        }
        let mechanisms = self
            .ctx
            .get_mechanism_list(slot)
            .map_err(|e| call("C_GetMechanismList", e, format!("token {:?}", facts.label)))?;
        let session =
            self.ctx.open_rw_session(slot).map_err(|e| call("C_OpenSession", e, format!("token {:?}", facts.label)))?;
        session
            .login(UserType::User, Some(&auth_pin(pin)?))
            .map_err(|e| call("C_Login", e, format!("user of token {:?}", facts.label)))?;
        Ok(Token { session, facts, mechanisms })
    }
}

impl Module {
    /// Opens a read-write session on the selected token logged in as its
    /// security officer, for PIN management on a token nobody else in this
    /// process is logged in to: PKCS#11 keeps one login state per token and
    /// process, so this fails while a [`Token`] of the same token is open.
    pub fn open_so_session(&self, selector: &TokenSelector, so_pin: &Secret) -> Result<SoSession, HsmError> {
        let (slot, info) = self.find_token(selector)?;
        let label = info.label().trim().to_string();
        if info.so_pin_locked() {
            return Err(Pkcs11Error::Other(format!(
                "the security officer PIN of token {label:?} is locked; only the vendor's tool can recover it"
            ))
            .into());
        }
        let session =
            self.ctx.open_rw_session(slot).map_err(|e| call("C_OpenSession", e, format!("token {label:?}")))?;
        session
            .login(UserType::So, Some(&auth_pin(so_pin)?))
            .map_err(|e| call("C_Login", e, format!("security officer of token {label:?}")))?;
        Ok(SoSession { session, label, max_pin_len: info.max_pin_length() })
    }
}

/// A session logged in as security officer. It logs out when dropped (by
/// closing the session), so an SO login never outlives its use.
pub struct SoSession {
    session: Session,
    label: String,
    max_pin_len: usize,
}

impl SoSession {
    pub fn token_label(&self) -> &str {
        &self.label
    }

    /// The longest PIN the token accepts, as it reports it.
    pub fn max_pin_len(&self) -> usize {
        self.max_pin_len
    }

    /// Sets a new user PIN without knowing the old one (`C_InitPIN`).
    pub fn init_user_pin(&self, new_pin: &Secret) -> Result<(), HsmError> {
        self.session
            .init_pin(&auth_pin(new_pin)?)
            .map_err(|e| call("C_InitPIN", e, format!("user PIN of token {:?}", self.label)))
    }

    /// Changes the security officer's PIN (`C_SetPIN` in an SO session).
    pub fn set_so_pin(&self, old_pin: &Secret, new_pin: &Secret) -> Result<(), HsmError> {
        self.session
            .set_pin(&auth_pin(old_pin)?, &auth_pin(new_pin)?)
            .map_err(|e| call("C_SetPIN", e, format!("security officer PIN of token {:?}", self.label)))
    }

    /// The raw session, for the custody code's key-encryption keys.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drop for SoSession {
    fn drop(&mut self) {
        let _ = self.session.logout();
    }
}

pub(super) fn auth_pin(pin: &Secret) -> Result<AuthPin, HsmError> {
    let text = pin.expose_str().ok_or(Pkcs11Error::PinNotText)?;
    Ok(AuthPin::from(text.to_string()))
}

/// A logged-in session on one token. It owns the PKCS#11 session: keys found
/// on it borrow it, so one ceremony uses one session, as PKCS#11 intends.
pub struct Token {
    session: Session,
    facts: TokenFacts,
    mechanisms: Vec<MechanismType>,
}

/// How a new key may leave the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extractability {
    /// Never: `CKA_EXTRACTABLE` false. The default for every key.
    Never,
    /// Only wrapped by a trusted key (`CKA_WRAP_WITH_TRUSTED`), for n-of-m
    /// backups: the root key can then leave only under a key-encryption key
    /// that the security officer marked trusted.
    WrapWithTrustedOnly,
}

impl Token {
    pub fn facts(&self) -> &TokenFacts {
        &self.facts
    }

    pub(super) fn supports(&self, mechanism: MechanismType) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    /// Fails before anything is created if the token cannot generate or sign
    /// with `algorithm`.
    pub fn check_algorithm(&self, algorithm: KeyAlgorithm, signature: SignatureAlgorithm) -> Result<(), HsmError> {
        let (gen, sign) = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                (MechanismType::ECC_KEY_PAIR_GEN, MechanismType::ECDSA)
            }
            KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                (MechanismType::RSA_PKCS_KEY_PAIR_GEN, rsa_mechanism(signature)?.mechanism_type())
            }
        };
        for (mech, what) in [(gen, "key generation"), (sign, "signing")] {
            if !self.supports(mech) {
                return Err(Pkcs11Error::MechanismUnsupported {
                    token: self.facts.label.clone(),
                    mechanism: format!("{mech}"),
                    purpose: format!("{what} for {algorithm}"),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Refuses a label or ID that any object on the token already carries.
    pub fn check_label_free(&self, label: &str) -> Result<(), HsmError> {
        let found = self
            .session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| call("C_FindObjects", e, format!("label {label:?}")))?;
        if !found.is_empty() {
            return Err(Pkcs11Error::LabelTaken { label: label.into(), token: self.facts.label.clone() }.into());
        }
        Ok(())
    }

    /// Generates a key pair inside the token and checks, by reading the
    /// attributes back, that the token really made it the way we asked.
    pub fn generate(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
        signature: SignatureAlgorithm,
        extractability: Extractability,
    ) -> Result<TokenKey<'_>, HsmError> {
        if !signature.fits(algorithm) {
            return Err(HsmError::SignatureMismatch { sig: signature, key: algorithm });
        }
        self.check_algorithm(algorithm, signature)?;
        self.check_label_free(label)?;
        let id = self.random_bytes(16)?;
        let taken = self
            .session
            .find_objects(&[Attribute::Id(id.clone())])
            .map_err(|e| call("C_FindObjects", e, "checking the new key ID".into()))?;
        if !taken.is_empty() {
            return Err(
                Pkcs11Error::Other(format!("a random key ID already exists on token {:?}", self.facts.label)).into()
            );
        }

        let mut public = public_key_policy(label, &id);
        let private = private_key_policy(label, &id, extractability);
        let mechanism = match algorithm {
            KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
                public.push(Attribute::EcParams(curve_oid_der(algorithm)));
                Mechanism::EccKeyPairGen
            }
            KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
                let bits: u64 = if algorithm == KeyAlgorithm::Rsa3072 { 3072 } else { 4096 };
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                Mechanism::RsaPkcsKeyPairGen
            }
        };
        let (public_handle, private_handle) = self
            .session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| call("C_GenerateKeyPair", e, format!("{algorithm} key {label:?}")))?;

        if let Err(e) = self.check_protection(private_handle, label, extractability) {
            // A key the token did not protect as asked must not survive to be
            // used by mistake later.
            let _ = self.session.destroy_object(private_handle);
            let _ = self.session.destroy_object(public_handle);
            return Err(e);
        }
        let spki = self.public_key_spki(public_handle, algorithm)?;
        Ok(TokenKey { token: self, private: private_handle, label: label.into(), id, algorithm, signature, spki })
    }

    fn check_protection(&self, key: ObjectHandle, label: &str, extractability: Extractability) -> Result<(), HsmError> {
        let wanted: Vec<(AttributeType, bool)> = match extractability {
            Extractability::Never => vec![
                (AttributeType::Token, true),
                (AttributeType::Private, true),
                (AttributeType::Sensitive, true),
                (AttributeType::Extractable, false),
                (AttributeType::Local, true),
                (AttributeType::NeverExtractable, true),
                (AttributeType::AlwaysSensitive, true),
                (AttributeType::Sign, true),
                (AttributeType::Decrypt, false),
                (AttributeType::Unwrap, false),
                (AttributeType::Derive, false),
            ],
            Extractability::WrapWithTrustedOnly => vec![
                (AttributeType::Token, true),
                (AttributeType::Private, true),
                (AttributeType::Sensitive, true),
                (AttributeType::Extractable, true),
                (AttributeType::WrapWithTrusted, true),
                (AttributeType::Local, true),
                (AttributeType::AlwaysSensitive, true),
                (AttributeType::Sign, true),
                (AttributeType::Decrypt, false),
                (AttributeType::Unwrap, false),
                (AttributeType::Derive, false),
            ],
        };
        let types: Vec<AttributeType> = wanted.iter().map(|(t, _)| *t).collect();
        let attrs = self
            .session
            .get_attributes(key, &types)
            .map_err(|e| call("C_GetAttributeValue", e, format!("key {label:?}")))?;
        for (attribute, expected) in wanted {
            let got = attrs.iter().find_map(|a| bool_attr(a, attribute));
            if got != Some(expected) {
                return Err(Pkcs11Error::ProtectionWrong {
                    label: label.into(),
                    token: self.facts.label.clone(),
                    attribute: format!("{attribute}"),
                    expected,
                    got: got.map_or("unreadable".into(), |g| g.to_string()),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Finds an existing key pair by label (and ID when given).
    pub fn find_key(
        &self,
        label: &str,
        id: Option<&[u8]>,
        signature: Option<SignatureAlgorithm>,
    ) -> Result<TokenKey<'_>, HsmError> {
        let find = |class: ObjectClass| {
            let mut template = vec![Attribute::Class(class), Attribute::Label(label.as_bytes().to_vec())];
            if let Some(id) = id {
                template.push(Attribute::Id(id.to_vec()));
            }
            self.session.find_objects(&template).map_err(|e| call("C_FindObjects", e, format!("key {label:?}")))
        };
        let privates = find(ObjectClass::PRIVATE_KEY)?;
        let private = match privates.as_slice() {
            [one] => *one,
            [] => return Err(Pkcs11Error::KeyNotFound { label: label.into(), token: self.facts.label.clone() }.into()),
            _ => return Err(Pkcs11Error::KeyAmbiguous { label: label.into(), token: self.facts.label.clone() }.into()),
        };
        let publics = find(ObjectClass::PUBLIC_KEY)?;
        let public = match publics.as_slice() {
            [one] => *one,
            _ => {
                return Err(Pkcs11Error::KeyNotFound {
                    label: format!("{label} (public half)"),
                    token: self.facts.label.clone(),
                }
                .into())
            }
        };
        let attrs = self
            .session
            .get_attributes(
                public,
                &[AttributeType::KeyType, AttributeType::Id, AttributeType::ModulusBits, AttributeType::EcParams],
            )
            .map_err(|e| call("C_GetAttributeValue", e, format!("key {label:?}")))?;
        let mut key_type = None;
        let mut key_id = Vec::new();
        let mut bits = 0u64;
        let mut params = Vec::new();
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::Id(i) => key_id = i,
                Attribute::ModulusBits(b) => bits = b.into(),
                Attribute::EcParams(p) => params = p,
                _ => {}
            }
        }
        let algorithm = match key_type {
            Some(KeyType::EC) if params == curve_oid_der(KeyAlgorithm::EcdsaP256) => KeyAlgorithm::EcdsaP256,
            Some(KeyType::EC) if params == curve_oid_der(KeyAlgorithm::EcdsaP384) => KeyAlgorithm::EcdsaP384,
            Some(KeyType::RSA) if bits == 3072 => KeyAlgorithm::Rsa3072,
            Some(KeyType::RSA) if bits == 4096 => KeyAlgorithm::Rsa4096,
            other => {
                return Err(HsmError::UnsupportedAlgorithm(format!(
                    "key {label:?} on token {:?} has type {other:?} ({bits} bits)",
                    self.facts.label
                )))
            }
        };
        let signature = signature.unwrap_or(algorithm.default_signature());
        if !signature.fits(algorithm) {
            return Err(HsmError::SignatureMismatch { sig: signature, key: algorithm });
        }
        let spki = self.public_key_spki(public, algorithm)?;
        Ok(TokenKey { token: self, private, label: label.into(), id: key_id, algorithm, signature, spki })
    }

    fn public_key_spki(&self, public: ObjectHandle, algorithm: KeyAlgorithm) -> Result<Vec<u8>, HsmError> {
        let types = if algorithm.is_rsa() {
            vec![AttributeType::Modulus, AttributeType::PublicExponent]
        } else {
            vec![AttributeType::EcPoint]
        };
        let attrs = self
            .session
            .get_attributes(public, &types)
            .map_err(|e| call("C_GetAttributeValue", e, "reading the public key".into()))?;
        let mut modulus = None;
        let mut exponent = None;
        let mut point = None;
        for a in attrs {
            match a {
                Attribute::Modulus(m) => modulus = Some(m),
                Attribute::PublicExponent(e) => exponent = Some(e),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        let missing = || HsmError::BadPublicKey("the token did not return the public key".into());
        if algorithm.is_rsa() {
            let (n, e) = (modulus.ok_or_else(missing)?, exponent.ok_or_else(missing)?);
            if e != [0x01, 0x00, 0x01] {
                return Err(HsmError::BadPublicKey("the token made an RSA key whose exponent is not 65537".into()));
            }
            spki_rsa(&n, &e)
        } else {
            spki_ec(algorithm, &ec_point_bytes(&point.ok_or_else(missing)?, algorithm)?)
        }
    }

    /// Destroys a key pair (both halves) by label. Used by tests and by the
    /// backup ceremony to remove a key-encryption key after use.
    pub fn destroy_by_label(&self, label: &str) -> Result<usize, HsmError> {
        let found = self
            .session
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| call("C_FindObjects", e, format!("label {label:?}")))?;
        for handle in &found {
            self.session
                .destroy_object(*handle)
                .map_err(|e| call("C_DestroyObject", e, format!("object {label:?}")))?;
        }
        Ok(found.len())
    }

    /// The raw session, for the custody code's wrap and unwrap.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The public data objects (`CKO_DATA`) of `application`, labelled
    /// `label` (or any label), as (label, value), in the order the token
    /// lists them.
    pub fn data_objects(&self, application: &str, label: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, HsmError> {
        let context = || format!("records of {application:?} on token {:?}", self.facts.label);
        let mut template =
            vec![Attribute::Class(ObjectClass::DATA), Attribute::Application(application.as_bytes().to_vec())];
        template.extend(label.map(|l| Attribute::Label(l.as_bytes().to_vec())));
        let found = self.session.find_objects(&template).map_err(|e| call("C_FindObjects", e, context()))?;
        let mut out = Vec::with_capacity(found.len());
        for handle in found {
            let attrs = self
                .session
                .get_attributes(handle, &[AttributeType::Label, AttributeType::Value])
                .map_err(|e| call("C_GetAttributeValue", e, context()))?;
            let (mut l, mut v) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Label(x) => l = Some(String::from_utf8_lossy(&x).into_owned()),
                    Attribute::Value(x) => v = Some(x),
                    _ => {}
                }
            }
            if let (Some(l), Some(v)) = (l, v) {
                out.push((l, v));
            }
        }
        Ok(out)
    }

    /// Creates a public data object that nobody can change (`CKA_MODIFIABLE`
    /// false) and, where the token supports PKCS#11 2.40's
    /// `CKA_DESTROYABLE`, nobody can destroy: a record that only grows.
    /// Returns whether the token took `CKA_DESTROYABLE` false.
    pub fn create_record(&self, application: &str, label: &str, value: &[u8]) -> Result<bool, HsmError> {
        let context = || format!("record {label:?} on token {:?}", self.facts.label);
        let mut template = vec![
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Modifiable(false),
            Attribute::Application(application.as_bytes().to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Value(value.to_vec()),
        ];
        let mut permanent = template.clone();
        permanent.push(Attribute::Destroyable(false));
        match self.session.create_object(&permanent) {
            Ok(_) => return Ok(true),
            Err(CkError::Pkcs11(
                RvError::AttributeTypeInvalid | RvError::AttributeValueInvalid | RvError::TemplateInconsistent,
                _,
            )) => {}
            Err(e) => return Err(call("C_CreateObject", e, context())),
        }
        template.shrink_to_fit();
        self.session.create_object(&template).map_err(|e| call("C_CreateObject", e, context()))?;
        Ok(false)
    }
}

impl RandomSource for Token {
    fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        let len = u32::try_from(len).map_err(|_| Pkcs11Error::Other("random request too large".into()))?;
        self.session
            .generate_random_vec(len)
            .map_err(|e| call("C_GenerateRandom", e, format!("token {:?}", self.facts.label)))
    }
}

/// The value of a boolean attribute `t` if `a` is one.
pub(super) fn bool_attr(a: &Attribute, t: AttributeType) -> Option<bool> {
    match (a, t) {
        (Attribute::Token(v), AttributeType::Token)
        | (Attribute::Private(v), AttributeType::Private)
        | (Attribute::Sensitive(v), AttributeType::Sensitive)
        | (Attribute::Extractable(v), AttributeType::Extractable)
        | (Attribute::Local(v), AttributeType::Local)
        | (Attribute::NeverExtractable(v), AttributeType::NeverExtractable)
        | (Attribute::AlwaysSensitive(v), AttributeType::AlwaysSensitive)
        | (Attribute::Sign(v), AttributeType::Sign)
        | (Attribute::Decrypt(v), AttributeType::Decrypt)
        | (Attribute::Unwrap(v), AttributeType::Unwrap)
        | (Attribute::Derive(v), AttributeType::Derive)
        | (Attribute::WrapWithTrusted(v), AttributeType::WrapWithTrusted) => Some(*v),
        _ => None,
    }
}

/// A key pair on a token, usable as a [`Signer`].
pub struct TokenKey<'t> {
    token: &'t Token,
    private: ObjectHandle,
    label: String,
    id: Vec<u8>,
    algorithm: KeyAlgorithm,
    signature: SignatureAlgorithm,
    spki: Vec<u8>,
}

impl TokenKey<'_> {
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The key's `CKA_ID`.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    pub fn private_handle(&self) -> ObjectHandle {
        self.private
    }

    /// An RFC 7512 URI that names this key without any secret.
    pub fn uri(&self) -> String {
        super::uri::Pkcs11Uri::for_key(&self.token.facts.label, &self.token.facts.serial, &self.label, &self.id)
            .to_string()
    }
}

/// What every public key object keyrite puts on a token may do, generated
/// there or restored from a backup: verify only, public, on the token.
pub(super) fn public_key_policy(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// What every private key keyrite puts on a token may do, whether generated
/// there or unwrapped from a backup: sign, stay on the token, never leave it
/// in the clear, never decrypt, unwrap or derive; leave it wrapped only under
/// a trusted key, and only when the ceremony asked for a backup.
pub(super) fn private_key_policy(label: &str, id: &[u8], extractability: Extractability) -> Vec<Attribute> {
    let extractable = extractability == Extractability::WrapWithTrustedOnly;
    let mut policy = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    if extractable {
        policy.push(Attribute::WrapWithTrusted(true));
    }
    policy
}

impl Signer for TokenKey<'_> {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.signature
    }

    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        let what = || format!("key {:?} on token {:?}", self.label, self.token.facts.label);
        match self.signature {
            SignatureAlgorithm::EcdsaSha256 | SignatureAlgorithm::EcdsaSha384 => {
                // CKM_ECDSA signs a digest we make ourselves: every token has it,
                // while the hashing variants are missing from many.
                let hash = if self.signature == SignatureAlgorithm::EcdsaSha256 {
                    &aws_lc_rs::digest::SHA256
                } else {
                    &aws_lc_rs::digest::SHA384
                };
                let digest = aws_lc_rs::digest::digest(hash, message);
                let raw = self
                    .token
                    .session
                    .sign(&Mechanism::Ecdsa, self.private, digest.as_ref())
                    .map_err(|e| call("C_Sign", e, what()))?;
                ecdsa_raw_to_der(&raw)
            }
            rsa => {
                let mechanism = rsa_mechanism(rsa)?;
                self.token.session.sign(&mechanism, self.private, message).map_err(|e| call("C_Sign", e, what()))
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "PKCS#11 key {:?} on token {:?} (serial {})",
            self.label, self.token.facts.label, self.token.facts.serial
        )
    }
}

fn rsa_mechanism(signature: SignatureAlgorithm) -> Result<Mechanism<'static>, HsmError> {
    let pss = |hash_alg, mgf, s_len: u64| PkcsPssParams { hash_alg, mgf, s_len: s_len.into() };
    Ok(match signature {
        SignatureAlgorithm::RsaPkcs1Sha256 => Mechanism::Sha256RsaPkcs,
        SignatureAlgorithm::RsaPkcs1Sha384 => Mechanism::Sha384RsaPkcs,
        SignatureAlgorithm::RsaPssSha256 => {
            Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32))
        }
        SignatureAlgorithm::RsaPssSha384 => {
            Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48))
        }
        other => return Err(HsmError::SignatureMismatch { sig: other, key: KeyAlgorithm::Rsa3072 }),
    })
}

/// DER of the named-curve OID, as `CKA_EC_PARAMS` wants it.
pub(super) fn curve_oid_der(algorithm: KeyAlgorithm) -> Vec<u8> {
    use der::Encode;
    let oid = if algorithm == KeyAlgorithm::EcdsaP384 {
        const_oid::db::rfc5912::SECP_384_R_1
    } else {
        const_oid::db::rfc5912::SECP_256_R_1
    };
    oid.to_der().unwrap_or_default()
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point on most tokens, the
/// bare point on a few; accept both, and insist on an uncompressed point of
/// the curve's size.
fn ec_point_bytes(value: &[u8], algorithm: KeyAlgorithm) -> Result<Vec<u8>, HsmError> {
    use der::{asn1::OctetString, Decode};
    let size = if algorithm == KeyAlgorithm::EcdsaP384 { 97 } else { 65 };
    if value.len() == size && value[0] == 0x04 {
        return Ok(value.to_vec());
    }
    let inner = OctetString::from_der(value)
        .map_err(|e| HsmError::BadPublicKey(format!("CKA_EC_POINT is neither a point nor DER: {e}")))?;
    let point = inner.as_bytes();
    if point.len() != size || point[0] != 0x04 {
        return Err(HsmError::BadPublicKey(format!("CKA_EC_POINT is not an uncompressed {algorithm} point")));
    }
    Ok(point.to_vec())
}

fn spki_ec(algorithm: KeyAlgorithm, point: &[u8]) -> Result<Vec<u8>, HsmError> {
    use der::{asn1::BitString, Any, Encode};
    let curve = if algorithm == KeyAlgorithm::EcdsaP384 {
        const_oid::db::rfc5912::SECP_384_R_1
    } else {
        const_oid::db::rfc5912::SECP_256_R_1
    };
    let bad = |e: der::Error| HsmError::BadPublicKey(format!("cannot encode EC public key: {e}"));
    let spki = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::ID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&curve).map_err(bad)?),
        },
        subject_public_key: BitString::from_bytes(point).map_err(bad)?,
    };
    spki.to_der().map_err(bad)
}

fn spki_rsa(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, HsmError> {
    use der::{asn1::BitString, asn1::Null, asn1::UintRef, Any, Encode, Sequence};
    #[derive(Sequence)]
    struct RsaPublicKey<'a> {
        n: UintRef<'a>,
        e: UintRef<'a>,
    }
    let bad = |e: der::Error| HsmError::BadPublicKey(format!("cannot encode RSA public key: {e}"));
    let key = RsaPublicKey { n: UintRef::new(modulus).map_err(bad)?, e: UintRef::new(exponent).map_err(bad)? };
    let spki = spki::SubjectPublicKeyInfoOwned {
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
            parameters: Some(Any::encode_from(&Null).map_err(bad)?),
        },
        subject_public_key: BitString::from_bytes(&key.to_der().map_err(bad)?).map_err(bad)?,
    };
    spki.to_der().map_err(bad)
}

/// Turns a cryptoki error into one that names the function and what to do.
pub(super) fn call(function: &'static str, error: CkError, context: String) -> HsmError {
    let (rv, hint) = match &error {
        CkError::Pkcs11(rv, f) => (format!("{rv} ({f})"), hint(*rv, *f)),
        other => (other.to_string(), "check the module and token"),
    };
    Pkcs11Error::Call { function, context, rv, hint }.into()
}

fn hint(rv: RvError, function: Function) -> &'static str {
    match rv {
        RvError::PinIncorrect => "the PIN is wrong; check it before trying again, tokens lock after a few failures",
        RvError::PinLocked => "the PIN is locked; the security officer must unblock it with the vendor's tool",
        RvError::PinLenRange | RvError::PinInvalid => "the PIN has the wrong length or characters for this token",
        RvError::TokenNotPresent | RvError::DeviceRemoved | RvError::SlotIdInvalid => {
            "the token is not present; insert it (or check the module's configuration) and run again"
        }
        RvError::TokenNotRecognized => "the module does not recognise the token; check the module path",
        RvError::MechanismInvalid | RvError::MechanismParamInvalid => {
            "the token does not support this mechanism; choose another key algorithm"
        }
        RvError::UserNotLoggedIn => "the session is not logged in; check the PIN source",
        RvError::UserAlreadyLoggedIn => "another session is logged in to this token; close other tools using it",
        RvError::AttributeReadOnly | RvError::TemplateInconsistent | RvError::AttributeValueInvalid => {
            "the token refused the key template; see docs/tokens.md for what each token allows"
        }
        RvError::DeviceMemory => "the token is out of memory; free objects on it",
        RvError::TokenWriteProtected => "the token is write-protected",
        RvError::SessionCount => "too many sessions are open on the token; close other tools using it",
        RvError::KeyNotWrappable | RvError::KeyUnextractable => {
            "the key may only be wrapped by a trusted key-encryption key"
        }
        _ if matches!(function, Function::Initialize) => "the module failed to start; check its configuration file",
        _ => "see the token's documentation for this return value",
    }
}

/// Errors of the PKCS#11 backend. Messages name the PKCS#11 function, the
/// token and the key, never a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    #[error(
        "PKCS#11 module {path} does not exist; install the token's module or fix `module` in the environment file"
    )]
    ModuleMissing { path: PathBuf },
    #[error(
        "PKCS#11 module {path} could not be loaded ({detail}); check that it is a PKCS#11 library for this machine"
    )]
    ModuleLoad { path: PathBuf, detail: String },
    #[error("{function} failed for {context}: {rv}: {hint}")]
    Call { function: &'static str, context: String, rv: String, hint: &'static str },
    #[error("no token labelled {label:?}{} in module {module}; tokens present: {available}. Insert the token or fix `token_label`/`token_serial` in the environment file",
        serial.as_ref().map(|s| format!(" with serial {s:?}")).unwrap_or_default())]
    TokenNotFound { label: String, serial: Option<String>, module: PathBuf, available: String },
    #[error("{count} tokens are labelled {label:?}; add `token_serial` to the environment file to choose one")]
    TokenAmbiguous { label: String, count: usize },
    #[error("the user PIN of token {token:?} is locked; the security officer must unblock it before the ceremony")]
    PinLocked { token: String },
    #[error("the PIN is not valid UTF-8 text; PKCS#11 PINs must be text")]
    PinNotText,
    #[error(
        "token {token:?} does not support {mechanism} ({purpose}); choose another key algorithm in the ceremony file"
    )]
    MechanismUnsupported { token: String, mechanism: String, purpose: String },
    #[error("label {label:?} is already used by an object on token {token:?}; keyrite never reuses a label: choose a new one or clear the token")]
    LabelTaken { label: String, token: String },
    #[error("no key labelled {label:?} on token {token:?}; check the label and that the right token is inserted")]
    KeyNotFound { label: String, token: String },
    #[error("more than one key is labelled {label:?} on token {token:?}; name it by ID in a PKCS#11 URI")]
    KeyAmbiguous { label: String, token: String },
    #[error("token {token:?} made key {label:?} with {attribute} = {got}, not {expected}; the key was destroyed. This token cannot protect a CA key as required")]
    ProtectionWrong { label: String, token: String, attribute: String, expected: bool, got: String },
    #[error("module {module} has no free slot to initialise a token in")]
    NoFreeSlot { module: PathBuf },
    #[error("PKCS#11: {0}")]
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_accepted_bare_or_wrapped() {
        let mut point = vec![0x04];
        point.extend([7u8; 64]);
        assert_eq!(ec_point_bytes(&point, KeyAlgorithm::EcdsaP256).expect("bare"), point);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&point);
        assert_eq!(ec_point_bytes(&wrapped, KeyAlgorithm::EcdsaP256).expect("wrapped"), point);
        assert!(ec_point_bytes(&wrapped, KeyAlgorithm::EcdsaP384).is_err());
    }

    #[test]
    fn a_soft_key_spki_rebuilt_from_its_parts_is_identical() {
        use crate::hsm::soft::SoftKey;
        let key = SoftKey::generate("t", KeyAlgorithm::EcdsaP256).expect("gen");
        let parsed = spki::SubjectPublicKeyInfoRef::try_from(key.spki_der()).expect("spki");
        let rebuilt = spki_ec(KeyAlgorithm::EcdsaP256, parsed.subject_public_key.raw_bytes()).expect("rebuild");
        assert_eq!(rebuilt, key.spki_der());
    }
}
