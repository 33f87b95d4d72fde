//! The module's binding registry: the pure [`Store`] plus what surrounds it in Asterisk —
//! persistence through sorcery ([`crate::persist`]: astdb, or a database other nodes share),
//! lookups of what other nodes stored, AMI events, removal of stale SIP contacts, refresh
//! pushes, and worker threads so SIP and dialplan threads never do any of that I/O themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use res_push_core::binding::{
    Binding, Change, Policy, PushVerdict, Refresh, Registration, RemoveReason, Store, redact,
    redact_uri, verdict,
};
use res_push_core::config::General;
use res_push_core::pn::PushParams;
use res_push_core::registrar::Action;
use res_push_proto::{
    Environment, Job, Outcome, Provider, PushData, PushKind, PushRequest, PushTarget,
};

use res_push_core::shared::{self, Scope, StoreStatus};

use crate::ast::channel::{Chan, WaitEnd};
use crate::ast::sync::{Snapshot, slot};
use crate::ast::thread::{self, Thread};
use crate::ast::{channel, manager, pjsip};
use crate::link::Link;
use crate::persist::{Lookup, Persist, Write};

/// How often bindings are checked for max age and refresh pushes.
const TICK: Duration = Duration::from_secs(1);

/// Unix time now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Work handed to the worker thread: whatever needs I/O (astdb, AMI, sorcery).
pub enum Work {
    /// Changes already made in memory, to persist, announce and act on.
    Publish(Vec<Change>),
    /// The provider reported a token dead.
    InvalidToken(Provider, String),
    /// A push to binding `id` of `aor` failed (`true`) or was delivered after failures.
    PushResult {
        aor: String,
        id: String,
        failed: bool,
    },
}

/// Settings the registry reads on each tick (replaced on reload).
#[derive(Debug, Clone)]
struct Settings {
    max_age: Duration,
    refresh_before: Duration,
    server_pnsreg: bool,
    cache: Duration,
    lookup_timeout: Duration,
    max_failures: Option<u32>,
}

impl From<&General> for Settings {
    fn from(g: &General) -> Self {
        Settings {
            max_age: g.binding_max_age,
            refresh_before: g.refresh_before,
            server_pnsreg: g.policy.pnsreg.is_some(),
            cache: g.binding_cache,
            lookup_timeout: g.binding_lookup_timeout,
            max_failures: g.binding_policy.max_failures,
        }
    }
}

/// What this node knows of an AOR's bindings in a shared store.
enum Known {
    /// Read from the store at this instant.
    Fresh(Instant),
    /// A lookup is on its way; these hear its end.
    Asking(Vec<crate::persist::Done>),
}

/// The registry.
#[derive(Debug)]
pub struct Bindings {
    store: Mutex<Store>,
    settings: Mutex<Settings>,
    /// Hygiene policy, read on every REGISTER (lock-free).
    policy: Snapshot<Policy>,
    work: Sender<Work>,
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<Thread>>,
    persist: Persist,
    store_thread: Mutex<Option<Thread>>,
    known: Mutex<HashMap<String, Known>>,
    /// The load at start found no store: the worker asks again on its next tick.
    retry_load: AtomicBool,
    /// For callbacks that outlive the call that made them.
    me: std::sync::Weak<Bindings>,
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Known::Fresh(t) => write!(f, "Fresh({t:?})"),
            Known::Asking(w) => write!(f, "Asking({})", w.len()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Publish(changes) => write!(f, "Publish({} changes)", changes.len()),
            Work::InvalidToken(p, t) => write!(f, "InvalidToken({p:?}, {})", redact(t)),
            Work::PushResult { aor, id, failed } => {
                write!(f, "PushResult({aor}, {id}, failed: {failed})")
            }
        }
    }
}

impl Bindings {
    /// Opens the store, moves bindings of earlier versions into it, loads what it holds and
    /// starts the workers. Runs on the loader thread: the one load of the store at start is the
    /// only stored read made outside the store thread (if the store does not answer, the node
    /// starts with what it has and the store thread loads the rest when it is back).
    pub fn start(general: &General, link: Arc<Link>) -> Result<Arc<Bindings>, String> {
        let persist = Persist::open().ok_or_else(|| {
            format!(
                "cannot open the sorcery object type {} (is res_sorcery_astdb loaded, and sorcery.conf's [res_push] valid?)",
                shared::OBJECT_TYPE
            )
        })?;
        let node = crate::ast::system_name();
        let mut store = Store::new();
        // Only nodes sharing a store need names: alone, every binding is this node's, whatever
        // name it had when stored.
        if persist.shared() {
            store.set_node(&node);
        }
        for b in persist.migrate_legacy(&node) {
            store.put(b);
        }
        let loaded = persist.read(&Lookup::All);
        let load_pending = loaded.is_none();
        shared::sync(&mut store, Scope::Load, loaded.unwrap_or_default(), |id| {
            persist.pending(id)
        });
        if !store.is_empty() {
            tracing::info!(
                "restored {} push binding(s) from {} (node '{node}')",
                store.len(),
                persist.wizards().join(",")
            );
        }
        let (work, work_rx) = bounded(4096);
        let (stop, stop_rx) = bounded::<()>(0);
        let b = Arc::new_cyclic(|me| Bindings {
            me: me.clone(),
            store: Mutex::new(store),
            settings: Mutex::new(Settings::from(general)),
            policy: Snapshot::new(general.binding_policy),
            work,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(None),
            persist,
            store_thread: Mutex::new(None),
            known: Mutex::new(HashMap::new()),
            retry_load: AtomicBool::new(false),
        });
        let worker = b.clone();
        let t = thread::spawn(c"res_push binds", move || {
            worker.run(&work_rx, &stop_rx, &link)
        })
        .map_err(|e| format!("cannot start the binding worker: {e}"))?;
        *lock(&b.thread) = Some(t);
        let store = b.clone();
        let t = match thread::spawn(c"res_push store", move || {
            store.persist.run(&|what, rows| store.synced(what, rows));
        }) {
            Ok(t) => t,
            Err(e) => {
                b.stop();
                return Err(format!("cannot start the binding store thread: {e}"));
            }
        };
        *lock(&b.store_thread) = Some(t);
        if load_pending {
            b.load_when_reachable();
        }
        Ok(b)
    }

    /// The load at start did not reach the store: ask again until it answers.
    fn load_when_reachable(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        self.persist.lookup(
            Lookup::All,
            Box::new(move |ok| {
                if !ok {
                    if let Some(me) = me.upgrade() {
                        // Not at once: the store thread would spin on a dead database.
                        me.retry_load.store(true, Ordering::Release);
                    }
                }
            }),
        );
    }

    /// The store thread read `what`: bring the copy in memory to it.
    fn synced(&self, what: &Lookup, rows: Vec<Binding>) {
        let scope = match what {
            Lookup::Aor(a) => Scope::Aor(a.as_str()),
            Lookup::All => Scope::All,
        };
        let out = {
            let mut store = lock(&self.store);
            shared::sync(&mut store, scope, rows, |id| self.persist.pending(id))
        };
        for b in &out.added {
            tracing::debug!("{}: push binding {} learned from the store", b.aor, b.id);
            channel::devstate_changed(&format!("Push/{}", b.aor));
        }
        for b in &out.removed {
            tracing::info!(
                "{}: push binding {} no longer stored (removed on another node); forgotten",
                b.aor,
                b.id
            );
            channel::devstate_changed(&format!("Push/{}", b.aor));
        }
    }

    /// `push show status` lines of the store.
    pub fn store_status(&self) -> StoreStatus {
        let h = self.persist.health();
        let node = crate::ast::system_name();
        let bindings = lock(&self.store).len();
        StoreStatus {
            wizards: self.persist.wizards().to_vec(),
            shared: self.persist.shared(),
            node,
            up: h.up,
            since: h.since,
            failures: h.failures,
            pending: self.persist.pending_count(),
            bindings,
        }
    }

    /// Makes sure the copy of `aor` is recent enough for a call; `done` hears when it is
    /// (`true` at once, without calling `done`, when nothing needs asking).
    fn ensure(&self, aor: &str, cache: Duration, done: crate::persist::Done) -> bool {
        if !self.persist.shared() {
            return true;
        }
        let mut known = lock(&self.known);
        match known.get_mut(aor) {
            Some(Known::Fresh(t)) if t.elapsed() < cache => return true,
            Some(Known::Asking(waiting)) => {
                waiting.push(done);
                return false;
            }
            _ => {}
        }
        known.insert(aor.to_string(), Known::Asking(vec![done]));
        drop(known);
        self.ask(Lookup::Aor(aor.to_string()));
        false
    }

    fn ask(&self, what: Lookup) {
        let Lookup::Aor(aor) = what.clone() else {
            return;
        };
        let me = self.myself();
        self.persist.lookup(
            what,
            Box::new(move |ok| {
                let Some(me) = me else { return };
                // An AOR without bindings is not cached: its phone may have registered on
                // another node a moment ago, its row still on the way.
                let any = lock(&me.store).of_aor(&aor).next().is_some();
                let waiting = {
                    let mut known = lock(&me.known);
                    let waiting = match known.remove(&aor) {
                        Some(Known::Asking(w)) => w,
                        _ => Vec::new(),
                    };
                    if ok && any {
                        known.insert(aor.clone(), Known::Fresh(Instant::now()));
                    }
                    waiting
                };
                for w in waiting {
                    w(ok);
                }
            }),
        );
    }

    fn myself(&self) -> Option<Arc<Bindings>> {
        self.me.upgrade()
    }

    /// Starts lookups of these AORs if the copy is older than `binding_cache`, without waiting
    /// (the caller's `Dial` thread asking for `Push/...`). True when the copy is recent enough
    /// to push from now; false: the wake-up leg waits for the lookup, then pushes (a binding
    /// removed on another node must not be pushed from a stale copy).
    pub fn prefetch(&self, aors: &[String]) -> bool {
        let cache = lock(&self.settings).cache;
        let mut fresh = true;
        for aor in aors {
            fresh &= self.ensure(aor, cache, Box::new(|_| {}));
        }
        fresh
    }

    /// Before a call wakes the devices of `aors`: in a shared store, waits on `chan` (its own
    /// wake-up leg, never the caller's thread) for the AORs' lookups, at most
    /// `binding_lookup_timeout`; past that, or when the store does not answer, the call goes
    /// on with the copy in memory.
    pub fn refresh_for_call(&self, chan: Chan, aors: &[String]) {
        let (cache, timeout) = {
            let s = lock(&self.settings);
            (s.cache, s.lookup_timeout)
        };
        let flag = Arc::new(AtomicBool::new(false));
        let outstanding = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for aor in aors {
            outstanding.fetch_add(1, Ordering::AcqRel);
            let (f, n, c) = (flag.clone(), outstanding.clone(), chan.handle());
            let done = Box::new(move |_ok: bool| {
                if n.fetch_sub(1, Ordering::AcqRel) == 1 {
                    f.store(true, Ordering::Release);
                    c.wake();
                }
            });
            if self.ensure(aor, cache, done) {
                outstanding.fetch_sub(1, Ordering::AcqRel);
            }
        }
        if outstanding.load(Ordering::Acquire) == 0 {
            return;
        }
        let started = Instant::now();
        match chan.wait(timeout, &flag) {
            WaitEnd::Woken => tracing::debug!(
                "{}: bindings looked up in {} ms",
                aors.join(","),
                started.elapsed().as_millis()
            ),
            WaitEnd::Timeout => tracing::warn!(
                "{}: binding store lookup took over {} ms; calling with what this node knows",
                aors.join(","),
                timeout.as_millis()
            ),
            _ => {}
        }
    }

    /// A fresh read of `aor` (or all bindings) for an operator command, waited for at most
    /// `wait`; false when the store did not answer in time (the copy in memory is shown).
    pub fn refresh_now(&self, aor: Option<&str>, wait: Duration) -> bool {
        if !self.persist.shared() {
            return true;
        }
        let (filler, slot) = slot();
        // A read of its own, whatever is cached, and not counted as one for calls: the
        // operator sees the store, and the next call still reads it again when its copy is old.
        let what = aor.map_or(Lookup::All, |a| Lookup::Aor(a.to_string()));
        self.persist
            .lookup(what, Box::new(move |ok| filler.fill(ok)));
        slot.wait(wait).unwrap_or(false)
    }

    /// Applies a reloaded configuration; bindings are untouched.
    pub fn reconfigure(&self, general: &General) {
        *lock(&self.settings) = Settings::from(general);
        self.policy.replace(general.binding_policy);
    }

    /// Counts a push's result against its binding (`res_push_core::binding::verdict` decides
    /// what counts). Runs on the link thread: at most a lookup under the lock, then a queue.
    pub fn push_result(
        &self,
        aor: &str,
        id: &str,
        result: &Result<Outcome, crate::link::LinkError>,
    ) {
        let failed = match verdict(result.as_ref().ok()) {
            PushVerdict::Failed => true,
            PushVerdict::Delivered if lock(&self.store).has_failures(aor, id) => false,
            PushVerdict::Delivered | PushVerdict::Neutral => return,
        };
        self.submit(Work::PushResult {
            aor: aor.to_string(),
            id: id.to_string(),
            failed,
        });
    }

    /// Stops the workers (pending work is applied first, then stored).
    pub fn stop(&self) {
        drop(lock(&self.stop).take());
        if let Some(t) = lock(&self.thread).take() {
            t.join();
        }
        self.persist.stop();
        if let Some(t) = lock(&self.store_thread).take() {
            t.join();
        }
    }

    /// Queues work without blocking; false when the queue is full (counted by the caller).
    pub fn submit(&self, work: Work) -> bool {
        match self.work.try_send(work) {
            Ok(()) => true,
            Err(TrySendError::Full(w)) => {
                tracing::warn!("binding queue full, dropped {w:?}");
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// A copy of the bindings of `aor`, or all when `None`, by AOR then device.
    pub fn list(&self, aor: Option<&str>) -> Vec<Binding> {
        let mut list: Vec<Binding> = {
            let store = lock(&self.store);
            match aor {
                Some(a) => store.of_aor(a).cloned().collect(),
                None => store.all().cloned().collect(),
            }
        };
        list.sort_by(|a, b| {
            (&a.aor, a.provider, &a.app_id, &a.token)
                .cmp(&(&b.aor, b.provider, &b.app_id, &b.token))
        });
        list
    }

    /// Moves on whenever a binding comes, goes or changes contact ([`Store::placement`]).
    pub fn placement(&self) -> u64 {
        lock(&self.store).placement()
    }

    /// Whether the registry knows this device of `aor` at this contact URI.
    pub fn is_at(&self, aor: &str, params: &PushParams, contact_uri: &str) -> bool {
        lock(&self.store)
            .of_device(aor, params.provider, &params.app_id, &params.token)
            .is_some_and(|b| b.contact_uri == contact_uri)
    }

    /// The binding of this device token, in whichever AOR.
    pub fn by_device(&self, params: &PushParams) -> Option<Binding> {
        lock(&self.store)
            .all()
            .find(|b| {
                b.provider == params.provider
                    && b.app_id == params.app_id
                    && b.token == params.token
            })
            .cloned()
    }

    /// The binding with this id (ids are unique across AORs).
    pub fn by_id(&self, id: &str) -> Option<Binding> {
        lock(&self.store).all().find(|b| b.id == id).cloned()
    }

    /// Operator removal (CLI, AMI).
    pub fn delete(&self, aor: &str, id: Option<&str>) -> usize {
        let changes = lock(&self.store).delete(aor, id);
        let n = changes.len();
        self.publish(changes);
        n
    }

    /// Provisioning without SIP (AMI `PushBindingAdd`).
    pub fn provision(&self, r: Registration) -> Binding {
        let changes = lock(&self.store).register_with(r, now(), self.policy.get());
        let binding = changes.iter().rev().find_map(|c| match c {
            Change::Added(b) | Change::Updated { binding: b, .. } => Some(b.clone()),
            Change::Removed { .. } => None,
        });
        self.publish(changes);
        binding.expect("provisioning always adds or updates a binding")
    }

    fn run(&self, work: &Receiver<Work>, stop: &Receiver<()>, link: &Arc<Link>) {
        let ticker = crossbeam_channel::tick(TICK);
        loop {
            select! {
                recv(work) -> w => match w {
                    Ok(w) => self.apply(w),
                    Err(_) => return,
                },
                recv(stop) -> _ => {
                    // Apply what the registrar already confirmed before going away.
                    for w in work.try_iter() {
                        self.apply(w);
                    }
                    return;
                }
                recv(ticker) -> _ => {
                    self.tick(link);
                    if self.retry_load.swap(false, Ordering::AcqRel) {
                        if let Some(me) = self.myself() {
                            me.load_when_reachable();
                        }
                    }
                }
            }
        }
    }

    /// Applies the binding actions of a REGISTER the registrar accepted. Runs on the SIP
    /// thread: the in-memory update is microseconds under a lock, and only changes that need
    /// I/O (new or moved bindings, removals, a periodic write) go to the worker, so a phone
    /// refreshing its registration costs no thread wake-up at all.
    pub fn commit(
        &self,
        aor: &str,
        actions: &[Action],
        user_agent: Option<&str>,
        granted: &[(&str, u32)],
    ) {
        let now = now();
        let changes = {
            let mut store = lock(&self.store);
            let mut changes = Vec::new();
            for action in actions {
                changes.extend(match action {
                    Action::Bind {
                        params,
                        contact_uri,
                        instance,
                        ua_pnsreg,
                        expires,
                    } => {
                        let expires = granted
                            .iter()
                            .find(|(uri, _)| uri == contact_uri)
                            .map(|(_, e)| *e)
                            .or(*expires)
                            .unwrap_or(3600);
                        // A plain refresh (most REGISTERs) changes the expiry in place: nothing
                        // to copy, publish or store.
                        let refresh = Refresh {
                            aor,
                            params,
                            contact_uri,
                            user_agent,
                            instance: instance.as_deref(),
                            ua_pnsreg: *ua_pnsreg,
                            expires,
                        };
                        if store.refresh(&refresh, now) {
                            continue;
                        }
                        let registration = Registration {
                            aor: aor.to_string(),
                            params: params.clone(),
                            contact_uri: contact_uri.clone(),
                            user_agent: user_agent.map(str::to_string),
                            instance: instance.clone(),
                            ua_pnsreg: *ua_pnsreg,
                            expires,
                        };
                        store.register_with(registration, now, self.policy.get())
                    }
                    Action::Unregister(params) => store.unregister(aor, params),
                    Action::UnregisterAll => store.unregister_all(aor),
                    Action::Unbind(u) => store.unbind(aor, u),
                });
            }
            changes
        };
        let needs_io = changes.iter().any(|c| match c {
            Change::Updated {
                stale_contact,
                changed,
                persist,
                ..
            } => *changed || *persist || stale_contact.is_some(),
            Change::Added(_) | Change::Removed { .. } => true,
        });
        if needs_io {
            self.submit(Work::Publish(changes));
        }
    }

    fn apply(&self, work: Work) {
        let changes = match work {
            Work::InvalidToken(provider, token) => {
                lock(&self.store).invalid_token(provider, &token)
            }
            Work::Publish(changes) => changes,
            Work::PushResult { aor, id, failed } => {
                let max = lock(&self.settings).max_failures;
                let mut store = lock(&self.store);
                if failed {
                    let changes = store.push_failed(&aor, &id, max);
                    for c in &changes {
                        if let Change::Removed { binding, .. } = c {
                            tracing::warn!(
                                "{aor}: binding {id} ({}) dropped: {} pushes failed in a row (binding_max_failures)",
                                redact(&binding.token),
                                binding.failures
                            );
                        }
                    }
                    changes
                } else {
                    store.push_delivered(&aor, &id)
                }
            }
        };
        // A count is stored as an update only: the row may be gone because another node
        // removed the binding, and a count must not bring it back.
        let changes = changes
            .into_iter()
            .map(|c| match c {
                Change::Updated {
                    binding,
                    stale_contact,
                    changed,
                    persist: true,
                } => {
                    self.persist.write(Write::Update(binding.clone()));
                    Change::Updated {
                        binding,
                        stale_contact,
                        changed,
                        persist: false,
                    }
                }
                other => other,
            })
            .collect();
        self.publish(changes);
    }

    fn tick(&self, link: &Arc<Link>) {
        let settings = lock(&self.settings).clone();
        let now = now();
        if self.persist.shared() {
            self.tick_shared(link, &settings, now);
            return;
        }
        let (expired, due) = {
            let mut store = lock(&self.store);
            let expired = store.expire(now, settings.max_age.as_secs());
            let due = store.due_for_refresh(
                now,
                settings.refresh_before.as_secs(),
                settings.server_pnsreg,
            );
            (expired, due)
        };
        self.publish(expired);
        for b in due {
            self.refresh(&b, link);
        }
    }

    /// The tick with a shared store: this node's copy may be older than what another node
    /// stored (the phone registers there now), so an AOR is read again before one of its
    /// bindings is expired (a removal deletes the row for every node) or refreshed.
    fn tick_shared(&self, link: &Arc<Link>, settings: &Settings, now: u64) {
        let max_age = settings.max_age.as_secs();
        let (expiring, due) = {
            let mut store = lock(&self.store);
            let expiring = store.expiring_aors(now, max_age);
            let due = store.due_for_refresh(
                now,
                settings.refresh_before.as_secs(),
                settings.server_pnsreg,
            );
            (expiring, due)
        };
        for aor in expiring {
            let a = aor.clone();
            self.after_lookup(&aor, move |me, ok| {
                // Unread (store unreachable): nothing is decided on a copy that may be stale.
                if ok {
                    let changes = lock(&me.store).expire_aor(&a, now, max_age);
                    me.publish(changes);
                }
            });
        }
        for b in due {
            let link = link.clone();
            let aor = b.aor.clone();
            self.after_lookup(&aor, move |me, ok| {
                // Unread: better a refresh push twice than none.
                let still_mine = {
                    let store = lock(&me.store);
                    store
                        .of_device(&b.aor, b.provider, &b.app_id, &b.token)
                        .is_some_and(|c| store.is_local(c))
                };
                if still_mine || !ok {
                    me.refresh(&b, &link);
                }
            });
        }
    }

    /// Runs `f` once `aor`'s copy is recent (at once if it is; else on the store thread when
    /// the lookup ends, `ok` saying whether it reached the store).
    fn after_lookup(&self, aor: &str, f: impl FnOnce(&Bindings, bool) + Send + 'static) {
        let cache = lock(&self.settings).cache;
        let f = Arc::new(Mutex::new(Some(f)));
        let me = self.me.clone();
        let later = f.clone();
        let fresh = self.ensure(
            aor,
            cache,
            Box::new(move |ok| {
                if let (Some(me), Some(f)) = (me.upgrade(), lock(&later).take()) {
                    f(&me, ok);
                }
            }),
        );
        if fresh {
            if let Some(f) = lock(&f).take() {
                f(self, true);
            }
        }
    }

    /// Asks the sidecar for a refresh push (background on APNs, data on FCM: never a VoIP push).
    fn refresh(&self, b: &Binding, link: &Arc<Link>) {
        tracing::info!(
            "refresh push for {} binding {} ({})",
            b.aor,
            b.id,
            redact(&b.token)
        );
        let job = Job::Push(PushRequest {
            target: target(b, PushKind::Refresh),
            kind: PushKind::Refresh,
            data: PushData {
                endpoint: Some(b.aor.clone()),
                ..Default::default()
            },
        });
        let work = self.work.clone();
        let (provider, token, aor, id) = (b.provider, b.token.clone(), b.aor.clone(), b.id.clone());
        let done = Box::new(move |r: Result<Outcome, crate::link::LinkError>| {
            // Refresh pushes are rare: a delivery is queued even without failures to reset.
            let failed = match verdict(r.as_ref().ok()) {
                PushVerdict::Failed => Some(true),
                PushVerdict::Delivered => Some(false),
                PushVerdict::Neutral => None,
            };
            if let Some(failed) = failed {
                let _ = work.try_send(Work::PushResult {
                    aor: aor.clone(),
                    id: id.clone(),
                    failed,
                });
            }
            match r {
                Ok(Outcome::InvalidToken { reason }) => {
                    tracing::info!(
                        "{aor}: token {} reported dead ({reason}); removing binding",
                        redact(&token)
                    );
                    let _ = work.try_send(Work::InvalidToken(provider, token));
                }
                Ok(Outcome::Sent { .. }) => {}
                Ok(other) => tracing::warn!("{aor}: refresh push not sent: {other:?}"),
                Err(e) => tracing::warn!("{aor}: refresh push not sent: {e}"),
            }
        });
        if let Err(e) = link.submit(job, None, done) {
            tracing::warn!("{}: refresh push not queued: {e}", b.aor);
        }
    }

    /// Persists changes, removes stale contacts, raises AMI events and logs.
    fn publish(&self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Added(b) => {
                    self.persist(&b);
                    tracing::info!(
                        "{}: push binding {} added ({:?}, {}, {})",
                        b.aor,
                        b.id,
                        b.provider,
                        b.app_id,
                        redact(&b.token)
                    );
                    manager::event("PushBindingAdded", &event_fields(&b, None));
                    // Push/<endpoint> becomes reachable (AOR and endpoint usually share a name).
                    channel::devstate_changed(&format!("Push/{}", b.aor));
                }
                Change::Updated {
                    binding: b,
                    stale_contact,
                    changed,
                    persist,
                } => {
                    if persist {
                        self.persist(&b);
                    }
                    if let Some(stale) = stale_contact {
                        // The device is back from a new address: the old contact would ring a
                        // dead address or the same device twice.
                        let removed = pjsip::delete_contact(&b.aor, &stale);
                        tracing::info!(
                            "{}: binding {} moved; stale contact {} {}",
                            b.aor,
                            b.id,
                            redact_uri(&stale),
                            if removed { "removed" } else { "already gone" }
                        );
                    }
                    if changed {
                        manager::event("PushBindingUpdated", &event_fields(&b, None));
                    }
                }
                Change::Removed { binding: b, reason } => {
                    self.persist.write(Write::Delete(b.clone()));
                    self.remove_contact_of(&b, reason);
                    tracing::info!(
                        "{}: push binding {} removed ({})",
                        b.aor,
                        b.id,
                        reason.as_str()
                    );
                    manager::event(
                        "PushBindingRemoved",
                        &event_fields(&b, Some(reason.as_str())),
                    );
                    channel::devstate_changed(&format!("Push/{}", b.aor));
                    if let Some(running) = crate::module::running() {
                        running.messages.binding_removed(&b.id, reason.as_str());
                    }
                }
            }
        }
    }

    /// A device replaced by a newer one or gone to another account loses its SIP contact in
    /// the AOR too, unless another binding still registers from it.
    fn remove_contact_of(&self, b: &Binding, reason: RemoveReason) {
        if !reason.takes_contact()
            || b.contact_uri.is_empty()
            || lock(&self.store).contact_in_use(&b.aor, &b.contact_uri)
        {
            return;
        }
        let removed = pjsip::delete_contact(&b.aor, &b.contact_uri);
        tracing::info!(
            "{}: contact {} of binding {} {}",
            b.aor,
            redact_uri(&b.contact_uri),
            b.id,
            if removed { "removed" } else { "already gone" }
        );
    }

    fn persist(&self, b: &Binding) {
        self.persist.write(Write::Upsert(b.clone()));
    }
}

/// The push target of a binding for a push of `kind`: calls go to the device token, every
/// other push to its alert token when it has one (an iOS app's PushKit token takes VoIP
/// pushes only).
pub fn target(b: &Binding, kind: PushKind) -> PushTarget {
    let token = match (&b.alert_token, kind) {
        (Some(t), k) if k != PushKind::Call => t.clone(),
        _ => b.token.clone(),
    };
    PushTarget {
        provider: b.provider,
        app_id: b.app_id.clone(),
        token,
        environment: b.environment,
    }
}

/// Lower-case name of a provider.
pub fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Apns => "apns",
        Provider::Fcm => "fcm",
    }
}

/// Name of an environment.
pub fn environment_name(e: Option<Environment>) -> &'static str {
    match e {
        Some(Environment::Sandbox) => "sandbox",
        Some(Environment::Production) => "production",
        None => "default",
    }
}

/// AMI fields of a binding (token redacted).
pub fn event_fields(b: &Binding, reason: Option<&str>) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("AOR", b.aor.clone()),
        ("ID", b.id.clone()),
        ("Provider", provider_name(b.provider).to_string()),
        ("AppID", b.app_id.clone()),
        ("Token", redact(&b.token)),
        ("Environment", environment_name(b.environment).to_string()),
        ("ContactURI", redact_uri(&b.contact_uri)),
        ("UserAgent", b.user_agent.clone().unwrap_or_default()),
        ("RegistrationExpires", b.expires_at.to_string()),
        ("LastRegister", b.last_register.to_string()),
        ("Failures", b.failures.to_string()),
    ];
    if let Some(r) = reason {
        f.push(("Reason", r.to_string()));
    }
    f
}

/// The registration a provisioning system describes (AMI `PushBindingAdd`).
pub fn provisioned(
    aor: &str,
    params: PushParams,
    contact_uri: String,
    expires: u32,
) -> Registration {
    Registration {
        aor: aor.to_string(),
        params,
        contact_uri,
        user_agent: None,
        instance: None,
        ua_pnsreg: false,
        expires,
    }
}
