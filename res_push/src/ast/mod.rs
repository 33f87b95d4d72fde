//! Safe wrappers over the Asterisk subsystems res_push uses, one file per subsystem.
//!
//! Each wrapper owns its `unsafe` and states why it is sound; callers above this layer never
//! touch `ffi` directly.

pub mod astdb;
pub mod channel;
pub mod cli;
pub mod config;
pub mod guard;
pub mod identity;
pub mod log;
pub mod manager;
pub mod message;
pub mod mwi;
pub mod pjsip;
pub mod sorcery;
pub mod sync;
pub mod thread;

use std::ffi::CString;

/// A C string for Asterisk: interior NUL bytes (which C would silently cut the text at) become
/// U+FFFD, so nothing an external peer sends can truncate or fail a log line.
pub fn c_string(text: &str) -> CString {
    match CString::new(text) {
        Ok(c) => c,
        Err(_) => CString::new(text.replace('\0', "\u{fffd}")).unwrap_or_default(),
    }
}

/// The system name from `asterisk.conf`, or the host name when it is unset.
pub fn system_name() -> String {
    // SAFETY: returns a pointer to a string Asterisk sets at startup and never frees.
    let p = unsafe { crate::ffi::rp_shim_system_name() };
    let name = if p.is_null() {
        String::new()
    } else {
        // SAFETY: non-null, NUL-terminated, static for the process lifetime (see above).
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    };
    if !name.is_empty() {
        return name;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
