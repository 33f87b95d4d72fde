//! The functions Asterisk calls. Each one runs its body under [`guard`], so a panic is logged
//! and turned into the caller's failure code instead of aborting Asterisk.

use std::ffi::c_char;

use crate::ast::guard::guard;
use crate::ast::{cli, manager, pjsip};
use crate::ffi::ast_module_load_result as load_result;
use crate::{commands, module};

/// `load` of the module info.
#[unsafe(no_mangle)]
pub extern "C" fn rp_module_load() -> load_result::Type {
    guard(
        "module load",
        load_result::AST_MODULE_LOAD_DECLINE,
        || match module::load() {
            Ok(()) => load_result::AST_MODULE_LOAD_SUCCESS,
            Err(()) => load_result::AST_MODULE_LOAD_DECLINE,
        },
    )
}

/// `unload` of the module info. Returns only once every thread of ours has ended.
#[unsafe(no_mangle)]
pub extern "C" fn rp_module_unload() -> i32 {
    guard("module unload", -1, || {
        module::unload();
        0
    })
}

/// `reload` of the module info (`module reload res_push`).
#[unsafe(no_mangle)]
pub extern "C" fn rp_module_reload() -> i32 {
    guard(
        "module reload",
        -1,
        || if module::reload() { 0 } else { -1 },
    )
}

/// Fills a CLI entry's words and usage at registration.
///
/// # Safety
/// `words` and `usage` must be valid pointers to writable `const char *` slots.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_cli_describe(
    command: i32,
    words: *mut *const c_char,
    usage: *mut *const c_char,
) {
    guard("CLI registration", (), || {
        if let Some(spec) = commands::spec(command) {
            // SAFETY: per this function's contract; the strings are 'static.
            unsafe {
                *words = spec.words.as_ptr();
                *usage = spec.usage.as_ptr();
            }
        }
    })
}

/// Runs a CLI command.
///
/// # Safety
/// `argv` must hold `argc` valid C strings, as Asterisk's CLI passes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_cli_exec(
    command: i32,
    fd: i32,
    argc: i32,
    argv: *const *const c_char,
) -> i32 {
    guard("CLI command", cli::Outcome::Failure.code(), || {
        // SAFETY: per this function's contract.
        let args = unsafe { cli::args(argc, argv) };
        commands::exec(command, cli::Output::new(fd), &args).code()
    })
}

/// A REGISTER, before the registrar. Returns 1 when res_push answered it (400/555).
#[unsafe(no_mangle)]
pub extern "C" fn rp_sip_on_register(rdata: *mut crate::ffi::pjsip_rx_data) -> i32 {
    // On a panic the registrar handles the request as if res_push were not there.
    guard("REGISTER hook", 0, || {
        let Some(r) = module::running() else { return 0 };
        // SAFETY: pjsip's live request for the duration of this callback.
        let Some(rdata) = (unsafe { pjsip::RxData::from_ptr(rdata) }) else {
            return 0;
        };
        r.registrar.on_register(rdata, &r) as i32
    })
}

/// A REGISTER response about to be sent.
#[unsafe(no_mangle)]
pub extern "C" fn rp_sip_on_response(tdata: *mut crate::ffi::pjsip_tx_data) {
    guard("REGISTER response hook", (), || {
        // SAFETY: pjsip's live response for the duration of this callback.
        let tdata = unsafe { pjsip::TxData::from_ptr(tdata) };
        if let (Some(r), Some(tdata)) = (module::running(), tdata) {
            r.registrar.on_response(tdata, &r);
        }
    })
}

/// An MWI state published (stasis pool thread): queued for the MWI thread, nothing more.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_mwi_on_state(
    mailbox: *const c_char,
    new_msgs: i32,
    old_msgs: i32,
    urgent_msgs: i32,
) {
    guard("MWI callback", (), || {
        if let Some(r) = module::running() {
            // SAFETY: the shim passes the state's own string, live for this call.
            let state = unsafe { crate::ast::mwi::state(mailbox, new_msgs, old_msgs, urgent_msgs) };
            r.mwi.on_state(state);
        }
    })
}

/// An AMI action.
#[unsafe(no_mangle)]
pub extern "C" fn rp_ami_exec(
    action: i32,
    s: *mut crate::ffi::mansession,
    m: *const crate::ffi::message,
) -> i32 {
    let session = manager::Session::new(s, m);
    guard("AMI action", 0, || {
        crate::ami::exec(action, session);
        0
    })
}

/// `Push/<endpoint>` requested: fills `dest` with the Local destination; 0 on success.
///
/// # Safety
/// `endpoint` is a C string; `requestor` a live channel or NULL; `dest` points to `len`
/// writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_wake_local_destination(
    endpoint: *const c_char,
    requestor: *mut crate::ffi::ast_channel,
    dest: *mut c_char,
    len: usize,
) -> i32 {
    guard("Push channel request", -1, || {
        // SAFETY: per this function's contract.
        let endpoint = unsafe { std::ffi::CStr::from_ptr(endpoint) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: the requesting channel, alive for the request; NULL for originates.
        let requestor = unsafe { crate::ast::channel::Chan::from_ptr(requestor) };
        let running = module::running();
        match crate::wake::local_destination(running.as_deref(), &endpoint, requestor) {
            Some(d) if d.len() < len => {
                // SAFETY: `dest` has room for `len` bytes; we write d.len() + 1 < len + 1.
                unsafe {
                    std::ptr::copy_nonoverlapping(d.as_ptr(), dest.cast(), d.len());
                    *dest.add(d.len()) = 0;
                }
                0
            }
            _ => {
                tracing::warn!("Push/{endpoint}: no such PJSIP endpoint");
                -1
            }
        }
    })
}

/// Device state of `Push/<endpoint>`.
///
/// # Safety
/// `endpoint` is a C string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_wake_devicestate(endpoint: *const c_char) -> i32 {
    guard("Push device state", 0, || {
        // SAFETY: per this function's contract.
        let endpoint = unsafe { std::ffi::CStr::from_ptr(endpoint) }
            .to_string_lossy()
            .into_owned();
        module::running().map_or(0, |r| crate::wake::devicestate(&r, &endpoint))
    })
}

/// The wake-up applications.
///
/// # Safety
/// `chan` is the live channel running the application; `data` a C string or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_wake_app(
    app: i32,
    chan: *mut crate::ffi::ast_channel,
    data: *const c_char,
) -> i32 {
    guard("wake-up application", -1, || {
        let data = if data.is_null() {
            String::new()
        } else {
            // SAFETY: per this function's contract.
            unsafe { std::ffi::CStr::from_ptr(data) }
                .to_string_lossy()
                .into_owned()
        };
        let Some(r) = module::running() else {
            return -1;
        };
        // SAFETY: the live channel running this application, for the duration of the call.
        let Some(chan) = (unsafe { crate::ast::channel::Chan::from_ptr(chan) }) else {
            return -1;
        };
        match app as u32 {
            crate::ffi::rp_wake_app::RP_APP_PUSH_DIAL => crate::wake::push_dial(&r, chan, &data),
            crate::ffi::rp_wake_app::RP_APP_PUSH_DEVICE => {
                crate::wake::push_device(&r, chan, &data)
            }
            crate::ffi::rp_wake_app::RP_APP_PUSH_WAKE => crate::wake::push_wake(&r, chan, &data),
            _ => -1,
        }
    })
}

/// An initial INVITE about to be sent to a contact. Returns 1 when it wrote a Request-URI
/// without push parameters into `out`.
///
/// # Safety
/// `chan` is the session's channel or NULL; the strings are C strings; `out` points to `len`
/// writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_sip_on_invite(
    chan: *mut crate::ffi::ast_channel,
    uri: *const c_char,
    call_id: *const c_char,
    out: *mut c_char,
    len: usize,
) -> i32 {
    guard("INVITE hook", 0, || {
        let Some(r) = module::running() else { return 0 };
        // SAFETY: per this function's contract.
        let (uri, call_id) = unsafe {
            (
                std::ffi::CStr::from_ptr(uri).to_string_lossy().into_owned(),
                std::ffi::CStr::from_ptr(call_id)
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        // SAFETY: the session's channel, alive while its INVITE is being sent.
        let chan = unsafe { crate::ast::channel::Chan::from_ptr(chan) };
        match crate::wake::outgoing_invite(&r, chan, &uri, &call_id) {
            Some(new) if new.len() < len => {
                // SAFETY: `out` has room for `len` bytes; we write new.len() + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(new.as_ptr(), out.cast(), new.len());
                    *out.add(new.len()) = 0;
                }
                1
            }
            _ => 0,
        }
    })
}

/// A provisional response to an initial INVITE (late wake-ups cancel theirs at once).
///
/// # Safety
/// `chan` is the session's channel, alive during the callback, or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_sip_on_provisional(chan: *mut crate::ffi::ast_channel) {
    guard("INVITE response hook", (), || {
        // SAFETY: per this function's contract.
        let chan = unsafe { crate::ast::channel::Chan::from_ptr(chan) };
        if let (Some(r), Some(chan)) = (module::running(), chan) {
            r.wake.provisional(chan);
        }
    })
}

/// A CANCEL about to leave. Returns 1 when it wrote a Reason header value into `out`.
///
/// # Safety
/// `chan` is the session's channel or NULL; `out` points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_sip_on_cancel(
    chan: *mut crate::ffi::ast_channel,
    out: *mut c_char,
    len: usize,
) -> i32 {
    guard("CANCEL hook", 0, || {
        // SAFETY: per this function's contract.
        let chan = unsafe { crate::ast::channel::Chan::from_ptr(chan) };
        let (Some(r), Some(chan)) = (module::running(), chan) else {
            return 0;
        };
        match r.wake.cancel_reason(chan) {
            Some(reason) if reason.len() < len => {
                // SAFETY: `out` has room for `len` bytes; we write reason.len() + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(reason.as_ptr(), out.cast(), reason.len());
                    *out.add(reason.len()) = 0;
                }
                1
            }
            _ => 0,
        }
    })
}

/// The `push` message technology's `msg_send`: 0 when the message was delivered or queued.
///
/// # Safety
/// `msg` is the live message Asterisk holds locked for this call; `to` and `from` C strings
/// or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_msg_send(
    msg: *const crate::ffi::ast_msg,
    to: *const c_char,
    from: *const c_char,
) -> i32 {
    guard("MessageSend(push:...)", -1, || {
        let text = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: per this function's contract.
                unsafe { std::ffi::CStr::from_ptr(p) }
                    .to_string_lossy()
                    .into_owned()
            }
        };
        let (to, from) = (text(to), text(from));
        // SAFETY: per this function's contract.
        let Some(msg) = (unsafe { crate::ast::message::Msg::from_ptr(msg) }) else {
            return -1;
        };
        let Some(r) = module::running() else {
            return -1;
        };
        if r.messages.send(&r, msg, &to, &from).accepted() {
            0
        } else {
            -1
        }
    })
}

/// `PUSH_MESSAGE_STATUS()`: writes this thread's last `MessageSend(push:...)` outcome.
///
/// # Safety
/// `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rp_msg_status(buf: *mut c_char, len: usize) -> i32 {
    guard("PUSH_MESSAGE_STATUS()", -1, || {
        let s = crate::messages::last_status();
        if len == 0 || buf.is_null() {
            return -1;
        }
        let n = s.len().min(len - 1);
        // SAFETY: `buf` has room for `len` bytes; we write n + 1 <= len.
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast(), n);
            *buf.add(n) = 0;
        }
        0
    })
}
