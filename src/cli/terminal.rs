//! The interactive operator: dialoguer prompts on the ceremony terminal.

use dialoguer::{Confirm, Input, Password};

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

    fn is_interactive(&self) -> bool {
        true
    }
}
