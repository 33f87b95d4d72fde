//! The REGISTER hook: decide before the registrar (reject 400/555 ourselves, and make room for
//! a device that moved), then on the registrar's 200 OK add Feature-Caps and hand the binding
//! changes to the registry.
//!
//! Both callbacks run on PJSIP threads: they only parse, decide and `try_send`; persistence,
//! AMI events and the removal of contacts the registrar itself would keep happen on the
//! registry's worker. The one exception is a device back from a new address: its stale
//! contacts are removed here, before the registrar counts contacts against `max_contacts`
//! (the same sorcery calls the registrar makes on this thread right after).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use res_push_core::binding::redact_uri;
use res_push_core::pn::{Request, from_contact, may_concern};
use res_push_core::registrar::{Action, RegisterRequest, Verdict, decide};
use res_push_core::sip::{contact_expires, parse_contact};

use crate::ast::channel;
use crate::ast::pjsip::{self, Register, RxData, TxData};
use crate::module::Running;

/// A REGISTER we accepted, waiting for the registrar's answer.
#[derive(Debug)]
struct Pending {
    aor: String,
    feature_caps: Option<String>,
    actions: Vec<Action>,
    user_agent: Option<String>,
    since: Instant,
}

/// Entries older than this lost their response (e.g. answered statelessly by someone else).
const PENDING_TTL: Duration = Duration::from_secs(32);

/// The REGISTERs in flight (the policy is read from the running `[general]` snapshot).
#[derive(Debug, Default)]
pub struct Registrar {
    pending: Mutex<InFlight>,
}

#[derive(Debug, Default)]
struct InFlight {
    by_request: HashMap<(String, i32), Pending>,
    /// When `by_request` was last swept of entries whose response never came.
    swept: Option<Instant>,
}

/// The AOR the registrar will use: the To user (or user@host) when the endpoint serves it.
fn resolve_aor(r: &Register) -> Option<String> {
    let user = r.to_user.as_deref().filter(|u| !u.is_empty())?;
    let aors: Vec<&str> = r
        .endpoint_aors
        .as_deref()?
        .split(',')
        .map(str::trim)
        .collect();
    let full = r.to_host.as_deref().map(|h| format!("{user}@{h}"));
    if let Some(full) = full.filter(|f| aors.contains(&f.as_str())) {
        return Some(full);
    }
    aors.contains(&user).then(|| user.to_string())
}

impl Registrar {
    /// Runs before the registrar. Returns true when we answered the request ourselves.
    pub fn on_register(&self, rdata: RxData, running: &Running) -> bool {
        // Desk phones: judged on the raw bytes, nothing copied out.
        if rdata.raw().is_some_and(|raw| !may_concern(raw)) {
            return false;
        }
        let Some(mut reg) = rdata.register() else {
            return false;
        };
        let general = running.general();
        // Moved, not copied: `reg` keeps what the answer needs (AOR, source, endpoint).
        let request = RegisterRequest {
            contacts: std::mem::take(&mut reg.contacts),
            expires: reg.expires,
            x_mpush: reg.x_mpush.take(),
        };
        match decide(&request, &general.policy) {
            Verdict::Ignore => false,
            Verdict::Reject { status, reason } => {
                tracing::info!(
                    "REGISTER from {} ({}) refused with {status}: {reason}",
                    reg.source,
                    reg.endpoint.as_deref().unwrap_or("unidentified")
                );
                rdata.respond(status, &reason);
                true
            }
            Verdict::Accept {
                feature_caps,
                actions,
            } => {
                let Some(aor) = resolve_aor(&reg) else {
                    // The registrar will refuse it (unknown AOR); nothing of ours to keep.
                    return false;
                };
                make_room(running, &aor, &actions);
                let now = Instant::now();
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                // Entries whose response never came, swept at most once per TTL rather than
                // scanned on every REGISTER.
                if pending
                    .swept
                    .is_none_or(|at| now.duration_since(at) >= PENDING_TTL)
                {
                    pending
                        .by_request
                        .retain(|_, p| now.duration_since(p.since) < PENDING_TTL);
                    pending.swept = Some(now);
                }
                pending.by_request.insert(
                    (std::mem::take(&mut reg.call_id), reg.cseq),
                    Pending {
                        aor,
                        feature_caps,
                        actions,
                        user_agent: reg.user_agent.take(),
                        since: now,
                    },
                );
                false
            }
        }
    }

    /// Runs on each REGISTER response about to be sent.
    pub fn on_response(&self, tdata: TxData, running: &Running) {
        // Every REGISTER response passes here; with nothing pending there is nothing to do,
        // and no reason to copy the response out.
        if self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_request
            .is_empty()
        {
            return;
        }
        let Some(mut resp) = tdata.register_response() else {
            return;
        };
        let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_request
            .remove(&(std::mem::take(&mut resp.call_id), resp.cseq))
        else {
            return;
        };
        if resp.status != 200 {
            return;
        }
        if let Some(caps) = &p.feature_caps {
            tdata.add_header("Feature-Caps", caps);
        }
        if p.actions.is_empty() {
            return;
        }
        // Calls waiting for these devices ring them now, not after the registry's bookkeeping.
        for a in &p.actions {
            if let Action::Bind {
                params,
                contact_uri,
                instance,
                ..
            } = a
            {
                running.wake.registered(
                    running.general(),
                    &p.aor,
                    params,
                    contact_uri,
                    instance.as_deref(),
                );
                running.messages.registered(&p.aor, params, contact_uri);
            }
        }
        let granted: Vec<(&str, u32)> = resp
            .contacts
            .iter()
            .filter_map(|c| match contact_expires(c)? {
                (uri, Some(expires)) => Some((uri, expires)),
                _ => None,
            })
            .collect();
        running
            .bindings
            .commit(&p.aor, p.actions, p.user_agent, &granted);
    }
}

/// A device binding from a new address: remove its other contacts (same push parameters,
/// another URI) now, so the registrar does not count them against `max_contacts` and refuse
/// the woken phone with 403 when `remove_existing = no`. Only the AOR's contacts are listed,
/// and only when the registry knows the device at another contact or not at all: a plain
/// refresh from the same contact costs nothing here.
fn make_room(running: &Running, aor: &str, actions: &[Action]) {
    let moved: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Bind {
                params,
                contact_uri,
                ..
            } => Some((params, contact_uri)),
            _ => None,
        })
        .filter(|(params, uri)| !running.bindings.is_at(aor, params, uri))
        .collect();
    if moved.is_empty() {
        return;
    }
    let rules = &running.general().policy.rules;
    for existing in channel::aor_contacts(aor) {
        let Request::Bind(theirs) = from_contact(&parse_contact(&format!("<{existing}>")), rules)
        else {
            continue;
        };
        let same_device = moved.iter().any(|(params, uri)| {
            **uri != existing
                && theirs.provider == params.provider
                && theirs.app_id == params.app_id
                && theirs.token == params.token
        });
        if same_device && pjsip::delete_contact(aor, &existing) {
            tracing::info!(
                "{aor}: device registering from a new contact; stale contact {} removed before the registrar counts contacts",
                redact_uri(&existing)
            );
        }
    }
}
