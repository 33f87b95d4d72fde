//! Asterisk's MWI (message waiting) state, over stasis, and the PJSIP objects whose
//! `mailboxes` option names mailboxes.

use std::ffi::{CStr, c_char, c_int, c_void};

use res_push_core::mwi::{Counts, Owner, State};

use crate::ffi;

fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the shim passes NUL-terminated strings that live for the callback.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An MWI state as the shim passes it, owned.
///
/// # Safety
/// `mailbox` is NULL or a NUL-terminated string valid for the call.
pub unsafe fn state(mailbox: *const c_char, new: c_int, old: c_int, urgent: c_int) -> State {
    State {
        mailbox: text(mailbox),
        counts: Counts::from_ints(new, old, urgent),
    }
}

/// Subscribes to every mailbox's state; each change then enters through `rp_mwi_on_state`
/// (entry.rs), on a stasis pool thread.
pub fn subscribe() -> bool {
    // SAFETY: no arguments; the shim keeps the one subscription until `unsubscribe`.
    unsafe { ffi::rp_shim_mwi_subscribe() == 0 }
}

/// Unsubscribes and waits until no callback runs any more (before the module is unmapped).
pub fn unsubscribe() {
    // SAFETY: idempotent in the shim (stasis_unsubscribe_and_join accepts NULL).
    unsafe { ffi::rp_shim_mwi_unsubscribe() };
}

extern "C" fn push_cached(
    ctx: *mut c_void,
    mailbox: *const c_char,
    new: c_int,
    old: c_int,
    urgent: c_int,
) {
    // SAFETY: `ctx` is the Vec passed by `cached`, alive for the call; the strings are the
    // cached states' own.
    let (list, s) = unsafe {
        (
            &mut *(ctx as *mut Vec<State>),
            state(mailbox, new, old, urgent),
        )
    };
    list.push(s);
}

/// The states in Asterisk's MWI cache (the counts in force now).
pub fn cached() -> Vec<State> {
    // No thread-local buffer: a TLS destructor registered on an Asterisk thread would keep
    // this library mapped after unload.
    let mut states: Vec<State> = Vec::new();
    // SAFETY: `push_cached` casts `ctx` back to this Vec, which outlives the call.
    unsafe { ffi::rp_shim_mwi_cached(Some(push_cached), (&mut states as *mut Vec<State>).cast()) };
    states
}

extern "C" fn push_owner(
    ctx: *mut c_void,
    is_aor: c_int,
    name: *const c_char,
    mailboxes: *const c_char,
    aors: *const c_char,
) {
    // SAFETY: `ctx` is the Vec passed by `mailbox_owners`, alive for the call.
    let list = unsafe { &mut *(ctx as *mut Vec<Owner>) };
    list.push(if is_aor != 0 {
        Owner::Aor {
            name: text(name),
            mailboxes: text(mailboxes),
        }
    } else {
        Owner::Endpoint {
            name: text(name),
            mailboxes: text(mailboxes),
            aors: text(aors),
        }
    });
}

/// Every endpoint and AOR with a `mailboxes` option. Reads sorcery (possibly a database):
/// call it from a module thread, never a SIP or stasis one.
pub fn mailbox_owners() -> Vec<Owner> {
    let mut owners: Vec<Owner> = Vec::new();
    // SAFETY: `push_owner` casts `ctx` back to this Vec, which outlives the call.
    unsafe {
        ffi::rp_shim_mailbox_owners(Some(push_owner), (&mut owners as *mut Vec<Owner>).cast())
    };
    owners
}
