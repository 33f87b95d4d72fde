//! The REGISTER hook: decide before the registrar (reject 400/555 ourselves, and make room for
//! a device that moved), then on the registrar's 200 OK add Feature-Caps and hand the binding
//! changes to the registry.
//!
//! Both callbacks run on PJSIP threads: they only parse, decide and `try_send`; persistence,
//! AMI events and the removal of contacts the registrar itself would keep happen on the
//! registry's worker. The one exception is a device back from a new address: its stale
//! contacts are removed here, before the registrar counts contacts against `max_contacts`
//! (the same sorcery calls the registrar makes on this thread right after).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::CString;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use res_push_core::binding::redact_uri;
use res_push_core::config::General;
use res_push_core::pn::{Request, contact_lines, from_contact, may_concern};
use res_push_core::registrar::{Action, Verdict, decide_parts};
use res_push_core::sip::parse_contact;

use crate::ast::channel;
use crate::ast::pjsip::{self, Register, Response, RxData, TxData};
use crate::module::Running;

/// A REGISTER we accepted, waiting for the registrar's answer.
#[derive(Debug)]
struct Pending {
    judged: Arc<Judged>,
    user_agent: Option<String>,
    since: Instant,
}

/// A REGISTER judged `Accept`, with what it was judged on. Phones refresh with the very same
/// Contact, so the next REGISTER is usually an exact repeat, and is not parsed again.
#[derive(Debug)]
struct Judged {
    /// The REGISTER's Contact header lines as received (see [`contact_lines`]).
    contact_lines: Vec<u8>,
    expires: Option<u32>,
    x_mpush: Option<String>,
    to_user: Option<String>,
    to_host: Option<String>,
    endpoint_aors: Option<String>,
    /// The `[general]` it was judged under, by address: a reload installs a new one (and
    /// the old one stays allocated as long as the module, so no other takes its address).
    general: usize,
    aor: String,
    /// Ready for the C side: the header goes on every 200 OK of a refresh.
    feature_caps: Option<CString>,
    actions: Vec<Action>,
    /// The registry's [`placement`](crate::bindings::Bindings::placement) when every device
    /// of `actions` was last seen bound at its contact (`u64::MAX`: not yet): while it reads
    /// the same, a repeat has no stale contact to remove, and no lookup is made.
    placed: AtomicU64,
}

impl Judged {
    fn judges(&self, reg: &Register<'_>, lines: &[&[u8]], general: &General) -> bool {
        self.general == std::ptr::from_ref(general) as usize
            && self.expires == reg.expires
            && same_bytes(&self.contact_lines, lines.iter().copied())
            && self.x_mpush.as_deref() == reg.x_mpush.as_deref()
            && self.to_user.as_deref() == reg.to_user.as_deref()
            && self.to_host.as_deref() == reg.to_host.as_deref()
            && self.endpoint_aors.as_deref() == reg.endpoint_aors.as_deref()
    }
}

/// `lines`, each ended by `\n` (as in the message: so that no two sequences of lines join
/// alike).
fn joined<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Whether `bytes` is [`joined`] `lines`, compared without building it.
fn same_bytes<'a>(bytes: &[u8], lines: impl Iterator<Item = &'a [u8]>) -> bool {
    let mut rest = bytes;
    for line in lines {
        match rest.strip_prefix(line).and_then(|r| r.strip_prefix(b"\n")) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

/// The cache key of a REGISTER: everything [`Judged::judges`] compares but the policy. Not a
/// keyed hash: a REGISTER crafted to collide only displaces another's entry (each hit is
/// checked by [`Judged::judges`]), and only REGISTERs that passed pjsip's authenticator get here.
fn fingerprint(reg: &Register<'_>, lines: &[&[u8]]) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    for line in lines {
        h.write(line);
        h.write_u8(b'\n');
    }
    (
        reg.expires,
        &reg.x_mpush,
        &reg.to_user,
        &reg.to_host,
        &reg.endpoint_aors,
    )
        .hash(&mut h);
    h.finish()
}

/// Entries older than this lost their response (e.g. answered statelessly by someone else).
const PENDING_TTL: Duration = Duration::from_secs(32);
/// Bound on remembered judgements (about a kilobyte each); when reached they are forgotten
/// all at once, and the next REGISTER of each device is judged afresh.
const JUDGED_MAX: usize = 16 * 1024;

/// The REGISTERs in flight (the policy is read from the running `[general]` snapshot).
#[derive(Debug, Default)]
pub struct Registrar {
    pending: Mutex<InFlight>,
    /// Keys of [`RequestKey`]: per module load, so that no Call-ID can be crafted to take
    /// another phone's place.
    request_keys: RandomState,
    /// `pending.by_request.len()`, kept beside it so that every REGISTER response (desk
    /// phones' too) is told there is nothing to do without taking the lock.
    waiting: AtomicUsize,
}

/// A REGISTER transaction (Call-ID and CSeq) by two keyed 64-bit hashes: looked up on the
/// response without copying its Call-ID out, and with no Call-ID to keep.
type RequestKey = (u64, u64);

#[derive(Debug, Default)]
struct InFlight {
    by_request: HashMap<RequestKey, Pending, rustc_hash::FxBuildHasher>,
    /// When `by_request` was last swept of entries whose response never came.
    swept: Option<Instant>,
    /// By [`fingerprint`] (already a hash).
    judged: HashMap<u64, Arc<Judged>, rustc_hash::FxBuildHasher>,
}

/// The AOR the registrar will use: the To user (or user@host) when the endpoint serves it.
fn resolve_aor(r: &Register<'_>) -> Option<String> {
    let user = r.to_user.as_deref().filter(|u| !u.is_empty())?;
    let mut aors = r.endpoint_aors.as_deref()?.split(',').map(str::trim);
    let host = r.to_host.as_deref();
    // `user@host` when listed, else `user`: compared in place, nothing formatted.
    let is_full = |a: &str| {
        host.is_some_and(|h| {
            a.len() == user.len() + 1 + h.len()
                && a.starts_with(user)
                && a[user.len()..].starts_with('@')
                && a.ends_with(h)
        })
    };
    let mut user_listed = false;
    for a in aors.by_ref() {
        if is_full(a) {
            return Some(a.to_string());
        }
        user_listed |= a == user;
    }
    user_listed.then(|| user.to_string())
}

impl Registrar {
    fn request_key(&self, call_id: &str, cseq: i32) -> RequestKey {
        let half = |n: u8| self.request_keys.hash_one((n, call_id, cseq));
        (half(0), half(1))
    }

    /// Runs before the registrar. Returns true when we answered the request ourselves.
    pub fn on_register(&self, rdata: RxData, running: &Running) -> bool {
        // Desk phones: judged on the raw bytes, nothing copied out.
        let raw = rdata.raw();
        if raw.is_some_and(|raw| !may_concern(raw)) {
            return false;
        }
        rdata
            .with_register(|reg| self.judge(rdata, reg, raw, running))
            .unwrap_or(false)
    }

    fn judge(
        &self,
        rdata: RxData,
        reg: Register<'_>,
        raw: Option<&[u8]>,
        running: &Running,
    ) -> bool {
        let general = running.general();
        // Without the raw message (pjsip always keeps it for a request it parsed) nothing is
        // remembered.
        let lines: Option<Vec<&[u8]>> = raw.map(|raw| contact_lines(raw).collect());
        let key = lines.as_deref().map(|lines| fingerprint(&reg, lines));
        // A repeat (the usual REGISTER) is looked up and left waiting for its response under
        // one lock.
        if let (Some(key), Some(lines)) = (key, lines.as_deref()) {
            let mut pending = self.lock();
            let known = pending
                .judged
                .get(&key)
                .filter(|j| j.judges(&reg, lines, general))
                .cloned();
            if let Some(judged) = known {
                self.wait_for_response(&mut pending, reg, Arc::clone(&judged), None);
                drop(pending);
                make_room(running, &judged);
                return false;
            }
        }
        let judged = match rdata.with_contacts(|contacts| {
            decide_parts(
                &contacts,
                reg.expires,
                reg.x_mpush.as_deref(),
                &general.policy,
            )
        }) {
            // Too large to copy out: not one of ours.
            None | Some(Verdict::Ignore) => return false,
            Some(Verdict::Reject { status, reason }) => {
                tracing::info!(
                    "REGISTER from {}:{} ({}) refused with {status}: {reason}",
                    reg.source_addr,
                    reg.source_port,
                    reg.endpoint.as_deref().unwrap_or("unidentified")
                );
                rdata.respond(status, &reason);
                return true;
            }
            Some(Verdict::Accept {
                feature_caps,
                actions,
            }) => {
                let Some(aor) = resolve_aor(&reg) else {
                    // The registrar will refuse it (unknown AOR); nothing of ours to keep.
                    return false;
                };
                let owned = |s: &Option<Cow<'_, str>>| s.as_deref().map(str::to_string);
                let judged = Judged {
                    contact_lines: lines
                        .as_deref()
                        .map(|l| joined(l.iter().copied()))
                        .unwrap_or_default(),
                    expires: reg.expires,
                    x_mpush: owned(&reg.x_mpush),
                    to_user: owned(&reg.to_user),
                    to_host: owned(&reg.to_host),
                    endpoint_aors: owned(&reg.endpoint_aors),
                    general: std::ptr::from_ref(general) as usize,
                    aor,
                    feature_caps: feature_caps.map(|c| crate::ast::c_string(&c)),
                    actions,
                    placed: AtomicU64::new(u64::MAX),
                };
                Arc::new(judged)
            }
        };
        make_room(running, &judged);
        let mut pending = self.lock();
        self.wait_for_response(&mut pending, reg, judged, key);
        false
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leaves `judged` waiting for the response to `reg`, and remembers it under `key` (a
    /// REGISTER judged anew).
    fn wait_for_response(
        &self,
        pending: &mut InFlight,
        reg: Register<'_>,
        judged: Arc<Judged>,
        key: Option<u64>,
    ) {
        let now = Instant::now();
        // Entries whose response never came, swept at most once per TTL rather than scanned
        // on every REGISTER.
        if pending
            .swept
            .is_none_or(|at| now.duration_since(at) >= PENDING_TTL)
        {
            pending
                .by_request
                .retain(|_, p| now.duration_since(p.since) < PENDING_TTL);
            pending.swept = Some(now);
        }
        if let Some(key) = key {
            if pending.judged.len() >= JUDGED_MAX {
                pending.judged.clear();
            }
            pending.judged.insert(key, Arc::clone(&judged));
        }
        pending.by_request.insert(
            self.request_key(&reg.call_id, reg.cseq),
            Pending {
                judged,
                user_agent: reg.user_agent.map(Cow::into_owned),
                since: now,
            },
        );
        self.waiting
            .store(pending.by_request.len(), Ordering::Release);
    }

    /// Runs on each REGISTER response about to be sent.
    pub fn on_response(&self, tdata: TxData, running: &Running) {
        // Every REGISTER response passes here; with nothing pending there is nothing to do,
        // and no reason to copy the response out.
        if self.waiting.load(Ordering::Acquire) == 0 {
            return;
        }
        tdata.with_register_response(|resp| self.answered(tdata, resp, running));
    }

    fn answered(&self, tdata: TxData, resp: Response<'_>, running: &Running) {
        let key = self.request_key(&resp.call_id, resp.cseq);
        let Some(p) = ({
            let mut pending = self.lock();
            let p = pending.by_request.remove(&key);
            self.waiting
                .store(pending.by_request.len(), Ordering::Release);
            p
        }) else {
            return;
        };
        if resp.status != 200 {
            return;
        }
        let judged = &p.judged;
        if let Some(caps) = &judged.feature_caps {
            tdata.add_header(c"Feature-Caps", caps);
        }
        if judged.actions.is_empty() {
            return;
        }
        // Calls waiting for these devices ring them now, not after the registry's bookkeeping.
        for a in &judged.actions {
            if let Action::Bind {
                params,
                contact_uri,
                instance,
                ..
            } = a
            {
                running.wake.registered(
                    running.general(),
                    &judged.aor,
                    params,
                    contact_uri,
                    instance.as_deref(),
                );
                running
                    .messages
                    .registered(&judged.aor, params, contact_uri);
            }
        }
        let granted: Vec<(&str, u32)> = resp
            .contacts
            .iter()
            .filter_map(|(uri, expires)| Some((uri.as_ref(), (*expires)?)))
            .collect();
        running.bindings.commit(
            &judged.aor,
            &judged.actions,
            p.user_agent.as_deref(),
            &granted,
        );
    }
}

/// A device binding from a new address: remove its other contacts (same push parameters,
/// another URI) now, so the registrar does not count them against `max_contacts` and refuse
/// the woken phone with 403 when `remove_existing = no`. Only the AOR's contacts are listed,
/// and only when the registry knows the device at another contact or not at all: a plain
/// refresh from the same contact costs one look at the registry's placement counter.
fn make_room(running: &Running, judged: &Judged) {
    let placement = running.bindings.placement();
    if judged.placed.load(Ordering::Acquire) == placement {
        return;
    }
    let aor = judged.aor.as_str();
    let moved: Vec<_> = judged
        .actions
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
        // Read before the lookups: a change meanwhile moved it on, and the next repeat looks.
        judged.placed.store(placement, Ordering::Release);
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
