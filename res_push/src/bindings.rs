//! The module's binding registry: the pure [`Store`] plus what surrounds it in Asterisk —
//! persistence in astdb, AMI events, removal of stale SIP contacts, refresh pushes, and a
//! worker thread so SIP threads never do any of that I/O themselves.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded, select};
use res_push_core::binding::{Binding, Change, Registration, Store, redact, redact_uri};
use res_push_core::config::General;
use res_push_core::pn::PushParams;
use res_push_core::registrar::Action;
use res_push_proto::{
    Environment, Job, Outcome, Provider, PushData, PushKind, PushRequest, PushTarget,
};

use crate::ast::thread::{self, Thread};
use crate::ast::{astdb, channel, manager, pjsip};
use crate::link::Link;

const DB_FAMILY: &str = "res_push";
const DB_TREE: &str = "binding";
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
}

/// Settings the registry reads on each tick (replaced on reload).
#[derive(Debug, Clone)]
struct Settings {
    max_age: Duration,
    refresh_before: Duration,
    server_pnsreg: bool,
}

impl From<&General> for Settings {
    fn from(g: &General) -> Self {
        Settings {
            max_age: g.binding_max_age,
            refresh_before: g.refresh_before,
            server_pnsreg: g.policy.pnsreg.is_some(),
        }
    }
}

/// The registry.
#[derive(Debug)]
pub struct Bindings {
    store: Mutex<Store>,
    settings: Mutex<Settings>,
    work: Sender<Work>,
    stop: Mutex<Option<Sender<()>>>,
    thread: Mutex<Option<Thread>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Publish(changes) => write!(f, "Publish({} changes)", changes.len()),
            Work::InvalidToken(p, t) => write!(f, "InvalidToken({p:?}, {})", redact(t)),
        }
    }
}

impl Bindings {
    /// Restores persisted bindings and starts the worker.
    pub fn start(general: &General, link: Arc<Link>) -> std::io::Result<Arc<Bindings>> {
        let mut restored = Vec::new();
        for (key, value) in astdb::tree(DB_FAMILY, DB_TREE) {
            match serde_json::from_str::<Binding>(&value) {
                Ok(b) => restored.push(b),
                Err(e) => {
                    tracing::warn!("dropping unreadable stored binding {key}: {e}");
                    let k = key
                        .trim_start_matches('/')
                        .trim_start_matches(DB_FAMILY)
                        .trim_start_matches('/');
                    astdb::del(DB_FAMILY, k);
                }
            }
        }
        let store = Store::restore(restored);
        if !store.is_empty() {
            tracing::info!("restored {} push binding(s)", store.len());
        }
        let (work, work_rx) = bounded(4096);
        let (stop, stop_rx) = bounded::<()>(0);
        let b = Arc::new(Bindings {
            store: Mutex::new(store),
            settings: Mutex::new(Settings::from(general)),
            work,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(None),
        });
        let worker = b.clone();
        let t = thread::spawn(c"res_push binds", move || {
            worker.run(&work_rx, &stop_rx, &link)
        })?;
        *lock(&b.thread) = Some(t);
        Ok(b)
    }

    /// Applies a reloaded configuration; bindings are untouched.
    pub fn reconfigure(&self, general: &General) {
        *lock(&self.settings) = Settings::from(general);
    }

    /// Stops the worker (pending work is applied first).
    pub fn stop(&self) {
        drop(lock(&self.stop).take());
        if let Some(t) = lock(&self.thread).take() {
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

    /// A copy of the bindings of `aor`, or all when `None`.
    pub fn list(&self, aor: Option<&str>) -> Vec<Binding> {
        let store = lock(&self.store);
        match aor {
            Some(a) => store.of_aor(a).cloned().collect(),
            None => store.all().cloned().collect(),
        }
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
        let changes = lock(&self.store).provision(r, now());
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
                recv(ticker) -> _ => self.tick(link),
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
        actions: Vec<Action>,
        user_agent: Option<String>,
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
                            .find(|(uri, _)| *uri == contact_uri)
                            .map(|(_, e)| *e)
                            .or(expires)
                            .unwrap_or(3600);
                        let registration = Registration {
                            aor: aor.to_string(),
                            params,
                            contact_uri,
                            user_agent: user_agent.clone(),
                            instance,
                            ua_pnsreg,
                            expires,
                        };
                        store.register(registration, now)
                    }
                    Action::Unregister(params) => store.unregister(aor, &params),
                    Action::UnregisterAll => store.unregister_all(aor),
                    Action::Unbind(u) => store.unbind(aor, &u),
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
        };
        self.publish(changes);
    }

    fn tick(&self, link: &Arc<Link>) {
        let settings = lock(&self.settings).clone();
        let now = now();
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

    /// Asks the sidecar for a refresh push (background on APNs, data on FCM: never a VoIP push).
    fn refresh(&self, b: &Binding, link: &Arc<Link>) {
        tracing::info!(
            "refresh push for {} binding {} ({})",
            b.aor,
            b.id,
            redact(&b.token)
        );
        let job = Job::Push(PushRequest {
            target: target(b),
            kind: PushKind::Refresh,
            data: PushData {
                endpoint: Some(b.aor.clone()),
                ..Default::default()
            },
        });
        let work = self.work.clone();
        let (provider, token, aor) = (b.provider, b.token.clone(), b.aor.clone());
        let done = Box::new(move |r: Result<Outcome, crate::link::LinkError>| match r {
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
                    astdb::del(DB_FAMILY, &format!("{DB_TREE}/{}", b.id));
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

    fn persist(&self, b: &Binding) {
        match serde_json::to_string(b) {
            Ok(json) => {
                if !astdb::put(DB_FAMILY, &format!("{DB_TREE}/{}", b.id), &json) {
                    tracing::error!("{}: could not store binding {} in astdb", b.aor, b.id);
                }
            }
            Err(e) => tracing::error!("{}: could not serialize binding {}: {e}", b.aor, b.id),
        }
    }
}

/// The push target of a binding.
pub fn target(b: &Binding) -> PushTarget {
    PushTarget {
        provider: b.provider,
        app_id: b.app_id.clone(),
        token: b.token.clone(),
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
