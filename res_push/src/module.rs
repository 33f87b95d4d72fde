//! The module's lifecycle and running state.
//!
//! `load` builds a [`Running`] and publishes it; `unload` unpublishes it and stops everything it
//! started before returning, because Asterisk unmaps this library's code right after.

use std::sync::{Arc, RwLock};

use res_push_core::config::{PushConfig, Section};

use crate::ast::{cli, config, guard, log};
use crate::link::Link;

/// The configuration file, in Asterisk's config directory.
pub const CONFIG_FILE: &str = "push.conf";
/// This module's version, shown by `push show status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that exists while the module is loaded.
#[derive(Debug)]
pub struct Running {
    /// The link to the sidecar.
    pub link: Link,
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

pub fn load() -> Result<(), ()> {
    guard::install_panic_hook();
    log::AsteriskLogger::install();
    match start() {
        Ok(running) => {
            *RUNNING.write().unwrap_or_else(|p| p.into_inner()) = Some(running);
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
    let link =
        Link::start(config.general).map_err(|e| format!("cannot start the link thread: {e}"))?;
    let running = Arc::new(Running { link });
    if !cli::register() {
        running.link.stop();
        return Err("cannot register CLI commands".into());
    }
    Ok(running)
}

pub fn unload() {
    // CLI first: once it returns, no handler can be running or start.
    cli::unregister();
    let running = RUNNING.write().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(running) = running {
        running.link.stop();
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
            running.link.reconfigure(config.general);
            tracing::info!("{CONFIG_FILE} reloaded");
            true
        }
        Err(why) => {
            tracing::error!("{CONFIG_FILE} not reloaded, keeping the running configuration: {why}");
            false
        }
    }
}
