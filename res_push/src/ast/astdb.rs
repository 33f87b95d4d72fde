//! Asterisk's internal database (astdb): where bindings survive restarts.

use std::ffi::CStr;

use super::c_string;
use crate::ffi;

/// Stores `value` at `family/key`.
pub fn put(family: &str, key: &str, value: &str) -> bool {
    let (f, k, v) = (c_string(family), c_string(key), c_string(value));
    // SAFETY: valid C strings; astdb copies them.
    unsafe { ffi::ast_db_put(f.as_ptr(), k.as_ptr(), v.as_ptr()) == 0 }
}

/// Removes `family/key`.
pub fn del(family: &str, key: &str) -> bool {
    let (f, k) = (c_string(family), c_string(key));
    // SAFETY: valid C strings.
    unsafe { ffi::ast_db_del(f.as_ptr(), k.as_ptr()) == 0 }
}

/// Every `(key, value)` under `family/tree`; keys are full paths (`/family/tree/...`).
pub fn tree(family: &str, tree: &str) -> Vec<(String, String)> {
    let (f, t) = (c_string(family), c_string(tree));
    // SAFETY: valid C strings; the returned list is ours to free.
    let head = unsafe { ffi::ast_db_gettree(f.as_ptr(), t.as_ptr()) };
    let mut out = Vec::new();
    let mut e = head;
    while !e.is_null() {
        // SAFETY: `e` is a node of the list astdb returned; `key` and the inline `data` are
        // NUL-terminated.
        unsafe {
            let entry = &*e;
            let key = CStr::from_ptr(entry.key).to_string_lossy().into_owned();
            let data = CStr::from_ptr(entry.data.as_ptr())
                .to_string_lossy()
                .into_owned();
            out.push((key, data));
            e = entry.next;
        }
    }
    if !head.is_null() {
        // SAFETY: freeing the list we got, once.
        unsafe { ffi::ast_db_freetree(head) };
    }
    out
}
