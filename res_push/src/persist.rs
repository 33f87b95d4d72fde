//! Where bindings are stored: the sorcery object type `push_binding` (astdb unless
//! `sorcery.conf` maps it to the realtime wizard and a database), behind a write-behind queue.
//!
//! The in-memory [`Store`](res_push_core::binding::Store) is what every PJSIP and dialplan
//! thread reads and writes. Stored writes and lookups run only on this module's own thread
//! (`res_push store`): callers enqueue and return. Writes are coalesced per binding (the latest
//! wins); while the store is unreachable they stay queued and are retried, so what changed
//! meanwhile reaches the database when it is back. Lookups answer through a callback.

use std::ffi::CString;
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use res_push_core::binding::Binding;
use res_push_core::shared::{self, FIELDS, HEALTH_ID, OBJECT_TYPE, Pending};

use crate::ast::astdb;
use crate::ast::sorcery::{Object, Sorcery};

/// The field names as C strings for sorcery (config_options keeps the pointers, so they live
/// as long as the library: a static is never dropped). Made from the one table in core.
static FIELD_NAMES: LazyLock<Vec<CString>> = LazyLock::new(|| {
    FIELDS
        .iter()
        .map(|f| CString::new(*f).expect("field names hold no NUL"))
        .collect()
});

/// Where bindings were kept before the sorcery object type (astdb `/res_push/binding/<id>`,
/// JSON): read once at load, moved into the store, removed once stored.
const LEGACY_FAMILY: &str = "res_push";
const LEGACY_TREE: &str = "binding";

/// The first retry of queued writes once the store is unreachable; each further one waits
/// twice as long, up to [`RETRY_MAX`] (every failed try costs the database driver an error
/// line of its own).
pub const RETRY: Duration = Duration::from_secs(2);
/// See [`RETRY`].
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// A shared store is probed this often when nothing else reaches it, so `push show status`
/// tells a database that went away (or came back) while the node was idle; while it is
/// down, lookups are answered from memory at once, and one probe per period finds it back.
const PROBE: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stored write.
#[derive(Debug, Clone)]
pub enum Write {
    /// Store this binding (create or replace).
    Upsert(Binding),
    /// Store this binding only if the store still has it (a failure count: a row another
    /// node deleted stays deleted).
    Update(Binding),
    /// Remove this binding.
    Delete(Binding),
}

/// What a lookup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// One AOR's bindings.
    Aor(String),
    /// All bindings.
    All,
}

/// Hears whether a lookup reached the store (`false`: the copy in memory is all there is).
pub type Done = Box<dyn FnOnce(bool) + Send>;

/// The store's reachability, for `push show status`.
#[derive(Debug, Clone)]
pub struct Health {
    /// Whether the last operation reached it.
    pub up: bool,
    /// Since when it is in that state.
    pub since: SystemTime,
    /// Operations that failed to reach it since load.
    pub failures: u64,
}

#[derive(Default)]
struct Queue {
    writes: Pending<Write>,
    lookups: Vec<(Lookup, Done)>,
    stop: bool,
    /// While the store is unreachable: when queued writes are tried again.
    retry_at: Option<Instant>,
    /// The wait before that retry.
    retry_delay: Duration,
}

/// The store and its queue.
pub struct Persist {
    sorcery: Sorcery,
    wizards: Vec<String>,
    shared: bool,
    queue: Mutex<Queue>,
    wake: Condvar,
    health: Mutex<Health>,
    /// Bindings also kept in astdb's legacy tree (not moved yet, or kept there while the
    /// store is away), with the sequence number of the write kept: removed from there once
    /// the store has them.
    legacy: Mutex<std::collections::HashMap<String, u64>>,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("wizards", &self.wizards)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// A failed stored operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The store did not answer: retry later.
    Unreachable,
    /// The store answered but refused this write: retrying will not help.
    Refused,
}

impl Persist {
    /// Opens the sorcery object type (astdb by default).
    pub fn open() -> Option<Persist> {
        let sorcery = Sorcery::open(OBJECT_TYPE, &FIELD_NAMES, "astdb", shared::ASTDB_PREFIX)?;
        let wizards = sorcery.wizards();
        let shared = shared::is_shared(&wizards);
        Some(Persist {
            sorcery,
            wizards,
            shared,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            health: Mutex::new(Health {
                up: true,
                since: SystemTime::now(),
                failures: 0,
            }),
            legacy: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Whether other nodes may share the store (lookups are worth making).
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// The wizards `push_binding` is mapped to.
    pub fn wizards(&self) -> &[String] {
        &self.wizards
    }

    /// Reachability.
    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    /// Writes not yet confirmed by the store.
    pub fn pending_count(&self) -> usize {
        lock(&self.queue).writes.len()
    }

    /// Whether this binding has a write not yet confirmed (its copy in memory is newer than
    /// what the store holds).
    pub fn pending(&self, id: &str) -> bool {
        lock(&self.queue).writes.contains(id)
    }

    /// Queues a write; never blocks on the store.
    pub fn write(&self, w: Write) {
        let id = match &w {
            Write::Upsert(b) | Write::Update(b) | Write::Delete(b) => b.id.clone(),
        };
        let mut q = lock(&self.queue);
        // An update replacing a queued (or in-flight) upsert must still create the row.
        let w = match w {
            Write::Update(b) if matches!(q.writes.get(&id), Some(Write::Upsert(_))) => {
                Write::Upsert(b)
            }
            w => w,
        };
        q.writes.push(&id, w);
        drop(q);
        self.wake.notify_one();
    }

    /// Queues a lookup; `done` runs on the store thread.
    pub fn lookup(&self, what: Lookup, done: Done) {
        lock(&self.queue).lookups.push((what, done));
        self.wake.notify_one();
    }

    /// Asks the thread to end after a last flush.
    pub fn stop(&self) {
        lock(&self.queue).stop = true;
        self.wake.notify_one();
    }

    /// The thread's body: writes first (so a lookup sees this node's own changes), then
    /// lookups, whose answers go to `synced`.
    pub fn run(&self, synced: &dyn Fn(&Lookup, Vec<Binding>)) {
        let mut probed = Instant::now();
        loop {
            let (lookups, stop) = {
                let mut q = lock(&self.queue);
                loop {
                    if q.stop || !q.lookups.is_empty() {
                        break;
                    }
                    if self.shared && q.writes.is_empty() && probed.elapsed() >= PROBE {
                        drop(q);
                        probed = Instant::now();
                        let up = self.reachable();
                        self.mark(up);
                        q = lock(&self.queue);
                        continue;
                    }
                    let now = Instant::now();
                    let retry_in = q
                        .retry_at
                        .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                    if !q.writes.is_empty() && retry_in.is_zero() {
                        break;
                    }
                    let wait = match (q.writes.is_empty(), self.shared) {
                        (true, true) => PROBE.saturating_sub(probed.elapsed()),
                        (true, false) => Duration::from_secs(3600),
                        (false, _) => retry_in,
                    };
                    q = self
                        .wake
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                (std::mem::take(&mut q.lookups), q.stop)
            };
            // Unloading with the store down: a last try would only hold the unload up.
            if !stop || self.health().up {
                self.flush();
            }
            if stop {
                // Unloading: nobody waits for an answer long enough, and a store that hangs
                // must not hold up the unload twice.
                for (_, done) in lookups {
                    done(false);
                }
                self.keep_pending_locally();
                let left = self.pending_count();
                if left > 0 {
                    tracing::warn!(
                        "push binding store unreachable at unload: {left} binding write(s) kept in astdb {LEGACY_FAMILY}/{LEGACY_TREE} for the next load (removals among them are lost)"
                    );
                }
                return;
            }
            for (what, done) in lookups {
                // Down: memory is all there is, at once, until a probe finds the store back
                // (one per period, not one per call).
                if self.shared && !self.health().up {
                    if probed.elapsed() < PROBE {
                        done(false);
                        continue;
                    }
                    probed = Instant::now();
                    let up = self.reachable();
                    self.mark(up);
                    if !up {
                        done(false);
                        continue;
                    }
                }
                match self.read(&what) {
                    Some(rows) => {
                        synced(&what, rows);
                        done(true);
                    }
                    None => done(false),
                }
            }
        }
    }

    /// Writes what is queued until the queue is empty or the store stops answering.
    fn flush(&self) {
        // Down: one probe rather than a failing write per queued binding.
        if self.shared && !self.health().up && !lock(&self.queue).writes.is_empty() {
            let up = self.reachable();
            self.mark(up);
            if !up {
                self.retry_later();
                self.keep_pending_locally();
                return;
            }
        }
        loop {
            let next = lock(&self.queue).writes.next();
            let Some((id, seq, w)) = next else { return };
            let r = match &w {
                Write::Upsert(b) => self.upsert(b),
                Write::Update(b) => self.update(b),
                Write::Delete(b) => self.delete(b),
            };
            match r {
                Err(Failure::Unreachable) => {
                    self.retry_later();
                    self.keep_pending_locally();
                    return;
                }
                Err(Failure::Refused) => {
                    tracing::error!(
                        "push binding store refused the write of binding {id}; it stays in memory only"
                    );
                }
                Ok(()) => {}
            }
            if lock(&self.legacy).remove(&id).is_some() {
                astdb::del(LEGACY_FAMILY, &format!("{LEGACY_TREE}/{id}"));
            }
            let mut q = lock(&self.queue);
            q.retry_at = None;
            q.retry_delay = Duration::ZERO;
            q.writes.done(&id, seq);
        }
    }

    /// Writes the store does not take now are also kept in astdb's legacy tree, which the
    /// next load moves into the store: a node restarted during an outage (Asterisk does not
    /// unload modules on `core stop`) loses no REGISTER. A removal takes its binding out of
    /// there too. Each write is kept once (by sequence number), not at every retry.
    fn keep_pending_locally(&self) {
        // Copied out first: PJSIP threads queue writes under this lock, and must not wait
        // for astdb.
        let todo: Vec<(String, u64, Option<Binding>)> = {
            let q = lock(&self.queue);
            let legacy = lock(&self.legacy);
            q.writes
                .iter()
                .filter(|(id, seq, _)| legacy.get(*id) != Some(seq))
                .map(|(id, seq, w)| {
                    let b = match w {
                        Write::Upsert(b) | Write::Update(b) => Some(b.clone()),
                        Write::Delete(_) => None,
                    };
                    (id.to_string(), seq, b)
                })
                .collect()
        };
        for (id, seq, b) in todo {
            let key = format!("{LEGACY_TREE}/{id}");
            match b {
                Some(b) => {
                    let kept = serde_json::to_string(&b)
                        .is_ok_and(|json| astdb::put(LEGACY_FAMILY, &key, &json));
                    if kept {
                        lock(&self.legacy).insert(id, seq);
                    }
                }
                None => {
                    if lock(&self.legacy).remove(&id).is_some() {
                        astdb::del(LEGACY_FAMILY, &key);
                    }
                }
            }
        }
    }

    /// Queued writes wait for the next retry, each twice as long as the last.
    fn retry_later(&self) {
        let mut q = lock(&self.queue);
        q.retry_delay = (q.retry_delay * 2).clamp(RETRY, RETRY_MAX);
        q.retry_at = Some(Instant::now() + q.retry_delay);
    }

    fn mark(&self, up: bool) {
        let mut h = lock(&self.health);
        if !up {
            h.failures += 1;
        }
        if h.up == up {
            return;
        }
        h.up = up;
        h.since = SystemTime::now();
        drop(h);
        // Once per change of state, not per operation: a database down for an hour must not
        // flood the log.
        if up {
            tracing::info!(
                "push binding store ({}) reachable again; {} queued write(s) being stored",
                self.wizards.join(","),
                self.pending_count()
            );
        } else {
            tracing::error!(
                "push binding store ({}) unreachable: bindings are served from memory, writes are kept and retried ({}s, then up to every {}s) (check the realtime mapping in extconfig.conf and the database connection)",
                self.wizards.join(","),
                RETRY.as_secs(),
                RETRY_MAX.as_secs()
            );
        }
    }

    fn object(&self, b: &Binding) -> Option<Object<'_>> {
        let mut o = self.sorcery.alloc(&b.id)?;
        for (i, v) in shared::to_fields(b).iter().enumerate() {
            if !o.set(i, v) {
                return None;
            }
        }
        Some(o)
    }

    /// Whether the store answers: its health row can be read, or written back. A local store
    /// (astdb) always answers: a failure there is a refusal.
    fn reachable(&self) -> bool {
        if !self.shared {
            return true;
        }
        if self.sorcery.by_id(HEALTH_ID).is_some() {
            return true;
        }
        let Some(o) = self.health_object() else {
            return false;
        };
        self.sorcery.update(&o) || self.sorcery.create(&o)
    }

    fn health_object(&self) -> Option<Object<'_>> {
        let mut o = self.sorcery.alloc(HEALTH_ID)?;
        // Numbers as numbers: a database column of integers refuses ''.
        for (i, name) in FIELDS.iter().enumerate() {
            let v = match *name {
                "created" | "last_register" | "expires_at" | "failures" => "0",
                _ => "",
            };
            o.set(i, v);
        }
        Some(o)
    }

    /// Judges a stored operation: done, or (after one probe of the store) `when_up` if the
    /// store answers, unreachable if not.
    fn judge(&self, done: bool, when_up: Result<(), Failure>) -> Result<(), Failure> {
        if done {
            self.mark(true);
            return Ok(());
        }
        let up = self.reachable();
        self.mark(up);
        if up {
            when_up
        } else {
            Err(Failure::Unreachable)
        }
    }

    /// Updates the row if it is there; no row (deleted elsewhere) is no error.
    fn update(&self, b: &Binding) -> Result<(), Failure> {
        let Some(o) = self.object(b) else {
            return Err(Failure::Unreachable);
        };
        self.judge(self.sorcery.update(&o), Ok(()))
    }

    fn upsert(&self, b: &Binding) -> Result<(), Failure> {
        let Some(o) = self.object(b) else {
            return Err(Failure::Unreachable);
        };
        // Update first (the usual case); create when it is new; update again when another
        // node created it meanwhile.
        let done = self.sorcery.update(&o) || self.sorcery.create(&o) || self.sorcery.update(&o);
        self.judge(done, Err(Failure::Refused))
    }

    fn delete(&self, b: &Binding) -> Result<(), Failure> {
        let Some(o) = self.sorcery.alloc(&b.id) else {
            return Err(Failure::Unreachable);
        };
        // Not deleted: already gone (another node removed it), or no answer.
        self.judge(self.sorcery.delete(&o), Ok(()))
    }

    /// The stored bindings `what` names; `None` when the store did not answer.
    pub fn read(&self, what: &Lookup) -> Option<Vec<Binding>> {
        let field = match what {
            Lookup::Aor(aor) => Some(("aor", aor.as_str())),
            Lookup::All => None,
        };
        let rows = self.sorcery.find(field, |o| {
            let id = o.id();
            if id == HEALTH_ID {
                return None;
            }
            match shared::from_fields(&id, |i| o.get(i)) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!("skipping {e}");
                    None
                }
            }
        });
        // Sorcery answers "nothing" both for no rows and for no database: only a store that
        // answers for its health row is believed.
        let up = rows.is_some() && self.reachable();
        self.mark(up);
        up.then(|| rows.unwrap_or_default().into_iter().flatten().collect())
    }

    /// Bindings kept in astdb by earlier versions (`/res_push/binding/<id>`, JSON). Each one
    /// stored in the sorcery type is removed from there; one that cannot be stored now stays
    /// (and is queued), so nothing is lost whatever happens during the move.
    pub fn migrate_legacy(&self, node: &str) -> Vec<Binding> {
        let mut moved = Vec::new();
        for (key, value) in astdb::tree(LEGACY_FAMILY, LEGACY_TREE) {
            let k = key
                .trim_start_matches('/')
                .trim_start_matches(LEGACY_FAMILY)
                .trim_start_matches('/')
                .to_string();
            let mut b = match serde_json::from_str::<Binding>(&value) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("dropping unreadable stored binding {key}: {e}");
                    astdb::del(LEGACY_FAMILY, &k);
                    continue;
                }
            };
            if b.reg_server.is_empty() {
                b.reg_server = node.to_string();
            }
            if self.upsert(&b).is_ok() {
                astdb::del(LEGACY_FAMILY, &k);
            } else {
                // Removed from astdb once the store took it (`flush`), so a later load does
                // not write this copy over newer ones again.
                lock(&self.legacy).insert(b.id.clone(), 0);
                self.write(Write::Upsert(b.clone()));
            }
            moved.push(b);
        }
        if !moved.is_empty() {
            tracing::info!(
                "moved {} push binding(s) from astdb {LEGACY_FAMILY}/{LEGACY_TREE} to the {OBJECT_TYPE} store ({})",
                moved.len(),
                self.wizards.join(",")
            );
        }
        moved
    }
}
