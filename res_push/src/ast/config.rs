//! Reading configuration files through Asterisk's config API, so `#include`, templates and
//! `#exec` behave as in every other Asterisk file.

use std::ffi::CStr;
use std::ptr;

use res_push_core::config::Section;

use super::c_string;
use crate::ffi;

/// Why a file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Asterisk's parser rejected it (it has logged where).
    #[error("{0} is invalid (see the parser's message above)")]
    Invalid(String),
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// The file's sections, in order.
    Sections(Vec<Section>),
    /// No such file.
    Missing,
    /// Asked for `only_if_changed` and it has not changed.
    Unchanged,
}

/// Owns an `ast_config` and destroys it on drop.
struct Config(*mut ffi::ast_config);

impl Drop for Config {
    fn drop(&mut self) {
        // SAFETY: we own this config, loaded by `ast_config_load2`.
        unsafe { ffi::ast_config_destroy(self.0) };
    }
}

fn text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: Asterisk config strings are NUL-terminated and live as long as the config.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Loads `filename` from Asterisk's config directory.
pub fn load(filename: &str, only_if_changed: bool) -> Result<Loaded, LoadError> {
    let name = c_string(filename);
    let mut status = ffi::rp_config_status::RP_CONFIG_OK;
    // SAFETY: valid C string and out-pointer; the result is owned by `Config` below.
    let cfg =
        unsafe { ffi::rp_shim_config_load(name.as_ptr(), only_if_changed as i32, &mut status) };
    match status {
        ffi::rp_config_status::RP_CONFIG_MISSING => return Ok(Loaded::Missing),
        ffi::rp_config_status::RP_CONFIG_UNCHANGED => return Ok(Loaded::Unchanged),
        ffi::rp_config_status::RP_CONFIG_INVALID => {
            return Err(LoadError::Invalid(filename.to_string()));
        }
        _ => {}
    }
    if cfg.is_null() {
        return Ok(Loaded::Missing);
    }
    let cfg = Config(cfg);
    let mut sections = Vec::new();
    let mut category: *mut ffi::ast_category = ptr::null_mut();
    loop {
        // SAFETY: walking the categories of a live config; `category` is null or the previous one.
        category =
            unsafe { ffi::ast_category_browse_filtered(cfg.0, ptr::null(), category, ptr::null()) };
        if category.is_null() {
            break;
        }
        // SAFETY: `category` belongs to `cfg`, which is alive.
        let name = text(unsafe { ffi::ast_category_get_name(category) });
        let mut entries = Vec::new();
        // SAFETY: as above; the variable list is owned by the category.
        let mut var = unsafe { ffi::ast_category_first(category) };
        while !var.is_null() {
            // SAFETY: `var` is a node of the category's list.
            let v = unsafe { &*var };
            entries.push((text(v.name), text(v.value)));
            var = v.next;
        }
        sections.push(Section { name, entries });
    }
    Ok(Loaded::Sections(sections))
}
