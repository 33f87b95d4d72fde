//! The push binding store: which device of which AOR can be woken through which token.
//!
//! A binding outlives the SIP contact it came from: a sleeping phone cannot refresh its
//! registration, and the point of a push binding is to reach it anyway. Bindings go away when
//! the device unbinds, when the provider reports the token dead, or after `binding_max_age`
//! without a REGISTER.
//!
//! Bindings are keyed by AOR + provider + app + token, never by address: a woken phone often
//! comes back from a new address, and must update its binding rather than add a second one.

use std::collections::BTreeMap;

use res_push_proto::{Environment, FailureClass, Outcome, Provider};
use serde::{Deserialize, Serialize};

use crate::pn::{Form, PushParams, Unbind};

/// One device that can be woken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// Short stable id, unique per binding (for `push delete binding <aor> <id>`).
    pub id: String,
    /// The AOR the device registers to.
    pub aor: String,
    /// Push service.
    pub provider: Provider,
    /// App id as sent by the device.
    pub app_id: String,
    /// Device token. Shown redacted (see [`redact`]) everywhere but storage.
    pub token: String,
    /// The token for pushes that are not calls, when the device sent one apart (see
    /// [`PushParams::alert_token`]); `None`: `token` serves every push.
    #[serde(default)]
    pub alert_token: Option<String>,
    /// APNs environment when known.
    pub environment: Option<Environment>,
    /// The syntax the device used.
    pub form: Form,
    /// Contact URI of the latest REGISTER (the address to ring once it re-registers).
    pub contact_uri: String,
    /// User-Agent of the latest REGISTER.
    pub user_agent: Option<String>,
    /// `+sip.instance`, when the device sends one.
    pub instance: Option<String>,
    /// The device advertised `+sip.pnsreg` (it can refresh its registration by itself).
    pub ua_pnsreg: bool,
    /// Unix time of creation.
    pub created: u64,
    /// Unix time of the latest REGISTER.
    pub last_register: u64,
    /// Unix time the latest registration expires.
    pub expires_at: u64,
    /// Pushes that failed since the last success.
    pub failures: u32,
    /// Registration expiry for which a refresh push was already requested (one per expiry).
    #[serde(default)]
    pub refresh_sent_for: Option<u64>,
    /// `last_register` as last written to storage.
    #[serde(default)]
    pub persisted_register: u64,
    /// The node (Asterisk `systemname`) whose registrar saw the latest REGISTER: it alone
    /// expires the binding and sends its refresh pushes when several nodes share bindings
    /// (PJSIP's contacts have the same `reg_server`). Empty: any node's.
    #[serde(default)]
    pub reg_server: String,
}

impl Binding {
    fn key(&self) -> Key {
        Key::new(&self.aor, self.provider, &self.app_id, &self.token)
    }
}

/// A REGISTER's binding, borrowed, for [`Store::refresh`].
#[derive(Debug, Clone, Copy)]
pub struct Refresh<'a> {
    pub aor: &'a str,
    pub params: &'a PushParams,
    pub contact_uri: &'a str,
    pub user_agent: Option<&'a str>,
    pub instance: Option<&'a str>,
    pub ua_pnsreg: bool,
    pub expires: u32,
}

/// Identity of a binding. Ordered by a hash of the AOR first: a lookup (each REGISTER makes
/// one) is then decided by integers held in the tree's nodes, where comparing AORs read every
/// key's string from the heap; an AOR's keys stay adjacent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    aor_hash: u64,
    aor: String,
    provider: Provider,
    app_id: String,
    token: String,
}

impl Key {
    fn new(aor: &str, provider: Provider, app: &str, token: &str) -> Key {
        Key::owned(
            aor.to_string(),
            provider,
            app.to_string(),
            token.to_string(),
        )
    }

    fn owned(aor: String, provider: Provider, app_id: String, token: String) -> Key {
        Key {
            aor_hash: fnv1a(&[&aor]),
            aor,
            provider,
            app_id,
            token,
        }
    }

    /// Sorts before every key of `aor` (and after those of smaller hashes): where a range over
    /// its keys starts, built without copying the AOR.
    fn before(aor: &str) -> Key {
        Key {
            aor_hash: fnv1a(&[aor]),
            aor: String::new(),
            provider: Provider::Apns,
            app_id: String::new(),
            token: String::new(),
        }
    }
}

/// A REGISTER that created or refreshed a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The AOR.
    pub aor: String,
    /// Parsed push parameters.
    pub params: PushParams,
    /// The Contact URI.
    pub contact_uri: String,
    /// User-Agent header.
    pub user_agent: Option<String>,
    /// `+sip.instance`.
    pub instance: Option<String>,
    /// `+sip.pnsreg` in the Contact.
    pub ua_pnsreg: bool,
    /// Seconds the registrar granted.
    pub expires: u32,
}

/// What [`Store::register`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new binding.
    Added(Binding),
    /// An existing binding refreshed. `stale_contact` is the previous contact URI when the
    /// device came back from another address: that contact must be removed from the AOR so a
    /// call never rings the dead address (nor the device twice).
    Updated {
        binding: Binding,
        stale_contact: Option<String>,
        /// Something an operator or a call cares about changed (contact, user agent,
        /// instance, environment, self-refresh): worth an AMI event. Plain refreshes are not.
        changed: bool,
        /// Worth writing to storage: changed, or the stored copy's REGISTER time is older than
        /// [`PERSIST_EVERY`] (so `binding_max_age` survives a restart to within that).
        persist: bool,
    },
    /// A binding removed (unbind, dead token, max age, operator, or replaced: the same
    /// `+sip.instance` registered a new token).
    Removed {
        binding: Binding,
        reason: RemoveReason,
    },
}

/// Why a binding went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// The device unbound (`pn-prid=null`, `X-MPUSH: null`, `Expires: 0`).
    Unbound,
    /// The provider reported the token dead.
    InvalidToken,
    /// No REGISTER for `binding_max_age`.
    MaxAge,
    /// The same device instance registered a new token.
    Replaced,
    /// An operator or provisioning system removed it (CLI, AMI).
    Operator,
    /// Its pushes kept failing (`binding_max_failures`).
    MaxFailures,
    /// A newer device of the AOR took its place (`max_push_devices`).
    MaxDevices,
    /// Its token was registered to another AOR (`token_exclusive`): the app switched account.
    TokenMoved,
}

impl RemoveReason {
    /// As shown in AMI events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Unbound => "unbound",
            RemoveReason::InvalidToken => "invalid-token",
            RemoveReason::MaxAge => "max-age",
            RemoveReason::Replaced => "replaced",
            RemoveReason::Operator => "operator",
            RemoveReason::MaxFailures => "max-failures",
            RemoveReason::MaxDevices => "max-devices",
            RemoveReason::TokenMoved => "token-moved",
        }
    }

    /// Whether the device's SIP contact in the AOR goes with the binding: a device replaced by
    /// a newer one (`max_push_devices`) or gone to another account (`token_exclusive`) must not
    /// be rung there either.
    pub fn takes_contact(self) -> bool {
        matches!(self, RemoveReason::MaxDevices | RemoveReason::TokenMoved)
    }
}

/// Binding hygiene options of `[general]` (all off by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// At most this many push bindings per AOR: a new device replaces the least recently
    /// registered one (NethVoice's app rings only the device that logged in last).
    pub max_push_devices: Option<usize>,
    /// A token registering to an AOR leaves every other AOR (an app that switched account).
    /// Off by default: a multi-account app (Linphone) registers several AORs with one token.
    pub token_exclusive: bool,
    /// A binding whose pushes failed this many times in a row is dropped.
    pub max_failures: Option<u32>,
}

/// What a push's result says about the binding it went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushVerdict {
    /// The provider took it: the token works, the failure count starts over.
    Delivered,
    /// The provider did not deliver this push to this device: counted.
    Failed,
    /// Nothing about the binding: our side (sidecar not connected, queue full, deadline,
    /// credentials, templates, no app configured), or a dead token, which removes the binding
    /// by itself.
    Neutral,
}

/// Judges a push's result; `None` is a push that got no outcome from the sidecar (link down,
/// queue full, lost, timed out, unloading). Counted: a refusal for no reason of ours
/// (`failed: other`), the provider failing after every retry (`failed: provider`: from the
/// binding's side the push failed; an operator setting `binding_max_failures` sizes it
/// above what a provider outage gives a device). Not counted: `config` (our credentials and
/// topics: counting it would let one expired key drop every binding of an app, and an alert
/// to a VoIP-only iOS token is refused as `DeviceTokenNotForTopic`), `payload` and `no_app`
/// (our configuration), `expired` (our capacity).
pub fn verdict(outcome: Option<&Outcome>) -> PushVerdict {
    match outcome {
        Some(Outcome::Sent { .. }) => PushVerdict::Delivered,
        Some(Outcome::Failed {
            class: FailureClass::Other | FailureClass::Provider,
            ..
        }) => PushVerdict::Failed,
        _ => PushVerdict::Neutral,
    }
}

/// How stale the stored REGISTER time of an unchanged binding may get. A phone refreshing
/// every minute must not cost a database write each time (REGISTER storms after a network
/// outage are when it hurts).
pub const PERSIST_EVERY: u64 = 300;

/// All bindings (in no order that means anything: see [`Key`]).
#[derive(Debug, Default, Clone)]
pub struct Store {
    bindings: BTreeMap<Key, Binding>,
    /// Counts every binding added, removed or moved to another contact (never a refresh in
    /// place): what a caller learned of where devices are holds while this has not moved.
    placement: u64,
    /// This node's name, stamped as `reg_server` on what its registrar records.
    node: String,
}

fn looks_after(node: &str, b: &Binding) -> bool {
    node.is_empty() || b.reg_server.is_empty() || b.reg_server == node
}

/// FNV-1a: a stable hash for ids (std's hasher may change between Rust releases, and ids are
/// persisted and typed by operators).
pub(crate) fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The id of the binding of `aor` for this provider, app and token: stable, so the same device
/// keeps its id across restarts and nodes, and the REGISTER hook can name the binding a call
/// waits for.
///
/// By construction: the 40 high bits of FNV-1a over `aor`, the provider's id name (`Apns`,
/// `Fcm`: written out here, not derived from the enum, so renaming a variant changes nothing),
/// the app id and the token, each followed by a NUL byte, as 10 lower-case hex digits.
/// `ids_are_pinned` holds known values: changing any of this orphans every stored binding.
pub fn binding_id(aor: &str, provider: Provider, app_id: &str, token: &str) -> String {
    let provider = match provider {
        Provider::Apns => "Apns",
        Provider::Fcm => "Fcm",
    };
    format!("{:010x}", fnv1a(&[aor, provider, app_id, token]) >> 24)
}

/// A token as shown to people (one form in the module and the sidecar, so log lines of both
/// can be matched): its last 6 characters.
pub use res_push_proto::redact;

/// A contact URI as shown to people: token parameters redacted like [`redact`].
pub fn redact_uri(uri: &str) -> String {
    const TOKEN_PARAMS: [&str; 3] = ["pn-prid=", "pn-tok=", "push-token-id="];
    uri.split(';')
        .map(|part| {
            TOKEN_PARAMS
                .iter()
                .find(|p| part.len() >= p.len() && part[..p.len()].eq_ignore_ascii_case(p))
                .map_or_else(
                    || part.to_string(),
                    |p| format!("{}{}", &part[..p.len()], redact(&part[p.len()..])),
                )
        })
        .collect::<Vec<_>>()
        .join(";")
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores persisted bindings (skipping duplicates).
    pub fn restore(bindings: impl IntoIterator<Item = Binding>) -> Self {
        let mut s = Store::new();
        for b in bindings {
            s.place(b.key(), b);
        }
        s
    }

    fn place(&mut self, k: Key, b: Binding) -> Option<Binding> {
        self.placement += 1;
        self.bindings.insert(k, b)
    }

    fn take(&mut self, k: &Key) -> Option<Binding> {
        let b = self.bindings.remove(k);
        self.placement += u64::from(b.is_some());
        b
    }

    /// Moves on whenever a binding is added, removed or changes contact, and only then (see
    /// [`Store::refresh`]): while it reads the same, so does every binding's contact.
    pub fn placement(&self) -> u64 {
        self.placement
    }

    /// Names this node (`reg_server` of what it records from now on).
    pub fn set_node(&mut self, node: &str) {
        self.node = node.to_string();
    }

    /// Whether this node looks after `b` (expiry, refresh pushes): it saw its latest
    /// REGISTER, nobody is named, or this node has no name (a store of its own: every binding
    /// is its own).
    pub fn is_local(&self, b: &Binding) -> bool {
        looks_after(&self.node, b)
    }

    /// Inserts or replaces a binding as another node or the database has it; the replaced one
    /// is returned.
    pub fn put(&mut self, b: Binding) -> Option<Binding> {
        self.place(b.key(), b)
    }

    /// Forgets a binding without deciding anything about it (it went away elsewhere).
    pub fn forget(&mut self, b: &Binding) -> Option<Binding> {
        self.take(&b.key())
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    /// Every binding (listings sort them).
    pub fn all(&self) -> impl Iterator<Item = &Binding> {
        self.bindings.values()
    }

    /// The bindings of one AOR, found by range: keys sort by the AOR's hash first, so they are
    /// adjacent (among those of any AOR with the same hash).
    fn aor_entries<'a>(
        &'a self,
        aor: &'a str,
    ) -> impl Iterator<Item = (&'a Key, &'a Binding)> + 'a {
        let first = Key::before(aor);
        let hash = first.aor_hash;
        self.bindings
            .range(first..)
            .take_while(move |(k, _)| k.aor_hash == hash)
            .filter(move |(k, _)| k.aor == aor)
    }

    /// The bindings of one AOR.
    pub fn of_aor<'a>(&'a self, aor: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        self.aor_entries(aor).map(|(_, b)| b)
    }

    /// A binding by AOR and id.
    pub fn get<'a>(&'a self, aor: &'a str, id: &str) -> Option<&'a Binding> {
        self.of_aor(aor).find(|b| b.id == id)
    }

    /// The binding of this device (provider, app and token) in `aor`: the one `binding_id`
    /// names, found without computing the id.
    pub fn of_device<'a>(
        &'a self,
        aor: &'a str,
        provider: Provider,
        app_id: &str,
        token: &str,
    ) -> Option<&'a Binding> {
        self.of_aor(aor)
            .find(|b| b.provider == provider && b.app_id == app_id && b.token == token)
    }

    /// Records a REGISTER that carries push parameters, with no hygiene policy.
    pub fn register(&mut self, r: Registration, now: u64) -> Vec<Change> {
        self.register_with(r, now, &Policy::default())
    }

    /// A REGISTER that changes nothing but the expiry: a refresh from the same contact, most
    /// of what a registrar sees. Applied in place, with nothing copied or reported; `false`
    /// when anything else would change (or the binding is due to be stored again), and then
    /// [`Store::register_with`] must judge it. Either way the store ends up as
    /// `register_with` would leave it.
    pub fn refresh(&mut self, r: &Refresh<'_>, now: u64) -> bool {
        let first = Key::before(r.aor);
        let hash = first.aor_hash;
        let p = r.params;
        let mut target = None;
        let mut instance_elsewhere = false;
        for (k, b) in self
            .bindings
            .range_mut(first..)
            .take_while(|(k, _)| k.aor_hash == hash)
            .filter(|(k, _)| k.aor == r.aor)
        {
            if k.provider == p.provider && k.app_id == p.app_id && k.token == p.token {
                target = Some(b);
            } else if r.instance.is_some() && b.instance.as_deref() == r.instance {
                // register_with would remove that one (the device presents a new token).
                instance_elsewhere = true;
            }
        }
        let Some(b) = target.filter(|_| !instance_elsewhere) else {
            return false;
        };
        let unchanged = b.contact_uri == r.contact_uri
            && b.reg_server == self.node
            && b.user_agent.as_deref() == r.user_agent
            && b.instance.as_deref() == r.instance.or(b.instance.as_deref())
            && b.ua_pnsreg == r.ua_pnsreg
            && b.environment == p.environment.or(b.environment)
            && b.alert_token == p.alert_token
            && now.saturating_sub(b.persisted_register) < PERSIST_EVERY;
        if unchanged {
            b.last_register = now;
            b.expires_at = now + u64::from(r.expires);
        }
        unchanged
    }

    /// Records a REGISTER that carries push parameters under `policy`.
    pub fn register_with(&mut self, r: Registration, now: u64, policy: &Policy) -> Vec<Change> {
        let mut changes = Vec::new();
        let Registration {
            aor,
            params,
            contact_uri,
            user_agent,
            instance,
            ua_pnsreg,
            expires,
        } = r;
        // The key takes the strings; a new binding copies them back (refreshes are the norm).
        let alert_token = params.alert_token;
        let key = Key::owned(aor, params.provider, params.app_id, params.token);
        // A device instance that now presents a new token replaces its old binding: apps get new
        // tokens on reinstall or token rotation, and the old one would ring nothing.
        if let Some(instance) = &instance {
            let replaced: Vec<Key> = self
                .aor_entries(&key.aor)
                .filter(|(k, b)| **k != key && b.instance.as_deref() == Some(instance))
                .map(|(k, _)| k.clone())
                .collect();
            for k in replaced {
                if let Some(b) = self.take(&k) {
                    changes.push(Change::Removed {
                        binding: b,
                        reason: RemoveReason::Replaced,
                    });
                }
            }
        }
        let expires_at = now + u64::from(expires);
        match self.bindings.get_mut(&key) {
            Some(b) => {
                let stale_contact = (b.contact_uri != contact_uri)
                    .then(|| std::mem::replace(&mut b.contact_uri, contact_uri));
                if stale_contact.is_some() {
                    self.placement += 1;
                }
                // Not `take()`: the comparison below must see the instance the binding had.
                let instance = instance.or_else(|| b.instance.clone());
                let environment = params.environment.or(b.environment);
                let changed = stale_contact.is_some()
                    || b.reg_server != self.node
                    || b.user_agent != user_agent
                    || b.instance != instance
                    || b.ua_pnsreg != ua_pnsreg
                    || b.environment != environment
                    || b.alert_token != alert_token;
                b.alert_token = alert_token;
                b.user_agent = user_agent;
                b.instance = instance;
                b.ua_pnsreg = ua_pnsreg;
                b.environment = environment;
                b.last_register = now;
                b.expires_at = expires_at;
                b.reg_server.clone_from(&self.node);
                // Failures stay: a REGISTER proves the device is alive, not that its token
                // works; only a delivered push resets them.
                let persist = changed || now.saturating_sub(b.persisted_register) >= PERSIST_EVERY;
                if persist {
                    b.persisted_register = now;
                }
                changes.push(Change::Updated {
                    binding: b.clone(),
                    stale_contact,
                    changed,
                    persist,
                });
            }
            None => {
                if policy.token_exclusive {
                    // The same device token in other AORs: the app left those accounts.
                    let moved: Vec<Key> = self
                        .bindings
                        .iter()
                        .filter(|(k, b)| {
                            k.aor != key.aor && b.provider == key.provider && b.token == key.token
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in moved {
                        if let Some(binding) = self.take(&k) {
                            changes.push(Change::Removed {
                                binding,
                                reason: RemoveReason::TokenMoved,
                            });
                        }
                    }
                }
                if let Some(max) = policy.max_push_devices {
                    // Room for the new device: the least recently registered go.
                    let mut others: Vec<(u64, u64, Key)> = self
                        .aor_entries(&key.aor)
                        .map(|(k, b)| (b.last_register, b.created, k.clone()))
                        .collect();
                    others.sort();
                    let excess = (others.len() + 1).saturating_sub(max.max(1));
                    for (_, _, k) in others.into_iter().take(excess) {
                        if let Some(binding) = self.take(&k) {
                            changes.push(Change::Removed {
                                binding,
                                reason: RemoveReason::MaxDevices,
                            });
                        }
                    }
                }
                let id = binding_id(&key.aor, key.provider, &key.app_id, &key.token);
                let b = Binding {
                    id,
                    aor: key.aor.clone(),
                    provider: key.provider,
                    app_id: key.app_id.clone(),
                    token: key.token.clone(),
                    alert_token,
                    environment: params.environment,
                    form: params.form,
                    contact_uri,
                    user_agent,
                    instance,
                    ua_pnsreg,
                    created: now,
                    last_register: now,
                    expires_at,
                    failures: 0,
                    refresh_sent_for: None,
                    persisted_register: now,
                    reg_server: self.node.clone(),
                };
                self.place(key, b.clone());
                changes.push(Change::Added(b));
            }
        }
        changes
    }

    /// Like `remove_where`, looking only at one AOR's bindings.
    fn remove_in_aor(
        &mut self,
        aor: &str,
        reason: RemoveReason,
        pred: impl Fn(&Binding) -> bool,
    ) -> Vec<Change> {
        let keys: Vec<Key> = self
            .aor_entries(aor)
            .filter(|(_, b)| pred(b))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.take(&k))
            .map(|binding| Change::Removed { binding, reason })
            .collect()
    }

    fn remove_where(
        &mut self,
        reason: RemoveReason,
        pred: impl Fn(&Binding) -> bool,
    ) -> Vec<Change> {
        let keys: Vec<Key> = self
            .bindings
            .iter()
            .filter(|(_, b)| pred(b))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.take(&k))
            .map(|binding| Change::Removed { binding, reason })
            .collect()
    }

    /// Applies an unbind request of `aor`.
    pub fn unbind(&mut self, aor: &str, what: &Unbind) -> Vec<Change> {
        match what {
            Unbind::App { provider, app_id } => {
                self.remove_in_aor(aor, RemoveReason::Unbound, |b| {
                    b.provider == *provider && b.app_id == *app_id
                })
            }
            Unbind::Mpush => {
                self.remove_in_aor(aor, RemoveReason::Unbound, |b| b.form == Form::Mpush)
            }
        }
    }

    /// `Expires: 0` for a contact with push parameters: that exact binding goes.
    pub fn unregister(&mut self, aor: &str, params: &PushParams) -> Vec<Change> {
        let key = Key::new(aor, params.provider, &params.app_id, &params.token);
        self.take(&key)
            .map(|binding| Change::Removed {
                binding,
                reason: RemoveReason::Unbound,
            })
            .into_iter()
            .collect()
    }

    /// `Contact: *` with `Expires: 0`: every binding of the AOR.
    pub fn unregister_all(&mut self, aor: &str) -> Vec<Change> {
        self.remove_in_aor(aor, RemoveReason::Unbound, |_| true)
    }

    /// The provider said the token is dead: every binding with it goes, whatever the AOR.
    pub fn invalid_token(&mut self, provider: Provider, token: &str) -> Vec<Change> {
        self.remove_where(RemoveReason::InvalidToken, |b| {
            b.provider == provider && b.token == token
        })
    }

    /// Operator removal: one binding by id, or all of the AOR when `id` is `None`.
    pub fn delete(&mut self, aor: &str, id: Option<&str>) -> Vec<Change> {
        self.remove_in_aor(aor, RemoveReason::Operator, |b| {
            id.is_none_or(|i| b.id == i)
        })
    }

    /// Adds or refreshes a binding without a REGISTER (AMI provisioning).
    pub fn provision(&mut self, r: Registration, now: u64) -> Vec<Change> {
        self.register(r, now)
    }

    /// Bindings whose last REGISTER is older than `max_age` seconds go (only those this node
    /// looks after: another node's copy may be older than what it knows).
    pub fn expire(&mut self, now: u64, max_age: u64) -> Vec<Change> {
        let node = self.node.clone();
        self.remove_where(RemoveReason::MaxAge, |b| {
            looks_after(&node, b) && now.saturating_sub(b.last_register) > max_age
        })
    }

    /// [`Store::expire`] for one AOR's bindings (a shared store: decided once that AOR's copy
    /// has been read again, since another node may have seen a later REGISTER).
    pub fn expire_aor(&mut self, aor: &str, now: u64, max_age: u64) -> Vec<Change> {
        let node = self.node.clone();
        self.remove_in_aor(aor, RemoveReason::MaxAge, |b| {
            looks_after(&node, b) && now.saturating_sub(b.last_register) > max_age
        })
    }

    /// AORs that [`Store::expire`] would touch now.
    pub fn expiring_aors(&self, now: u64, max_age: u64) -> Vec<String> {
        let mut aors: Vec<String> = self
            .bindings
            .values()
            .filter(|b| self.is_local(b) && now.saturating_sub(b.last_register) > max_age)
            .map(|b| b.aor.clone())
            .collect();
        aors.dedup();
        aors
    }

    /// Bindings that need a refresh push now: registration expiring within `before` seconds,
    /// not refreshed by the device itself (`+sip.pnsreg` honoured when `server_pnsreg`), and not
    /// already asked for this expiry. Marks them asked.
    pub fn due_for_refresh(&mut self, now: u64, before: u64, server_pnsreg: bool) -> Vec<Binding> {
        if before == 0 {
            return Vec::new();
        }
        let mut due = Vec::new();
        for b in self.bindings.values_mut() {
            if !looks_after(&self.node, b) {
                continue;
            }
            let self_refreshing = b.ua_pnsreg && server_pnsreg;
            let window = b.expires_at.saturating_sub(before) <= now && now < b.expires_at;
            if !self_refreshing && window && b.refresh_sent_for != Some(b.expires_at) {
                b.refresh_sent_for = Some(b.expires_at);
                due.push(b.clone());
            }
        }
        due
    }

    /// Whether a binding of `aor` still has this contact URI (then the contact stays when
    /// another binding goes).
    pub fn contact_in_use(&self, aor: &str, contact_uri: &str) -> bool {
        self.of_aor(aor).any(|b| b.contact_uri == contact_uri)
    }

    fn key_of(&self, aor: &str, id: &str) -> Option<Key> {
        self.aor_entries(aor)
            .find(|(_, b)| b.id == id)
            .map(|(k, _)| k.clone())
    }

    /// Counts a failed push for a binding; at `max_failures` in a row the binding goes.
    pub fn push_failed(&mut self, aor: &str, id: &str, max_failures: Option<u32>) -> Vec<Change> {
        let Some(key) = self.key_of(aor, id) else {
            return Vec::new();
        };
        let Some(b) = self.bindings.get_mut(&key) else {
            return Vec::new();
        };
        b.failures = b.failures.saturating_add(1);
        if max_failures.is_some_and(|max| b.failures >= max) {
            return self
                .take(&key)
                .map(|binding| Change::Removed {
                    binding,
                    reason: RemoveReason::MaxFailures,
                })
                .into_iter()
                .collect();
        }
        vec![Change::Updated {
            binding: b.clone(),
            stale_contact: None,
            changed: true,
            persist: true,
        }]
    }

    /// A push was delivered: the failure count starts over (a change only when it was not 0).
    pub fn push_delivered(&mut self, aor: &str, id: &str) -> Vec<Change> {
        let Some(key) = self.key_of(aor, id) else {
            return Vec::new();
        };
        match self.bindings.get_mut(&key) {
            Some(b) if b.failures != 0 => {
                b.failures = 0;
                vec![Change::Updated {
                    binding: b.clone(),
                    stale_contact: None,
                    changed: true,
                    persist: true,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Whether a binding has failures to reset (checked before queueing work for a success).
    pub fn has_failures(&self, aor: &str, id: &str) -> bool {
        self.get(aor, id).is_some_and(|b| b.failures != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(token: &str) -> PushParams {
        PushParams {
            provider: Provider::Apns,
            app_id: "TEAM.com.example.voip".into(),
            token: token.into(),
            alert_token: None,
            environment: None,
            form: Form::Rfc8599,
            purr: None,
        }
    }

    fn reg(aor: &str, token: &str, contact: &str) -> Registration {
        Registration {
            aor: aor.into(),
            params: params(token),
            contact_uri: contact.into(),
            user_agent: Some("Phone/1.0".into()),
            instance: None,
            ua_pnsreg: false,
            expires: 600,
        }
    }

    #[test]
    fn add_then_refresh_from_a_new_address() {
        let mut s = Store::new();
        let c = s.register(reg("alice", "aa11", "sip:alice@10.0.0.1:5060"), 1000);
        let Change::Added(b) = &c[0] else {
            panic!("{c:?}")
        };
        assert_eq!((b.expires_at, b.created), (1600, 1000));
        let id = b.id.clone();
        let c = s.register(reg("alice", "aa11", "sip:alice@10.0.0.9:40000"), 1100);
        assert_eq!(c.len(), 1);
        let Change::Updated {
            binding,
            stale_contact,
            changed: true,
            persist: true,
        } = &c[0]
        else {
            panic!("{c:?}")
        };
        assert_eq!(stale_contact.as_deref(), Some("sip:alice@10.0.0.1:5060"));
        assert_eq!(
            (binding.id.as_str(), binding.last_register, binding.created),
            (id.as_str(), 1100, 1000)
        );
        assert_eq!(s.len(), 1);
        let c = s.register(reg("alice", "aa11", "sip:alice@10.0.0.9:40000"), 1200);
        assert!(matches!(
            &c[0],
            Change::Updated {
                stale_contact: None,
                changed: false,
                persist: false,
                ..
            }
        ));
        // An unchanged refresh is still written now and then, so max age survives restarts.
        let c = s.register(
            reg("alice", "aa11", "sip:alice@10.0.0.9:40000"),
            1100 + PERSIST_EVERY,
        );
        assert!(matches!(
            &c[0],
            Change::Updated {
                changed: false,
                persist: true,
                ..
            }
        ));
    }

    #[test]
    fn refresh_in_place_leaves_the_store_as_register_does() {
        let with_instance = |mut r: Registration, i: &str| {
            r.instance = Some(i.into());
            r
        };
        let history = [
            reg("alice", "aa11", "sip:alice@10.0.0.1:5060"),
            with_instance(reg("bob", "bb22", "sip:bob@10.0.0.2:5060"), "urn:b"),
            reg("carol", "cc33", "sip:carol@10.0.0.3:5060"),
        ];
        let mut ua = reg("alice", "aa11", "sip:alice@10.0.0.1:5060");
        ua.user_agent = Some("Phone/2.0".into());
        let mut env = reg("alice", "aa11", "sip:alice@10.0.0.1:5060");
        env.params.environment = Some(Environment::Sandbox);
        let mut alert = reg("alice", "aa11", "sip:alice@10.0.0.1:5060");
        alert.params.alert_token = Some("ab12".into());
        // (REGISTER, whether it is a plain refresh, at which time)
        let cases = [
            (reg("alice", "aa11", "sip:alice@10.0.0.1:5060"), true, 1100),
            (
                reg("alice", "aa11", "sip:alice@10.0.0.1:5060"),
                false,
                1000 + PERSIST_EVERY,
            ),
            (reg("alice", "aa11", "sip:alice@10.0.0.9:4000"), false, 1100),
            (ua, false, 1100),
            (env, false, 1100),
            (alert, false, 1100),
            (reg("alice", "dd44", "sip:alice@10.0.0.1:5060"), false, 1100),
            (reg("bob", "bb22", "sip:bob@10.0.0.2:5060"), true, 1100),
            (
                with_instance(reg("bob", "bb22", "sip:bob@10.0.0.2:5060"), "urn:b"),
                true,
                1100,
            ),
            (
                with_instance(reg("bob", "bb22", "sip:bob@10.0.0.2:5060"), "urn:x"),
                false,
                1100,
            ),
            (
                with_instance(reg("carol", "ee55", "sip:carol@10.0.0.3:5060"), "urn:c"),
                false,
                1100,
            ),
        ];
        for (r, plain, at) in cases {
            let (mut fast, mut slow) = (Store::new(), Store::new());
            for h in &history {
                fast.register(h.clone(), 1000);
                slow.register(h.clone(), 1000);
            }
            let refreshed = fast.refresh(
                &Refresh {
                    aor: &r.aor,
                    params: &r.params,
                    contact_uri: &r.contact_uri,
                    user_agent: r.user_agent.as_deref(),
                    instance: r.instance.as_deref(),
                    ua_pnsreg: r.ua_pnsreg,
                    expires: r.expires,
                },
                at,
            );
            assert_eq!(refreshed, plain, "{r:?}");
            if !refreshed {
                fast.register(r.clone(), at);
            }
            slow.register(r.clone(), at);
            let all = |s: &Store| s.all().cloned().collect::<Vec<_>>();
            assert_eq!(all(&fast), all(&slow), "{r:?}");
        }
    }

    #[test]
    fn placement_moves_with_every_binding_that_comes_goes_or_moves_and_not_with_refreshes() {
        let mut s = Store::new();
        let mut last = s.placement();
        let mut step = |s: &mut Store, what: &str, moves: bool| {
            let now = s.placement();
            assert_eq!(now != last, moves, "{what}");
            last = now;
        };
        s.register(reg("alice", "aa11", "sip:alice@10.0.0.1"), 1000);
        step(&mut s, "added", true);
        s.register(reg("alice", "aa11", "sip:alice@10.0.0.1"), 1010);
        step(&mut s, "same contact again", false);
        let r = reg("alice", "aa11", "sip:alice@10.0.0.1");
        let refresh = Refresh {
            aor: &r.aor,
            params: &r.params,
            contact_uri: &r.contact_uri,
            user_agent: r.user_agent.as_deref(),
            instance: None,
            ua_pnsreg: false,
            expires: 60,
        };
        assert!(s.refresh(&refresh, 1020));
        step(&mut s, "refresh in place", false);
        s.register(reg("alice", "aa11", "sip:alice@10.0.0.2"), 1030);
        step(&mut s, "new contact", true);
        s.push_failed(
            "alice",
            &binding_id("alice", Provider::Apns, "TEAM.com.example.voip", "aa11"),
            None,
        );
        step(&mut s, "failure counted", false);
        s.unregister("alice", &params("aa11"));
        step(&mut s, "unregistered", true);
        s.unregister("alice", &params("aa11"));
        step(&mut s, "nothing to unregister", false);
        s.register(reg("bob", "bb22", "sip:bob@10.0.0.3"), 1000);
        step(&mut s, "bob added", true);
        s.expire(1000 + 10_000, 100);
        step(&mut s, "expired", true);
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let mut a = Store::new();
        let mut b = Store::new();
        let x = a.register(reg("alice", "aa11", "sip:x"), 1);
        let y = b.register(reg("alice", "aa11", "sip:y"), 2);
        let z = a.register(reg("alice", "bb22", "sip:x"), 1);
        let id = |c: &[Change]| match &c[0] {
            Change::Added(b) => b.id.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(id(&x), id(&y));
        assert_ne!(id(&x), id(&z));
        assert_eq!(id(&x).len(), 10);
    }

    #[test]
    fn ids_are_pinned() {
        // Stored ids depend on these values (also computed outside Rust, from the definition in
        // `binding_id`): a change here orphans every stored binding.
        assert_eq!(
            binding_id("alice", Provider::Apns, "TEAM.com.example.voip", "aa11"),
            "1d20c67e36"
        );
        assert_eq!(
            binding_id("1001", Provider::Fcm, "com.example.app", "tok"),
            "09ff90df95"
        );
    }

    #[test]
    fn only_the_registering_node_expires_and_refreshes() {
        let mut a = Store::new();
        a.set_node("a");
        a.register(reg("alice", "aa11", "sip:x"), 0);
        let b0 = a.all().next().unwrap().clone();
        assert_eq!(b0.reg_server, "a");
        let mut b = Store::new();
        b.set_node("b");
        b.put(b0.clone());
        assert!(!b.is_local(&b0));
        assert!(b.expire(10_000, 60).is_empty(), "not b's to expire");
        assert!(b.due_for_refresh(545, 60, false).is_empty());
        assert_eq!(a.due_for_refresh(545, 60, false).len(), 1);
        // The phone now registers on b: b looks after it (and says so to storage).
        let c = b.register(reg("alice", "aa11", "sip:x"), 100);
        assert!(
            matches!(&c[0], Change::Updated { changed: true, persist: true, binding, .. } if binding.reg_server == "b")
        );
        // A node with no name (a store of its own) looks after everything.
        let mut alone = Store::new();
        alone.put(b0.clone());
        assert!(alone.is_local(&b0));
        assert_eq!(alone.due_for_refresh(545, 60, false).len(), 1);
        assert_eq!(b.expiring_aors(10_000, 60), ["alice"]);
        assert!(b.expire_aor("bob", 10_000, 60).is_empty());
        assert_eq!(b.expire_aor("alice", 10_000, 60).len(), 1);
        assert!(b.expiring_aors(10_000, 60).is_empty());
    }

    #[test]
    fn same_instance_new_token_replaces() {
        let mut s = Store::new();
        let mut r = reg("alice", "aa11", "sip:x");
        r.instance = Some("urn:uuid:1".into());
        s.register(r.clone(), 1);
        r.params.token = "bb22".into();
        let c = s.register(r, 2);
        assert!(
            matches!(&c[0], Change::Removed { reason: RemoveReason::Replaced, binding } if binding.token == "aa11")
        );
        assert!(matches!(&c[1], Change::Added(b) if b.token == "bb22"));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn removals() {
        let mut s = Store::new();
        s.register(reg("alice", "aa11", "sip:x"), 1);
        s.register(reg("alice", "bb22", "sip:y"), 1);
        s.register(reg("bob", "aa11", "sip:z"), 1);
        assert_eq!(s.invalid_token(Provider::Apns, "aa11").len(), 2);
        assert_eq!(s.len(), 1);
        assert_eq!(s.unregister("alice", &params("bb22")).len(), 1);
        assert!(s.is_empty());

        s.register(reg("alice", "aa11", "sip:x"), 1);
        let unbind = Unbind::App {
            provider: Provider::Apns,
            app_id: "TEAM.com.example.voip".into(),
        };
        assert_eq!(s.unbind("bob", &unbind).len(), 0);
        assert_eq!(s.unbind("alice", &unbind).len(), 1);

        s.register(reg("alice", "aa11", "sip:x"), 100);
        s.register(reg("alice", "cc33", "sip:x"), 5000);
        let gone = s.expire(5000 + 10, 4000);
        assert!(
            matches!(&gone[..], [Change::Removed { reason: RemoveReason::MaxAge, binding }] if binding.token == "aa11")
        );
        let id = s.all().next().unwrap().id.clone();
        assert_eq!(s.delete("alice", Some("nope")).len(), 0);
        assert_eq!(s.delete("alice", Some(&id)).len(), 1);
    }

    #[test]
    fn refresh_once_per_expiry_and_not_for_self_refreshing_devices() {
        let mut s = Store::new();
        s.register(reg("alice", "aa11", "sip:x"), 0); // expires at 600
        let mut r = reg("bob", "bb22", "sip:y");
        r.ua_pnsreg = true;
        s.register(r, 0);
        assert!(s.due_for_refresh(400, 60, true).is_empty());
        let due = s.due_for_refresh(545, 60, true);
        assert_eq!(
            due.iter().map(|b| b.aor.as_str()).collect::<Vec<_>>(),
            ["alice"]
        );
        assert!(
            s.due_for_refresh(550, 60, true).is_empty(),
            "asked once per expiry"
        );
        assert_eq!(
            s.due_for_refresh(545, 60, false).len(),
            1,
            "bob refreshes only if we advertise pnsreg"
        );
        assert!(s.due_for_refresh(545, 0, false).is_empty(), "0 disables");
        s.register(reg("alice", "aa11", "sip:x"), 600);
        assert_eq!(
            s.due_for_refresh(1150, 60, true).len(),
            1,
            "new expiry, new refresh"
        );
    }

    #[test]
    fn failures_count_reset_on_delivery_and_drop_at_the_limit() {
        let mut s = Store::new();
        s.register(reg("alice", "aa11", "sip:x"), 1);
        let id = s.all().next().unwrap().id.clone();
        let c = s.push_failed("alice", &id, None);
        assert!(
            matches!(&c[..], [Change::Updated { binding, persist: true, .. }] if binding.failures == 1)
        );
        s.push_failed("alice", &id, None);
        assert_eq!(s.get("alice", &id).unwrap().failures, 2);
        // A REGISTER does not reset: only a delivered push proves the token.
        s.register(reg("alice", "aa11", "sip:x"), 2);
        assert_eq!(s.get("alice", &id).unwrap().failures, 2);
        assert!(s.has_failures("alice", &id));
        assert_eq!(s.push_delivered("alice", &id).len(), 1);
        assert_eq!(s.get("alice", &id).unwrap().failures, 0);
        assert!(
            s.push_delivered("alice", &id).is_empty(),
            "nothing to reset"
        );
        for _ in 0..2 {
            assert!(matches!(
                &s.push_failed("alice", &id, Some(3))[..],
                [Change::Updated { .. }]
            ));
        }
        assert!(matches!(
            &s.push_failed("alice", &id, Some(3))[..],
            [Change::Removed {
                reason: RemoveReason::MaxFailures,
                ..
            }]
        ));
        assert!(s.is_empty());
        assert!(s.push_failed("alice", &id, Some(3)).is_empty(), "gone");
    }

    #[test]
    fn which_outcomes_count() {
        let failed = |class| Outcome::Failed {
            class,
            reason: "x".into(),
        };
        assert_eq!(
            verdict(Some(&Outcome::Sent {
                provider_id: None,
                attempts: 1
            })),
            PushVerdict::Delivered
        );
        for class in [FailureClass::Other, FailureClass::Provider] {
            assert_eq!(
                verdict(Some(&failed(class))),
                PushVerdict::Failed,
                "{class:?}"
            );
        }
        for class in [
            FailureClass::Config,
            FailureClass::NoApp,
            FailureClass::Payload,
        ] {
            assert_eq!(
                verdict(Some(&failed(class))),
                PushVerdict::Neutral,
                "{class:?}"
            );
        }
        assert_eq!(verdict(Some(&Outcome::Expired)), PushVerdict::Neutral);
        assert_eq!(
            verdict(Some(&Outcome::InvalidToken { reason: "x".into() })),
            PushVerdict::Neutral,
            "dead tokens are removed by their own path"
        );
        assert_eq!(verdict(None), PushVerdict::Neutral, "link errors are ours");
    }

    #[test]
    fn max_push_devices_replaces_the_least_recent() {
        let policy = Policy {
            max_push_devices: Some(1),
            ..Policy::default()
        };
        let mut s = Store::new();
        s.register_with(reg("alice", "aa11", "sip:a@1"), 1, &policy);
        // The same device refreshing is no new device.
        assert_eq!(
            s.register_with(reg("alice", "aa11", "sip:a@1"), 2, &policy)
                .len(),
            1
        );
        s.register_with(reg("bob", "cc33", "sip:b@1"), 2, &policy);
        let c = s.register_with(reg("alice", "bb22", "sip:a@2"), 3, &policy);
        assert!(
            matches!(&c[0], Change::Removed { reason: RemoveReason::MaxDevices, binding } if binding.token == "aa11")
        );
        assert!(matches!(&c[1], Change::Added(b) if b.token == "bb22"));
        assert_eq!(s.of_aor("alice").count(), 1);
        assert_eq!(s.of_aor("bob").count(), 1, "other AORs untouched");
        assert!(!s.contact_in_use("alice", "sip:a@1"));
        assert!(RemoveReason::MaxDevices.takes_contact());

        let two = Policy {
            max_push_devices: Some(2),
            ..Policy::default()
        };
        let mut s = Store::new();
        s.register_with(reg("alice", "t1", "sip:1"), 1, &two);
        s.register_with(reg("alice", "t2", "sip:2"), 2, &two);
        s.register_with(reg("alice", "t1", "sip:1"), 3, &two); // t1 refreshed: t2 is older
        let c = s.register_with(reg("alice", "t3", "sip:3"), 4, &two);
        assert!(
            matches!(&c[0], Change::Removed { binding, .. } if binding.token == "t2"),
            "{c:?}"
        );
        assert_eq!(s.of_aor("alice").count(), 2);
        // Off: any number.
        let mut s = Store::new();
        for t in ["t1", "t2", "t3"] {
            s.register(reg("alice", t, "sip:x"), 1);
        }
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn token_exclusive_moves_a_token_between_aors() {
        let on = Policy {
            token_exclusive: true,
            ..Policy::default()
        };
        let mut s = Store::new();
        s.register_with(reg("alice", "aa11", "sip:alice@p"), 1, &on);
        let c = s.register_with(reg("bob", "aa11", "sip:bob@p"), 2, &on);
        assert!(
            matches!(&c[0], Change::Removed { reason: RemoveReason::TokenMoved, binding } if binding.aor == "alice")
        );
        assert_eq!(s.of_aor("alice").count(), 0);
        assert_eq!(s.of_aor("bob").count(), 1);
        // bob's refresh leaves nothing to move.
        assert_eq!(
            s.register_with(reg("bob", "aa11", "sip:bob@p"), 3, &on)
                .len(),
            1
        );
        // Off (default): a multi-account app keeps both.
        let mut s = Store::new();
        s.register(reg("alice", "aa11", "sip:alice@p"), 1);
        s.register(reg("bob", "aa11", "sip:bob@p"), 2);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn uri_redaction() {
        assert_eq!(
            redact_uri("sip:a@h:5060;pn-provider=fcm;PN-PRID=abcdef123456;pn-param=p"),
            "sip:a@h:5060;pn-provider=fcm;PN-PRID=…123456;pn-param=p"
        );
        assert_eq!(redact_uri("sip:a@h;pn-tok=x"), "sip:a@h;pn-tok=…x");
        assert_eq!(redact_uri("sip:a@h"), "sip:a@h");
    }

    #[test]
    fn redaction_keeps_the_last_six() {
        assert_eq!(redact("00fc13adff785122b4ad"), "…22b4ad");
        assert_eq!(redact("abc"), "…abc");
    }
}
