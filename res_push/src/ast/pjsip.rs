//! res_pjsip: the REGISTER hook, responses, and contact removal.
//!
//! The shim copies each REGISTER and each REGISTER response into plain strings; this wrapper
//! turns them into owned Rust values before the callback returns, so nothing here outlives
//! pjsip's pools.

use std::ffi::{CStr, c_char};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::c_string;
use crate::ffi;

/// A received request, borrowed for the callback that received it (`'a`): nothing built from
/// it can outlive pjsip's pools.
#[derive(Debug, Clone, Copy)]
pub struct RxData<'a>(
    NonNull<ffi::pjsip_rx_data>,
    PhantomData<&'a ffi::pjsip_rx_data>,
);

/// A response about to be sent, borrowed for the callback that sees it.
#[derive(Debug, Clone, Copy)]
pub struct TxData<'a>(
    NonNull<ffi::pjsip_tx_data>,
    PhantomData<&'a ffi::pjsip_tx_data>,
);

impl RxData<'_> {
    /// # Safety
    /// `p` is pjsip's live request for the duration of the current callback.
    pub unsafe fn from_ptr(p: *mut ffi::pjsip_rx_data) -> Option<Self> {
        NonNull::new(p).map(|p| RxData(p, PhantomData))
    }
}

impl TxData<'_> {
    /// # Safety
    /// `p` is pjsip's live response for the duration of the current callback.
    pub unsafe fn from_ptr(p: *mut ffi::pjsip_tx_data) -> Option<Self> {
        NonNull::new(p).map(|p| TxData(p, PhantomData))
    }
}

/// A REGISTER, owned.
#[derive(Debug, Clone, Default)]
pub struct Register {
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: i32,
    /// Identified endpoint.
    pub endpoint: Option<String>,
    /// Its `aors` setting.
    pub endpoint_aors: Option<String>,
    /// To URI user part.
    pub to_user: Option<String>,
    /// To URI host part.
    pub to_host: Option<String>,
    /// User-Agent.
    pub user_agent: Option<String>,
    /// X-MPUSH.
    pub x_mpush: Option<String>,
    /// Expires header.
    pub expires: Option<u32>,
    /// Where it came from.
    pub source: String,
    /// Contact header values.
    pub contacts: Vec<String>,
}

/// A REGISTER response, owned.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: i32,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: i32,
    /// Contact header values (the registrar lists the AOR's current contacts with expiry).
    pub contacts: Vec<String>,
}

fn opt(p: *const c_char) -> Option<String> {
    // SAFETY: the shim hands NUL-terminated strings from a live pool, or NULL.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn list(count: u32, items: *mut *const c_char) -> Vec<String> {
    (0..count as usize)
        // SAFETY: the shim allocated `count` entries.
        .filter_map(|i| opt(unsafe { *items.add(i) }))
        .collect()
}

impl<'a> RxData<'a> {
    /// The message as received, when pjsip still has it.
    pub fn raw(self) -> Option<&'a [u8]> {
        let mut len = 0usize;
        // SAFETY: live request; the buffer belongs to its transport pool and outlives 'a.
        let p = unsafe { ffi::rp_shim_rx_raw(self.0.as_ptr().cast(), &mut len) };
        // SAFETY: the shim returns the start of `len` readable bytes, or NULL.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
    }

    /// Copies out the REGISTER, or `None` for anything else.
    pub fn register(self) -> Option<Register> {
        // SAFETY: zeroed is a valid value of this plain C struct of pointers and ints.
        let mut r: ffi::rp_register = unsafe { std::mem::zeroed() };
        // SAFETY: `self.0` is the live request of the current callback.
        if unsafe { ffi::rp_shim_describe_register(self.0.as_ptr().cast(), &mut r) } != 0 {
            return None;
        }
        Some(Register {
            call_id: opt(r.call_id).unwrap_or_default(),
            cseq: r.cseq,
            endpoint: opt(r.endpoint),
            endpoint_aors: opt(r.endpoint_aors),
            to_user: opt(r.to_user),
            to_host: opt(r.to_host),
            user_agent: opt(r.user_agent),
            x_mpush: opt(r.x_mpush),
            expires: u32::try_from(r.expires).ok(),
            source: opt(r.source).unwrap_or_default(),
            contacts: list(r.contact_count, r.contacts),
        })
    }

    /// Answers the request statelessly; the registrar will not see it.
    pub fn respond(self, status: u16, reason: &str) {
        let reason = c_string(reason);
        // SAFETY: live request; pjsip copies the reason.
        unsafe { ffi::rp_shim_respond(self.0.as_ptr().cast(), i32::from(status), reason.as_ptr()) };
    }
}

impl TxData<'_> {
    /// Copies out a REGISTER response, or `None` for other responses.
    pub fn register_response(self) -> Option<Response> {
        // SAFETY: as in `RxData::register`.
        let mut r: ffi::rp_response = unsafe { std::mem::zeroed() };
        // SAFETY: `self.0` is the live response of the current callback.
        if unsafe { ffi::rp_shim_describe_response(self.0.as_ptr().cast(), &mut r) } != 0
            || r.is_register == 0
        {
            return None;
        }
        Some(Response {
            status: r.status,
            call_id: opt(r.call_id).unwrap_or_default(),
            cseq: r.cseq,
            contacts: list(r.contact_count, r.contacts),
        })
    }

    /// Adds a header to the response.
    pub fn add_header(self, name: &str, value: &str) {
        let (name, value) = (c_string(name), c_string(value));
        // SAFETY: live response; pjsip copies both strings into its pool.
        unsafe { ffi::rp_shim_add_header(self.0.as_ptr().cast(), name.as_ptr(), value.as_ptr()) };
    }
}

/// Installs the REGISTER service and response supplement.
pub fn register_hooks() -> bool {
    // SAFETY: static structures in the shim; removed by `unregister_hooks` before unload.
    unsafe { ffi::rp_shim_sip_register() == 0 }
}

/// Removes them; after this no hook of ours runs.
pub fn unregister_hooks() {
    // SAFETY: see `register_hooks`.
    unsafe { ffi::rp_shim_sip_unregister() };
}

/// Removes `aor`'s contact whose URI is `uri`. Returns whether one was removed.
pub fn delete_contact(aor: &str, uri: &str) -> bool {
    let (aor, uri) = (c_string(aor), c_string(uri));
    // SAFETY: valid C strings; sorcery does its own locking.
    unsafe { ffi::rp_shim_delete_contact(aor.as_ptr(), uri.as_ptr()) == 1 }
}
