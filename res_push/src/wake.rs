//! Call wake-up, the Asterisk side: push each device of the called endpoint, ring its live
//! contact at once and its fresh contact the moment its REGISTER arrives (the REGISTER hook
//! feeds [`Wake::registered`]; nothing polls), cancel what did not answer.
//!
//! `Dial(Push/alice)` becomes `Local/walice@res-push-wake/n` (see `asterisk-headers/shim_wake.c`),
//! where `PushDial` dials alice's plain contacts at once plus one
//! `Local/d<binding>@res-push-device/n` leg per push device, where `PushDevice` runs that
//! device's wake-up: the decisions are [`res_push_core::wake::Device`]'s; this file only sends
//! pushes, runs `Dial` for one contact at a time (so a device never has two ringing legs) and
//! hangs up a stale leg when the device registers from elsewhere. Devices never wait for each
//! other, and the first answer wins by Dial's own rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use res_push_core::binding::{Binding, binding_id, redact};
use res_push_core::config::{General, WaitAudio};
use res_push_core::late::{Ending, LateWakes, MissedCall};
use res_push_core::pn::{PushParams, Request, from_contact, strip_push_params};
use res_push_core::reasons::{self, DeviceReport, PushError, PushFailure, Reason};
use res_push_core::sip::parse_contact;
use res_push_core::status::WakeCounters;
use res_push_core::wake::{ContactRef, Device, Event, LegEnd, Outcome, Start, Step};
use res_push_proto::{Job, Outcome as PushOutcome, PushData, PushKind, PushRequest};

use crate::ast::channel::{self, Chan, ChanRef, Outgoing, Progress, WaitEnd};
use crate::ast::manager;
use crate::ast::thread::{self, Thread};
use crate::bindings::{Work, now, target};
use crate::module::Running;
use crate::push::uuid_v4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The PJSIP channel a device leg's current Dial rings, so another thread can hang it up.
#[derive(Debug, Default)]
struct Callee {
    /// Which Dial of the device leg this is (the INVITE hook names it through `PUSH_LEG`).
    leg: u32,
    chan: Option<ChanRef>,
    /// Hang it up as soon as it exists.
    cancel: bool,
}

/// One device of one call being woken (a `PushDevice` leg).
#[derive(Debug)]
struct DeviceLeg {
    id: u64,
    binding: Binding,
    call_uuid: String,
    started: Instant,
    machine: Mutex<Device>,
    /// Set (under `machine`) when [`Device::next`] has something new; ends the leg's wait.
    attention: AtomicBool,
    chan: ChanRef,
    callee: Mutex<Callee>,
    /// A contact this leg rang answered with a provisional response: the device saw the call
    /// (and Dial's CANCEL), so it needs no late INVITE.
    reached: AtomicBool,
}

impl DeviceLeg {
    /// Feeds an event from any thread and carries out what must happen at once.
    fn feed(&self, ev: Event) {
        // Channel calls (hangup, wake) happen after our locks are released: Asterisk may hold
        // a channel lock while it enters the INVITE hook, which takes `callee`.
        let (effect, newly_registered, stale) = {
            let mut m = lock(&self.machine);
            let was = m.registered();
            let effect = m.on(ev);
            let mut stale = None;
            if effect.cancel_leg {
                let mut c = lock(&self.callee);
                c.cancel = true;
                stale = c.chan.clone();
            }
            if effect.wake {
                self.attention.store(true, Ordering::Release);
            }
            (effect, !was && m.registered(), stale)
        };
        if let Some(callee) = stale {
            callee.soft_hangup();
        }
        if effect.wake {
            self.chan.wake();
        }
        if newly_registered {
            let waited = self.started.elapsed().as_millis();
            tracing::info!(
                "{}: device {} registered after {waited} ms",
                self.binding.aor,
                self.binding.id
            );
            event(
                "PushWakeRegistered",
                &self.binding,
                &self.call_uuid,
                &[("WaitMs", waited.to_string())],
            );
        }
    }

    /// The next step; a new Dial gets its leg number under the same lock, so a cancel
    /// decided meanwhile applies to it.
    fn next(&self) -> (Step, u32) {
        let mut m = lock(&self.machine);
        self.attention.store(false, Ordering::Release);
        let step = m.next(self.started.elapsed());
        let mut c = lock(&self.callee);
        if matches!(step, Step::Ring { .. }) {
            *c = Callee {
                leg: c.leg + 1,
                chan: None,
                cancel: false,
            };
        }
        (step, c.leg)
    }

    /// The INVITE of leg `leg` is leaving on `callee`.
    fn callee_started(&self, leg: u32, callee: ChanRef) {
        let cancel = {
            let mut c = lock(&self.callee);
            if c.leg != leg {
                return;
            }
            c.chan = Some(callee.clone());
            c.cancel
        };
        if cancel {
            callee.soft_hangup();
        }
    }
}

/// `PushWake()`: one dialplan waiting for the first of several devices to register.
#[derive(Debug)]
struct Waiter {
    done: AtomicBool,
    result: Mutex<Option<Result<String, String>>>,
    chan: ChanRef,
    /// Pushes still without outcome; when the last fails, the wait fails.
    pending_pushes: AtomicUsize,
    /// Devices whose push failed, and how (for PUSH_REASONS).
    failed: Mutex<HashMap<String, PushFailure>>,
    /// Devices that registered during the wait.
    woken: Mutex<Vec<String>>,
}

impl Waiter {
    fn fill(&self, r: Result<String, String>) {
        let mut result = lock(&self.result);
        if result.is_none() {
            *result = Some(r);
            self.done.store(true, Ordering::Release);
            self.chan.wake();
        }
    }

    fn push_failed(&self, id: &str, e: PushError) {
        lock(&self.failed).insert(id.to_string(), e.class);
        if self.pending_pushes.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.fill(Err(e.why));
        }
    }
}

/// Who waits for a binding's REGISTER.
#[derive(Debug, Clone)]
enum Watcher {
    Device(Arc<DeviceLeg>),
    Wake(Arc<Waiter>),
}

impl Watcher {
    fn same(&self, other: &Watcher) -> bool {
        match (self, other) {
            (Watcher::Device(a), Watcher::Device(b)) => Arc::ptr_eq(a, b),
            (Watcher::Wake(a), Watcher::Wake(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// A call push sent when `Dial(Push/...)` requested the channel, before the device leg that
/// waits for its outcome exists.
#[derive(Debug)]
enum Early {
    /// No outcome yet, no leg yet (or the push was the leg's own).
    InFlight,
    /// The outcome, for the leg to pick up.
    Done(Result<(), PushError>),
    /// The leg waiting for the outcome.
    Leg(Weak<DeviceLeg>),
}

/// Watchers by binding id, device legs by id (for the INVITE hook), which (call, device)
/// pairs were already pushed.
#[derive(Debug, Default)]
pub struct Wake {
    watchers: Mutex<HashMap<String, Vec<Watcher>>>,
    legs: Mutex<HashMap<u64, Weak<DeviceLeg>>>,
    next_leg: AtomicU64,
    pushed: Mutex<HashMap<(String, String), (Instant, Early)>>,
    /// Calls pushed devices missed, for late wake-ups.
    missed: Mutex<LateWakes>,
    /// The caller of each `Dial(Push/...)` by call UUID, told PUSHSTATUS and PUSH_REASONS.
    callers: Mutex<HashMap<String, Arc<CallerReport>>>,
    /// res_pjsip_rfc3326 was loaded when last asked.
    rfc3326: AtomicBool,
    late: Arc<LateState>,
}

/// Late INVITEs in flight and their threads.
#[derive(Debug, Default)]
struct LateState {
    in_flight: Mutex<HashMap<u64, Arc<LateInvite>>>,
    threads: Mutex<Vec<(Arc<AtomicBool>, Thread)>>,
    next: AtomicU64,
    stopping: AtomicBool,
}

/// One late INVITE: its thread waits for the first provisional response, then cancels.
#[derive(Debug)]
struct LateInvite {
    /// A provisional response arrived (set by the INVITE response hook).
    progressed: AtomicBool,
    chan: ChanRef,
}

/// What the caller of a `Dial(Push/...)` reads after its Dial: set on its channel from the
/// device legs as each ends (before its leg hangs up, hence before the caller's Dial can
/// return because of it), starting with every device as `timeout`, so a Dial that gives up
/// first reads "nobody woke in time".
#[derive(Debug)]
struct CallerReport {
    chan: ChanRef,
    since: Instant,
    devices: Mutex<Vec<DeviceReport>>,
}

impl CallerReport {
    fn publish(&self) {
        let (status, list) = {
            let d = lock(&self.devices);
            (reasons::push_status(&d), reasons::reasons_var(&d))
        };
        self.chan.set_var("PUSHSTATUS", status);
        self.chan.set_var("PUSH_REASONS", &list);
    }
}

/// Caller reports whose PushDial never ran (the Local channel failed) are dropped after this.
const CALLER_TTL: Duration = Duration::from_secs(3600);

fn no_binding(endpoint: &str) -> String {
    reasons::reasons_var(&[DeviceReport {
        label: endpoint.to_string(),
        reason: Reason::NoBinding,
        woken: false,
    }])
}

/// Channel variable naming the late INVITE a channel carries (the INVITE response hook finds
/// its thread through it).
const LATE_VAR: &str = "PUSH_LATE";
/// Channel variable holding the Reason header the late INVITE's CANCEL gets from us.
const LATE_REASON_VAR: &str = "PUSH_LATE_REASON";
/// How long a late INVITE waits for a provisional response before it is hung up anyway
/// (longer than an unanswered INVITE transaction lives: pjsip ends it at 32 s).
const LATE_PROGRESS_WAIT: Duration = Duration::from_secs(35);
/// Late INVITEs at once; more are dropped with a warning (each holds a thread).
const LATE_MAX_IN_FLIGHT: usize = 64;

/// Wake-up counters, by AMI event name. Statics live as long as the library: from module
/// load to unload, which is what `push show status` reports.
static COUNTERS: [(&str, AtomicU64); 5] = [
    ("PushWakeStart", AtomicU64::new(0)),
    ("PushWakeRegistered", AtomicU64::new(0)),
    ("PushWakeTimeout", AtomicU64::new(0)),
    ("PushWakeFailed", AtomicU64::new(0)),
    ("PushCancel", AtomicU64::new(0)),
];

/// A call push is sent once per call and device, whatever retries the dialplan makes.
const DEDUP_TTL: Duration = Duration::from_secs(300);

impl Wake {
    /// Counters for `push show status`.
    pub fn counters(&self) -> WakeCounters {
        let c = |i: usize| COUNTERS[i].1.load(Ordering::Relaxed);
        WakeCounters {
            started: c(0),
            registered: c(1),
            timeouts: c(2),
            failed: c(3),
            cancels: c(4),
        }
    }

    /// Called by the REGISTER hook once the registrar accepted a binding's REGISTER.
    pub fn registered(
        &self,
        general: &General,
        aor: &str,
        params: &PushParams,
        contact_uri: &str,
        instance: Option<&str>,
    ) {
        let (watchers, id) = {
            let map = lock(&self.watchers);
            // No call waiting for any device and no missed call to close (the usual case):
            // nothing to name or copy.
            if map.is_empty() && lock(&self.missed).is_empty() {
                return;
            }
            let id = binding_id(aor, params.provider, &params.app_id, &params.token);
            (map.get(&id).cloned().unwrap_or_default(), id)
        };
        let contact = ContactRef::new(contact_uri, instance.map(str::to_string));
        let ringing = !watchers.is_empty();
        for w in watchers {
            match w {
                Watcher::Device(leg) => {
                    leg.feed(Event::Registered(contact.clone()));
                    // The caller learns now that this device woke: its leg rings until the
                    // caller's Dial gives up and then ends as a hangup, which tells nothing,
                    // so a fallback dialplan would ring the mobile number of a phone that rang.
                    self.device_ended(
                        &leg.call_uuid,
                        DeviceReport {
                            label: leg.binding.id.clone(),
                            reason: Reason::NotAnswered,
                            woken: true,
                        },
                    );
                }
                Watcher::Wake(waiter) => {
                    lock(&waiter.woken).push(id.clone());
                    waiter.fill(Ok(contact.uri.clone()))
                }
            }
        }
        let missed = {
            let mut l = lock(&self.missed);
            if l.is_empty() {
                return;
            }
            l.set_window(general.late_wake_window);
            l.registered(&id, Instant::now(), ringing)
        };
        for call in missed {
            self.late_invite(general, aor, &id, contact_uri, call);
        }
    }

    /// `device`'s part of a call ended without reaching it: remembered for a late wake-up.
    fn missed(&self, general: &General, device: &str, call: MissedCall) {
        let now = Instant::now();
        // The window runs from the push (kept for DEDUP_TTL, longer than any window).
        let pushed_at = lock(&self.pushed)
            .get(&(call.call_uuid.clone(), device.to_string()))
            .map_or(now, |(at, _)| *at);
        let mut l = lock(&self.missed);
        l.set_window(general.late_wake_window);
        l.ended(device, call, pushed_at, now);
    }

    /// Sends `call`'s late INVITE to the device's fresh contact from a thread of ours (never
    /// on the PJSIP thread running the REGISTER hook): INVITE from the same caller, CANCEL
    /// with the Reason of how the call ended as soon as a provisional response arrives.
    fn late_invite(&self, general: &General, aor: &str, id: &str, contact: &str, call: MissedCall) {
        let late = self.late.clone();
        let mut threads = lock(&late.threads);
        // Finished threads are joined here, so the list holds only running ones.
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
            .into_iter()
            .partition(|(finished, _)| finished.load(Ordering::Acquire));
        *threads = running;
        drop(done);
        if late.stopping.load(Ordering::Acquire) {
            return;
        }
        if threads.len() >= LATE_MAX_IN_FLIGHT {
            tracing::warn!(
                "{aor}: {LATE_MAX_IN_FLIGHT} late INVITEs in flight; device {id} gets none for call {}",
                call.call_uuid
            );
            return;
        }
        let target = general
            .strip_pn_params
            .then(|| strip_push_params(contact))
            .flatten()
            .unwrap_or_else(|| contact.to_string());
        let dest = format!("{}/{}", call.endpoint, dial_uri(&target));
        let (aor, id) = (aor.to_string(), id.to_string());
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let state = late.clone();
        let spawned = thread::spawn(c"push-late", move || {
            // Asked here, not on the PJSIP thread running the REGISTER hook: it takes the
            // module list's lock, which a module load waiting on PJSIP may hold.
            let reason = call
                .ending
                .reason_to_add(channel::module_running("res_pjsip_rfc3326.so"));
            run_late_invite(&state, &aor, &id, &dest, &call, reason);
            flag.store(true, Ordering::Release);
        });
        match spawned {
            Ok(t) => threads.push((finished, t)),
            Err(e) => tracing::warn!("late INVITE thread not started: {e}"),
        }
    }

    /// A provisional response to an initial INVITE arrived on `chan`: if it is a late
    /// INVITE's, its thread cancels it now.
    /// Also notes which device legs reached their device.
    pub fn provisional(&self, chan: Chan) {
        if !lock(&self.legs).is_empty() {
            let leg = chan
                .var("PUSH_LEG")
                .and_then(|k| k.split_once('.')?.0.parse::<u64>().ok())
                .and_then(|id| lock(&self.legs).get(&id).and_then(Weak::upgrade));
            if let Some(leg) = leg {
                leg.reached.store(true, Ordering::Release);
                return;
            }
        }
        if lock(&self.late.in_flight).is_empty() {
            return;
        }
        let Some(n) = chan.var(LATE_VAR).and_then(|v| v.parse::<u64>().ok()) else {
            return;
        };
        let inv = lock(&self.late.in_flight).get(&n).cloned();
        if let Some(inv) = inv {
            inv.progressed.store(true, Ordering::Release);
            inv.chan.wake();
        }
    }

    /// The Reason header a CANCEL leaving on `chan` must carry: a late INVITE's, or "completed
    /// elsewhere" on the legs of a `Push/` call when res_pjsip_rfc3326 is not there to say it.
    pub fn cancel_reason(&self, chan: Chan) -> Option<String> {
        if let Some(r) = chan.var(LATE_REASON_VAR).filter(|r| !r.is_empty()) {
            return Some(r);
        }
        if self.rfc3326.load(Ordering::Relaxed) || chan.var("PUSH_ENDPOINT").is_none() {
            return None;
        }
        res_push_core::late::leg_cancel_reason(chan.hangup_cause(), false).map(str::to_string)
    }

    /// Whether res_pjsip_rfc3326 is loaded, asked from a dialplan or module thread (the CANCEL
    /// hook, on a PJSIP thread, reads the answer).
    fn rfc3326_loaded(&self) -> bool {
        let loaded = channel::module_running("res_pjsip_rfc3326.so");
        self.rfc3326.store(loaded, Ordering::Relaxed);
        loaded
    }

    /// Ends the late INVITEs in flight and joins their threads (module unload, after the hooks
    /// are gone).
    pub fn stop(&self) {
        self.late.stopping.store(true, Ordering::Release);
        let in_flight: Vec<_> = lock(&self.late.in_flight).values().cloned().collect();
        for inv in in_flight {
            inv.chan.wake();
        }
        let threads = std::mem::take(&mut *lock(&self.late.threads));
        drop(threads);
    }

    fn watch(&self, ids: &[String], w: &Watcher) {
        let mut map = lock(&self.watchers);
        for id in ids {
            map.entry(id.clone()).or_default().push(w.clone());
        }
        if let Watcher::Device(leg) = w {
            lock(&self.legs).insert(leg.id, Arc::downgrade(leg));
        }
    }

    fn unwatch(&self, ids: &[String], w: &Watcher) {
        let mut map = lock(&self.watchers);
        for id in ids {
            if let Some(list) = map.get_mut(id) {
                list.retain(|x| !x.same(w));
                if list.is_empty() {
                    map.remove(id);
                }
            }
        }
        if let Watcher::Device(leg) = w {
            lock(&self.legs).remove(&leg.id);
        }
    }

    /// A `Dial(Push/<endpoint>)` starts for `caller`: every device reads `timeout` until it
    /// reports (no device: `<endpoint>:no-binding`).
    fn caller_started(&self, call_uuid: &str, caller: Chan, endpoint: &str, devices: &[Binding]) {
        let mut reports: Vec<DeviceReport> = devices
            .iter()
            .map(|b| DeviceReport {
                label: b.id.clone(),
                reason: Reason::Timeout,
                woken: false,
            })
            .collect();
        if reports.is_empty() {
            reports.push(DeviceReport {
                label: endpoint.to_string(),
                reason: Reason::NoBinding,
                woken: false,
            });
        }
        let report = {
            let mut callers = lock(&self.callers);
            callers.retain(|_, c| c.since.elapsed() < CALLER_TTL);
            // Several Push/ destinations of one Dial share the caller's report.
            let shared = callers.values().find(|c| c.chan.is(caller)).cloned();
            let r = callers
                .entry(call_uuid.to_string())
                .or_insert_with(|| {
                    shared.unwrap_or_else(|| {
                        Arc::new(CallerReport {
                            chan: caller.handle(),
                            since: Instant::now(),
                            devices: Mutex::new(Vec::new()),
                        })
                    })
                })
                .clone();
            {
                let mut d = lock(&r.devices);
                for rep in reports {
                    if !d.iter().any(|x| x.label == rep.label) {
                        d.push(rep);
                    }
                }
            }
            r
        };
        report.publish();
    }

    /// A device of call `call_uuid` ended: its caller learns why. A device leg hung up from
    /// above (the caller left, the caller's Dial gave up) changes nothing: it keeps `timeout`.
    fn device_ended(&self, call_uuid: &str, report: DeviceReport) {
        if report.reason == Reason::Hangup {
            return;
        }
        let Some(caller) = lock(&self.callers).get(call_uuid).cloned() else {
            return;
        };
        {
            let mut d = lock(&caller.devices);
            match d.iter_mut().find(|x| x.label == report.label) {
                Some(x) => *x = report,
                None => d.push(report),
            }
        }
        caller.publish();
    }

    /// The `PushDial` of call `call_uuid` returned: its devices have all reported.
    fn caller_done(&self, call_uuid: &str) {
        lock(&self.callers).remove(call_uuid);
    }

    /// True the first time (call, device) is asked for.
    fn first_push(&self, call: &str, id: &str) -> bool {
        let mut pushed = lock(&self.pushed);
        pushed.retain(|_, (at, _)| at.elapsed() < DEDUP_TTL);
        let key = (call.to_string(), id.to_string());
        if pushed.contains_key(&key) {
            return false;
        }
        pushed.insert(key, (Instant::now(), Early::InFlight));
        true
    }

    /// The outcome of an early push: to its leg if one waits, else kept for it.
    fn early_done(&self, call: &str, id: &str, r: Result<(), PushError>) {
        let leg = {
            let mut pushed = lock(&self.pushed);
            let Some((_, state)) = pushed.get_mut(&(call.to_string(), id.to_string())) else {
                return;
            };
            match std::mem::replace(state, Early::Done(r.clone())) {
                Early::Leg(leg) => leg.upgrade(),
                Early::InFlight | Early::Done(_) => None,
            }
        };
        // The caller learns of a failed push now: a dead token removes the binding at once, so
        // PushDial may find no binding left to give a leg, and the device's reason would be
        // lost. A leg that still rings a live contact overwrites it when it ends.
        if let Err(e) = &r {
            self.device_ended(
                call,
                DeviceReport {
                    label: id.to_string(),
                    reason: Reason::PushFailed(e.class),
                    woken: false,
                },
            );
        }
        if let Some(leg) = leg {
            leg.feed(r.map_or_else(Event::PushFailed, |()| Event::PushSent));
        }
    }

    /// A device leg whose push already went out: its outcome now if known (else it will be
    /// fed to `leg`).
    fn claim_push(
        &self,
        call: &str,
        id: &str,
        leg: &Arc<DeviceLeg>,
    ) -> Option<Result<(), PushError>> {
        let mut pushed = lock(&self.pushed);
        let (_, state) = pushed.get_mut(&(call.to_string(), id.to_string()))?;
        match state {
            Early::Done(r) => Some(r.clone()),
            _ => {
                *state = Early::Leg(Arc::downgrade(leg));
                None
            }
        }
    }

    /// The INVITE hook saw `PUSH_LEG` = `<leg id>.<dial number>` on a channel being called.
    fn callee_started(&self, key: &str, callee: Chan) {
        let Some((id, n)) = key.split_once('.') else {
            return;
        };
        let (Ok(id), Ok(n)) = (id.parse::<u64>(), n.parse::<u32>()) else {
            return;
        };
        let leg = lock(&self.legs).get(&id).and_then(Weak::upgrade);
        if let Some(leg) = leg {
            leg.callee_started(n, callee.handle());
        }
    }
}

/// The body of a late INVITE's thread.
fn run_late_invite(
    state: &LateState,
    aor: &str,
    id: &str,
    dest: &str,
    call: &MissedCall,
    reason: Option<&str>,
) {
    let chan = match Outgoing::request("PJSIP", dest) {
        Ok(c) => c,
        Err(cause) => {
            tracing::warn!("{aor}: late INVITE to device {id} not possible (cause {cause})");
            return;
        }
    };
    let n = state.next.fetch_add(1, Ordering::Relaxed);
    chan.set_calling_party(call.caller_number.as_deref(), call.caller_name.as_deref());
    let c = chan.chan();
    c.set_var(LATE_VAR, &n.to_string());
    c.set_var("PUSH_CALL_UUID", &call.call_uuid);
    c.set_var("PUSH_ENDPOINT", &call.endpoint);
    if let Some(r) = reason {
        c.set_var(LATE_REASON_VAR, r);
    }
    let inv = Arc::new(LateInvite {
        progressed: AtomicBool::new(false),
        chan: c.handle(),
    });
    lock(&state.in_flight).insert(n, inv.clone());
    let ending = call.ending;
    tracing::info!(
        "{aor}: device {id} registered after missing call {} ({}): INVITE then CANCEL",
        call.call_uuid,
        ending.name()
    );
    manager::event(
        "PushLateWake",
        &[
            ("Endpoint", aor.to_string()),
            ("ID", id.to_string()),
            ("CallUUID", call.call_uuid.clone()),
            ("Reason", ending.name().to_string()),
        ],
    );
    if chan.call(dest) {
        let deadline = Instant::now() + LATE_PROGRESS_WAIT;
        while !inv.progressed.load(Ordering::Acquire) && !state.stopping.load(Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::info!("{aor}: late INVITE to device {id} got no answer; hanging up");
                break;
            }
            match chan.read_control(left) {
                Progress::Nothing => {}
                Progress::Provisional | Progress::Answered | Progress::Gone => break,
            }
        }
    } else {
        tracing::warn!("{aor}: late INVITE to device {id} could not be placed");
    }
    lock(&state.in_flight).remove(&n);
    chan.hangup(ending.hangup_cause());
}

/// Q.850 causes a leg ends with, so the caller's `Dial` reports a meaningful DIALSTATUS.
const CAUSE_NO_ANSWER: i32 = 19;
const CAUSE_SUBSCRIBER_ABSENT: i32 = 20;
const CAUSE_BUSY: i32 = 17;
const CAUSE_CONGESTION: i32 = 34;

/// Endpoint names go into an extension; names with other characters are hex-encoded.
fn encode_endpoint(endpoint: &str) -> String {
    if !endpoint.is_empty()
        && endpoint
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
    {
        endpoint.to_string()
    } else {
        format!(
            "~{}",
            endpoint
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    }
}

fn decode_endpoint(text: &str) -> String {
    match text.strip_prefix('~') {
        Some(hex) => {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => text.to_string(),
    }
}

/// Dial separates destinations with '&' and arguments with ','; Flexisip pn-param values
/// carry '&'. Escaped forms are equivalent in a SIP URI.
fn dial_uri(uri: &str) -> String {
    uri.replace('&', "%26").replace(',', "%2C")
}

/// `Push/<endpoint>` → the Local destination, or `None` for an unknown endpoint. The call
/// pushes go out here, on the caller's `Dial` thread, before the Local legs start (they
/// cost milliseconds each); the device legs pick up their outcomes. The call UUID travels in
/// the extension: `w<uuid><endpoint>`.
pub fn local_destination(
    running: Option<&Running>,
    endpoint: &str,
    requestor: Option<Chan>,
) -> Option<String> {
    let Some(aors) = channel::endpoint_aors(endpoint) else {
        if let Some(c) = requestor {
            c.set_var("PUSHSTATUS", "NOBINDING");
            c.set_var("PUSH_REASONS", &no_binding(endpoint));
        }
        return None;
    };
    let call_uuid = requestor
        .and_then(|c| c.var("PUSH_CALL_UUID"))
        .filter(|u| is_uuid(u))
        .unwrap_or_else(|| {
            let u = uuid_v4();
            // Kept on the caller: a retry of the same call (dialplan, Queue, PushWake then
            // Dial) is the same call to the phone, so it gets no second VoIP push.
            if let Some(c) = requestor {
                c.set_var("PUSH_CALL_UUID", &u);
            }
            u
        });
    if let Some(running) = running {
        // With a shared store whose copy is stale, the lookup starts now and the device legs
        // push once PushDial has waited for it (on its own channel, not this caller's thread).
        let fresh = running.bindings.prefetch(&aors);
        if let Some(c) = requestor {
            let devices = bindings_of(running, &aors);
            running
                .wake
                .caller_started(&call_uuid, c, endpoint, &devices);
        }
        if fresh {
            early_pushes(running, endpoint, &aors, &call_uuid, requestor);
        }
    }
    Some(format!(
        "w{call_uuid}{}@res-push-wake/n",
        encode_endpoint(endpoint)
    ))
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The call push of each device that [`push_device`] would push.
fn early_pushes(
    running: &Running,
    endpoint: &str,
    aors: &[String],
    call_uuid: &str,
    requestor: Option<Chan>,
) {
    let general = running.general();
    let skip = general.push_skip_recent.as_secs();
    let (caller_number, caller_name) = caller_id(running, requestor);
    for b in bindings_of(running, aors) {
        let recent = skip > 0 && now().saturating_sub(b.last_register) < skip;
        if recent && general.ring_live_contact && live_contact(&b).is_some() {
            continue;
        }
        if !running.wake.first_push(call_uuid, &b.id) {
            continue;
        }
        let data = PushData {
            caller_number: caller_number.clone(),
            caller_name: caller_name.clone(),
            call_uuid: Some(call_uuid.to_string()),
            call_id: requestor.and_then(|c| c.var("PUSH_CALL_ID")),
            endpoint: Some(endpoint.to_string()),
            text: None,
        };
        let (call, id) = (call_uuid.to_string(), b.id.clone());
        let report = Box::new(move |r: Result<(), PushError>| {
            if let Some(running) = crate::module::running() {
                running.wake.early_done(&call, &id, r);
            }
        });
        push(
            running,
            &b,
            PushKind::Call,
            data,
            general.wake_timeout,
            Some(report),
        );
    }
}

/// Device state of `Push/<endpoint>`: idle while a push binding can wake it, even with no
/// contact registered (so a Queue rings sleeping mobile agents); otherwise PJSIP's state.
pub fn devicestate(running: &Running, endpoint: &str) -> i32 {
    let pjsip = channel::device_state(&format!("PJSIP/{endpoint}"));
    let unreachable = [
        crate::ffi::ast_device_state::AST_DEVICE_UNKNOWN,
        crate::ffi::ast_device_state::AST_DEVICE_INVALID,
        crate::ffi::ast_device_state::AST_DEVICE_UNAVAILABLE,
    ];
    let aors = channel::endpoint_aors(endpoint).unwrap_or_default();
    // A shared store: a stale copy is read again in the background; what it learns raises a
    // device state change, so queues see bindings made on other nodes.
    running.bindings.prefetch(&aors);
    let has_binding = aors
        .iter()
        .any(|aor| !running.bindings.list(Some(aor)).is_empty());
    if has_binding && unreachable.iter().any(|s| *s as i32 == pjsip) {
        crate::ffi::ast_device_state::AST_DEVICE_NOT_INUSE as i32
    } else {
        pjsip
    }
}

/// Contacts of the endpoint without push parameters, as Dial destinations.
fn plain_contacts(endpoint: &str, aors: &[String]) -> Vec<String> {
    let rules = res_push_core::pn::Rules::default();
    aors.iter()
        .flat_map(|aor| channel::aor_contacts(aor))
        .filter(|uri| from_contact(&parse_contact(&format!("<{uri}>")), &rules) == Request::None)
        .map(|uri| format!("PJSIP/{endpoint}/{}", dial_uri(&uri)))
        .collect()
}

fn bindings_of(running: &Running, aors: &[String]) -> Vec<Binding> {
    aors.iter()
        .flat_map(|aor| running.bindings.list(Some(aor)))
        .collect()
}

fn args(data: &str) -> Vec<String> {
    data.split(',').map(|s| s.trim().to_string()).collect()
}

fn timeout_arg(arg: Option<&String>, default: Duration) -> Duration {
    arg.and_then(|t| t.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(default)
}

/// Hears whether a push was delivered (`Err` says why not).
type PushReport = Box<dyn FnOnce(Result<(), PushError>) + Send>;

/// Sends a push for a call; `outcome` hears whether it was delivered.
fn push(
    running: &Running,
    b: &Binding,
    kind: PushKind,
    data: PushData,
    deadline: Duration,
    outcome: Option<PushReport>,
) {
    let bindings = running.bindings.clone();
    let (provider, token, aor, id) = (b.provider, b.token.clone(), b.aor.clone(), b.id.clone());
    let job = Job::Push(PushRequest {
        target: target(b, kind),
        kind,
        data,
    });
    let report = Arc::new(Mutex::new(outcome));
    let report_queue = report.clone();
    let done = Box::new(move |r: Result<PushOutcome, crate::link::LinkError>| {
        bindings.push_result(&aor, &id, &r);
        let failure = match r {
            Ok(PushOutcome::Sent { .. }) => None,
            Ok(PushOutcome::InvalidToken { reason }) => {
                tracing::info!(
                    "{aor}: token {} reported dead ({reason}); removing binding",
                    redact(&token)
                );
                bindings.submit(Work::InvalidToken(provider, token));
                Some(PushError {
                    class: PushFailure::InvalidToken,
                    why: format!("invalid token ({reason})"),
                })
            }
            Ok(other) => Some(PushError {
                class: PushFailure::of(&other).unwrap_or(PushFailure::Other),
                why: format!("{other:?}"),
            }),
            Err(e) => Some(PushError {
                class: PushFailure::Sidecar,
                why: e.to_string(),
            }),
        };
        if let Some(why) = &failure {
            tracing::warn!("{aor}: {kind:?} push to binding {id} failed: {why}");
        }
        if let Some(f) = lock(&report).take() {
            f(failure.map_or(Ok(()), Err));
        }
    });
    if let Err(e) = running.link.submit(job, Some(deadline), done) {
        tracing::warn!("{}: {kind:?} push not queued: {e}", b.aor);
        if let Some(f) = lock(&report_queue).take() {
            f(Err(PushError {
                class: PushFailure::Sidecar,
                why: e.to_string(),
            }));
        }
    }
}

/// The caller's number and name for a payload, unless `push_caller_id = no` keeps them off
/// Apple's and Google's servers.
fn caller_id(running: &Running, chan: Option<Chan>) -> (Option<String>, Option<String>) {
    match chan {
        Some(c) if running.general().push_caller_id => c.caller(),
        _ => (None, None),
    }
}

fn call_data(running: &Running, chan: Chan, endpoint: &str, call_uuid: &str) -> PushData {
    let (caller_number, caller_name) = caller_id(running, Some(chan));
    PushData {
        caller_number,
        caller_name,
        call_uuid: Some(call_uuid.to_string()),
        call_id: chan.var("PUSH_CALL_ID"),
        endpoint: Some(endpoint.to_string()),
        text: None,
    }
}

fn event(name: &str, b: &Binding, call_uuid: &str, extra: &[(&'static str, String)]) {
    let mut f = vec![
        ("Endpoint", b.aor.clone()),
        ("ID", b.id.clone()),
        ("Token", redact(&b.token)),
        ("CallUUID", call_uuid.to_string()),
    ];
    f.extend_from_slice(extra);
    if let Some((_, n)) = COUNTERS.iter().find(|(e, _)| *e == name) {
        n.fetch_add(1, Ordering::Relaxed);
    }
    manager::event(name, &f);
}

/// The device's registered, unexpired contact, if the registrar still has it.
fn live_contact(b: &Binding) -> Option<ContactRef> {
    (b.expires_at > now() && channel::aor_contacts(&b.aor).contains(&b.contact_uri))
        .then(|| ContactRef::new(b.contact_uri.clone(), b.instance.clone()))
}

/// How the Dial of one contact ended, from DIALSTATUS.
fn leg_end(chan: Chan) -> LegEnd {
    match chan.var("DIALSTATUS").as_deref() {
        Some("ANSWER") => LegEnd::Answered,
        _ if chan.hung_up() => LegEnd::Hangup,
        Some("BUSY") => LegEnd::Busy,
        Some("NOANSWER") => LegEnd::NoAnswer,
        Some("CANCEL") => LegEnd::Hangup,
        _ => LegEnd::Unreachable,
    }
}

/// `PushDial(endpoint[,timeout])`: ring plain contacts now and each push device when it wakes.
pub fn push_dial(running: &Running, chan: Chan, data: &str) -> i32 {
    let a = args(data);
    let (call_uuid, endpoint) = match a[0].get(..36).filter(|u| is_uuid(u)) {
        Some(u) => (Some(u.to_string()), decode_endpoint(&a[0][36..])),
        None => (None, decode_endpoint(&a[0])),
    };
    let Some(aors) = channel::endpoint_aors(&endpoint) else {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        chan.set_hangup_cause(CAUSE_SUBSCRIBER_ABSENT);
        return -1;
    };
    running.bindings.refresh_for_call(chan, &aors);
    let mut dests = plain_contacts(&endpoint, &aors);
    let devices = bindings_of(running, &aors);
    dests.extend(
        devices
            .iter()
            .map(|b| format!("Local/d{}@res-push-device/n", b.id)),
    );
    if dests.is_empty() {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        chan.set_hangup_cause(CAUSE_SUBSCRIBER_ABSENT);
        return -1;
    }
    // Inherited by the device legs: one call UUID for call, cancel and missed pushes (the
    // one the call pushes already carry).
    if let Some(u) = call_uuid {
        chan.set_var("__PUSH_CALL_UUID", &u);
    } else if chan.var("PUSH_CALL_UUID").is_none() {
        chan.set_var("__PUSH_CALL_UUID", &uuid_v4());
    }
    chan.set_var("__PUSH_ENDPOINT", &endpoint);
    if let Some(t) = a.get(1).filter(|t| !t.is_empty()) {
        chan.set_var("__PUSH_WAKE_TIMEOUT", t);
    }
    tracing::debug!("{endpoint}: ringing {}", dests.join(" & "));
    running.wake.rfc3326_loaded();
    // When one leg answers, Dial hangs the others up with ANSWERED_ELSEWHERE (its default
    // without `Q`), which res_pjsip_rfc3326 turns into RFC 3326's `Reason: SIP;cause=200;
    // text="Call completed elsewhere"` on their CANCELs, so phones show the call as answered
    // elsewhere, not missed. Not option `c`: it marks every leg ANSWERED_ELSEWHERE from the
    // start, so a caller giving up would read as "answered elsewhere" too.
    chan.exec("Dial", &dests.join("&"));
    if let Some(u) = chan.var("PUSH_CALL_UUID") {
        running.wake.caller_done(&u);
    }
    // Pass the outcome up through the Local channel: the caller's Dial turns it into DIALSTATUS.
    let cause = match chan.var("DIALSTATUS").as_deref() {
        Some("BUSY") => CAUSE_BUSY,
        Some("CONGESTION") => CAUSE_CONGESTION,
        Some("CHANUNAVAIL") => CAUSE_SUBSCRIBER_ABSENT,
        _ => CAUSE_NO_ANSWER,
    };
    chan.set_hangup_cause(cause);
    -1
}

/// `PushDevice(<binding id>)`: wake one device (see [`Device`]) and ring it.
pub fn push_device(running: &Running, chan: Chan, data: &str) -> i32 {
    let id = args(data).swap_remove(0);
    let Some(b) = running.bindings.by_id(&id) else {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        chan.set_hangup_cause(CAUSE_SUBSCRIBER_ABSENT);
        return -1;
    };
    let general = running.general();
    let endpoint = chan.var("PUSH_ENDPOINT").unwrap_or_else(|| b.aor.clone());
    let call_uuid = chan.var("PUSH_CALL_UUID").unwrap_or_else(uuid_v4);
    let timeout = timeout_arg(chan.var("PUSH_WAKE_TIMEOUT").as_ref(), general.wake_timeout);
    let live = general
        .ring_live_contact
        .then(|| live_contact(&b))
        .flatten();
    let recent = !general.push_skip_recent.is_zero()
        && now().saturating_sub(b.last_register) < general.push_skip_recent.as_secs();
    let leg = Arc::new(DeviceLeg {
        id: running.wake.next_leg.fetch_add(1, Ordering::Relaxed),
        binding: b.clone(),
        call_uuid: call_uuid.clone(),
        started: Instant::now(),
        machine: Mutex::new(Device::new(Start {
            push: !(recent && live.is_some()),
            live,
            timeout,
        })),
        attention: AtomicBool::new(false),
        chan: chan.handle(),
        callee: Mutex::new(Callee::default()),
        reached: AtomicBool::new(false),
    });
    // Watch before pushing: a fast phone may register before the push call even returns.
    let ids = [b.id.clone()];
    let watcher = Watcher::Device(leg.clone());
    running.wake.watch(&ids, &watcher);
    event(
        "PushWakeStart",
        &b,
        &call_uuid,
        &[("Timeout", timeout.as_secs().to_string())],
    );
    if general.wait_audio == WaitAudio::Ringing {
        chan.ringing();
    }
    let mut moh = false;
    let outcome = loop {
        let (step, n) = leg.next();
        match step {
            Step::Push => {
                if running.wake.first_push(&call_uuid, &b.id) {
                    let l = Arc::downgrade(&leg);
                    let report = Box::new(move |r: Result<(), PushError>| {
                        if let Some(l) = l.upgrade() {
                            l.feed(r.map_or_else(Event::PushFailed, |()| Event::PushSent));
                        }
                    });
                    push(
                        running,
                        &b,
                        PushKind::Call,
                        call_data(running, chan, &endpoint, &call_uuid),
                        timeout,
                        Some(report),
                    );
                } else if let Some(r) = running.wake.claim_push(&call_uuid, &b.id, &leg) {
                    // Pushed when the call requested Push/ (or by a dialplan retry of this call).
                    leg.feed(r.map_or_else(Event::PushFailed, |()| Event::PushSent));
                }
            }
            Step::Ring { uri, timeout } => {
                if moh {
                    chan.moh(false);
                    moh = false;
                }
                // Inherited by the PJSIP channel: the INVITE hook hands it to this leg.
                chan.set_var("_PUSH_LEG", &format!("{}.{n}", leg.id));
                // Stripped here, not only by the INVITE hook: the URI dialed is also the To.
                let target = general
                    .strip_pn_params
                    .then(|| strip_push_params(&uri))
                    .flatten()
                    .unwrap_or(uri);
                let mut dial = format!("PJSIP/{endpoint}/{}", dial_uri(&target));
                if let Some(t) = timeout {
                    dial.push_str(&format!(",{:.3}", t.as_secs_f64().max(0.001)));
                }
                tracing::debug!("{}: device {} rings {dial}", b.aor, b.id);
                chan.exec("Dial", &dial);
                leg.feed(Event::LegEnded(leg_end(chan)));
            }
            Step::Wait(d) => {
                if general.wait_audio == WaitAudio::Moh && !moh {
                    chan.moh(true);
                    moh = true;
                }
                if chan.wait(d, &leg.attention) == WaitEnd::Hangup {
                    leg.feed(Event::Hangup);
                }
            }
            Step::Finish(o) => break o,
        }
    };
    if moh {
        chan.moh(false);
    }
    running.wake.unwatch(&ids, &watcher);
    let (pushed, registered, push_failure) = {
        let m = lock(&leg.machine);
        (m.pushed(), m.registered(), m.push_failure().cloned())
    };
    let cancel = |reason: &str| {
        if !pushed {
            return;
        }
        event(
            "PushCancel",
            &b,
            &call_uuid,
            &[("Reason", reason.to_string())],
        );
        let data = PushData {
            call_uuid: Some(call_uuid.clone()),
            endpoint: Some(endpoint.clone()),
            ..Default::default()
        };
        push(
            running,
            &b,
            PushKind::Cancel,
            data,
            Duration::from_secs(30),
            None,
        );
    };
    // A pushed device that never got the call at a fresh contact shows it (CallKit) until
    // something ends it: if it registers soon, a late INVITE + CANCEL does.
    let elsewhere = chan.hangup_cause() == res_push_core::late::CAUSE_ANSWERED_ELSEWHERE;
    let reached = registered || leg.reached.load(Ordering::Acquire);
    if let Some(ending) = res_push_core::late::ending(&outcome, pushed, reached, elsewhere) {
        let (caller_number, caller_name) = chan.caller();
        running.wake.missed(
            general,
            &b.id,
            MissedCall {
                call_uuid: call_uuid.clone(),
                endpoint: endpoint.clone(),
                caller_number,
                caller_name,
                ending,
            },
        );
    }
    running.wake.device_ended(
        &call_uuid,
        DeviceReport {
            label: b.id.clone(),
            reason: Reason::of(&outcome, elsewhere, push_failure.as_ref()),
            woken: registered,
        },
    );
    let woken = if registered { "WOKEN" } else { "ANSWERED" };
    match outcome {
        Outcome::Answered => chan.set_var("PUSHSTATUS", woken),
        Outcome::NotAnswered => {
            chan.set_var("PUSHSTATUS", "WOKEN");
            chan.set_hangup_cause(CAUSE_NO_ANSWER);
            cancel("not-answered");
        }
        Outcome::Declined => {
            chan.set_var("PUSHSTATUS", "DECLINED");
            chan.set_hangup_cause(CAUSE_BUSY);
            cancel("declined");
        }
        Outcome::Hangup => {
            chan.set_var("PUSHSTATUS", "HANGUP");
            cancel("hangup");
        }
        Outcome::Failed(why) => {
            tracing::info!("{}: giving up on device {}: {why}", b.aor, b.id);
            event(
                "PushWakeFailed",
                &b,
                &call_uuid,
                &[("Reason", why.to_string())],
            );
            chan.set_var("PUSHSTATUS", "FAILED");
            chan.set_hangup_cause(CAUSE_SUBSCRIBER_ABSENT);
        }
        Outcome::TimedOut => {
            tracing::info!(
                "{}: device {} neither answered nor registered within {}s",
                b.aor,
                b.id,
                timeout.as_secs()
            );
            event(
                "PushWakeTimeout",
                &b,
                &call_uuid,
                &[("Timeout", timeout.as_secs().to_string())],
            );
            chan.set_var("PUSHSTATUS", "TIMEOUT");
            chan.set_hangup_cause(CAUSE_NO_ANSWER);
            cancel("timeout");
            if general.missed_call_push {
                let data = call_data(running, chan, &endpoint, &call_uuid);
                push(
                    running,
                    &b,
                    PushKind::Missed,
                    data,
                    Duration::from_secs(30),
                    None,
                );
            }
        }
    }
    -1
}

/// `PushWake(endpoint[,timeout[,options]])`: push every device, wait for the first REGISTER;
/// sets PUSHSTATUS and PUSH_CONTACTS for explicit dialplans. A device that registered within
/// `push_skip_recent` counts as awake at once (no push, no wait); on a timeout or failure,
/// PUSH_CONTACTS still holds the devices' live contacts when `ring_live_contact` is on.
pub fn push_wake(running: &Running, chan: Chan, data: &str) -> i32 {
    let a = args(data);
    let endpoint = a[0].clone();
    let general = running.general();
    let timeout = timeout_arg(a.get(1), general.wake_timeout);
    let aors = channel::endpoint_aors(&endpoint).unwrap_or_default();
    running.bindings.refresh_for_call(chan, &aors);
    let plain = plain_contacts(&endpoint, &aors);
    let devices = bindings_of(running, &aors);
    if devices.is_empty() {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        chan.set_var("PUSH_CONTACTS", &plain.join("&"));
        chan.set_var("PUSH_REASONS", &no_binding(&endpoint));
        return 0;
    }
    let dest = |uri: &str| format!("PJSIP/{endpoint}/{}", dial_uri(uri));
    let live: Vec<(Binding, ContactRef)> = if general.ring_live_contact {
        devices
            .iter()
            .filter_map(|b| Some((b.clone(), live_contact(b)?)))
            .collect()
    } else {
        Vec::new()
    };
    let skip = general.push_skip_recent.as_secs();
    let recent: Vec<&(Binding, ContactRef)> = live
        .iter()
        .filter(|(b, _)| skip > 0 && now().saturating_sub(b.last_register) < skip)
        .collect();
    if !recent.is_empty() {
        let mut c = plain;
        c.extend(recent.iter().map(|(_, r)| dest(&r.uri)));
        let reports: Vec<DeviceReport> = recent
            .iter()
            .map(|(b, _)| DeviceReport {
                label: b.id.clone(),
                reason: Reason::Woken,
                woken: true,
            })
            .collect();
        chan.set_var("PUSHSTATUS", "WOKEN");
        chan.set_var("PUSH_CONTACTS", &c.join("&"));
        chan.set_var("PUSH_REASONS", &reasons::reasons_var(&reports));
        return 0;
    }
    let call_uuid = chan.var("PUSH_CALL_UUID").unwrap_or_else(|| {
        // As for Push/: a later Dial(Push/...) of this call pushes nobody twice.
        let u = uuid_v4();
        chan.set_var("PUSH_CALL_UUID", &u);
        u
    });
    let waiter = Arc::new(Waiter {
        done: AtomicBool::new(false),
        result: Mutex::new(None),
        chan: chan.handle(),
        pending_pushes: AtomicUsize::new(devices.len()),
        failed: Mutex::new(HashMap::new()),
        woken: Mutex::new(Vec::new()),
    });
    let ids: Vec<String> = devices.iter().map(|b| b.id.clone()).collect();
    let watcher = Watcher::Wake(waiter.clone());
    running.wake.watch(&ids, &watcher);
    let started = Instant::now();
    let mut pushed = Vec::new();
    for b in &devices {
        event(
            "PushWakeStart",
            b,
            &call_uuid,
            &[("Timeout", timeout.as_secs().to_string())],
        );
        if running.wake.first_push(&call_uuid, &b.id) {
            let w = waiter.clone();
            let id = b.id.clone();
            let report = Box::new(move |r: Result<(), PushError>| {
                if let Err(e) = r {
                    w.push_failed(&id, e);
                }
            });
            push(
                running,
                b,
                PushKind::Call,
                call_data(running, chan, &endpoint, &call_uuid),
                timeout,
                Some(report),
            );
            pushed.push(b.id.clone());
        } else {
            waiter.push_failed(&b.id, "already pushed for this call".into());
        }
    }
    if !a.get(2).is_some_and(|o| o.contains('n')) {
        chan.ringing();
    }
    let end = chan.wait(timeout, &waiter.done);
    running.wake.unwatch(&ids, &watcher);
    let result = lock(&waiter.result).clone();
    let mut contacts = plain;
    let status = match (end, result) {
        (_, Some(Ok(uri))) => {
            contacts.push(dest(&uri));
            tracing::info!(
                "{endpoint}: woken after {} ms",
                started.elapsed().as_millis()
            );
            "WOKEN"
        }
        (_, Some(Err(_))) => "FAILED",
        (WaitEnd::Timeout, None) => "TIMEOUT",
        (_, None) => "HANGUP",
    };
    if status != "WOKEN" {
        contacts.extend(live.iter().map(|(_, c)| dest(&c.uri)));
    }
    // The pushed devices that did not wake (all of them unless one did: the dialplan rings
    // only that one) will get no INVITE for this call; one that registers soon gets a late
    // INVITE + CANCEL to close the call its app reported.
    {
        let (caller_number, caller_name) = chan.caller();
        let woken = lock(&waiter.woken).clone();
        for id in pushed.iter().filter(|id| !woken.contains(id)) {
            running.wake.missed(
                general,
                id,
                MissedCall {
                    call_uuid: call_uuid.clone(),
                    endpoint: endpoint.clone(),
                    caller_number: caller_number.clone(),
                    caller_name: caller_name.clone(),
                    ending: Ending::Terminated,
                },
            );
        }
    }
    chan.set_var("PUSHSTATUS", status);
    chan.set_var("PUSH_CONTACTS", &contacts.join("&"));
    let (woken, failed) = (lock(&waiter.woken).clone(), lock(&waiter.failed).clone());
    let reports: Vec<DeviceReport> = devices
        .iter()
        .map(|b| DeviceReport {
            label: b.id.clone(),
            reason: if woken.contains(&b.id) {
                Reason::Woken
            } else if let Some(class) = failed.get(&b.id) {
                Reason::PushFailed(*class)
            } else if status == "HANGUP" {
                Reason::Hangup
            } else {
                Reason::Timeout
            },
            woken: woken.contains(&b.id),
        })
        .collect();
    chan.set_var("PUSH_REASONS", &reasons::reasons_var(&reports));
    if status == "HANGUP" { -1 } else { 0 }
}

/// An initial INVITE is leaving on `chan` for `request_uri`. Hands the callee to the device
/// leg that dials it, pushes the device for a plain `Dial(PJSIP/...)` (`push_on_plain_dial`,
/// once per call: the INVITE's Call-ID), and returns the Request-URI without push parameters
/// (`strip_pn_params`).
pub fn outgoing_invite(
    running: &Running,
    chan: Option<Chan>,
    request_uri: &str,
    call_id: &str,
) -> Option<String> {
    let general = running.general();
    match chan.map(|c| (c, c.var("PUSH_LEG"))) {
        Some((c, Some(key))) => running.wake.callee_started(&key, c),
        // Legs of a Push/ call were pushed by their device leg already.
        Some((c, None)) if general.push_on_plain_dial && c.var("PUSH_CALL_UUID").is_none() => {
            plain_dial(running, Some(c), request_uri, call_id)
        }
        None if general.push_on_plain_dial => plain_dial(running, None, request_uri, call_id),
        _ => {}
    }
    general
        .strip_pn_params
        .then(|| strip_push_params(request_uri))
        .flatten()
}

fn plain_dial(running: &Running, chan: Option<Chan>, request_uri: &str, call_id: &str) {
    let rules = &running.general().policy.rules;
    let Request::Bind(params) = from_contact(&parse_contact(&format!("<{request_uri}>")), rules)
    else {
        return;
    };
    let Some(b) = running.bindings.by_device(&params) else {
        return;
    };
    if !running.wake.first_push(call_id, &b.id) {
        return;
    }
    let (caller_number, caller_name) = caller_id(running, chan);
    let data = PushData {
        caller_number,
        caller_name,
        call_uuid: Some(uuid_v4()),
        call_id: Some(call_id.to_string()),
        endpoint: Some(b.aor.clone()),
        text: None,
    };
    tracing::info!(
        "{}: INVITE to a push contact; pushing device {}",
        b.aor,
        b.id
    );
    push(
        running,
        &b,
        PushKind::Call,
        data,
        running.general().wake_timeout,
        None,
    );
}
