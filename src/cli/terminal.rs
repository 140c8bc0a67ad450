//! The interactive operator: dialoguer prompts on the ceremony terminal.

use std::path::PathBuf;

use dialoguer::{Confirm, Input, Password};

use crate::ceremony::operator::CardKind;
use crate::ceremony::{CeremonyError, Operator, ReadBack};
use crate::config::Role;
use crate::secret::Secret;

pub struct TerminalOperator;

impl TerminalOperator {
    pub fn new() -> Self {
        TerminalOperator
    }
}

fn input_error(what: &str, e: dialoguer::Error) -> CeremonyError {
    CeremonyError::Input { what: what.into(), detail: e.to_string() }
}

impl Operator for TerminalOperator {
    fn say(&mut self, text: &str) {
        println!("{text}");
    }

    fn participants(&mut self, key: &str, role: &Role) -> Result<Vec<String>, CeremonyError> {
        let mut names = Vec::new();
        loop {
            let prompt = if names.len() < role.min {
                format!("{} #{} name", role.title, names.len() + 1)
            } else {
                format!("{} #{} name (empty when done)", role.title, names.len() + 1)
            };
            let name: String = Input::new()
                .with_prompt(prompt)
                .allow_empty(names.len() >= role.min)
                .interact_text()
                .map_err(|e| input_error(key, e))?;
            if name.trim().is_empty() {
                return Ok(names);
            }
            names.push(name.trim().to_string());
        }
    }

    fn confirm(&mut self, key: &str, question: &str) -> Result<bool, CeremonyError> {
        Confirm::new().with_prompt(question).default(false).interact().map_err(|e| input_error(key, e))
    }

    fn read_back(&mut self, key: &str, question: &str, _shown: &str) -> Result<ReadBack, CeremonyError> {
        let text: String = Input::new().with_prompt(question).interact_text().map_err(|e| input_error(key, e))?;
        Ok(ReadBack { text, echoed: false })
    }

    fn secret(&mut self, key: &str, question: &str) -> Result<Secret, CeremonyError> {
        Password::new().with_prompt(question).interact().map(Secret::from_string).map_err(|e| input_error(key, e))
    }

    fn hand_out_card(
        &mut self,
        key: &str,
        custodian: &str,
        number: u8,
        card: &Secret,
        kind: CardKind,
    ) -> Result<Option<PathBuf>, CeremonyError> {
        println!("\n{} card {number} is for {custodian}. Everyone else looks away from the screen now.", kind.title());
        Confirm::new()
            .with_prompt(format!("{custodian}: are you alone at the screen?"))
            .default(false)
            .interact()
            .map_err(|e| input_error(key, e))?;
        println!("{}", card.expose_str().unwrap_or_default());
        let path: String = Input::new()
            .with_prompt("Also write the card to your own medium? Path, or empty for paper only")
            .allow_empty(true)
            .interact_text()
            .map_err(|e| input_error(key, e))?;
        let written = if path.trim().is_empty() {
            None
        } else {
            let path = PathBuf::from(path.trim());
            crate::files::write_new(&path, card.expose(), crate::files::Mode::Private)
                .map_err(|e| CeremonyError::Input { what: "share card".into(), detail: e.to_string() })?;
            Some(path)
        };
        Confirm::new()
            .with_prompt(format!("{custodian}: words copied onto your card? The screen is cleared next"))
            .default(false)
            .interact()
            .map_err(|e| input_error(key, e))?;
        // Clear the screen and the scrollback, so the next custodian cannot
        // scroll up to this share.
        print!("\x1b[2J\x1b[3J\x1b[H");
        Ok(written)
    }

    fn take_card(&mut self, key: &str, custodian: &str, attempt: u32, kind: CardKind) -> Result<Secret, CeremonyError> {
        // Which card matters: a custodian of an activated root holds two or
        // three, and typing the wrong one costs an attempt.
        let which = match kind {
            CardKind::Backup => "your share".to_string(),
            other => format!("your {} card", other.title()),
        };
        let prompt = if attempt == 1 {
            format!("{custodian}: type the words of {which} (hidden)")
        } else {
            format!("{custodian}: try again, attempt {attempt} (hidden)")
        };
        Password::new().with_prompt(prompt).interact().map(Secret::from_string).map_err(|e| input_error(key, e))
    }

    fn custodian_name(&mut self, key: &str, question: &str) -> Result<String, CeremonyError> {
        let name: String =
            Input::new().with_prompt(question).allow_empty(true).interact_text().map_err(|e| input_error(key, e))?;
        Ok(name.trim().to_string())
    }

    fn is_interactive(&self) -> bool {
        true
    }
}
