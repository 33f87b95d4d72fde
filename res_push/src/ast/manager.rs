//! AMI: events, and the session of an action being served.

use std::ffi::CStr;
use std::fmt::Write as _;

use super::c_string;
use crate::ffi;

/// Formats `Key: value` lines for an event or list entry; CR/LF in values are replaced so a
/// value can never inject headers.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let mut body = String::new();
    for (k, v) in pairs {
        let clean: String = v
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        let _ = write!(body, "{k}: {clean}\r\n");
    }
    body
}

/// Raises an AMI event in the `system` class.
pub fn event(name: &str, pairs: &[(&str, String)]) {
    let (name, body) = (c_string(name), c_string(&fields(pairs)));
    // SAFETY: valid C strings; passed to "%s".
    unsafe { ffi::rp_shim_manager_event(name.as_ptr(), body.as_ptr()) };
}

/// The session and message of an action being served; valid during the callback only.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    s: *mut ffi::mansession,
    m: *const ffi::message,
}

impl Session {
    /// Wraps the callback's pointers.
    pub fn new(s: *mut ffi::mansession, m: *const ffi::message) -> Self {
        Self { s, m }
    }

    /// A header of the action (empty when absent, as Asterisk returns it).
    pub fn header(&self, name: &str) -> String {
        let name = c_string(name);
        // SAFETY: live message; astman_get_header returns "" or a string of the message.
        let v = unsafe { ffi::rp_shim_astman_header(self.m, name.as_ptr()) };
        if v.is_null() {
            return String::new();
        }
        // SAFETY: non-null, NUL-terminated, owned by the message.
        unsafe { CStr::from_ptr(v) }
            .to_string_lossy()
            .trim()
            .to_string()
    }

    /// Success response.
    pub fn ack(&self, text: &str) {
        let t = c_string(text);
        // SAFETY: live session and message.
        unsafe { ffi::rp_shim_astman_ack(self.s, self.m, t.as_ptr()) };
    }

    /// Error response.
    pub fn error(&self, text: &str) {
        let t = c_string(text);
        // SAFETY: live session and message.
        unsafe { ffi::rp_shim_astman_error(self.s, self.m, t.as_ptr()) };
    }

    /// Starts a list response.
    pub fn list_start(&self, text: &str) {
        let t = c_string(text);
        // SAFETY: live session and message.
        unsafe { ffi::rp_shim_astman_listack(self.s, self.m, t.as_ptr()) };
    }

    /// One list entry event, with the action's ActionID echoed.
    pub fn list_entry(&self, event: &str, pairs: &[(&str, String)]) {
        let mut text = format!("Event: {event}\r\n");
        let id = self.header("ActionID");
        if !id.is_empty() {
            text.push_str(&fields(&[("ActionID", id)]));
        }
        text.push_str(&fields(pairs));
        text.push_str("\r\n");
        let t = c_string(&text);
        // SAFETY: live session.
        unsafe { ffi::rp_shim_astman_append(self.s, t.as_ptr()) };
    }

    /// Ends a list response.
    pub fn list_complete(&self, event: &str, count: usize) {
        let e = c_string(event);
        // SAFETY: live session and message.
        unsafe { ffi::rp_shim_astman_list_complete(self.s, self.m, e.as_ptr(), count as i32) };
    }
}

/// Registers the AMI actions (shim table).
pub fn register() -> bool {
    // SAFETY: handlers are static shim functions forwarding to `rp_ami_exec`.
    unsafe { ffi::rp_shim_manager_register() == 0 }
}

/// Unregisters them (waits for running handlers).
pub fn unregister() {
    // SAFETY: see `register`.
    unsafe { ffi::rp_shim_manager_unregister() };
}
