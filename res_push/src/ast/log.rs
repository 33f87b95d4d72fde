//! `tracing` into Asterisk's logger.
//!
//! A minimal [`tracing::Subscriber`] rather than a `tracing_subscriber` layer stack: the
//! registry keeps per-thread span stacks in thread-locals with destructors, and a destructor
//! registered on an Asterisk thread pins this library in memory so `module unload` cannot
//! complete. This subscriber keeps no per-thread state.
//!
//! Levels: ERROR → LOG_ERROR, WARN → LOG_WARNING, INFO → LOG_NOTICE, DEBUG and TRACE →
//! LOG_DEBUG (only when `core set debug` enables it, checked before any formatting). The text is
//! always passed to `ast_log` as the argument of a `"%s"` format, never as the format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

use super::c_string;
use crate::ffi;

fn ast_level(level: &Level) -> i32 {
    (match *level {
        Level::ERROR => ffi::__LOG_ERROR,
        Level::WARN => ffi::__LOG_WARNING,
        Level::INFO => ffi::__LOG_NOTICE,
        Level::DEBUG | Level::TRACE => ffi::__LOG_DEBUG,
    }) as i32
}

fn write(level: i32, file: &str, line: u32, function: &str, message: &str) {
    let (file, function, message) = (c_string(file), c_string(function), c_string(message));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call; the
    // shim passes `message` as data to a "%s" format.
    unsafe {
        ffi::rp_shim_log(
            level,
            file.as_ptr(),
            line as i32,
            function.as_ptr(),
            message.as_ptr(),
        )
    };
}

/// Logs an error directly, bypassing `tracing` (used where a subscriber may not be set, such as
/// the panic hook).
#[track_caller]
pub fn error(message: &str) {
    let loc = std::panic::Location::caller();
    write(
        ffi::__LOG_ERROR as i32,
        loc.file(),
        loc.line(),
        "res_push",
        message,
    );
}

/// The subscriber. Span ids are handed out so span macros work, but spans are not rendered:
/// events carry the fields that matter.
#[derive(Debug, Default)]
pub struct AsteriskLogger {
    next_span: AtomicU64,
}

impl AsteriskLogger {
    /// Installs the logger as the global default. Fails harmlessly when one is already set,
    /// which happens only if the library was not unmapped between two loads (then the
    /// installed one is this library's own, from the earlier load).
    pub fn install() {
        let _ = tracing::subscriber::set_global_default(AsteriskLogger::default());
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={:?}", field.name(), value);
        }
    }
}

impl Subscriber for AsteriskLogger {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // "sometimes": debug output is switched at run time with `core set debug`, so the
        // decision cannot be cached per call site.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let level = ast_level(metadata.level());
        // SAFETY: plain read of Asterisk's debug settings.
        level != ffi::__LOG_DEBUG as i32 || unsafe { ffi::rp_shim_log_enabled(level) } != 0
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        fields.message.push_str(&fields.rest);
        write(
            ast_level(meta.level()),
            meta.file().unwrap_or("res_push"),
            meta.line().unwrap_or(0),
            meta.module_path().unwrap_or("res_push"),
            &fields.message,
        );
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
