//! res_pjsip: the REGISTER hook, responses, and contact removal.
//!
//! The shim copies each REGISTER and each REGISTER response into a scratch buffer of ours (on
//! the stack, a heap one only for oversized messages); this wrapper lends them out as borrowed
//! strings to a closure, so nothing here outlives the callback or costs an allocation per
//! field.

use std::borrow::Cow;
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

/// A REGISTER, borrowed from the scratch it was copied into.
#[derive(Debug, Clone, Default)]
pub struct Register<'s> {
    /// Call-ID.
    pub call_id: Cow<'s, str>,
    /// CSeq number.
    pub cseq: i32,
    /// Identified endpoint.
    pub endpoint: Option<Cow<'s, str>>,
    /// Its `aors` setting.
    pub endpoint_aors: Option<Cow<'s, str>>,
    /// To URI user part.
    pub to_user: Option<Cow<'s, str>>,
    /// To URI host part.
    pub to_host: Option<Cow<'s, str>>,
    /// User-Agent.
    pub user_agent: Option<Cow<'s, str>>,
    /// X-MPUSH.
    pub x_mpush: Option<Cow<'s, str>>,
    /// Expires header.
    pub expires: Option<u32>,
    /// The address it came from.
    pub source_addr: Cow<'s, str>,
    /// And the port.
    pub source_port: i32,
}

/// A REGISTER response, borrowed like [`Register`].
#[derive(Debug, Clone, Default)]
pub struct Response<'s> {
    /// Status code.
    pub status: i32,
    /// Call-ID.
    pub call_id: Cow<'s, str>,
    /// CSeq number.
    pub cseq: i32,
    /// The contacts listed (the registrar lists the AOR's current ones): URI as between `<>`
    /// of the header, and its `expires` parameter.
    pub contacts: Vec<(Cow<'s, str>, Option<u32>)>,
}

/// # Safety
/// `p` is NULL or a NUL-terminated string that lives for `'s`.
unsafe fn opt<'s>(p: *const c_char) -> Option<Cow<'s, str>> {
    // SAFETY: as the caller promised.
    (!p.is_null()).then(|| lossy(unsafe { CStr::from_ptr(p) }.to_bytes()))
}

/// `bytes` as text, invalid sequences replaced. Valid text (all of a SIP message in practice)
/// is checked by `str::from_utf8`, whose ASCII fast path `to_string_lossy` does not take.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// # Safety
/// `items` holds `count` entries, each as [`opt`] requires.
unsafe fn list<'s>(count: u32, items: *const *const c_char) -> Vec<Cow<'s, str>> {
    (0..count as usize)
        // SAFETY: as the caller promised.
        .filter_map(|i| unsafe { opt(*items.add(i)) })
        .collect()
}

/// Runs `describe` (one of the shim's describe calls) with a scratch of ours, then `read` on
/// what it wrote. A stack scratch serves every message of ordinary size; a larger one is
/// tried only when the shim says it did not fit.
fn with_scratch<T, R>(
    describe: impl Fn(*mut ffi::rp_scratch, *mut T) -> i32,
    read: impl for<'s> FnOnce(&'s T) -> R,
) -> Option<R> {
    // Not zeroed: the shim writes every byte it hands out, and clearing the whole buffer on
    // each REGISTER was a measurable share of what the hook cost.
    const STACK: usize = 2048;
    const CONTACTS: usize = 16;
    let mut bytes = [std::mem::MaybeUninit::<u8>::uninit(); STACK];
    let mut contacts = [std::ptr::null::<c_char>(); CONTACTS];
    let mut numbers = [0i32; CONTACTS];
    // SAFETY: `T` is one of the shim's plain C structs of pointers and integers.
    let mut out: T = unsafe { std::mem::zeroed() };
    let mut scratch = ffi::rp_scratch {
        bytes: bytes.as_mut_ptr().cast(),
        bytes_len: STACK,
        contacts: contacts.as_mut_ptr(),
        numbers: numbers.as_mut_ptr(),
        contacts_len: CONTACTS as u32,
    };
    let mut rc = describe(&mut scratch, &mut out);
    let mut heap: (Vec<u8>, Vec<*const c_char>, Vec<i32>);
    let mut size = STACK;
    while rc == ffi::RP_SCRATCH_FULL && size < MAX_SCRATCH {
        size *= 4;
        heap = (
            vec![0u8; size],
            vec![std::ptr::null(); size / 64],
            vec![0; size / 64],
        );
        scratch = ffi::rp_scratch {
            bytes: heap.0.as_mut_ptr().cast(),
            bytes_len: size,
            contacts: heap.1.as_mut_ptr(),
            numbers: heap.2.as_mut_ptr(),
            contacts_len: (size / 64) as u32,
        };
        // SAFETY: as above.
        out = unsafe { std::mem::zeroed() };
        rc = describe(&mut scratch, &mut out);
        if rc != ffi::RP_SCRATCH_FULL {
            return (rc == 0).then(|| read(&out));
        }
    }
    (rc == 0).then(|| read(&out))
}

/// Largest scratch tried: a REGISTER bigger than this is not one res_push acts on.
const MAX_SCRATCH: usize = 256 * 1024;

impl<'a> RxData<'a> {
    /// The message as received, when pjsip still has it.
    pub fn raw(self) -> Option<&'a [u8]> {
        let mut len = 0usize;
        // SAFETY: live request; the buffer belongs to its transport pool and outlives 'a.
        let p = unsafe { ffi::rp_shim_rx_raw(self.0.as_ptr().cast(), &mut len) };
        // SAFETY: the shim returns the start of `len` readable bytes, or NULL.
        (!p.is_null()).then(|| unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
    }

    /// Lends the REGISTER (all but its contacts: see [`RxData::with_contacts`]) to `f`, or
    /// `None` for anything else (or a REGISTER too large to copy).
    pub fn with_register<R>(self, f: impl for<'s> FnOnce(Register<'s>) -> R) -> Option<R> {
        let rdata = self.0.as_ptr().cast();
        with_scratch(
            // SAFETY: `rdata` is the live request of the current callback; the scratch and
            // `out` are ours and sized as they say.
            |scratch, out: *mut ffi::rp_register| unsafe {
                ffi::rp_shim_describe_register(rdata, scratch, out)
            },
            |r| {
                // SAFETY: every string is NUL-terminated in the scratch, which outlives `f`.
                let reg = unsafe {
                    Register {
                        call_id: opt(r.call_id).unwrap_or_default(),
                        cseq: r.cseq,
                        endpoint: opt(r.endpoint),
                        endpoint_aors: opt(r.endpoint_aors),
                        to_user: opt(r.to_user),
                        to_host: opt(r.to_host),
                        user_agent: opt(r.user_agent),
                        x_mpush: opt(r.x_mpush),
                        expires: u32::try_from(r.expires).ok(),
                        source_addr: opt(r.source_addr).unwrap_or_default(),
                        source_port: r.source_port,
                    }
                };
                f(reg)
            },
        )
    }

    /// Lends the REGISTER's Contact header values, as pjsip prints them (or `*`), to `f`.
    pub fn with_contacts<R>(self, f: impl for<'s> FnOnce(Vec<Cow<'s, str>>) -> R) -> Option<R> {
        let rdata = self.0.as_ptr().cast();
        with_scratch(
            // SAFETY: as in `with_register`.
            |scratch, out: *mut ffi::rp_contacts| unsafe {
                ffi::rp_shim_register_contacts(rdata, scratch, out)
            },
            // SAFETY: as in `with_register`.
            |r| f(unsafe { list(r.count, r.contacts) }),
        )
    }

    /// Answers the request statelessly; the registrar will not see it.
    pub fn respond(self, status: u16, reason: &str) {
        let reason = c_string(reason);
        // SAFETY: live request; pjsip copies the reason.
        unsafe { ffi::rp_shim_respond(self.0.as_ptr().cast(), i32::from(status), reason.as_ptr()) };
    }
}

impl TxData<'_> {
    /// Lends a REGISTER response to `f`, or `None` for other responses.
    pub fn with_register_response<R>(self, f: impl for<'s> FnOnce(Response<'s>) -> R) -> Option<R> {
        let tdata = self.0.as_ptr().cast();
        with_scratch(
            // SAFETY: as in `RxData::with_register`.
            |scratch, out: *mut ffi::rp_response| unsafe {
                ffi::rp_shim_describe_response(tdata, scratch, out)
            },
            |r| {
                if r.is_register == 0 {
                    return None;
                }
                // SAFETY: as in `RxData::with_register`; `contact_expires` holds a number for
                // each of the `contact_count` entries of `contacts`.
                let resp = unsafe {
                    Response {
                        status: r.status,
                        call_id: opt(r.call_id).unwrap_or_default(),
                        cseq: r.cseq,
                        contacts: (0..r.contact_count as usize)
                            .filter_map(|i| {
                                let uri = opt(*r.contacts.add(i))?;
                                Some((uri, u32::try_from(*r.contact_expires.add(i)).ok()))
                            })
                            .collect(),
                    }
                };
                Some(f(resp))
            },
        )
        .flatten()
    }

    /// Adds a header to the response.
    pub fn add_header(self, name: &CStr, value: &CStr) {
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
