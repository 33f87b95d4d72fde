//! Asterisk's message core (`message.h`): the message a technology is handed, new messages to
//! send through another technology, and the registration of ours.

use std::ffi::{CStr, c_char};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::c_string;
use crate::ffi;

/// A message handed to our technology, borrowed for the callback (`'a`): Asterisk holds the
/// message's lock meanwhile, so its fields do not change.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a>(NonNull<ffi::ast_msg>, PhantomData<&'a ffi::ast_msg>);

fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null NUL-terminated string owned by the message, alive during the callback.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Msg<'_> {
    /// # Safety
    /// `p` is a live message for the duration of the current callback, or NULL.
    pub unsafe fn from_ptr(p: *const ffi::ast_msg) -> Option<Self> {
        NonNull::new(p.cast_mut()).map(|p| Msg(p, PhantomData))
    }

    fn ptr(&self) -> *const ffi::ast_msg {
        self.0.as_ptr()
    }

    /// The To of the message (for SIP: the URI the sender addressed).
    pub fn to(&self) -> String {
        // SAFETY: live message; the string is the message's own.
        owned(unsafe { ffi::ast_msg_get_to(self.ptr()) })
    }

    /// The From of the message.
    pub fn from(&self) -> String {
        // SAFETY: as above.
        owned(unsafe { ffi::ast_msg_get_from(self.ptr()) })
    }

    /// The body.
    pub fn body(&self) -> String {
        // SAFETY: as above.
        owned(unsafe { ffi::ast_msg_get_body(self.ptr()) })
    }

    /// Variables set for sending (`MESSAGE_DATA()`; SIP sends them as headers), in order.
    pub fn outbound_vars(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        // SAFETY: live message; the iterator is destroyed below, each current entry released.
        unsafe {
            let it = ffi::ast_msg_var_iterator_init(self.ptr());
            if it.is_null() {
                return out;
            }
            let (mut name, mut value): (*const c_char, *const c_char) =
                (std::ptr::null(), std::ptr::null());
            while ffi::ast_msg_var_iterator_next(self.ptr(), it, &mut name, &mut value) != 0 {
                out.push((owned(name), owned(value)));
                ffi::ast_msg_var_unref_current(it);
            }
            ffi::ast_msg_var_iterator_destroy(it);
        }
        out
    }
}

/// A message of ours, to send through another technology (pjsip).
#[derive(Debug)]
pub struct OutMsg(NonNull<ffi::ast_msg>);

// SAFETY: an ao2 object only this value references until `send` hands it to Asterisk.
unsafe impl Send for OutMsg {}

impl OutMsg {
    /// A message with these fields; `None` when Asterisk cannot allocate one.
    pub fn new(to: &str, from: &str, body: &str) -> Option<OutMsg> {
        let (t, f, b) = (c_string(to), c_string(from), c_string(body));
        // SAFETY: valid strings, copied by Asterisk; the message is ours.
        NonNull::new(unsafe { ffi::rp_shim_msg_new(t.as_ptr(), f.as_ptr(), b.as_ptr()) })
            .map(OutMsg)
    }

    /// Sets a variable that goes out with the message (a SIP header for pjsip).
    pub fn set_outbound_var(&mut self, name: &str, value: &str) {
        let (n, v) = (c_string(name), c_string(value));
        // SAFETY: our message; Asterisk copies both strings.
        unsafe { ffi::ast_msg_set_var_outbound(self.0.as_ptr(), n.as_ptr(), v.as_ptr()) };
    }

    /// Sends it to `destination` (`tech:...`); true when the technology accepted it.
    pub fn send(self, destination: &str, from: &str) -> bool {
        let (d, f) = (c_string(destination), c_string(from));
        let p = self.0.as_ptr();
        std::mem::forget(self);
        // SAFETY: ast_msg_send takes over our reference whatever it returns.
        unsafe { ffi::ast_msg_send(p, d.as_ptr(), f.as_ptr()) == 0 }
    }
}

impl Drop for OutMsg {
    fn drop(&mut self) {
        // SAFETY: our reference, released once.
        unsafe { ffi::ast_msg_destroy(self.0.as_ptr()) };
    }
}

/// Sets the global dialplan variable `name` (what `${name}` reads on a channel without one).
pub fn set_global(name: &str, value: &str) {
    let (n, v) = (c_string(name), c_string(value));
    // SAFETY: valid strings, copied by Asterisk.
    unsafe { ffi::rp_shim_set_global(n.as_ptr(), v.as_ptr()) };
}

/// Registers the `push` message technology and `PUSH_MESSAGE_STATUS()`.
pub fn register() -> bool {
    // SAFETY: static structures in the shim, removed by `unregister` before unload.
    unsafe { ffi::rp_shim_msg_register() == 0 }
}

/// Removes them. Asterisk takes the technologies' write lock, so no `msg_send` of ours is
/// running once this returns.
pub fn unregister() {
    // SAFETY: see `register`.
    unsafe { ffi::rp_shim_msg_unregister() };
}
