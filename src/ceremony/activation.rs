//! Activation: dual control of the root token's login.
//!
//! With `[activation]` in a root ceremony, the token's user PIN (and, with
//! `so_pin = true`, the security officer's PIN, as a set of its own) becomes
//! random and is never shown. A root ceremony with `[backup]` splits the SO
//! PIN this way by default, `[activation]` or not: the backed-up key leaves
//! the token under any key the SO marks trusted, so the SO PIN must not be
//! one person's (the plan may keep it whole only by saying why, in
//! `backup.keep_so_pin`). Each PIN: a 16-byte seed from the token's RNG is split
//! T-of-N with SLIP-0039, each custodian receives an *activation card*
//! (distinct from their backup card: its own file name, and it says what it
//! opens), the log records one commitment per card and a `shares-issued`
//! entry whose set's purpose names the PIN, every custodian re-enters their
//! card in a drill, and only then does the PIN change (`C_SetPIN`); the step
//! ends by logging in again with the PIN rebuilt from a quorum of the drilled
//! cards. The PIN is the seed in base32 ([`backup::pin_from_seed`]).
//!
//! The PIN changes after the drill, not before, so that a failed drill
//! leaves the token as it was, with its old PIN, instead of locked behind
//! cards nobody can use.
//!
//! Later ceremonies log in with `pin = { shares = "<root ceremony log>" }`:
//! [`pin_from_cards`] verifies that log, reads the set, takes cards until T
//! are valid (each checked alone against its commitment, a wrong one named),
//! and derives the PIN. Nothing of a seed or PIN reaches the log, the screen
//! or a file other than the custodians' own cards.

use std::path::{Path, PathBuf};

use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use super::custody::{self, drill_cards, hand_out_set, slug, HandOut};
use super::engine::{display_name, Session};
use super::operator::CardKind;
use super::{CeremonyError, Operator};
use crate::audit::{self, Artifact, Event, VerifyOptions};
use crate::config::ceremony::ActivationSpec;
use crate::config::{Step, StepKind};
use crate::files;
use crate::hsm::backup;
use crate::hsm::keystore::KeyStore;
use crate::hsm::pkcs11::{Pkcs11Error, TokenSelector};
use crate::hsm::HsmError;
use crate::secret::Secret;
use crate::shares::{self, Share};

/// The purpose of the user PIN's set in its `shares-issued` entry.
pub const USER_PURPOSE: &str = "token user PIN";
/// The purpose of the security officer PIN's set.
pub const SO_PURPOSE: &str = "token security officer PIN";

/// What a set of cards opens: one of the token's two PINs, or a software
/// key store sealed under the backup KEK (a software root under custody).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    User,
    So,
    StoreSealingKey,
}

impl Which {
    pub fn purpose(self) -> &'static str {
        match self {
            Which::User => USER_PURPOSE,
            Which::So => SO_PURPOSE,
            Which::StoreSealingKey => custody::BACKUP_PURPOSE,
        }
    }

    pub fn card(self) -> CardKind {
        match self {
            Which::User => CardKind::UserActivation,
            Which::So => CardKind::SoActivation,
            Which::StoreSealingKey => CardKind::Backup,
        }
    }

    /// For prompt keys: `<step>.user.<n>`, `<step>.so.<n>`.
    fn key(self) -> &'static str {
        match self {
            Which::User => "user",
            Which::So => "so",
            Which::StoreSealingKey => "store",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Which::User => "user PIN",
            Which::So => "security officer PIN",
            Which::StoreSealingKey => "software key store",
        }
    }

    /// What the cards open, in a sentence.
    fn opens(self) -> &'static str {
        match self {
            Which::User => "the token's user PIN",
            Which::So => "the token's security officer PIN",
            Which::StoreSealingKey => "the software key store's sealing key (the backup KEK)",
        }
    }

    /// Where a log with this set comes from, for the error that finds none.
    fn made_by(self) -> &'static str {
        match self {
            Which::User => "the root ceremony that had [activation]",
            Which::So => "the root ceremony that had [activation] with so_pin = true",
            Which::StoreSealingKey => "the root ceremony that made the software store's backup ([backup])",
        }
    }
}

/// What the activation steps produced: the card files, for the summary.
#[derive(Default)]
pub struct State {
    pub cards: Vec<PathBuf>,
}

/// A token activated from custodians' cards in the preflight: who came and
/// which cards counted, logged once the log is open. Names and card
/// numbers only, never words.
#[derive(Debug, Clone)]
pub struct Activated {
    pub which: Which,
    pub log: Artifact,
    pub source_ceremony: String,
    pub set_identifier: u16,
    pub threshold: u8,
    /// (custodian who entered it, card number, custodian it was issued to).
    pub cards: Vec<(String, u8, String)>,
    /// (custodian, why), for cards that did not count.
    pub rejected: Vec<(String, String)>,
}

impl Activated {
    /// The audit entry, appended right after `ceremony-started`.
    pub fn event(&self) -> Event {
        let name = if self.which == Which::StoreSealingKey { "store-unlocked" } else { "token-activated" };
        Event::new("preflight", name)
            .input(self.log.clone())
            .actor(self.cards.iter().map(|(c, _, _)| c.as_str()).collect::<Vec<_>>().join(", "))
            .detail("opens", self.which.purpose())
            .detail("issued_by_ceremony", self.source_ceremony.as_str())
            .detail("set_identifier", u64::from(self.set_identifier))
            .detail("threshold", u64::from(self.threshold))
            .detail(
                "custodians",
                self.cards
                    .iter()
                    .map(|(who, n, holder)| serde_json::json!({ "custodian": who, "number": n, "issued_to": holder }))
                    .collect::<Vec<_>>(),
            )
            .detail(
                "rejected",
                self.rejected
                    .iter()
                    .map(|(who, why)| serde_json::json!({ "custodian": who, "reason": why }))
                    .collect::<Vec<_>>(),
            )
    }
}

fn step_error(step: &Step, message: impl Into<String>) -> CeremonyError {
    CeremonyError::Step { step: step.number, message: message.into() }
}

fn auth(pin: &Secret) -> Result<AuthPin, HsmError> {
    let text = pin.expose_str().ok_or(Pkcs11Error::PinNotText)?;
    Ok(AuthPin::from(text.to_string()))
}

/// The `activate-token` step.
pub fn run_step(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    if step.kind != StepKind::ActivateToken {
        return Err(step_error(step, format!("{} is not an activation step", step.kind.name())));
    }
    let spec = s.plan.activation.clone().ok_or_else(|| step_error(step, "the plan has no [activation] table"))?;
    if !matches!(s.store, KeyStore::Pkcs11 { .. }) {
        if spec.user_pin {
            return Err(step_error(step, "activation splits a token's PIN; the software key store has none (use a PKCS#11 token, or remove [activation])"));
        }
        // A backed-up root's SO PIN split, on a store without one: the
        // software root is sealed under the backup KEK itself, which only a
        // quorum of the custodians' cards rebuilds.
        s.log.append(s.event(step, "so-pin-not-split").detail(
            "reason",
            "the software key store has no security officer PIN; the root is sealed under the backup key-encryption key, which only a quorum of the custodians rebuilds",
        ))?;
        operator.say("The software key store has no security officer PIN to split: the custodians' backup cards already guard the root.");
        return Ok(());
    }
    if spec.user_pin {
        activate(step, s, operator, &spec, Which::User)?;
    }
    if spec.so_pin {
        activate(step, s, operator, &spec, Which::So)?;
    }
    Ok(())
}

/// Makes one PIN random, splits it, drills the cards, changes the PIN and
/// proves the change with a PIN rebuilt from the cards.
fn activate(
    step: &Step,
    s: &mut Session<'_>,
    operator: &mut dyn Operator,
    spec: &ActivationSpec,
    which: Which,
) -> Result<(), CeremonyError> {
    let custodians = s.names_of(&spec.custodian_role);
    if custodians.len() != usize::from(spec.shares) {
        return Err(step_error(
            step,
            format!(
                "{} activation cards need {} custodians of role {:?}; {} were recorded",
                spec.shares,
                spec.shares,
                spec.custodian_role,
                custodians.len()
            ),
        ));
    }
    let seed = match &s.store {
        KeyStore::Pkcs11 { token, .. } => backup::random_pin_seed(token)?,
        KeyStore::Soft { .. } => return Err(step_error(step, "the software key store has no PIN to activate")),
    };
    let pin = backup::pin_from_seed(&seed).map_err(HsmError::from)?;
    let cards = shares::split(&seed, spec.threshold, spec.shares, b"", 0, &s.store)
        .map_err(|e| step_error(step, e.to_string()))?;

    let key_prefix = format!("{}.{}", step.id, which.key());
    let set = hand_out_set(
        step,
        s,
        operator,
        HandOut {
            cards: &cards,
            custodians: &custodians,
            kind: which.card(),
            purpose: which.purpose(),
            key_prefix: &key_prefix,
            event: "activation-card-handed-out",
        },
        &|id: &str, custodian: &str, share: &Share| activation_card(id, custodian, share, spec.shares, which.card()),
    )?;
    s.log.append(
        s.event(step, "shares-issued")
            .detail("set", serde_json::to_value(&set).unwrap_or_default())
            .detail("custodian_role", spec.custodian_role.as_str())
            .detail(
                "format",
                "SLIP-0039 of a 16-byte seed, one group, extendable, iteration exponent 0, empty passphrase; the token's PIN is the seed in RFC 4648 base32 without padding; commitments per shares::commitment",
            ),
    )?;
    drop(cards);

    let (entered, quorums) = drill_cards(step, s, operator, &set, &seed, which.card(), "the PIN seed")?;
    s.log.append(
        s.event(step, "activation-drill-passed")
            .detail("opens", which.purpose())
            .detail("cards_verified", entered.len() as u64)
            .detail("quorums_recombined", quorums as u64)
            .detail("threshold", u64::from(set.threshold)),
    )?;
    // The proof logs in with what the custodians' cards rebuild, not with
    // the PIN kept in memory: that is what a later ceremony will do.
    let quorum: Vec<Share> = entered.iter().take(usize::from(set.threshold)).cloned().collect();
    let proven_with: Vec<u64> = quorum.iter().map(|c| u64::from(c.member_index() + 1)).collect();
    let rebuilt = shares::combine(&quorum, b"")
        .map_err(|e| step_error(step, format!("the drilled cards do not combine: {e}")))?;
    let rebuilt_pin = backup::pin_from_seed(&rebuilt).map_err(HsmError::from)?;
    drop((seed, rebuilt, entered, quorum));

    match which {
        Which::User => change_user_pin(step, s, &pin, &rebuilt_pin)?,
        Which::So => change_so_pin(step, s, &pin, &rebuilt_pin)?,
        // Never asked for: [activation] only splits a token's PINs.
        Which::StoreSealingKey => {
            return Err(step_error(step, "a software key store has no PIN to put under activation cards"))
        }
    }
    s.log.append(
        s.event(step, "token-pin-changed")
            .detail("opens", which.purpose())
            .detail("set_identifier", u64::from(set.set_identifier))
            .detail("proven_by_login_with_cards", proven_with)
            .detail(
                "note",
                format!(
                    "the {} was changed to one nobody has seen; logging in needs {} of the {} activation cards",
                    which.what(),
                    set.threshold,
                    set.count
                ),
            ),
    )?;
    operator.say(&format!(
        "Token {} changed and proven: {} activation cards checked, {quorums} quorums of {} rebuilt it, and a login with the rebuilt PIN succeeded. Nobody has seen it; logging in now needs {} custodians.",
        which.what(),
        set.count,
        set.threshold,
        set.threshold
    ));
    Ok(())
}

/// `C_SetPIN` in the ceremony's user session, then log out and back in
/// with the PIN the cards rebuild. The session ends logged in, with the new
/// PIN kept for any step after this one.
fn change_user_pin(step: &Step, s: &mut Session<'_>, pin: &Secret, rebuilt: &Secret) -> Result<(), CeremonyError> {
    let old = s.user_pin.clone().ok_or_else(|| step_error(step, "no user PIN in memory"))?;
    let KeyStore::Pkcs11 { token, .. } = &s.store else {
        return Err(step_error(step, "the software key store has no PIN to activate"));
    };
    backup::set_user_pin(token, &old, pin)?;
    s.user_pin = Some(pin.clone());
    let label = token.facts().label.clone();
    let session = token.session();
    let rebuilt_auth = auth(rebuilt)?;
    let pin_auth = auth(pin)?;
    session.logout().map_err(|e| step_error(step, format!("C_Logout of the user of token {label:?} failed: {e}")))?;
    if let Err(e) = session.login(UserType::User, Some(&rebuilt_auth)) {
        // Back in with the PIN just set, so the failure is logged and the
        // ceremony closes cleanly; the cards are then not accepted.
        let _ = session.login(UserType::User, Some(&pin_auth));
        return Err(step_error(
            step,
            format!("the user PIN rebuilt from the activation cards does not log in to token {label:?} ({e}). The cards are NOT accepted; the token's user PIN was changed: reset it as security officer (C_InitPIN) and run the ceremony again"),
        ));
    }
    Ok(())
}

/// The SO PIN: PKCS#11 lets one process be logged in to a token as user or
/// as SO, not both, so the user logs out, an SO session changes the PIN and
/// closes, another SO session proves the rebuilt PIN, and the user logs back
/// in, whatever happened in between.
fn change_so_pin(step: &Step, s: &mut Session<'_>, pin: &Secret, rebuilt: &Secret) -> Result<(), CeremonyError> {
    let old = s.so_pin.clone().ok_or_else(|| {
        step_error(step, "no security officer PIN in memory: add so_pin to [pkcs11] in the environment file")
    })?;
    let user_pin = s.user_pin.clone().ok_or_else(|| step_error(step, "no user PIN in memory"))?;
    let KeyStore::Pkcs11 { module, token } = &s.store else {
        return Err(step_error(step, "the software key store has no PIN to activate"));
    };
    let facts = token.facts();
    let selector = TokenSelector { label: facts.label.clone(), serial: Some(facts.serial.clone()) };
    let label = facts.label.clone();
    let session = token.session();
    let user_auth = auth(&user_pin)?;
    session.logout().map_err(|e| step_error(step, format!("C_Logout of the user of token {label:?} failed: {e}")))?;
    let changed = backup::set_so_pin(module, &selector, &old, pin);
    let proven = match &changed {
        Ok(()) => module.open_so_session(&selector, rebuilt).map(drop),
        Err(_) => Ok(()),
    };
    let relogin = session.login(UserType::User, Some(&user_auth)).map_err(|e| {
        step_error(step, format!("logging the user of token {label:?} back in after the SO PIN change failed: {e}"))
    });
    changed?;
    if let Err(e) = proven {
        return Err(step_error(
            step,
            format!("the security officer PIN rebuilt from the activation cards does not log in to token {label:?} ({e}). The cards are NOT accepted; the SO PIN was changed, and only the token vendor's tools can reset it"),
        ));
    }
    relogin?;
    s.so_pin = Some(pin.clone());
    Ok(())
}

/// A share card that says on its face it is an activation card, and which
/// PIN it opens, so a custodian holding a backup card too tells them apart.
fn activation_card(ceremony_id: &str, custodian: &str, share: &Share, count: u8, kind: CardKind) -> Secret {
    let base = shares::render_card(ceremony_id, custodian, share, count);
    let text = base.expose_str().unwrap_or_default();
    // Sized up front: no reallocation leaves copies of the words behind.
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 256));
    for (i, line) in text.split_inclusive('\n').enumerate() {
        out.push_str(line);
        if i == 1 {
            out.push_str("Card:            ");
            out.push_str(kind.title());
            out.push_str(" of the root's token; not a backup share\n");
        }
    }
    Secret::from_string(std::mem::take(&mut *out))
}

/// Rebuilds a token PIN from custodians' activation cards, for the
/// preflight of a later ceremony. `log` is the root ceremony's audit log.
pub fn pin_from_cards(
    log: &Path,
    which: Which,
    operator: &mut dyn Operator,
) -> Result<(Secret, Activated), CeremonyError> {
    let (seed, activated) = secret_from_cards(log, which, operator)?;
    let pin = backup::pin_from_seed(&seed).map_err(HsmError::from)?;
    Ok((pin, activated))
}

/// Rebuilds the secret a set of cards holds (a PIN's seed, or the backup
/// KEK that seals a software root): verifies the root ceremony's `log`,
/// finds the set by purpose, and takes cards until T are valid, each checked
/// alone against its commitment and a wrong one named.
pub fn secret_from_cards(
    log: &Path,
    which: Which,
    operator: &mut dyn Operator,
) -> Result<(Secret, Activated), CeremonyError> {
    let what = || format!("{} from custodians' cards (log {})", which.opens(), log.display());
    // The cards are read before the store is open, so only the log's own
    // consistency can be checked here; the preflight pins it with the audit
    // key and the records of the store the cards open, before anything is
    // written (`continuity::check_with_store`).
    audit::verify(log, &VerifyOptions { expect_closed: true, ..VerifyOptions::unpinned() })?;
    let bytes = std::fs::read(log).map_err(|e| files::FileError::io(log, "reading the root ceremony's log", e))?;
    let (source_ceremony, set, details) = custody::share_set_by_purpose(log, &bytes, which.purpose())?.ok_or_else(|| {
        CeremonyError::Input {
            what: what(),
            detail: format!(
                "this log records no set of cards for {} (no shares-issued entry with purpose {:?}); name the log of {}",
                which.opens(),
                which.purpose(),
                which.made_by()
            ),
        }
    })?;
    let role = details["custodian_role"].as_str().unwrap_or("custodian").to_string();
    let threshold = usize::from(set.threshold);
    operator.say(&format!(
        "Opening {}: {} of the {} custodians of role {role:?} enter their {} cards (set {:05}, ceremony {source_ceremony:?}).",
        which.opens(),
        set.threshold,
        set.count,
        which.card().title(),
        set.set_identifier
    ));

    let mut entered: Vec<Share> = Vec::new();
    let mut cards = Vec::new();
    let mut rejected = Vec::new();
    let mut take = |custodian: &str,
                    operator: &mut dyn Operator,
                    entered: &mut Vec<Share>|
     -> Result<Option<String>, CeremonyError> {
        let words = operator.take_card(
            &format!("activation.{}.{}", which.key(), slug(custodian)),
            custodian,
            1,
            which.card(),
        )?;
        let problem = match Share::parse(words.expose_str().unwrap_or_default()) {
            Err(e) => format!("the {} card {custodian} entered is not valid: {e}", which.card().title()),
            Ok(share) => match set.check(&source_ceremony, custodian, &share) {
                Err(e) => e,
                Ok(_) if entered.iter().any(|o| o.member_index() == share.member_index()) => format!(
                    "{custodian} entered card {}, which was already entered: a duplicate",
                    share.member_index() + 1
                ),
                Ok(member) => {
                    cards.push((custodian.to_string(), member.number, member.custodian.clone()));
                    entered.push(share);
                    return Ok(None);
                }
            },
        };
        operator.say(&format!("REJECTED: {problem}"));
        Ok(Some(problem))
    };

    match operator.scripted_participants(&role) {
        Some(names) => {
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                if entered.len() == threshold {
                    break;
                }
                if let Some(problem) = take(name, operator, &mut entered)? {
                    rejected.push((name.to_string(), problem));
                }
            }
        }
        None => {
            // A person answers: custodians come one at a time; an empty name
            // means nobody else is here. Bounded, so a wrong card cannot keep
            // the prompt open for ever.
            let mut asked = 0;
            while entered.len() < threshold && asked < 2 * usize::from(set.count) {
                asked += 1;
                let name = operator.custodian_name(
                    &format!("activation.{}.custodian", which.key()),
                    &format!(
                        "Activation custodian name ({} of {} valid cards so far; empty if nobody else is here)",
                        entered.len(),
                        set.threshold
                    ),
                )?;
                if name.is_empty() {
                    break;
                }
                if let Some(problem) = take(&name, operator, &mut entered)? {
                    rejected.push((name, problem));
                }
            }
        }
    }

    if entered.len() < threshold {
        let why = if rejected.is_empty() {
            String::new()
        } else {
            format!(" Rejected: {}.", rejected.iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join("; "))
        };
        return Err(CeremonyError::Input {
            what: what(),
            detail: format!(
                "{} valid card(s), and {} needs {} of the {} (set {:05}).{why} Bring {} custodians of role {role:?} with their {} cards",
                entered.len(),
                which.opens(),
                set.threshold,
                set.count,
                set.set_identifier,
                set.threshold,
                which.card().title()
            ),
        });
    }
    let seed = shares::combine(&entered, b"")
        .map_err(|e| CeremonyError::Input { what: what(), detail: format!("the checked cards do not combine: {e}") })?;
    let activated = Activated {
        which,
        log: Artifact::of(display_name(log), &bytes),
        source_ceremony,
        set_identifier: set.set_identifier,
        threshold: set.threshold,
        cards,
        rejected,
    };
    Ok((seed, activated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activation_card_says_what_it_opens_and_keeps_its_words_readable() {
        let seed = Secret::new(vec![9u8; backup::PIN_SEED_LEN]);
        let cards = shares::split(&seed, 2, 3, b"", 0, &crate::hsm::soft::SystemRng).expect("split");
        let card = activation_card("root-x", "Ada", &cards[0], 3, CardKind::UserActivation);
        let text = card.expose_str().expect("utf8");
        assert!(text.contains("Card:            activation (user PIN)"), "{text}");
        let words = shares::words_from_card(&card);
        let parsed = Share::parse(words.expose_str().expect("utf8")).expect("parse");
        assert_eq!(shares::commitment("root-x", &parsed), shares::commitment("root-x", &cards[0]));
    }
}
