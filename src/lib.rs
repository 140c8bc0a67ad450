//! keyrite: run your own certificate authority the way the best public CAs do.
//!
//! The crate is split into rooms named after the domain (see `docs/design.md`):
//! `config` turns ceremony and environment files into a validated plan,
//! `ceremony` walks the operators through it, `hsm` holds the keys, `profile`
//! builds, lints and verifies certificates, `shares` splits secrets among
//! custodians, `audit` keeps the tamper-evident record, and `cli` is the thin
//! edge that parses arguments and prompts.
#![forbid(unsafe_code)]

pub mod acme;
pub mod audit;
pub mod ca;
pub mod ceremony;
pub mod cli;
pub mod client;
pub mod config;
pub mod faults;
pub mod files;
pub mod hsm;
pub mod intermediate;
pub mod profile;
pub mod secret;
pub mod shares;
pub mod transfer;
pub mod words;
