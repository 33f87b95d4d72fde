//! Call wake-up: push each device of the called endpoint, ring it the moment its REGISTER
//! arrives (the REGISTER hook fires [`Wake::registered`]; nothing polls), cancel what did not
//! answer.
//!
//! `Dial(Push/alice)` becomes `Local/walice@res-push-wake/n` (see `asterisk-headers/shim_wake.c`),
//! where `PushDial` dials alice's plain contacts at once plus one
//! `Local/d<binding>@res-push-device/n` leg per push device, where `PushDevice` pushes, waits
//! and dials that device's fresh contact. Devices never wait for each other, and the first
//! answer wins by Dial's own rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use res_push_core::binding::{Binding, binding_id, redact};
use res_push_core::config::WaitAudio;
use res_push_core::pn::{Request, from_contact};
use res_push_core::sip::parse_contact;
use res_push_core::status::WakeCounters;
use res_push_proto::{Job, Outcome, PushData, PushKind, PushRequest};

use crate::ast::channel::{self, Chan, ChanRef, WaitEnd};
use crate::ast::manager;
use crate::bindings::{Work, target};
use crate::module::Running;
use crate::push::uuid_v4;

/// What ended a device's wait.
#[derive(Debug, Clone)]
enum Woken {
    /// The device registered from this contact.
    Registered(String),
    /// Its push could not be delivered: give up at once.
    Failed(String),
}

/// One call waiting for one or more devices.
#[derive(Debug)]
struct Waiter {
    done: AtomicBool,
    result: Mutex<Option<Woken>>,
    chan: ChanRef,
    /// Pushes of this waiter still without outcome; when the last fails, the wait fails.
    pending_pushes: AtomicUsize,
}

impl Waiter {
    fn fill(&self, w: Woken) {
        let mut r = self.result.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(w);
            self.done.store(true, Ordering::Release);
            self.chan.wake();
        }
    }

    fn push_failed(&self, why: String) {
        if self.pending_pushes.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.fill(Woken::Failed(why));
        }
    }
}

/// Waiters by binding id, which (call, device) pairs were already pushed, and counters.
#[derive(Debug, Default)]
pub struct Wake {
    waiters: Mutex<HashMap<String, Vec<Arc<Waiter>>>>,
    pushed: Mutex<HashMap<(String, String), Instant>>,
}

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
    pub fn registered(&self, aor: &str, params: &res_push_core::pn::PushParams, contact_uri: &str) {
        let id = binding_id(aor, params.provider, &params.app_id, &params.token);
        let waiters = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        for w in waiters.into_iter().flatten() {
            w.fill(Woken::Registered(contact_uri.to_string()));
        }
    }

    fn watch(&self, ids: &[String], w: &Arc<Waiter>) {
        let mut map = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            map.entry(id.clone()).or_default().push(w.clone());
        }
    }

    fn unwatch(&self, ids: &[String], w: &Arc<Waiter>) {
        let mut map = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if let Some(list) = map.get_mut(id) {
                list.retain(|x| !Arc::ptr_eq(x, w));
                if list.is_empty() {
                    map.remove(id);
                }
            }
        }
    }

    /// True the first time (call, device) is asked for.
    fn first_push(&self, call: &str, id: &str) -> bool {
        let mut pushed = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
        pushed.retain(|_, at| at.elapsed() < DEDUP_TTL);
        pushed
            .insert((call.to_string(), id.to_string()), Instant::now())
            .is_none()
    }
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

/// `Push/<endpoint>` → the Local destination, or `None` for an unknown endpoint.
pub fn local_destination(endpoint: &str) -> Option<String> {
    channel::endpoint_aors(endpoint)?;
    Some(format!("w{}@res-push-wake/n", encode_endpoint(endpoint)))
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
    let has_binding = channel::endpoint_aors(endpoint)
        .unwrap_or_default()
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

/// Sends a push for a call, reporting failure to `waiter` (which then gives up at once).
fn push(
    running: &Running,
    b: &Binding,
    kind: PushKind,
    data: PushData,
    waiter: Option<Arc<Waiter>>,
    deadline: Duration,
) {
    let bindings = running.bindings.clone();
    let (provider, token, aor, id) = (b.provider, b.token.clone(), b.aor.clone(), b.id.clone());
    let job = Job::Push(PushRequest {
        target: target(b),
        kind,
        data,
    });
    let failed_waiter = waiter.clone();
    let done = Box::new(move |r: Result<Outcome, crate::link::LinkError>| {
        let failure = match r {
            Ok(Outcome::Sent { .. }) => None,
            Ok(Outcome::InvalidToken { reason }) => {
                tracing::info!(
                    "{aor}: token {} reported dead ({reason}); removing binding",
                    redact(&token)
                );
                bindings.submit(Work::InvalidToken(provider, token));
                Some(format!("invalid token ({reason})"))
            }
            Ok(other) => Some(format!("{other:?}")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failure {
            tracing::warn!("{aor}: {kind:?} push to binding {id} failed: {why}");
            if let Some(w) = &waiter {
                w.push_failed(why);
            }
        }
    });
    if let Err(e) = running.link.submit(job, Some(deadline), done) {
        tracing::warn!("{}: {kind:?} push not queued: {e}", b.aor);
        if let Some(w) = failed_waiter {
            w.push_failed(e.to_string());
        }
    }
}

fn call_data(chan: Chan, endpoint: &str, call_uuid: &str) -> PushData {
    let (caller_number, caller_name) = chan.caller();
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

/// `PushDial(endpoint[,timeout])`: ring plain contacts now and each push device when it wakes.
pub fn push_dial(running: &Running, chan: Chan, data: &str) -> i32 {
    let a = args(data);
    let endpoint = decode_endpoint(&a[0]);
    let Some(aors) = channel::endpoint_aors(&endpoint) else {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        chan.set_hangup_cause(CAUSE_SUBSCRIBER_ABSENT);
        return -1;
    };
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
    // Inherited by the device legs: one call UUID for call, cancel and missed pushes.
    if chan.var("PUSH_CALL_UUID").is_none() {
        chan.set_var("__PUSH_CALL_UUID", &uuid_v4());
    }
    chan.set_var("__PUSH_ENDPOINT", &endpoint);
    if let Some(t) = a.get(1).filter(|t| !t.is_empty()) {
        chan.set_var("__PUSH_WAKE_TIMEOUT", t);
    }
    tracing::debug!("{endpoint}: ringing {}", dests.join(" & "));
    chan.exec("Dial", &dests.join("&"));
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

/// `PushDevice(<binding id>)`: push one device, wait for its REGISTER, ring its fresh contact.
pub fn push_device(running: &Running, chan: Chan, data: &str) -> i32 {
    let id = args(data).swap_remove(0);
    let Some(b) = running.bindings.by_id(&id) else {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        return -1;
    };
    let general = running.general();
    let endpoint = chan.var("PUSH_ENDPOINT").unwrap_or_else(|| b.aor.clone());
    let call_uuid = chan.var("PUSH_CALL_UUID").unwrap_or_else(uuid_v4);
    let timeout = timeout_arg(chan.var("PUSH_WAKE_TIMEOUT").as_ref(), general.wake_timeout);

    // Watch before pushing: a fast phone may register before the push call even returns.
    let waiter = Arc::new(Waiter {
        done: AtomicBool::new(false),
        result: Mutex::new(None),
        chan: chan.handle(),
        pending_pushes: AtomicUsize::new(1),
    });
    let ids = [b.id.clone()];
    running.wake.watch(&ids, &waiter);
    let started = Instant::now();
    event(
        "PushWakeStart",
        &b,
        &call_uuid,
        &[("Timeout", timeout.as_secs().to_string())],
    );
    if running.wake.first_push(&call_uuid, &b.id) {
        push(
            running,
            &b,
            PushKind::Call,
            call_data(chan, &endpoint, &call_uuid),
            Some(waiter.clone()),
            timeout,
        );
    }
    match general.wait_audio {
        WaitAudio::Ringing => chan.ringing(),
        WaitAudio::Moh => chan.moh(true),
        WaitAudio::None => {}
    }
    let end = chan.wait(timeout, &waiter.done);
    running.wake.unwatch(&ids, &waiter);
    if general.wait_audio == WaitAudio::Moh {
        chan.moh(false);
    }
    let result = waiter
        .result
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let cancel = |reason: &str| {
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
            None,
            Duration::from_secs(30),
        );
    };
    match (end, result) {
        (_, Some(Woken::Registered(uri))) => {
            let waited = started.elapsed().as_millis();
            tracing::info!(
                "{}: device {} registered after {waited} ms; ringing it",
                b.aor,
                b.id
            );
            event(
                "PushWakeRegistered",
                &b,
                &call_uuid,
                &[("WaitMs", waited.to_string())],
            );
            chan.set_var("PUSHSTATUS", "WOKEN");
            chan.exec("Dial", &format!("PJSIP/{endpoint}/{}", dial_uri(&uri)));
            if chan.var("DIALSTATUS").as_deref() != Some("ANSWER") {
                cancel("not-answered");
            }
        }
        (_, Some(Woken::Failed(why))) => {
            tracing::info!("{}: giving up on device {}: {why}", b.aor, b.id);
            event("PushWakeFailed", &b, &call_uuid, &[("Reason", why)]);
            chan.set_var("PUSHSTATUS", "FAILED");
            chan.set_hangup_cause(CAUSE_SUBSCRIBER_ABSENT);
        }
        (WaitEnd::Hangup, None) | (WaitEnd::Woken, None) => {
            chan.set_var("PUSHSTATUS", "HANGUP");
            cancel("hangup");
        }
        (WaitEnd::Timeout, None) => {
            tracing::info!(
                "{}: device {} did not register within {}s",
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
                let data = call_data(chan, &endpoint, &call_uuid);
                push(
                    running,
                    &b,
                    PushKind::Missed,
                    data,
                    None,
                    Duration::from_secs(30),
                );
            }
        }
    }
    -1
}

/// `PushWake(endpoint[,timeout[,options]])`: push every device, wait for the first REGISTER;
/// sets PUSHSTATUS and PUSH_CONTACTS for explicit dialplans.
pub fn push_wake(running: &Running, chan: Chan, data: &str) -> i32 {
    let a = args(data);
    let endpoint = a[0].clone();
    let general = running.general();
    let timeout = timeout_arg(a.get(1), general.wake_timeout);
    let aors = channel::endpoint_aors(&endpoint).unwrap_or_default();
    let plain = plain_contacts(&endpoint, &aors);
    let devices = bindings_of(running, &aors);
    if devices.is_empty() {
        chan.set_var("PUSHSTATUS", "NOBINDING");
        chan.set_var("PUSH_CONTACTS", &plain.join("&"));
        return 0;
    }
    let call_uuid = chan.var("PUSH_CALL_UUID").unwrap_or_else(uuid_v4);
    let waiter = Arc::new(Waiter {
        done: AtomicBool::new(false),
        result: Mutex::new(None),
        chan: chan.handle(),
        pending_pushes: AtomicUsize::new(devices.len()),
    });
    let ids: Vec<String> = devices.iter().map(|b| b.id.clone()).collect();
    running.wake.watch(&ids, &waiter);
    let started = Instant::now();
    for b in &devices {
        event(
            "PushWakeStart",
            b,
            &call_uuid,
            &[("Timeout", timeout.as_secs().to_string())],
        );
        if running.wake.first_push(&call_uuid, &b.id) {
            push(
                running,
                b,
                PushKind::Call,
                call_data(chan, &endpoint, &call_uuid),
                Some(waiter.clone()),
                timeout,
            );
        } else {
            waiter.push_failed("already pushed for this call".into());
        }
    }
    if !a.get(2).is_some_and(|o| o.contains('n')) {
        chan.ringing();
    }
    let end = chan.wait(timeout, &waiter.done);
    running.wake.unwatch(&ids, &waiter);
    let result = waiter
        .result
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (status, contacts) = match (end, result) {
        (_, Some(Woken::Registered(uri))) => {
            let mut c = plain;
            c.push(format!("PJSIP/{endpoint}/{}", dial_uri(&uri)));
            tracing::info!(
                "{endpoint}: woken after {} ms",
                started.elapsed().as_millis()
            );
            ("WOKEN", c)
        }
        (_, Some(Woken::Failed(_))) => ("FAILED", plain),
        (WaitEnd::Timeout, None) => ("TIMEOUT", plain),
        (_, None) => ("HANGUP", plain),
    };
    chan.set_var("PUSHSTATUS", status);
    chan.set_var("PUSH_CONTACTS", &contacts.join("&"));
    if status == "HANGUP" { -1 } else { 0 }
}

/// `push_on_plain_dial`: an INVITE is leaving for a contact with push parameters; push the
/// device once per call (the INVITE's Call-ID), so existing `Dial(PJSIP/...)` dialplans wake
/// phones too.
pub fn plain_dial(running: &Running, chan: Option<Chan>, request_uri: &str, call_id: &str) {
    let rules = running.policy_rules();
    let Request::Bind(params) = from_contact(&parse_contact(&format!("<{request_uri}>")), &rules)
    else {
        return;
    };
    let Some(b) = running.bindings.list(None).into_iter().find(|b| {
        b.provider == params.provider && b.app_id == params.app_id && b.token == params.token
    }) else {
        return;
    };
    if !running.wake.first_push(call_id, &b.id) {
        return;
    }
    let (caller_number, caller_name) = chan.map(|c| c.caller()).unwrap_or_default();
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
        None,
        running.general().wake_timeout,
    );
}
