//! Pure logic of res_push: everything that can be decided without Asterisk, so unit tests run
//! with plain `cargo test`. The module crate (`res_push`) feeds it data read through Asterisk's
//! APIs and acts on its answers.

pub mod backoff;
pub mod binding;
pub mod config;
pub mod identity;
pub mod late;
pub mod message;
pub mod mwi;
pub mod pn;
pub mod reasons;
pub mod registrar;
pub mod shared;
pub mod sip;
pub mod status;
pub mod wake;
