//! Messages to sleeping phones (`MessageSend(push:<endpoint>)`): what happens to one message,
//! and the per-AOR queue of messages waiting for a device to register.
//!
//! A message goes at once to every contact that can take it (plain contacts, and push devices
//! that count as awake); every push device that is asleep gets it queued and is sent an alert
//! push. A queued message remembers which devices still have to get it and is handed to each
//! of them once, in order, when that device registers; it leaves the queue when the last one
//! had it or when it is older than `message_max_age`. A full queue refuses the new message:
//! older ones are never dropped to make room.

use std::collections::{BTreeMap, HashMap, VecDeque};

use res_push_proto::PushData;
use serde::{Deserialize, Serialize};

/// What `MessageSend(push:...)` did, as `PUSH_MESSAGE_STATUS()` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Handed to SIP for at least one contact now (sleeping devices may have it queued too).
    Delivered,
    /// No contact could take it now; queued for the push devices, which were pushed.
    Queued,
    /// Only sleeping devices, and their AOR's queue is full: refused.
    Full,
    /// The endpoint has no contact and no push device: refused.
    NoDevice,
    /// Not a `push:<endpoint>` destination, or no such endpoint: refused.
    Invalid,
}

impl Status {
    /// The value dialplans see.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "DELIVERED",
            Status::Queued => "QUEUED",
            Status::Full => "FULL",
            Status::NoDevice => "NO_DEVICE",
            Status::Invalid => "INVALID",
        }
    }

    /// Whether `MessageSend` reports success (`MESSAGE_SEND_STATUS=SUCCESS`).
    pub fn accepted(self) -> bool {
        matches!(self, Status::Delivered | Status::Queued)
    }
}

/// The endpoint named by a message destination: `push:alice`, `push:alice@pbx.example`,
/// `push:sip:alice@pbx.example` (the user part then names the endpoint).
pub fn endpoint_of(destination: &str) -> Option<&str> {
    let rest = destination.strip_prefix("push:")?;
    let rest = rest
        .strip_prefix("sips:")
        .or_else(|| rest.strip_prefix("sip:"))
        .unwrap_or(rest);
    let endpoint = rest.split('@').next().unwrap_or("").trim();
    (!endpoint.is_empty() && !endpoint.contains(['/', ':', ';', ',', ' '])).then_some(endpoint)
}

/// Display name and user of a sender (`"Bob" <sip:bob@pbx>`, `sip:bob@pbx`, `bob`).
pub fn sender(from: &str) -> (Option<String>, Option<String>) {
    let from = from.trim();
    let (name, uri) = match from.find('<') {
        Some(lt) => {
            let name = from[..lt].trim().trim_matches('"').trim();
            let uri = from[lt + 1..].split('>').next().unwrap_or("");
            ((!name.is_empty()).then(|| name.to_string()), uri)
        }
        None => (None, from),
    };
    let uri = uri.split(';').next().unwrap_or("");
    let uri = ["pjsip:", "sips:", "sip:", "tel:"]
        .iter()
        .find_map(|p| uri.strip_prefix(p))
        .unwrap_or(uri);
    let user = uri.split('@').next().unwrap_or("").trim();
    (name, (!user.is_empty()).then(|| user.to_string()))
}

/// Characters of the body an alert shows (a lock screen shows two lines or so; APNs payloads
/// are limited to 4 KiB).
pub const PREVIEW_CHARS: usize = 120;

/// The start of `body` for an alert: at most [`PREVIEW_CHARS`] characters, `…` when cut.
pub fn preview(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(PREVIEW_CHARS) {
        Some((at, _)) => format!("{}…", body[..at].trim_end()),
        None => body.to_string(),
    }
}

/// What the alert push of a queued message carries. `push_caller_id = no` keeps the sender
/// *and* the preview out (the body is at least as personal as the number); `push_message_preview
/// = no` keeps only the preview out. The UUID is fresh per message: APNs collapses alerts that
/// share one, and each message deserves its own.
pub fn alert(
    endpoint: &str,
    from: &str,
    body: &str,
    message_uuid: String,
    caller_id: bool,
    show_preview: bool,
) -> PushData {
    let (name, user) = if caller_id {
        sender(from)
    } else {
        (None, None)
    };
    let text = (caller_id && show_preview)
        .then(|| preview(body))
        .filter(|t| !t.is_empty());
    PushData {
        caller_number: user,
        caller_name: name,
        call_uuid: Some(message_uuid),
        call_id: None,
        endpoint: Some(endpoint.to_string()),
        text,
    }
}

/// A push device of the endpoint, as seen when a message arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its binding id.
    pub id: String,
    /// Its contact, when the device counts as awake (registered, unexpired, recently).
    pub awake_contact: Option<String>,
}

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Contacts to send it to now.
    pub now: Vec<String>,
    /// Devices to queue it for (and push).
    pub queue_for: Vec<String>,
    /// Awake devices that still have older messages queued: it waits behind them, and their
    /// queue is delivered now (to the contact given), keeping the order.
    pub flush: Vec<(String, String)>,
    /// What the dialplan is told.
    pub status: Status,
}

/// Decides the fate of a message to an endpoint with these `plain` contacts (no push binding)
/// and push `devices`. `queued` says whether a device has messages waiting; `room` whether the
/// AOR's queue can take one more.
pub fn plan(
    plain: &[String],
    devices: &[Device],
    queued: impl Fn(&str) -> bool,
    room: bool,
) -> Plan {
    let mut now: Vec<String> = plain.to_vec();
    let mut queue_for = Vec::new();
    let mut flush = Vec::new();
    for d in devices {
        match &d.awake_contact {
            Some(c) if !queued(&d.id) => now.push(c.clone()),
            Some(c) => {
                queue_for.push(d.id.clone());
                flush.push((d.id.clone(), c.clone()));
            }
            None => queue_for.push(d.id.clone()),
        }
    }
    now.dedup();
    let status = match (now.is_empty(), queue_for.is_empty(), room) {
        (true, true, _) => Status::NoDevice,
        (false, _, _) => Status::Delivered,
        (true, false, true) => Status::Queued,
        (true, false, false) => Status::Full,
    };
    if !room {
        // Nothing is queued beyond the bound; devices already holding older messages get
        // those now, at least.
        queue_for.clear();
    }
    Plan {
        now,
        queue_for,
        flush,
        status,
    }
}

/// One message as queued (and stored in astdb as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Order of arrival, unique across AORs and restarts.
    pub seq: u64,
    /// The AOR whose queue holds it.
    pub aor: String,
    /// The endpoint it was sent to (what delivery addresses: `pjsip:<endpoint>/<contact>`).
    pub endpoint: String,
    /// From, as the message carried it (or MessageSend's `from`).
    pub from: String,
    /// To, as the message carried it.
    pub to: String,
    /// The body.
    pub body: String,
    /// Outbound variables (`MESSAGE_DATA()`: extra headers), in order.
    #[serde(default)]
    pub vars: Vec<(String, String)>,
    /// Unix time it arrived.
    pub created: u64,
    /// Binding ids of the devices that have not had it yet.
    pub devices: Vec<String>,
}

/// A message about to be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// See [`Queued`].
    pub aor: String,
    /// See [`Queued`].
    pub endpoint: String,
    /// See [`Queued`].
    pub from: String,
    /// See [`Queued`].
    pub to: String,
    /// See [`Queued`].
    pub body: String,
    /// See [`Queued`].
    pub vars: Vec<(String, String)>,
}

/// The queue refused a message: the AOR already holds this many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message queue full ({0} messages)")]
pub struct Full(pub usize);

/// What a device's registration takes out of the queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Taken {
    /// Messages to hand to the device, oldest first.
    pub deliver: Vec<Queued>,
    /// Messages other devices still wait for, to store again.
    pub updated: Vec<Queued>,
    /// Messages that left the queue (delivered to their last device, or expired).
    pub removed: Vec<Queued>,
    /// Of `removed`, those dropped for age.
    pub expired: usize,
}

/// The queues of every AOR.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    by_aor: BTreeMap<String, VecDeque<Queued>>,
    /// Messages each device still waits for: the REGISTER hook asks on every push REGISTER,
    /// on a PJSIP thread, so the answer must not cost a scan of every queue.
    waiting: HashMap<String, usize>,
    next_seq: u64,
}

impl Queues {
    /// Rebuilds the queues from stored messages (any order).
    pub fn restore(stored: impl IntoIterator<Item = Queued>) -> Queues {
        let mut all: Vec<Queued> = stored.into_iter().collect();
        all.sort_by_key(|m| m.seq);
        all.dedup_by_key(|m| m.seq);
        let mut q = Queues {
            next_seq: all.last().map_or(1, |m| m.seq + 1),
            ..Queues::default()
        };
        for m in all {
            q.count(&m.devices, true);
            q.by_aor.entry(m.aor.clone()).or_default().push_back(m);
        }
        q
    }

    fn count(&mut self, devices: &[String], add: bool) {
        for d in devices {
            let n = self.waiting.entry(d.clone()).or_default();
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.waiting.remove(d);
                }
            }
        }
    }

    /// Messages queued for `aor`.
    pub fn len(&self, aor: &str) -> usize {
        self.by_aor.get(aor).map_or(0, VecDeque::len)
    }

    /// Messages queued in all.
    pub fn total(&self) -> usize {
        self.by_aor.values().map(VecDeque::len).sum()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.by_aor.is_empty()
    }

    /// Whether any device has messages waiting.
    pub fn any_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether this device (a binding id, unique across AORs) has messages waiting.
    pub fn has_for(&self, device: &str) -> bool {
        self.waiting.contains_key(device)
    }

    /// The queue of `aor`, or every queue, oldest first.
    pub fn list(&self, aor: Option<&str>) -> Vec<&Queued> {
        match aor {
            Some(a) => self.by_aor.get(a).into_iter().flatten().collect(),
            None => self.by_aor.values().flatten().collect(),
        }
    }

    /// The message `seq` of `aor` as it stands, if still queued.
    pub fn get(&self, aor: &str, seq: u64) -> Option<&Queued> {
        self.by_aor.get(aor)?.iter().find(|m| m.seq == seq)
    }

    /// Queues a message for `devices`; refused when the AOR holds `max` already.
    pub fn enqueue(
        &mut self,
        m: Incoming,
        devices: Vec<String>,
        now: u64,
        max: usize,
    ) -> Result<Queued, Full> {
        let held = self.len(&m.aor);
        if held >= max {
            return Err(Full(held));
        }
        // From 1: 0 marks a message sent at once, never queued.
        let seq = self.next_seq.max(1);
        let queued = Queued {
            seq,
            aor: m.aor,
            endpoint: m.endpoint,
            from: m.from,
            to: m.to,
            body: m.body,
            vars: m.vars,
            created: now,
            devices,
        };
        self.next_seq = seq + 1;
        self.count(&queued.devices, true);
        self.by_aor
            .entry(queued.aor.clone())
            .or_default()
            .push_back(queued.clone());
        Ok(queued)
    }

    /// A device registered: the messages it has not had, oldest first, each taken off its
    /// list so no later registration gets it again. Expired messages are dropped on the way.
    pub fn take_for(&mut self, device: &str, now: u64, max_age: u64) -> Taken {
        let mut taken = Taken::default();
        if !self.has_for(device) {
            taken.removed = self.expire(now, max_age);
            taken.expired = taken.removed.len();
            return taken;
        }
        let mut uncount: Vec<String> = Vec::new();
        for q in self.by_aor.values_mut() {
            let mut kept = VecDeque::with_capacity(q.len());
            for mut m in q.drain(..) {
                if is_expired(&m, now, max_age) {
                    uncount.extend(m.devices.iter().cloned());
                    taken.expired += 1;
                    taken.removed.push(m);
                    continue;
                }
                let before = m.devices.len();
                m.devices.retain(|d| d != device);
                if m.devices.len() == before {
                    kept.push_back(m);
                    continue;
                }
                uncount.push(device.to_string());
                taken.deliver.push(m.clone());
                if m.devices.is_empty() {
                    taken.removed.push(m);
                } else {
                    taken.updated.push(m.clone());
                    kept.push_back(m);
                }
            }
            *q = kept;
        }
        self.by_aor.retain(|_, q| !q.is_empty());
        self.count(&uncount, false);
        taken.deliver.sort_by_key(|m| m.seq);
        taken
    }

    /// A delivery SIP did not take: `m` waits for `device` again, in its place. Returns the
    /// message as it now stands (to store).
    pub fn put_back(&mut self, m: Queued, device: &str) -> Queued {
        let q = self.by_aor.entry(m.aor.clone()).or_default();
        if let Some(held) = q.iter_mut().find(|h| h.seq == m.seq) {
            if held.devices.iter().any(|d| d == device) {
                return held.clone();
            }
            held.devices.push(device.to_string());
            let back = held.clone();
            self.count(&[device.to_string()], true);
            return back;
        }
        let at = q.iter().position(|h| h.seq > m.seq).unwrap_or(q.len());
        let back = Queued {
            devices: vec![device.to_string()],
            ..m
        };
        q.insert(at, back.clone());
        self.count(&back.devices, true);
        back
    }

    /// A device's binding is gone (logged out, token dead, forgotten): it will never register
    /// for these messages, so it stops holding them. Returns (messages still waiting for other
    /// devices, to store again; messages nobody waits for any more, to remove).
    pub fn forget(&mut self, device: &str) -> (Vec<Queued>, Vec<Queued>) {
        let (mut updated, mut removed) = (Vec::new(), Vec::new());
        if !self.has_for(device) {
            return (updated, removed);
        }
        for q in self.by_aor.values_mut() {
            q.retain_mut(|m| {
                let before = m.devices.len();
                m.devices.retain(|d| d != device);
                if m.devices.len() == before {
                    return true;
                }
                if m.devices.is_empty() {
                    removed.push(m.clone());
                    false
                } else {
                    updated.push(m.clone());
                    true
                }
            });
        }
        self.by_aor.retain(|_, q| !q.is_empty());
        self.waiting.remove(device);
        (updated, removed)
    }

    /// Drops every message older than `max_age`; returns them.
    pub fn expire(&mut self, now: u64, max_age: u64) -> Vec<Queued> {
        let mut gone = Vec::new();
        self.by_aor.retain(|_, q| {
            q.retain(|m| {
                let old = is_expired(m, now, max_age);
                if old {
                    gone.push(m.clone());
                }
                !old
            });
            !q.is_empty()
        });
        for m in &gone {
            self.count(&m.devices, false);
        }
        gone
    }

    /// Operator removal: every message of `aor`; returns them.
    pub fn clear(&mut self, aor: &str) -> Vec<Queued> {
        let gone: Vec<Queued> = self.by_aor.remove(aor).map(Vec::from).unwrap_or_default();
        for m in &gone {
            self.count(&m.devices, false);
        }
        gone
    }
}

fn is_expired(m: &Queued, now: u64, max_age: u64) -> bool {
    now.saturating_sub(m.created) >= max_age
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(aor: &str, body: &str) -> Incoming {
        Incoming {
            aor: aor.into(),
            endpoint: aor.into(),
            from: "\"Bob\" <sip:bob@pbx>".into(),
            to: format!("sip:{aor}@pbx"),
            body: body.into(),
            vars: vec![],
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn destinations() {
        assert_eq!(endpoint_of("push:alice"), Some("alice"));
        assert_eq!(endpoint_of("push:alice@pbx.example"), Some("alice"));
        assert_eq!(endpoint_of("push:sip:alice@pbx.example"), Some("alice"));
        assert_eq!(endpoint_of("push:"), None);
        assert_eq!(endpoint_of("pjsip:alice"), None);
        assert_eq!(endpoint_of("push:alice/sip:x@y"), None);
    }

    #[test]
    fn senders() {
        assert_eq!(
            sender("\"Bob Smith\" <sip:bob@pbx;transport=udp>;tag=1"),
            (Some("Bob Smith".into()), Some("bob".into()))
        );
        assert_eq!(sender("<sip:1001@pbx>"), (None, Some("1001".into())));
        assert_eq!(sender("sip:bob@pbx"), (None, Some("bob".into())));
        assert_eq!(sender("pjsip:bob"), (None, Some("bob".into())));
        assert_eq!(sender(""), (None, None));
    }

    #[test]
    fn previews_are_cut_on_characters() {
        assert_eq!(preview("  hi  "), "hi");
        let long = "é".repeat(200);
        let p = preview(&long);
        assert_eq!(p.chars().count(), PREVIEW_CHARS + 1);
        assert!(p.ends_with('…'));
    }

    #[test]
    fn alert_honours_caller_id_and_preview() {
        let a = alert(
            "alice",
            "\"Bob\" <sip:bob@pbx>",
            "hello",
            "u".into(),
            true,
            true,
        );
        assert_eq!(a.caller_name.as_deref(), Some("Bob"));
        assert_eq!(a.caller_number.as_deref(), Some("bob"));
        assert_eq!(a.text.as_deref(), Some("hello"));
        assert_eq!(a.call_uuid.as_deref(), Some("u"));
        let a = alert("alice", "<sip:bob@pbx>", "hello", "u".into(), true, false);
        assert_eq!(a.caller_number.as_deref(), Some("bob"));
        assert_eq!(a.text, None);
        let a = alert("alice", "<sip:bob@pbx>", "hello", "u".into(), false, true);
        assert_eq!((a.caller_number, a.caller_name, a.text), (None, None, None));
    }

    #[test]
    fn plans() {
        let none = |_: &str| false;
        let sleeping = [Device {
            id: "d1".into(),
            awake_contact: None,
        }];
        let awake = [Device {
            id: "d1".into(),
            awake_contact: Some("sip:a@1".into()),
        }];
        assert_eq!(plan(&[], &[], none, true).status, Status::NoDevice);
        let p = plan(&[], &sleeping, none, true);
        assert_eq!(
            (p.status, p.queue_for.clone()),
            (Status::Queued, ids(&["d1"]))
        );
        assert_eq!(plan(&[], &sleeping, none, false).status, Status::Full);
        assert!(plan(&[], &sleeping, none, false).queue_for.is_empty());
        let p = plan(&[], &awake, none, true);
        assert_eq!(
            (p.status, p.now.clone()),
            (Status::Delivered, ids(&["sip:a@1"]))
        );
        assert!(p.queue_for.is_empty());
        // A desk phone takes it now, the sleeping mobile gets it queued.
        let p = plan(&ids(&["sip:desk@2"]), &sleeping, none, true);
        assert_eq!(p.status, Status::Delivered);
        assert_eq!(p.queue_for, ids(&["d1"]));
        // Full: the desk phone still gets it.
        let p = plan(&ids(&["sip:desk@2"]), &sleeping, none, false);
        assert_eq!(p.status, Status::Delivered);
        assert!(p.queue_for.is_empty());
        // Awake with older messages waiting: behind them, and they go now.
        let p = plan(&[], &awake, |d| d == "d1", true);
        assert_eq!(p.status, Status::Queued);
        assert_eq!(p.queue_for, ids(&["d1"]));
        assert_eq!(p.flush, vec![("d1".to_string(), "sip:a@1".to_string())]);
        assert!(Status::Queued.accepted() && Status::Delivered.accepted());
        assert!(!Status::Full.accepted() && !Status::NoDevice.accepted());
    }

    #[test]
    fn delivered_in_order_once_per_device() {
        let mut q = Queues::default();
        for b in ["1", "2", "3"] {
            q.enqueue(incoming("alice", b), ids(&["d1", "d2"]), 100, 10)
                .unwrap();
        }
        q.enqueue(incoming("bob", "x"), ids(&["d9"]), 100, 10)
            .unwrap();
        let t = q.take_for("d1", 101, 1000);
        let bodies: Vec<&str> = t.deliver.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["1", "2", "3"]);
        assert_eq!(t.updated.len(), 3);
        assert!(t.removed.is_empty());
        // A second registration of the same device: nothing more.
        assert!(q.take_for("d1", 102, 1000).deliver.is_empty());
        assert!(q.has_for("d2") && !q.has_for("d1"));
        let t = q.take_for("d2", 103, 1000);
        assert_eq!(t.deliver.len(), 3);
        assert_eq!(t.removed.len(), 3);
        assert_eq!(q.len("alice"), 0);
        assert_eq!(q.len("bob"), 1);
        assert_eq!(q.total(), 1);
        assert!(!q.has_for("d2") && q.has_for("d9"));
        assert!(q.get("alice", 1).is_none());
        assert_eq!(q.get("bob", 4).map(|m| m.body.as_str()), Some("x"));
    }

    #[test]
    fn put_back_restores_place_and_device() {
        let mut q = Queues::default();
        for b in ["1", "2"] {
            q.enqueue(incoming("alice", b), ids(&["d1"]), 0, 10)
                .unwrap();
        }
        let t = q.take_for("d1", 1, 100);
        assert!(q.is_empty());
        q.put_back(t.deliver[1].clone(), "d1");
        q.put_back(t.deliver[0].clone(), "d1");
        let t = q.take_for("d1", 2, 100);
        let bodies: Vec<&str> = t.deliver.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["1", "2"]);
    }

    #[test]
    fn a_device_gets_messages_of_every_aor_of_its_endpoint() {
        let mut q = Queues::default();
        // Queued under the endpoint's first AOR; the device is bound to its second.
        q.enqueue(incoming("alice-desk", "1"), ids(&["m1"]), 0, 10)
            .unwrap();
        q.enqueue(incoming("alice-mobile", "2"), ids(&["m1"]), 0, 10)
            .unwrap();
        let t = q.take_for("m1", 1, 100);
        let bodies: Vec<&str> = t.deliver.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["1", "2"]);
        assert!(q.is_empty() && !q.has_for("m1"));
    }

    #[test]
    fn a_removed_device_stops_holding_its_messages() {
        let mut q = Queues::default();
        q.enqueue(incoming("alice", "both"), ids(&["d1", "d2"]), 0, 10)
            .unwrap();
        q.enqueue(incoming("alice", "only d1"), ids(&["d1"]), 0, 10)
            .unwrap();
        let (updated, removed) = q.forget("d1");
        assert_eq!(updated.len(), 1);
        assert_eq!(updated[0].devices, ids(&["d2"]));
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].body, "only d1");
        assert!(!q.has_for("d1") && q.has_for("d2"));
        assert_eq!(q.len("alice"), 1);
        assert_eq!(q.forget("d1"), (vec![], vec![]));
    }

    #[test]
    fn full_refuses_the_new_one() {
        let mut q = Queues::default();
        q.enqueue(incoming("alice", "1"), ids(&["d1"]), 0, 2)
            .unwrap();
        q.enqueue(incoming("alice", "2"), ids(&["d1"]), 0, 2)
            .unwrap();
        assert_eq!(
            q.enqueue(incoming("alice", "3"), ids(&["d1"]), 0, 2),
            Err(Full(2))
        );
        let bodies: Vec<&str> = q
            .list(Some("alice"))
            .iter()
            .map(|m| m.body.as_str())
            .collect();
        assert_eq!(bodies, ["1", "2"]);
    }

    #[test]
    fn expired_messages_are_not_delivered() {
        let mut q = Queues::default();
        q.enqueue(incoming("alice", "old"), ids(&["d1"]), 100, 10)
            .unwrap();
        q.enqueue(incoming("alice", "new"), ids(&["d1"]), 150, 10)
            .unwrap();
        let t = q.take_for("d1", 160, 30);
        assert_eq!(t.deliver.len(), 1);
        assert_eq!(t.deliver[0].body, "new");
        assert_eq!(t.expired, 1);
        assert_eq!(t.removed.len(), 2);
        q.enqueue(incoming("bob", "b"), ids(&["d2"]), 100, 10)
            .unwrap();
        assert_eq!(q.expire(129, 30).len(), 0);
        assert_eq!(q.expire(130, 30).len(), 1);
        assert!(q.is_empty());
        assert!(!q.has_for("d1") && !q.has_for("d2"));
    }

    #[test]
    fn restore_keeps_order_and_numbering() {
        let mut q = Queues::default();
        let a = q
            .enqueue(incoming("alice", "1"), ids(&["d1"]), 0, 10)
            .unwrap();
        let b = q
            .enqueue(incoming("alice", "2"), ids(&["d1"]), 0, 10)
            .unwrap();
        // Stored order is astdb's key order, not arrival order.
        let mut r = Queues::restore(vec![b.clone(), a.clone(), a]);
        let bodies: Vec<&str> = r.list(None).iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["1", "2"]);
        let c = r
            .enqueue(incoming("alice", "3"), ids(&["d1"]), 0, 10)
            .unwrap();
        assert!(c.seq > b.seq);
        assert!(r.has_for("d1"));
        assert_eq!(r.clear("alice").len(), 3);
        assert!(!r.has_for("d1"));
    }
}
