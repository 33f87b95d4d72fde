//! The module's lifecycle and running state.
//!
//! `load` builds a [`Running`] and publishes it; `unload` unpublishes it and stops everything it
//! started before returning, because Asterisk unmaps this library's code right after.

use std::sync::{Arc, RwLock};

use res_push_core::config::{General, PushConfig, Section};

use crate::ast::sync::Snapshot;
use crate::ast::{channel, cli, config, guard, identity, log, manager, message, pjsip};
use crate::bindings::Bindings;
use crate::link::Link;
use crate::messages::Messages;
use crate::mwi::{self, Mwi};
use crate::registrar::Registrar;
use crate::wake::Wake;

/// The configuration file, in Asterisk's config directory.
pub const CONFIG_FILE: &str = "push.conf";
/// This module's version, shown by `push show status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that exists while the module is loaded.
#[derive(Debug)]
pub struct Running {
    /// The link to the sidecar.
    pub link: Arc<Link>,
    /// Push bindings.
    pub bindings: Arc<Bindings>,
    /// The REGISTER hook's state.
    pub registrar: Registrar,
    /// Calls waiting for devices to wake.
    pub wake: Wake,
    /// Messages waiting for devices to wake.
    pub messages: Arc<Messages>,
    /// Voicemail pushes.
    pub mwi: Mwi,
    /// The one `[general]` snapshot every reader uses; reload swaps it whole.
    general: Snapshot<General>,
}

impl Running {
    /// The `[general]` settings in force: an immutable snapshot, taken without a lock (PJSIP
    /// threads read it on every REGISTER and INVITE).
    pub fn general(&self) -> &General {
        self.general.get()
    }
}

/// Published state. Readers (CLI handlers, later the SIP hooks) take a clone of the `Arc` and
/// release the lock at once; `unload` is the only long writer and it holds the lock only to
/// take the value out.
static RUNNING: RwLock<Option<Arc<Running>>> = RwLock::new(None);

/// The running module, if loaded.
pub fn running() -> Option<Arc<Running>> {
    RUNNING.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Reads and validates push.conf. `Ok(None)`: unchanged since the last load (reload only).
fn read_config(only_if_changed: bool) -> Result<Option<PushConfig>, String> {
    let sections: Vec<Section> =
        match config::load(CONFIG_FILE, only_if_changed).map_err(|e| e.to_string())? {
            config::Loaded::Sections(s) => s,
            config::Loaded::Unchanged => return Ok(None),
            config::Loaded::Missing => {
                tracing::info!("{CONFIG_FILE} not found; using defaults");
                Vec::new()
            }
        };
    let parsed = PushConfig::from_sections(&sections).map_err(|e| e.to_string())?;
    for w in &parsed.warnings {
        tracing::warn!("{w}");
    }
    Ok(Some(parsed.config))
}

/// The identity check: nothing that touches pjproject structs may run in an Asterisk (or a
/// pjproject) other than the one whose headers the module was compiled against.
fn check_identity() -> Result<(), String> {
    let running = identity::running_in();
    let Some(built) = identity::built_for() else {
        return Err(format!(
            "its record of the Asterisk it was built for is unreadable (running in {running}): declining to load"
        ));
    };
    res_push_core::identity::check(&built, &running).map_err(|m| m.to_string())
}

pub fn load() -> Result<(), ()> {
    guard::install_panic_hook();
    log::AsteriskLogger::install();
    match check_identity().and_then(|()| start()) {
        Ok(_) => {
            tracing::info!("res_push {VERSION} loaded");
            Ok(())
        }
        Err(why) => {
            tracing::error!("res_push not loaded: {why}");
            guard::remove_panic_hook();
            Err(())
        }
    }
}

fn start() -> Result<Arc<Running>, String> {
    let config = read_config(false)?.unwrap_or_default();
    let general = config.general;
    let link = Arc::new(
        Link::start(general.clone(), config.apps)
            .map_err(|e| format!("cannot start the link thread: {e}"))?,
    );
    let bindings = match Bindings::start(&general, link.clone()) {
        Ok(b) => b,
        Err(e) => {
            link.stop();
            return Err(e);
        }
    };
    let messages = match Messages::start(general.message_max_age) {
        Ok(m) => m,
        Err(e) => {
            bindings.stop();
            link.stop();
            return Err(format!("cannot start the message worker: {e}"));
        }
    };
    let mwi = match Mwi::start() {
        Ok(m) => m,
        Err(e) => {
            messages.stop();
            bindings.stop();
            link.stop();
            return Err(format!("cannot start the MWI thread: {e}"));
        }
    };
    let running = Arc::new(Running {
        link,
        bindings,
        messages,
        registrar: Registrar::default(),
        wake: Wake::default(),
        mwi,
        general: Snapshot::new(general),
    });
    // Published before the hooks exist: a REGISTER may arrive the moment they are installed.
    *RUNNING.write().unwrap_or_else(|p| p.into_inner()) = Some(running.clone());
    type Install = fn() -> bool;
    let hooks: [(Install, &str); 6] = [
        (pjsip::register_hooks, "REGISTER hooks"),
        (
            channel::register_wake,
            "the Push channel technology and applications",
        ),
        (cli::register, "CLI commands"),
        (manager::register, "AMI actions"),
        (
            message::register,
            "the push message technology and PUSH_MESSAGE_STATUS()",
        ),
        (mwi::subscribe, "the MWI subscription"),
    ];
    for (install, what) in hooks {
        if !install() {
            stop(&running);
            return Err(format!("cannot register {what}"));
        }
    }
    Ok(running)
}

/// Removes every hook, then stops the threads. Hooks first: once they are gone nothing can
/// enter the module from Asterisk, so the threads can be joined safely.
fn stop(running: &Running) {
    mwi::unsubscribe();
    message::unregister();
    // A stale outcome must not outlive the technology that produced it.
    message::set_global("PUSH_MESSAGE_STATUS", "");
    manager::unregister();
    cli::unregister();
    channel::unregister_wake();
    pjsip::unregister_hooks();
    RUNNING.write().unwrap_or_else(|p| p.into_inner()).take();
    running.mwi.stop();
    running.wake.stop();
    running.messages.stop();
    running.bindings.stop();
    running.link.stop();
}

pub fn unload() {
    if let Some(running) = running() {
        stop(&running);
    }
    tracing::info!("res_push unloaded");
    guard::remove_panic_hook();
}

/// Re-reads push.conf; on an invalid file keeps the running configuration.
pub fn reload() -> bool {
    let Some(running) = running() else {
        return false;
    };
    match read_config(true) {
        Ok(None) => {
            tracing::debug!("{CONFIG_FILE} unchanged");
            true
        }
        Ok(Some(config)) => {
            let g = config.general;
            running.link.reconfigure(g.clone());
            running.link.set_apps(config.apps);
            running.bindings.reconfigure(&g);
            running.general.replace(g);
            tracing::info!("{CONFIG_FILE} reloaded");
            true
        }
        Err(why) => {
            tracing::error!("{CONFIG_FILE} not reloaded, keeping the running configuration: {why}");
            false
        }
    }
}
