//! Panic containment at the C boundary.
//!
//! Since Rust 1.81 a panic unwinding out of an `extern "C"` function aborts the process, and
//! here the process is the PBX. Every entry point Asterisk calls runs its body through
//! [`guard`], which turns a panic into a logged error and the caller's failure value.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `body`; if it panics, logs which entry point failed and returns `on_panic`.
///
/// The panic message and location itself are logged by the hook [`install_panic_hook`] sets.
pub fn guard<R>(entry: &str, on_panic: R, body: impl FnOnce() -> R) -> R {
    // AssertUnwindSafe: after a panic we return a failure code and touch none of the body's
    // state, which is the unwind-safety contract.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            super::log::error(&format!(
                "res_push: {entry} failed after an internal error (panic); see above"
            ));
            on_panic
        }
    }
}

/// Routes panic messages to Asterisk's log instead of stderr.
///
/// std's default hook asks for the current thread's name, which on an Asterisk thread would
/// register a thread-local destructor in this library and keep `dlclose` from unloading it.
/// The hook belongs to this library's own copy of std, so it affects no other code.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string panic payload)");
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        super::log::error(&format!(
            "res_push: internal error (panic) at {place}: {msg}"
        ));
    }));
}

/// Drops the hook so no closure of this library outlives `unload`.
pub fn remove_panic_hook() {
    let _ = std::panic::take_hook();
}
