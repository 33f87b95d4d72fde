//! The REGISTER hook: decide before the registrar (reject 400/555 ourselves), then on the
//! registrar's 200 OK add Feature-Caps and hand the binding changes to the registry.
//!
//! Both callbacks run on PJSIP threads: they only parse, decide and `try_send`; persistence,
//! AMI events and contact removal happen on the registry's worker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use res_push_core::registrar::{Action, Policy, RegisterRequest, Verdict, decide};
use res_push_core::sip::parse_contact;

use crate::ast::pjsip::{Register, RxData, TxData};
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

/// Registrar state: the policy and the REGISTERs in flight.
#[derive(Debug)]
pub struct Registrar {
    policy: Mutex<Policy>,
    pending: Mutex<HashMap<(String, i32), Pending>>,
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
    /// A registrar applying `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Mutex::new(policy),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the policy (reload).
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Runs before the registrar. Returns true when we answered the request ourselves.
    pub fn on_register(&self, rdata: RxData) -> bool {
        let Some(reg) = rdata.register() else {
            return false;
        };
        let request = RegisterRequest {
            contacts: reg.contacts.clone(),
            expires: reg.expires,
            x_mpush: reg.x_mpush.clone(),
        };
        let verdict = {
            let policy = self.policy.lock().unwrap_or_else(|p| p.into_inner());
            decide(&request, &policy)
        };
        match verdict {
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
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.retain(|_, p| p.since.elapsed() < PENDING_TTL);
                pending.insert(
                    (reg.call_id, reg.cseq),
                    Pending {
                        aor,
                        feature_caps,
                        actions,
                        user_agent: reg.user_agent,
                        since: Instant::now(),
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
            .is_empty()
        {
            return;
        }
        let Some(resp) = tdata.register_response() else {
            return;
        };
        let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(resp.call_id.clone(), resp.cseq))
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
                ..
            } = a
            {
                running.wake.registered(&p.aor, params, contact_uri);
            }
        }
        let granted: Vec<(String, u32)> = resp
            .contacts
            .iter()
            .map(|c| parse_contact(c))
            .filter_map(|c| Some((c.uri.clone(), c.expires()?)))
            .collect();
        running
            .bindings
            .commit(&p.aor, p.actions, p.user_agent, &granted);
    }
}
