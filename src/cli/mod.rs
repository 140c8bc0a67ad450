//! The `cli` room: argument parsing, prompts, printing and exit codes.
use std::process::ExitCode;

pub fn main() -> ExitCode {
    ExitCode::SUCCESS
}
