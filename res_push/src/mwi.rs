//! Voicemail notifications: Asterisk's MWI state in, one alert push per change out, to the
//! push devices of every endpoint (or AOR) whose `mailboxes` lists the mailbox.
//!
//! The stasis callback only queues the state (`try_send`); the MWI thread decides
//! ([`res_push_core::mwi::Tracker`]), reads the PJSIP configuration through sorcery (which may
//! be a database) and submits the pushes, so neither stasis nor any SIP thread waits on I/O.

use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use res_push_core::binding::{Binding, redact};
use res_push_core::mwi::{self, Decision, State, Tracker};
use res_push_proto::{Job, Outcome, VoicemailPush};

use crate::ast::thread::{self, Thread};
use crate::bindings::{Work, target};
use crate::link::LinkError;
use crate::module::{self, Running};

/// States waiting for the MWI thread. MWI changes are rare; a burst beyond this (a mass
/// mailbox import) loses pushes, never blocks stasis.
const QUEUE: usize = 1024;

enum Msg {
    /// Counts already in force at load: remembered, not pushed.
    Seed(State),
    /// A change published now.
    State(State),
}

/// The MWI thread and its queue.
#[derive(Debug)]
pub struct Mwi {
    tx: Mutex<Option<Sender<Msg>>>,
    thread: Mutex<Option<Thread>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Mwi {
    /// Starts the MWI thread (the subscription comes later, with the other hooks).
    pub fn start() -> std::io::Result<Mwi> {
        let (tx, rx) = bounded(QUEUE);
        let t = thread::spawn(c"res_push mwi", move || run(&rx))?;
        Ok(Mwi {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(t)),
        })
    }

    /// A state from stasis: queued, never waited for.
    pub fn on_state(&self, state: State) {
        self.send(Msg::State(state));
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = lock(&self.tx).as_ref() {
            match tx.try_send(msg) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(Msg::State(s) | Msg::Seed(s))) => {
                    tracing::warn!("MWI queue full; no voicemail push for {}", s.mailbox);
                }
            }
        }
    }

    /// Stops the thread (after `unsubscribe`: nothing queues any more).
    pub fn stop(&self) {
        drop(lock(&self.tx).take());
        if let Some(t) = lock(&self.thread).take() {
            t.join();
        }
    }
}

/// Subscribes to MWI and remembers the counts already in force (so a load or reload does not
/// alert about old messages). A change published between the two is seen twice, and
/// deduplicated.
pub fn subscribe() -> bool {
    if !crate::ast::mwi::subscribe() {
        return false;
    }
    if let Some(r) = module::running() {
        for s in crate::ast::mwi::cached() {
            r.mwi.send(Msg::Seed(s));
        }
    }
    true
}

/// Unsubscribes; returns once no stasis callback of ours runs.
pub fn unsubscribe() {
    crate::ast::mwi::unsubscribe();
}

fn run(rx: &Receiver<Msg>) {
    let mut tracker = Tracker::new();
    for msg in rx {
        match msg {
            Msg::Seed(s) => tracker.seed(&s),
            Msg::State(s) => {
                let decision = tracker.observe(&s);
                if decision == Decision::default() {
                    continue;
                }
                if let Some(r) = module::running() {
                    notify(&r, &s, decision);
                }
            }
        }
    }
}

/// Pushes the devices that hear about this mailbox.
fn notify(r: &Arc<Running>, s: &State, decision: Decision) {
    let general = r.general();
    if !general.mwi_push {
        tracing::info!(
            "mailbox {}: {} new, {} old; voicemail pushes are off (mwi_push = no)",
            s.mailbox,
            s.counts.new,
            s.counts.old
        );
        return;
    }
    let background = general.mwi_background_push;
    let aors = mwi::aors_for(&s.mailbox, &crate::ast::mwi::mailbox_owners());
    let devices = mwi::devices(aors.iter().flat_map(|a| r.bindings.list(Some(a))));
    tracing::info!(
        "mailbox {}: {} new, {} old; {} device(s) of {} to notify",
        s.mailbox,
        s.counts.new,
        s.counts.old,
        devices.len(),
        if aors.is_empty() {
            "no endpoint".to_string()
        } else {
            aors.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    // The background push first and never collapsed with the alert: APNs keeps one pending
    // notification per app for an offline phone, and the alert is the one the user must see.
    for b in devices {
        if mwi::wants_background(b.provider, background, decision) {
            submit(r, &b, s, true);
        }
        if decision.alert {
            submit(r, &b, s, false);
        }
    }
}

fn submit(r: &Running, b: &Binding, s: &State, background: bool) {
    let job = Job::Voicemail(VoicemailPush {
        // Never a VoIP push: the alert token when the device has one (any kind but a call).
        target: target(b, res_push_proto::PushKind::Message),
        mailbox: s.mailbox.clone(),
        new_messages: s.counts.new,
        old_messages: s.counts.old,
        urgent_messages: s.counts.urgent,
        endpoint: Some(b.aor.clone()),
        collapse_id: if background {
            String::new()
        } else {
            mwi::collapse_id(&s.mailbox)
        },
        background,
    });
    let what = if background {
        "background voicemail push"
    } else {
        "voicemail push"
    };
    let bindings = r.bindings.clone();
    let (aor, id, provider, token) = (b.aor.clone(), b.id.clone(), b.provider, b.token.clone());
    let done = Box::new(move |result: Result<Outcome, LinkError>| {
        bindings.push_result(&aor, &id, &result);
        match result {
            Ok(Outcome::Sent { .. }) => {
                tracing::debug!("{aor}: {what} sent to binding {id}");
            }
            Ok(Outcome::InvalidToken { reason }) => {
                tracing::info!(
                    "{aor}: token {} reported dead ({reason}); removing binding",
                    redact(&token)
                );
                bindings.submit(Work::InvalidToken(provider, token));
            }
            Ok(other) => tracing::warn!("{aor}: {what} to binding {id} not sent: {other:?}"),
            Err(e) => tracing::warn!("{aor}: {what} to binding {id} not sent: {e}"),
        }
    });
    if let Err(e) = r.link.submit(job, None, done) {
        tracing::warn!("{}: {what} to binding {} not queued: {e}", b.aor, b.id);
    }
}
