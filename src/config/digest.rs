//! The plan digest: one SHA-256 over every file that decides what a ceremony
//! does.
//!
//! The ceremony file alone is not the plan: its template decides validity,
//! path length, key usage and subject, and a signing ceremony signs whatever
//! request bundle is on the stick. Whoever can edit one of them between the
//! printing of the script and the ceremony could change what is signed, so
//! the value the witness reads back covers them all.
//!
//! The digest is built so that a reviewer can recompute it with `sha256sum`
//! alone: it is the SHA-256 of exactly the text `sha256sum` prints for the
//! listed files, in the listed order, named as listed (`<hex>  <name>\n` per
//! file). Files next to the ceremony file are named relative to its
//! directory; files from the environment's input directory (a request
//! bundle, a restore's backup and log) relative to that directory. See
//! `docs/ceremony-files.md` for the recipe.

use crate::words::{self, Fingerprint};

/// Where a listed file's name is relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputBase {
    /// The directory of the ceremony file (the file itself, its templates).
    CeremonyDir,
    /// The environment's input directory (request bundles, restore inputs).
    InputDir,
}

/// One file the plan digest covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    pub base: InputBase,
    /// The name `sha256sum` is given, relative to `base`.
    pub name: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

impl PlanInput {
    pub fn of(base: InputBase, name: impl Into<String>, bytes: &[u8]) -> Self {
        PlanInput { base, name: name.into(), sha256: words::sha256_hex(bytes) }
    }

    /// The line `sha256sum` prints for this file.
    pub fn sha256sum_line(&self) -> String {
        format!("{}  {}\n", self.sha256, self.name)
    }
}

/// The plan digest and the inputs it covers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanDigest {
    inputs: Vec<PlanInput>,
    fingerprint: Fingerprint,
}

impl PlanDigest {
    pub fn new(inputs: Vec<PlanInput>) -> Self {
        let text: String = inputs.iter().map(PlanInput::sha256sum_line).collect();
        PlanDigest { fingerprint: Fingerprint::sha256(text.as_bytes()), inputs }
    }

    pub fn inputs(&self) -> &[PlanInput] {
        &self.inputs
    }

    /// The value the witness reads back.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// Exactly the text that is hashed: what `sha256sum` prints for the
    /// listed files.
    pub fn sha256sum_text(&self) -> String {
        self.inputs.iter().map(PlanInput::sha256sum_line).collect()
    }

    /// The inputs relative to `base`, in order.
    pub fn inputs_in(&self, base: InputBase) -> impl Iterator<Item = &PlanInput> {
        self.inputs.iter().filter(move |i| i.base == base)
    }
}

/// Checks that `name` appears in `sha256sum`'s output exactly as given:
/// GNU `sha256sum` escapes a name holding a backslash or a line break (and
/// marks its line with a leading backslash), which would break the recipe.
pub fn check_listable(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.contains('\\') || name.chars().any(char::is_control) {
        return Err(format!(
            "{name:?} holds a backslash or a control character; the plan digest lists files by name as sha256sum prints them, so rename it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_sha256_of_the_sha256sum_lines_in_order() {
        let a = PlanInput::of(InputBase::CeremonyDir, "plan.toml", b"kind = \"crl\"\n");
        let b = PlanInput::of(InputBase::InputDir, "request/csr.pem", b"csr");
        let d = PlanDigest::new(vec![a.clone(), b.clone()]);
        let text = format!("{}  plan.toml\n{}  request/csr.pem\n", a.sha256, b.sha256);
        assert_eq!(d.sha256sum_text(), text);
        assert_eq!(d.fingerprint().hex, words::sha256_hex(text.as_bytes()));
        // Order and names are covered, not only contents.
        assert_ne!(PlanDigest::new(vec![b.clone(), a.clone()]).fingerprint(), d.fingerprint());
        let renamed = PlanInput { name: "other.toml".into(), ..a };
        assert_ne!(PlanDigest::new(vec![renamed, b]).fingerprint(), d.fingerprint());
    }

    #[test]
    fn names_sha256sum_would_escape_are_refused() {
        assert!(check_listable("../templates/intermediate-ca.toml").is_ok());
        assert!(check_listable("a\\b.toml").is_err());
        assert!(check_listable("a\nb.toml").is_err());
        assert!(check_listable("").is_err());
    }
}
