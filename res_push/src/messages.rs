//! Messages to sleeping phones: the `push` message technology (`MessageSend(push:<endpoint>)`).
//!
//! The technology's `msg_send` runs on the thread running `MessageSend` (a dialplan thread of
//! Asterisk's message core, or the AMI's): it decides ([`res_push_core::message::plan`]) and
//! updates the in-memory queue under a lock, queues alert pushes to the sidecar, and hands
//! everything that needs I/O — astdb, handing messages to pjsip — to the worker thread here.
//! The REGISTER hook tells [`Messages::registered`] when a device is reachable again; the worker
//! then delivers its messages, in order, each taken off the queue before it is handed to SIP.

use std::cell::Cell;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use res_push_core::binding::{Binding, binding_id, redact, redact_uri};
use res_push_core::message::{self, Device, Incoming, Queued, Queues, Status};
use res_push_core::pn::{PushParams, strip_push_params};
use res_push_proto::{Job, Outcome, PushKind, PushRequest};

use crate::ast::message::{Msg, OutMsg};
use crate::ast::thread::{self, Thread};
use crate::ast::{astdb, channel, manager};
use crate::bindings::{self, Work as BindingWork, now, target};
use crate::module::Running;
use crate::push::uuid_v4;

const DB_FAMILY: &str = "res_push";
const DB_TREE: &str = "msg";
/// How often queues are swept of expired messages (delivery drops them too).
const SWEEP: Duration = Duration::from_secs(10);
/// A registering device gets its messages this long after the registrar's 200 OK: the phone's
/// SIP stack then has the answer to its REGISTER before the first MESSAGE arrives.
const AFTER_REGISTER: Duration = Duration::from_millis(300);

thread_local! {
    /// The outcome of this thread's last `MessageSend(push:...)`: `msg_send` cannot reach the
    /// channel, but `PUSH_MESSAGE_STATUS()` runs on the same thread right after.
    static LAST_STATUS: Cell<Option<Status>> = const { Cell::new(None) };
}

/// `PUSH_MESSAGE_STATUS()`: the last outcome on this thread, or empty.
pub fn last_status() -> &'static str {
    LAST_STATUS.with(|s| s.get()).map_or("", Status::as_str)
}

/// Work for the worker thread.
#[derive(Debug)]
enum Work {
    /// Make astdb say what memory says of message `seq` of `aor`: stored as it stands, or
    /// removed when it left the queue. Order-independent, so a store that arrives after the
    /// message was delivered cannot bring it back at the next start.
    Sync { aor: String, seq: u64 },
    /// Hand a message to pjsip for one contact now.
    Send { m: Queued, contact: String },
    /// A device is reachable at `contact`: deliver its queued messages from `at` on.
    Flush {
        aor: String,
        device: String,
        contact: String,
        at: Instant,
    },
}

/// The message queues and their worker.
#[derive(Debug)]
pub struct Messages {
    queues: Mutex<Queues>,
    work: Sender<Work>,
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<Thread>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn key(m: &Queued) -> String {
    key_of(&m.aor, m.seq)
}

fn key_of(aor: &str, seq: u64) -> String {
    format!("{DB_TREE}/{aor}/{seq:012}")
}

impl Messages {
    /// Restores the stored queues (dropping what expired meanwhile) and starts the worker.
    pub fn start(max_age: Duration) -> std::io::Result<Arc<Messages>> {
        let mut stored = Vec::new();
        for (k, value) in astdb::tree(DB_FAMILY, DB_TREE) {
            match serde_json::from_str::<Queued>(&value) {
                Ok(m) => stored.push(m),
                Err(e) => {
                    tracing::warn!("dropping unreadable stored message {k}: {e}");
                    let k = k
                        .trim_start_matches('/')
                        .trim_start_matches(DB_FAMILY)
                        .trim_start_matches('/');
                    astdb::del(DB_FAMILY, k);
                }
            }
        }
        let mut queues = Queues::restore(stored);
        for m in queues.expire(now(), max_age.as_secs()) {
            expired(&m);
            astdb::del(DB_FAMILY, &key(&m));
        }
        if !queues.is_empty() {
            tracing::info!("restored {} queued message(s)", queues.total());
        }
        let (work, work_rx) = bounded(4096);
        let (stop, stop_rx) = bounded::<()>(0);
        let m = Arc::new(Messages {
            queues: Mutex::new(queues),
            work,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(None),
        });
        let worker = m.clone();
        let t = thread::spawn(c"res_push msgs", move || worker.run(&work_rx, &stop_rx))?;
        *lock(&m.thread) = Some(t);
        Ok(m)
    }

    /// Stops the worker; what it was given is done first (stored, delivered).
    pub fn stop(&self) {
        drop(lock(&self.stop).take());
        if let Some(t) = lock(&self.thread).take() {
            t.join();
        }
    }

    fn submit(&self, w: Work) -> bool {
        match self.work.try_send(w) {
            Ok(()) => true,
            Err(TrySendError::Full(w)) => {
                tracing::error!("message worker queue full, dropped {w:?}");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Copies of the queue of `aor`, or of every queue.
    pub fn list(&self, aor: Option<&str>) -> Vec<Queued> {
        lock(&self.queues).list(aor).into_iter().cloned().collect()
    }

    /// Operator removal of an AOR's queue; how many went.
    pub fn clear(&self, aor: &str) -> usize {
        let gone = lock(&self.queues).clear(aor);
        let n = gone.len();
        for m in gone {
            self.submit(sync(&m));
        }
        n
    }

    /// The `push` technology's `msg_send`: `MessageSend(push:<endpoint>[,from])`.
    pub fn send(&self, running: &Running, msg: Msg, to: &str, from: &str) -> Status {
        let status = self.decide(running, msg, to, from);
        LAST_STATUS.with(|s| s.set(Some(status)));
        // The message channel is out of reach (not even in Asterisk's channel list), so the
        // variable form is a global: the latest outcome anywhere, for dialplans that read
        // `${PUSH_MESSAGE_STATUS}` right after MessageSend; the function is the exact one.
        crate::ast::message::set_global("PUSH_MESSAGE_STATUS", status.as_str());
        status
    }

    fn decide(&self, running: &Running, msg: Msg, to: &str, from: &str) -> Status {
        let Some(endpoint) = message::endpoint_of(to) else {
            tracing::warn!("MessageSend({to}): not a push:<endpoint> destination");
            return Status::Invalid;
        };
        let Some(aors) = channel::endpoint_aors(endpoint) else {
            tracing::warn!("MessageSend({to}): no PJSIP endpoint '{endpoint}'");
            return Status::Invalid;
        };
        let Some(aor) = aors.first().cloned() else {
            tracing::warn!("MessageSend({to}): endpoint '{endpoint}' has no AOR");
            return Status::NoDevice;
        };
        let general = running.general();
        let now = now();
        let devices: Vec<Binding> = aors
            .iter()
            .flat_map(|a| running.bindings.list(Some(a)))
            .collect();
        let contacts: Vec<String> = aors.iter().flat_map(|a| channel::aor_contacts(a)).collect();
        let plain: Vec<String> = contacts
            .iter()
            .filter(|c| !devices.iter().any(|b| b.contact_uri == **c))
            .cloned()
            .collect();
        let skip = general.push_skip_recent.as_secs();
        let planned: Vec<Device> = devices
            .iter()
            .map(|b| {
                let live = b.expires_at > now && contacts.contains(&b.contact_uri);
                let recent = skip > 0 && now.saturating_sub(b.last_register) < skip;
                Device {
                    id: b.id.clone(),
                    awake_contact: (live && (general.message_live_contact || recent))
                        .then(|| b.contact_uri.clone()),
                }
            })
            .collect();
        let from = if from.is_empty() {
            msg.from()
        } else {
            from.to_string()
        };
        let incoming = Incoming {
            aor: aor.clone(),
            endpoint: endpoint.to_string(),
            from,
            to: msg.to(),
            body: msg.body(),
            vars: msg.outbound_vars(),
        };
        // Decided and queued under one lock: two messages racing keep their order.
        let mut queues = lock(&self.queues);
        let room = queues.len(&aor) < general.message_queue_max;
        let plan = message::plan(&plain, &planned, |d| queues.has_for(d), room);
        let queued = if plan.queue_for.is_empty() {
            None
        } else {
            match queues.enqueue(
                incoming.clone(),
                plan.queue_for.clone(),
                now,
                general.message_queue_max,
            ) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::warn!("{aor}: {e}");
                    None
                }
            }
        };
        drop(queues);
        if let Some(q) = &queued {
            self.submit(sync(q));
        }
        let carrier = Queued {
            seq: 0,
            aor: aor.clone(),
            endpoint: incoming.endpoint.clone(),
            from: incoming.from.clone(),
            to: incoming.to.clone(),
            body: incoming.body.clone(),
            vars: incoming.vars.clone(),
            created: now,
            devices: Vec::new(),
        };
        for contact in &plan.now {
            self.submit(Work::Send {
                m: carrier.clone(),
                contact: contact.clone(),
            });
        }
        for (device, contact) in &plan.flush {
            self.submit(Work::Flush {
                aor: aor.clone(),
                device: device.clone(),
                contact: contact.clone(),
                at: Instant::now(),
            });
        }
        if let Some(q) = queued {
            let uuid = uuid_v4();
            let awake: Vec<&String> = plan.flush.iter().map(|(d, _)| d).collect();
            for b in devices
                .iter()
                .filter(|b| q.devices.contains(&b.id) && !awake.contains(&&b.id))
            {
                alert(running, b, &q, &uuid);
            }
            manager::event(
                "PushMessageQueued",
                &[
                    ("Endpoint", q.endpoint.clone()),
                    ("AOR", q.aor.clone()),
                    ("Seq", q.seq.to_string()),
                    ("Devices", q.devices.join(",")),
                ],
            );
            tracing::info!(
                "{aor}: message {} from {} queued for {} device(s)",
                q.seq,
                q.from,
                q.devices.len()
            );
        }
        match plan.status {
            Status::Full => tracing::warn!(
                "{aor}: message from {} refused: {} messages already queued (message_queue_max)",
                incoming.from,
                general.message_queue_max
            ),
            Status::Delivered if !room && planned.iter().any(|d| d.awake_contact.is_none()) => {
                tracing::warn!(
                    "{aor}: message from {} delivered to the reachable contacts only: {} messages already queued (message_queue_max), the sleeping devices will not get it",
                    incoming.from,
                    general.message_queue_max
                )
            }
            Status::NoDevice => tracing::info!(
                "{aor}: message from {} refused: no contact and no push device",
                incoming.from
            ),
            _ => {}
        }
        plan.status
    }

    /// A binding was removed: its device stops holding queued messages (a dead token or a
    /// logged-out app would otherwise keep them, and their AOR's room, until they expire).
    pub fn binding_removed(&self, id: &str, reason: &str) {
        let (updated, removed) = lock(&self.queues).forget(id);
        for m in updated {
            self.submit(sync(&m));
        }
        for m in removed {
            tracing::info!(
                "{}: message {} from {} dropped: its last device's binding was removed ({reason})",
                m.aor,
                m.seq,
                m.from
            );
            self.submit(sync(&m));
        }
    }

    /// The registrar accepted a REGISTER of this device of `aor` from `contact` (PJSIP
    /// thread): only a lookup and a `try_send`.
    pub fn registered(&self, aor: &str, params: &PushParams, contact: &str) {
        // Every REGISTER with push parameters passes here; with no message queued for anyone
        // (the usual case) there is no id to compute.
        if !lock(&self.queues).any_waiting() {
            return;
        }
        let device = binding_id(aor, params.provider, &params.app_id, &params.token);
        if !lock(&self.queues).has_for(&device) {
            return;
        }
        self.submit(Work::Flush {
            aor: aor.to_string(),
            device,
            contact: contact.to_string(),
            at: Instant::now() + AFTER_REGISTER,
        });
    }

    fn run(&self, work: &Receiver<Work>, stop: &Receiver<()>) {
        let sweep = crossbeam_channel::tick(SWEEP);
        // Flushes waiting for their time, in arrival order.
        let mut due: Vec<Work> = Vec::new();
        loop {
            let wait = due
                .iter()
                .filter_map(|w| match w {
                    Work::Flush { at, .. } => Some(at.saturating_duration_since(Instant::now())),
                    _ => None,
                })
                .min()
                .unwrap_or(SWEEP);
            select! {
                recv(work) -> w => match w {
                    Ok(w @ Work::Flush { .. }) => due.push(w),
                    Ok(w) => self.apply(w),
                    Err(_) => return,
                },
                recv(stop) -> _ => {
                    // What was accepted is stored before going away. Flushes find the
                    // module unpublished and leave their messages queued (in astdb): the
                    // device gets them with a REGISTER after the next load.
                    for w in due.drain(..).chain(work.try_iter()) {
                        self.apply(w);
                    }
                    return;
                }
                recv(sweep) -> _ => self.sweep(),
                default(wait) => {}
            }
            let now = Instant::now();
            let (ready, later): (Vec<Work>, Vec<Work>) = due
                .drain(..)
                .partition(|w| matches!(w, Work::Flush { at, .. } if *at <= now));
            due = later;
            for w in ready {
                self.apply(w);
            }
        }
    }

    fn apply(&self, w: Work) {
        match w {
            Work::Sync { aor, seq } => self.sync(&aor, seq),
            Work::Send { m, contact } => {
                if deliver(&m, &contact) {
                    delivered(&m, &contact);
                }
            }
            Work::Flush {
                aor,
                device,
                contact,
                ..
            } => self.flush(&aor, &device, &contact),
        }
    }

    fn flush(&self, aor: &str, device: &str, contact: &str) {
        let Some(running) = crate::module::running() else {
            return;
        };
        let max_age = running.general().message_max_age.as_secs();
        let taken = lock(&self.queues).take_for(device, now(), max_age);
        if !taken.deliver.is_empty() {
            tracing::info!(
                "{aor}: device {device} reachable at {}; delivering {} queued message(s)",
                redact_uri(contact),
                taken.deliver.len()
            );
        }
        // Off the queue and out of astdb before SIP has it: a crash now loses a message
        // rather than delivering it twice after the restart.
        for m in taken.updated.iter().chain(&taken.removed) {
            self.sync(&m.aor, m.seq);
        }
        for m in &taken.removed {
            if !taken.deliver.iter().any(|d| d.seq == m.seq) {
                expired(m);
            }
        }
        for m in taken.deliver {
            if deliver(&m, contact) {
                delivered(&m, contact);
            } else {
                // SIP would not take it (no res_pjsip_messaging?): it waits for the device's
                // next registration.
                let back = lock(&self.queues).put_back(m, device);
                self.sync(&back.aor, back.seq);
            }
        }
    }

    fn sweep(&self) {
        let Some(running) = crate::module::running() else {
            return;
        };
        let max_age = running.general().message_max_age.as_secs();
        let gone = lock(&self.queues).expire(now(), max_age);
        for m in gone {
            expired(&m);
            self.sync(&m.aor, m.seq);
        }
    }

    fn sync(&self, aor: &str, seq: u64) {
        let current = lock(&self.queues).get(aor, seq).cloned();
        match current {
            Some(m) => persist(&m),
            None => {
                astdb::del(DB_FAMILY, &key_of(aor, seq));
            }
        }
    }
}

fn sync(m: &Queued) -> Work {
    Work::Sync {
        aor: m.aor.clone(),
        seq: m.seq,
    }
}

fn persist(m: &Queued) {
    match serde_json::to_string(m) {
        Ok(json) => {
            if !astdb::put(DB_FAMILY, &key(m), &json) {
                tracing::error!("{}: could not store message {} in astdb", m.aor, m.seq);
            }
        }
        Err(e) => tracing::error!("{}: could not serialize message {}: {e}", m.aor, m.seq),
    }
}

fn expired(m: &Queued) {
    tracing::info!(
        "{}: message {} from {} expired undelivered ({} device(s) never registered)",
        m.aor,
        m.seq,
        m.from,
        m.devices.len()
    );
    manager::event(
        "PushMessageExpired",
        &[
            ("Endpoint", m.endpoint.clone()),
            ("AOR", m.aor.clone()),
            ("Seq", m.seq.to_string()),
        ],
    );
}

fn delivered(m: &Queued, contact: &str) {
    tracing::info!(
        "{}: message {} from {} handed to SIP for {}",
        m.aor,
        m.seq,
        m.from,
        redact_uri(contact)
    );
    manager::event(
        "PushMessageDelivered",
        &[
            ("Endpoint", m.endpoint.clone()),
            ("AOR", m.aor.clone()),
            ("Seq", m.seq.to_string()),
            ("Contact", redact_uri(contact)),
        ],
    );
}

/// Hands `m` to Asterisk's pjsip message technology for one contact of its endpoint.
fn deliver(m: &Queued, contact: &str) -> bool {
    let strip = crate::module::running().is_none_or(|r| r.general().strip_pn_params);
    let uri = strip
        .then(|| strip_push_params(contact))
        .flatten()
        .unwrap_or_else(|| contact.to_string());
    let Some(mut out) = OutMsg::new(&m.to, &m.from, &m.body) else {
        tracing::error!("{}: cannot allocate a message", m.aor);
        return false;
    };
    for (k, v) in &m.vars {
        out.set_outbound_var(k, v);
    }
    let ok = out.send(&format!("pjsip:{}/{uri}", m.endpoint), &m.from);
    if !ok {
        tracing::warn!(
            "{}: pjsip did not take message {} for {} (is res_pjsip_messaging loaded?)",
            m.aor,
            m.seq,
            redact_uri(contact)
        );
    }
    ok
}

/// The alert push telling a sleeping device that a message waits.
fn alert(running: &Running, b: &Binding, m: &Queued, uuid: &str) {
    let general = running.general();
    let data = message::alert(
        &m.endpoint,
        &m.from,
        &m.body,
        uuid.to_string(),
        general.push_caller_id,
        general.push_message_preview,
    );
    let job = Job::Push(PushRequest {
        target: target(b, PushKind::Message),
        kind: PushKind::Message,
        data,
    });
    let work = running.bindings.clone();
    let (provider, token, aor, id) = (b.provider, b.token.clone(), b.aor.clone(), b.id.clone());
    let done = Box::new(move |r: Result<Outcome, crate::link::LinkError>| {
        work.push_result(&aor, &id, &r);
        match r {
            Ok(Outcome::Sent { .. }) => {}
            Ok(Outcome::InvalidToken { reason }) => {
                tracing::info!(
                    "{aor}: token {} reported dead ({reason}); removing binding",
                    redact(&token)
                );
                work.submit(BindingWork::InvalidToken(provider, token));
            }
            Ok(other) => tracing::warn!("{aor}: message alert push not sent: {other:?}"),
            Err(e) => tracing::warn!("{aor}: message alert push not sent: {e}"),
        }
    });
    if let Err(e) = running.link.submit(job, None, done) {
        tracing::warn!(
            "{}: message alert push for {} not queued: {e}",
            b.aor,
            bindings::provider_name(b.provider)
        );
    }
}
