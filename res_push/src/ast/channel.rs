//! Channels, as the wake-up applications use them: variables, indications, running another
//! application, and an event-driven wait another thread can end.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::c_string;
use crate::ffi;

/// A channel borrowed for the duration of the callback that received it (`'a`: an
/// application call, an INVITE being sent).
#[derive(Debug, Clone, Copy)]
pub struct Chan<'a>(NonNull<ffi::ast_channel>, PhantomData<&'a ffi::ast_channel>);

/// A counted reference to a channel that another thread may hold (to wake a waiter).
#[derive(Debug)]
pub struct ChanRef(*mut ffi::ast_channel);

// SAFETY: ast_channel objects are reference counted and their wake-up (ast_queue_frame) locks
// the channel itself; the pointer stays valid until our reference is dropped.
unsafe impl Send for ChanRef {}
// SAFETY: as above; `wake` takes `&self` and Asterisk serializes access internally.
unsafe impl Sync for ChanRef {}

impl ChanRef {
    /// Ends a [`Chan::wait`] in progress on this channel (queues a null frame).
    pub fn wake(&self) {
        // SAFETY: we hold a reference, so the channel is alive.
        unsafe { ffi::rp_shim_channel_wake(self.0) };
    }

    /// Whether this is a reference to `chan`.
    pub fn is(&self, chan: Chan) -> bool {
        std::ptr::eq(self.0, chan.ptr())
    }

    /// Sets a channel variable from another thread (Asterisk locks the channel).
    pub fn set_var(&self, name: &str, value: &str) {
        let (n, v) = (c_string(name), c_string(value));
        // SAFETY: we hold a reference, so the channel is alive; Asterisk copies both strings.
        unsafe { ffi::rp_shim_setvar(self.0, n.as_ptr(), v.as_ptr()) };
    }

    /// Hangs the channel up from another thread; its own thread (e.g. the Dial ringing it)
    /// sees the hangup at once.
    pub fn soft_hangup(&self) {
        // SAFETY: we hold a reference, so the channel is alive; Asterisk locks it.
        unsafe { ffi::rp_shim_softhangup(self.0) };
    }
}

impl Clone for ChanRef {
    fn clone(&self) -> Self {
        // SAFETY: we hold a reference, so the channel is alive; the new one is ours to drop.
        ChanRef(unsafe { ffi::rp_shim_channel_ref(self.0) })
    }
}

impl Drop for ChanRef {
    fn drop(&mut self) {
        // SAFETY: releasing the reference taken in `Chan::handle`.
        unsafe { ffi::rp_shim_channel_unref(self.0) };
    }
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The flag was set.
    Woken,
    /// The time ran out.
    Timeout,
    /// The channel hung up.
    Hangup,
}

extern "C" fn keep_waiting(data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `&AtomicBool` passed by `Chan::wait`, alive for the whole wait.
    let flag = unsafe { &*(data as *const AtomicBool) };
    (!flag.load(Ordering::Acquire)) as c_int
}

impl Chan<'_> {
    /// # Safety
    /// `p` is a live channel for the duration of the current callback, or NULL.
    pub unsafe fn from_ptr(p: *mut ffi::ast_channel) -> Option<Self> {
        NonNull::new(p).map(|p| Chan(p, PhantomData))
    }

    fn ptr(&self) -> *mut ffi::ast_channel {
        self.0.as_ptr()
    }

    /// A reference another thread can use to wake this channel's waiter.
    pub fn handle(&self) -> ChanRef {
        // SAFETY: the channel is alive during the callback; the reference keeps it so.
        ChanRef(unsafe { ffi::rp_shim_channel_ref(self.ptr()) })
    }

    /// A channel variable.
    pub fn var(&self, name: &str) -> Option<String> {
        let name = c_string(name);
        let mut buf = vec![0u8; 1024];
        // SAFETY: live channel; the shim copies at most `buf.len()` bytes, NUL-terminated.
        let found = unsafe {
            ffi::rp_shim_getvar(
                self.ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if found == 0 {
            return None;
        }
        let v = CStr::from_bytes_until_nul(&buf)
            .ok()?
            .to_string_lossy()
            .into_owned();
        Some(v)
    }

    /// Sets a channel variable (`__NAME` is inherited by channels this one dials).
    pub fn set_var(&self, name: &str, value: &str) {
        let (n, v) = (c_string(name), c_string(value));
        // SAFETY: live channel; Asterisk copies both strings.
        unsafe { ffi::rp_shim_setvar(self.ptr(), n.as_ptr(), v.as_ptr()) };
    }

    /// Runs a dialplan application on this channel (e.g. Dial); its return value.
    pub fn exec(&self, app: &str, data: &str) -> i32 {
        let (a, d) = (c_string(app), c_string(data));
        // SAFETY: live channel, valid strings; runs on the channel's own thread (ours).
        unsafe { ffi::rp_shim_exec(self.ptr(), a.as_ptr(), d.as_ptr()) }
    }

    /// Ringback to the caller.
    pub fn ringing(&self) {
        // SAFETY: live channel.
        unsafe { ffi::rp_shim_indicate(self.ptr(), 1) };
    }

    /// Starts or stops music on hold.
    pub fn moh(&self, on: bool) {
        // SAFETY: live channel.
        unsafe {
            if on {
                ffi::rp_shim_indicate(self.ptr(), 0);
            }
            ffi::rp_shim_moh(self.ptr(), on as c_int)
        };
    }

    /// Caller id number and name.
    pub fn caller(&self) -> (Option<String>, Option<String>) {
        let mut num = [0u8; 256];
        let mut name = [0u8; 256];
        // SAFETY: live channel; both buffers are 256 bytes and the shim NUL-terminates.
        let presentation = unsafe {
            ffi::rp_shim_caller(
                self.ptr(),
                num.as_mut_ptr() as *mut c_char,
                name.as_mut_ptr() as *mut c_char,
                256,
            )
        };
        // A caller who withheld their identity (CLIR) stays anonymous everywhere we put it:
        // push payloads and late INVITEs.
        if !res_push_core::sip::presentation_allowed(presentation) {
            return (None, None);
        }
        let s = |b: &[u8]| {
            CStr::from_bytes_until_nul(b)
                .ok()
                .map(|c| c.to_string_lossy().into_owned())
                .filter(|s| !s.is_empty())
        };
        (s(&num), s(&name))
    }

    /// Waits up to `timeout` for `flag`, servicing the channel meanwhile (so a hangup ends the
    /// wait at once). Whoever sets `flag` must then [`ChanRef::wake`] the channel: the wait
    /// sleeps on the channel's frames, it does not poll the flag.
    pub fn wait(&self, timeout: Duration, flag: &AtomicBool) -> WaitEnd {
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        // SAFETY: live channel; `flag` outlives the call.
        let r = unsafe {
            ffi::rp_shim_wait(
                self.ptr(),
                ms,
                Some(keep_waiting),
                flag as *const AtomicBool as *mut c_void,
            )
        };
        if flag.load(Ordering::Acquire) {
            WaitEnd::Woken
        } else if r != 0 || self.hung_up() {
            WaitEnd::Hangup
        } else {
            WaitEnd::Timeout
        }
    }

    /// The hangup cause this leg ends with (Q.850), seen by the caller's Dial as DIALSTATUS.
    pub fn set_hangup_cause(&self, cause: i32) {
        // SAFETY: live channel.
        unsafe { ffi::rp_shim_set_hangupcause(self.ptr(), cause) };
    }

    /// Whether the channel is hung up.
    pub fn hung_up(&self) -> bool {
        // SAFETY: live channel.
        unsafe { ffi::rp_shim_check_hangup(self.ptr()) != 0 }
    }

    /// The hangup cause it has now (Q.850; e.g. 26 when a Dial hung it up because another
    /// destination answered).
    pub fn hangup_cause(&self) -> i32 {
        // SAFETY: live channel.
        unsafe { ffi::rp_shim_hangup_cause(self.ptr()) }
    }
}

/// What [`Outgoing::read_control`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A provisional response (ringing, progress, proceeding).
    Provisional,
    /// The callee answered.
    Answered,
    /// Nothing of note (time ran out, a woken wait, another frame).
    Nothing,
    /// The channel hung up (the callee refused, the transport failed).
    Gone,
}

/// An outgoing channel this module created and no PBX runs: ours to read and to hang up (on
/// drop at the latest). Used from the module's own threads only.
#[derive(Debug)]
pub struct Outgoing {
    ptr: NonNull<ffi::ast_channel>,
    cause: i32,
}

// SAFETY: the channel is reference counted by Asterisk; this handle is the one reference that
// ends it, moved between threads but used by one at a time.
unsafe impl Send for Outgoing {}

impl Outgoing {
    /// A new channel of `tech` (e.g. `PJSIP`) to `dest` (`endpoint/uri`), not called yet; the
    /// Q.850 cause on failure.
    pub fn request(tech: &str, dest: &str) -> Result<Outgoing, i32> {
        let (t, d) = (c_string(tech), c_string(dest));
        let mut cause: c_int = 0;
        // SAFETY: valid strings; the channel returned carries a reference that is now ours.
        let p = unsafe { ffi::rp_shim_request(t.as_ptr(), d.as_ptr(), &mut cause) };
        NonNull::new(p).map_or(Err(cause), |ptr| Ok(Outgoing { ptr, cause: 16 }))
    }

    /// The channel, borrowed for channel-variable and similar calls.
    pub fn chan(&self) -> Chan<'_> {
        Chan(self.ptr, PhantomData)
    }

    /// The calling party its INVITE shows (From) and its caller id.
    pub fn set_calling_party(&self, number: Option<&str>, name: Option<&str>) {
        let (n, m) = (number.map(c_string), name.map(c_string));
        let ptr =
            |s: &Option<std::ffi::CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        // SAFETY: live channel; Asterisk copies the strings.
        unsafe { ffi::rp_shim_set_calling_party(self.ptr.as_ptr(), ptr(&n), ptr(&m)) };
    }

    /// Places the call (the INVITE goes out). False when the channel driver refused.
    pub fn call(&self, dest: &str) -> bool {
        let d = c_string(dest);
        // SAFETY: live channel, valid string.
        unsafe { ffi::rp_shim_call(self.ptr.as_ptr(), d.as_ptr()) == 0 }
    }

    /// Waits up to `timeout` for the next frame; another thread ends the wait early with
    /// [`ChanRef::wake`] (a handle from `chan().handle()`).
    pub fn read_control(&self, timeout: Duration) -> Progress {
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as c_int;
        // SAFETY: live channel, read only by the thread holding this handle.
        let c = unsafe { ffi::rp_shim_read_control(self.ptr.as_ptr(), ms) };
        use ffi::ast_control_frame_type as f;
        match c {
            c if c < 0 => Progress::Gone,
            c if c == f::AST_CONTROL_RINGING as c_int
                || c == f::AST_CONTROL_PROGRESS as c_int
                || c == f::AST_CONTROL_PROCEEDING as c_int =>
            {
                Progress::Provisional
            }
            c if c == f::AST_CONTROL_ANSWER as c_int => Progress::Answered,
            c if c == f::AST_CONTROL_HANGUP as c_int
                || c == f::AST_CONTROL_BUSY as c_int
                || c == f::AST_CONTROL_CONGESTION as c_int =>
            {
                Progress::Gone
            }
            _ => Progress::Nothing,
        }
    }

    /// Hangs up with this Q.850 cause (a CANCEL while unanswered; res_pjsip_rfc3326 adds its
    /// Reason from the cause).
    pub fn hangup(mut self, cause: i32) {
        self.cause = cause;
        drop(self);
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        // SAFETY: our reference from `request`, released exactly once here.
        unsafe { ffi::rp_shim_hangup(self.ptr.as_ptr(), self.cause) };
    }
}

/// Whether an Asterisk module (e.g. `res_pjsip_rfc3326.so`) is loaded.
pub fn module_running(name: &str) -> bool {
    let n = c_string(name);
    // SAFETY: valid string.
    unsafe { ffi::rp_shim_module_running(n.as_ptr()) != 0 }
}

/// The `aors` setting of a PJSIP endpoint, `None` when there is no such endpoint.
pub fn endpoint_aors(endpoint: &str) -> Option<Vec<String>> {
    let name = c_string(endpoint);
    let mut buf = vec![0u8; 2048];
    // SAFETY: valid strings; the shim copies at most `buf.len()` bytes, NUL-terminated.
    if unsafe { ffi::rp_shim_endpoint_aors(name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) } == 0
    {
        return None;
    }
    let text = CStr::from_bytes_until_nul(&buf)
        .ok()?
        .to_string_lossy()
        .into_owned();
    Some(
        text.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

extern "C" fn push_uri(ctx: *mut c_void, uri: *const c_char) {
    // SAFETY: `ctx` is the Vec passed by `aor_contacts`; `uri` a NUL-terminated string.
    let (list, uri) = unsafe { (&mut *(ctx as *mut Vec<String>), CStr::from_ptr(uri)) };
    list.push(uri.to_string_lossy().into_owned());
}

/// The contact URIs currently registered to an AOR.
pub fn aor_contacts(aor: &str) -> Vec<String> {
    let name = c_string(aor);
    let mut list: Vec<String> = Vec::new();
    // SAFETY: the callback only runs during this call and `list` outlives it.
    unsafe {
        ffi::rp_shim_aor_contacts(
            name.as_ptr(),
            Some(push_uri),
            &mut list as *mut Vec<String> as *mut c_void,
        )
    };
    list
}

/// Asterisk's device state of `device` (e.g. `PJSIP/alice`), as the raw enum value.
pub fn device_state(device: &str) -> i32 {
    let d = c_string(device);
    // SAFETY: valid string.
    unsafe { ffi::rp_shim_device_state(d.as_ptr()) }
}

/// Tells Asterisk that `device` may have changed state (it asks the technology again).
pub fn devstate_changed(device: &str) {
    let d = c_string(device);
    // SAFETY: valid string; passed to a "%s" format.
    unsafe { ffi::rp_shim_devstate_changed(d.as_ptr()) };
}

/// Registers the Push channel technology, the applications and their contexts.
pub fn register_wake() -> bool {
    // SAFETY: static structures in the shim, removed by `unregister_wake` before unload.
    unsafe { ffi::rp_shim_wake_register() == 0 }
}

/// Removes them.
pub fn unregister_wake() {
    // SAFETY: see `register_wake`.
    unsafe { ffi::rp_shim_wake_unregister() };
}
