//! The CLI: command table and output.
//!
//! The entries Asterisk links into its CLI list are static C structs in the shim; Asterisk asks
//! Rust for each entry's words and usage at registration, and forwards executions here.

use std::ffi::{CStr, c_char};

use super::c_string;
use crate::ffi;

/// One CLI command: its words and usage text.
#[derive(Debug)]
pub struct Spec {
    /// Shim index (`enum rp_cli_command`).
    pub index: u32,
    /// The words, as Asterisk matches them (e.g. `push show status`).
    pub words: &'static CStr,
    /// `help <command>` text.
    pub usage: &'static CStr,
}

/// What a command handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Wrong arguments: Asterisk prints the usage.
    ShowUsage,
    /// Failed; the handler printed why.
    Failure,
}

impl Outcome {
    /// The `RESULT_*` code the shim maps to Asterisk's `CLI_*` values.
    pub fn code(self) -> i32 {
        (match self {
            Outcome::Success => ffi::RESULT_SUCCESS,
            Outcome::ShowUsage => ffi::RESULT_SHOWUSAGE,
            Outcome::Failure => ffi::RESULT_FAILURE,
        }) as i32
    }
}

/// Where a command writes: the CLI connection that ran it.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    fd: i32,
}

impl Output {
    /// Output to the CLI file descriptor Asterisk handed the handler.
    pub fn new(fd: i32) -> Self {
        Self { fd }
    }

    /// Writes text as is (callers include the newlines).
    pub fn write(&self, text: &str) {
        let text = c_string(text);
        // SAFETY: valid NUL-terminated string; the shim passes it as data to "%s".
        unsafe { ffi::rp_shim_cli_write(self.fd, text.as_ptr()) };
    }
}

/// Copies Asterisk's argv into owned strings.
///
/// # Safety
/// `argv` must point to `argc` valid NUL-terminated strings (as Asterisk's CLI guarantees).
pub unsafe fn args(argc: i32, argv: *const *const c_char) -> Vec<String> {
    (0..argc.max(0) as usize)
        .map(|i| {
            // SAFETY: per this function's contract.
            let p = unsafe { *argv.add(i) };
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: non-null, NUL-terminated per the contract.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        })
        .collect()
}

/// Registers the shim's entries with Asterisk.
pub fn register() -> bool {
    // SAFETY: the entries are static in the shim; Asterisk calls back into `rp_cli_describe`.
    unsafe { ffi::rp_shim_cli_register() == 0 }
}

/// Unregisters them; after this no handler runs.
pub fn unregister() {
    // SAFETY: as above; unregistering waits for running handlers to finish.
    unsafe { ffi::rp_shim_cli_unregister() };
}
