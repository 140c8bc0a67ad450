//! The `acme` room: `keyrite acme-serve`, an RFC 8555 ACME server that
//! issues short-lived TLS leaves from keyrite's intermediate.
//!
//! In layers, each importing only the ones below it:
//!
//! 1. **the web front end** ([`wfe`]): HTTP handlers split by resource, and
//!    the request verification every POST takes ([`wfe`]'s `verify`: JWS,
//!    signature before nonce, account);
//! 2. **the registration authority** ([`ra`]): every policy decision
//!    (accounts and EAB, identifiers, profiles, validity, rate limits, the
//!    order state machine, revocation) and the one write path for issuance
//!    ([`ra::issuance`]);
//! 3. **the services it uses**: validation ([`va`], [`caa`]), the signer
//!    thread and CSR checks ([`ca`]), the leaves' CRL ([`crl`]), the
//!    server's own certificate ([`tls`]), rate limiting ([`ratelimit`]), the
//!    issuance log ([`issuance_log`]);
//! 4. **the store** ([`store`], SQLite today) and the pure pieces: ACME
//!    objects ([`model`]), JWS ([`jws`]), nonces ([`nonce`]), problems
//!    ([`problem`]), identifiers ([`identifier`]), renewal information
//!    ([`ari`]), External Account Binding ([`eab`]), the one clock
//!    ([`clock`]).
//!
//! [`server`] wires them together ([`start`] returns once the server
//! listens, so tests can use port 0); [`launch`] is `keyrite acme-serve`:
//! `issuer.toml` and the environment file turned into an [`Issuer`]. The
//! configuration is `config::acme`. keyrite's own ACME client and the load
//! generator live outside the server, in the `client` room.

pub mod ari;
pub mod ca;
pub mod caa;
pub mod clock;
pub mod crl;
pub mod eab;
pub mod identifier;
pub mod issuance_log;
pub mod jws;
pub mod launch;
pub mod model;
pub mod nonce;
pub mod problem;
pub mod ra;
pub mod ratelimit;
pub mod server;
pub mod store;
pub mod tls;
pub mod va;
pub mod wfe;

#[cfg(test)]
mod error_messages;

pub use ca::{Issuer, IssuerKeys, SignerFactory};
pub use server::{serve, start, start_with_clock, AcmeError, RunningServer};
