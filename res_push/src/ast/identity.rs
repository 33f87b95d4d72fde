//! The module's recorded identity (what `build.rs` read from the headers) and the running
//! Asterisk's. The comparison is res_push_core::identity::check.

use std::ffi::{CStr, c_char};

use res_push_core::identity::{self, Identity, RECORD_LEN};

mod built {
    include!(concat!(env!("OUT_DIR"), "/identity.rs"));
}

/// What this library was built for, read from its marked record at run time (never folded
/// into the code by the compiler, so an altered record in the file is what the check sees).
/// `None` if the record is not readable.
pub fn built_for() -> Option<Identity> {
    // SAFETY: BUILT_FOR is a static array of RECORD_LEN bytes, valid and immutable for the
    // library's lifetime; a volatile read of it is a plain read the optimizer must not elide.
    let record: [u8; RECORD_LEN] = unsafe { std::ptr::read_volatile(&raw const built::BUILT_FOR) };
    identity::decode(&record)
}

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated strings that Asterisk and pjlib keep for the process
    // lifetime (string constants compiled into them).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The Asterisk that runs this module: `ast_get_version()`, and `pj_get_version()` of the
/// pjproject it loaded (what `pjproject show version` prints). Empty when one says nothing.
pub fn running_in() -> Identity {
    // SAFETY: both take no argument and return a static string (or NULL, handled by `text`).
    let (asterisk, pjproject) = unsafe {
        (
            crate::ffi::rp_shim_asterisk_version(),
            crate::ffi::rp_shim_pjproject_version(),
        )
    };
    Identity {
        asterisk: text(asterisk),
        pjproject: text(pjproject),
    }
}
