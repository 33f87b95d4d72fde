//! res_push.so: VoIP push notifications for Asterisk.
//!
//! Layers, from the C boundary inwards:
//! - [`ffi`]: bindgen's view of the real Asterisk headers and of the C shim
//!   (`asterisk-headers/shim.c`, which declares the module with `AST_MODULE_INFO`);
//! - `entry`: the `extern "C"` functions Asterisk calls, each behind a panic guard;
//! - [`ast`]: safe wrappers, one per Asterisk subsystem (log, config, CLI, threads);
//! - `module`: the module's lifecycle (load, reload, unload) and its running state;
//! - `commands`: the CLI commands;
//! - `link`: the queue and thread that talk to res-push-sidecar;
//! - `registrar`: the REGISTER hook (RFC 8599 parameters, 400/555, Feature-Caps);
//! - `bindings`: push bindings (store, lookups in a shared store, AMI events, refresh pushes);
//! - `persist`: the sorcery object type `push_binding` and its write-behind store thread;
//! - `ami`: AMI actions;
//! - `wake`: call wake-up (`Dial(Push/...)`, `PushWake`);
//! - `mwi`: voicemail pushes from Asterisk's MWI state;
//! - `messages`: messages to sleeping phones (`MessageSend(push:...)`).
//!
//! Pure logic (config model, backoff, status text) lives in the `res-push-core` crate so it is
//! unit-tested without Asterisk; the wire protocol lives in `res-push-proto`.
//! Thread and lifetime rules: `SAFETY.md`.

mod ami;
pub mod ast;
mod bindings;
mod commands;
mod entry;
pub mod ffi;
mod link;
mod messages;
mod module;
mod mwi;
mod persist;
mod push;
mod registrar;
mod wake;
