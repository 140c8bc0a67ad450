//! One face for both backends, as a ceremony sees them: open (log in or
//! unseal), check, generate, find, draw random bytes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;

use serde::Serialize;

use super::pkcs11::{Extractability, Module, Token, TokenFacts, TokenSelector};
use super::soft::{SealingKey, SoftKey, SoftStore, SystemRng};
use super::{HsmError, KeyAlgorithm, RandomSource, SignatureAlgorithm, Signer};
use crate::secret::Secret;

/// Where keys live for this run, opened and logged in.
pub enum KeyStore {
    Pkcs11 {
        module: Module,
        token: Token,
    },
    /// Unsealed keys are cached: unsealing under a passphrase costs a
    /// deliberate 600,000 PBKDF2 rounds, and a ceremony uses its audit key
    /// at every checkpoint.
    Soft {
        store: SoftStore,
        sealing: SealingKey,
        cache: RefCell<HashMap<String, Rc<SoftKey>>>,
    },
}

/// What the audit log records about the key store: never a PIN or path to
/// one.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "backend", rename_all = "kebab-case")]
pub enum StoreFacts {
    Pkcs11(TokenFacts),
    Soft { dir: String },
}

impl StoreFacts {
    /// The token label (or store directory) to show operators.
    pub fn label(&self) -> String {
        match self {
            StoreFacts::Pkcs11(t) => t.label.clone(),
            StoreFacts::Soft { dir } => dir.clone(),
        }
    }
}

impl KeyStore {
    /// Loads the module, finds the token by label and serial and logs in.
    pub fn open_pkcs11(module: &std::path::Path, token: &TokenSelector, pin: &Secret) -> Result<Self, HsmError> {
        let module = Module::load(module)?;
        let token = module.open(token, pin)?;
        Ok(KeyStore::Pkcs11 { module, token })
    }

    /// Opens a software key store; the passphrase is checked when a key is
    /// unsealed (a new store has nothing to check it against).
    pub fn open_soft(dir: &std::path::Path, sealing: SealingKey) -> Result<Self, HsmError> {
        Ok(KeyStore::Soft { store: SoftStore::open(dir)?, sealing, cache: RefCell::new(HashMap::new()) })
    }

    pub fn facts(&self) -> StoreFacts {
        match self {
            KeyStore::Pkcs11 { token, .. } => StoreFacts::Pkcs11(token.facts().clone()),
            KeyStore::Soft { store, .. } => StoreFacts::Soft { dir: store.dir().display().to_string() },
        }
    }

    /// Everything that can be checked about a new key before any is made:
    /// a free label, and a token that can generate and sign with it.
    pub fn check_new_key(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
        signature: SignatureAlgorithm,
    ) -> Result<(), HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => {
                token.check_algorithm(algorithm, signature)?;
                token.check_label_free(label)
            }
            KeyStore::Soft { store, .. } => store.check_new_label(label),
        }
    }

    /// Generates a key that never leaves the store.
    pub fn generate(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
        signature: SignatureAlgorithm,
    ) -> Result<GeneratedKey<'_>, HsmError> {
        self.generate_with(label, algorithm, signature, Extractability::Never)
    }

    /// Generates a key; `extractability` applies to tokens (a software key
    /// file is its own backup, sealed under the store's sealing key).
    pub fn generate_with(
        &self,
        label: &str,
        algorithm: KeyAlgorithm,
        signature: SignatureAlgorithm,
        extractability: Extractability,
    ) -> Result<GeneratedKey<'_>, HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => {
                let key = token.generate(label, algorithm, signature, extractability)?;
                let uri = key.uri();
                Ok(GeneratedKey { signer: Box::new(key), uri })
            }
            KeyStore::Soft { store, sealing, cache } => {
                let key = Rc::new(store.generate(label, algorithm, sealing)?.with_signature(signature)?);
                cache.borrow_mut().insert(label.to_string(), key.clone());
                Ok(GeneratedKey { signer: Box::new(key), uri: soft_uri(store, label) })
            }
        }
    }

    /// Checks a restored key can take `label`: nothing on the token or in the
    /// store carries it yet.
    pub fn check_restore_label(&self, label: &str) -> Result<(), HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => token.check_label_free(label),
            KeyStore::Soft { store, .. } => store.check_new_label(label),
        }
    }

    /// Software store: takes in a sealed key file (a restored backup) under
    /// `label`, unseals it with `sealing` (the key recombined from shares),
    /// and keeps it ready. The file is removed again if it does not open.
    pub fn adopt_sealed(&self, label: &str, bytes: &[u8], sealing: &SealingKey) -> Result<GeneratedKey<'_>, HsmError> {
        let KeyStore::Soft { store, cache, .. } = self else {
            return Err(HsmError::UnsupportedAlgorithm(
                "a sealed key file can only be restored into a software key store".into(),
            ));
        };
        store.check_new_label(label)?;
        let path = store.key_path(label);
        crate::files::write_new(&path, bytes, crate::files::Mode::Private).map_err(super::soft::SoftError::File)?;
        let key = match store.load(label, sealing) {
            Ok(k) => Rc::new(k),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        cache.borrow_mut().insert(label.to_string(), key.clone());
        Ok(GeneratedKey { signer: Box::new(key), uri: soft_uri(store, label) })
    }

    /// Finds an existing key.
    pub fn find(&self, label: &str, signature: Option<SignatureAlgorithm>) -> Result<GeneratedKey<'_>, HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => {
                let key = token.find_key(label, None, signature)?;
                let uri = key.uri();
                Ok(GeneratedKey { signer: Box::new(key), uri })
            }
            KeyStore::Soft { store, sealing, cache } => {
                let cached = cache.borrow().get(label).cloned();
                let key = match cached {
                    Some(k) if signature.is_none_or(|s| s == k.signature_algorithm()) => k,
                    _ => {
                        let mut key = store.load(label, sealing)?;
                        if let Some(sig) = signature {
                            key = key.with_signature(sig)?;
                        }
                        let key = Rc::new(key);
                        cache.borrow_mut().insert(label.to_string(), key.clone());
                        key
                    }
                };
                Ok(GeneratedKey { signer: Box::new(key), uri: soft_uri(store, label) })
            }
        }
    }

    /// The path of a software key's sealed file, for the log's outputs.
    pub fn soft_key_path(&self, label: &str) -> Option<PathBuf> {
        match self {
            KeyStore::Soft { store, .. } => Some(store.key_path(label)),
            KeyStore::Pkcs11 { .. } => None,
        }
    }

    /// The records labelled `label` the store keeps outside any log's
    /// directory (a token's data objects of application
    /// [`crate::audit::anchor::APPLICATION`], or the software store's
    /// records file).
    pub fn records(&self, label: &str) -> Result<Vec<Vec<u8>>, HsmError> {
        Ok(self.labelled_records(Some(label))?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every record the store keeps (or those labelled `label`), as
    /// (label, value).
    pub fn labelled_records(&self, label: Option<&str>) -> Result<Vec<(String, Vec<u8>)>, HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => token.data_objects(crate::audit::anchor::APPLICATION, label),
            KeyStore::Soft { store, .. } => store.records(label),
        }
    }

    /// Adds a record that nothing keyrite does will change or remove; says
    /// how firmly the store holds it.
    pub fn add_record(&self, label: &str, value: &[u8]) -> Result<RecordKeeping, HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => {
                Ok(match token.create_record(crate::audit::anchor::APPLICATION, label, value)? {
                    true => RecordKeeping::TokenPermanent,
                    false => RecordKeeping::TokenUnmodifiable,
                })
            }
            KeyStore::Soft { store, .. } => {
                store.add_record(label, value)?;
                Ok(RecordKeeping::StoreFile)
            }
        }
    }

    pub fn token(&self) -> Option<&Token> {
        match self {
            KeyStore::Pkcs11 { token, .. } => Some(token),
            KeyStore::Soft { .. } => None,
        }
    }

    pub fn module_path(&self) -> Option<&std::path::Path> {
        match self {
            KeyStore::Pkcs11 { module, .. } => Some(module.path()),
            KeyStore::Soft { .. } => None,
        }
    }
}

fn soft_uri(store: &SoftStore, label: &str) -> String {
    format!("keyrite-soft:{}", store.key_path(label).display())
}

impl RandomSource for KeyStore {
    /// From the token's RNG when there is a token, so serial numbers and key
    /// IDs come from the HSM, as the Baseline Requirements expect.
    fn random_bytes(&self, len: usize) -> Result<Vec<u8>, HsmError> {
        match self {
            KeyStore::Pkcs11 { token, .. } => token.random_bytes(len),
            KeyStore::Soft { .. } => SystemRng.random_bytes(len),
        }
    }
}

/// How a store holds a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKeeping {
    /// A token data object neither modifiable nor destroyable.
    TokenPermanent,
    /// A token data object that is not modifiable; the token does not
    /// support `CKA_DESTROYABLE`, so its security officer could delete it.
    TokenUnmodifiable,
    /// A line in the software store's records file.
    StoreFile,
}

impl RecordKeeping {
    pub fn describe(self) -> &'static str {
        match self {
            RecordKeeping::TokenPermanent => "token data object, not modifiable, not destroyable",
            RecordKeeping::TokenUnmodifiable => {
                "token data object, not modifiable (the token does not support CKA_DESTROYABLE)"
            }
            RecordKeeping::StoreFile => "line in the software key store's records.jsonl",
        }
    }
}

/// A key just generated or found, with the URI that names it.
pub struct GeneratedKey<'s> {
    pub signer: Box<dyn Signer + 's>,
    pub uri: String,
}
