//! Bindings as stored through sorcery (astdb by default, a database through the realtime
//! wizard), and what a node does with what the store says.
//!
//! The object type [`OBJECT_TYPE`] has the binding id as sorcery id and one string field per
//! entry of [`FIELDS`]; with the realtime wizard each field is a column of the same name (the
//! schema shipped in `conf/push_bindings.sql`). This table is the only definition: the C shim
//! registers exactly these names, in this order.
//!
//! Several nodes share one store; each keeps its own copy in memory (the hot path). A node
//! refreshes its copy of an AOR from the store when a call or an operator needs it
//! ([`Store`] + [`sync`]): what the store has wins over an older copy, what it lacks is gone
//! (another node removed it), except bindings with a write of this node still on its way.

use res_push_proto::{Environment, Provider};

use crate::binding::{Binding, Store};
use crate::pn::Form;

/// The sorcery object type (the `sorcery.conf` key and, by default, the astdb family
/// `res_push/push_binding`).
pub const OBJECT_TYPE: &str = "push_binding";

/// The astdb wizard's data: bindings live under `/res_push/push_binding/<id>`.
pub const ASTDB_PREFIX: &str = "res_push";

/// Stored fields, in the order the shim registers them. Never rename one: it is a column.
pub const FIELDS: [&str; 16] = [
    "aor",
    "provider",
    "app_id",
    "token",
    "environment",
    "form",
    "contact_uri",
    "user_agent",
    "instance",
    "ua_pnsreg",
    "created",
    "last_register",
    "expires_at",
    "failures",
    "reg_server",
    "alert_token",
];

/// A row that is no binding: read after a lookup to tell "no rows" from "no database" (sorcery
/// returns an empty answer for both), rewritten when missing.
pub const HEALTH_ID: &str = "res-push-health";

fn name<T: serde::Serialize>(v: T) -> String {
    // The serde names are the wire names (`apns`, `sandbox`, `rfc8599`): one definition.
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// A binding's stored fields, in [`FIELDS`] order.
pub fn to_fields(b: &Binding) -> [String; 16] {
    [
        b.aor.clone(),
        name(b.provider),
        b.app_id.clone(),
        b.token.clone(),
        b.environment.map(name).unwrap_or_default(),
        name(b.form),
        b.contact_uri.clone(),
        b.user_agent.clone().unwrap_or_default(),
        b.instance.clone().unwrap_or_default(),
        yes_no(b.ua_pnsreg),
        b.created.to_string(),
        b.last_register.to_string(),
        b.expires_at.to_string(),
        b.failures.to_string(),
        b.reg_server.clone(),
        b.alert_token.clone().unwrap_or_default(),
    ]
}

/// A stored object that is not a usable binding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored binding {id}: {field} = '{value}' is not valid")]
pub struct BadRecord {
    /// Its id.
    pub id: String,
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: String,
}

/// The binding a stored object describes. `get(i)` is the value of `FIELDS[i]`.
pub fn from_fields(id: &str, get: impl Fn(usize) -> String) -> Result<Binding, BadRecord> {
    let bad = |i: usize, value: String| BadRecord {
        id: id.to_string(),
        field: FIELDS[i],
        value,
    };
    let text = |i: usize| get(i);
    let opt = |i: usize| Some(get(i)).filter(|v| !v.is_empty());
    let num = |i: usize| {
        let v = get(i);
        let t = v.trim();
        if t.is_empty() {
            Ok(0)
        } else {
            t.parse::<u64>().map_err(|_| bad(i, v.clone()))
        }
    };
    let provider: Provider = parse(&text(1)).ok_or_else(|| bad(1, text(1)))?;
    let environment = match opt(4) {
        None => None,
        Some(e) => Some(parse::<Environment>(&e).ok_or_else(|| bad(4, e.clone()))?),
    };
    let form = match opt(5) {
        None => Form::Rfc8599,
        Some(f) => parse::<Form>(&f).ok_or_else(|| bad(5, f.clone()))?,
    };
    let aor = text(0);
    if aor.is_empty() {
        return Err(bad(0, aor));
    }
    let token = text(3);
    if token.is_empty() {
        return Err(bad(3, token));
    }
    let ua_pnsreg = matches!(
        text(9).trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "1" | "t" | "y" | "on"
    );
    let last_register = num(11)?;
    Ok(Binding {
        id: id.to_string(),
        aor,
        provider,
        app_id: text(2),
        token,
        alert_token: opt(15),
        environment,
        form,
        contact_uri: text(6),
        user_agent: opt(7),
        instance: opt(8),
        ua_pnsreg,
        created: num(10)?,
        last_register,
        expires_at: num(12)?,
        failures: u32::try_from(num(13)?).unwrap_or(u32::MAX),
        refresh_sent_for: None,
        persisted_register: last_register,
        reg_server: text(14),
    })
}

/// Whether the store is one several nodes may share: any wizard but astdb and memory (both
/// local to one Asterisk). A local store needs no lookups: this node wrote all it holds.
pub fn is_shared(wizards: &[String]) -> bool {
    wizards
        .iter()
        .any(|w| !matches!(w.as_str(), "astdb" | "memory" | "memory_cache"))
}

/// What a refresh of this node's copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Bindings this node did not know.
    pub added: Vec<Binding>,
    /// Bindings the store had newer.
    pub updated: Vec<Binding>,
    /// Bindings the store no longer has (removed on another node).
    pub removed: Vec<Binding>,
}

/// Which part of the copy a lookup covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One AOR's bindings.
    Aor(&'a str),
    /// Every binding.
    All,
    /// Every binding, but the answer may be partial (the load at start): nothing is removed.
    Load,
}

/// Brings `store`'s copy of `scope` to what the store answered (`rows`). `pending(id)`: this
/// node has a write of that binding not yet confirmed, so its copy is the newer one.
pub fn sync(
    store: &mut Store,
    scope: Scope<'_>,
    rows: Vec<Binding>,
    pending: impl Fn(&str) -> bool,
) -> Synced {
    let mut out = Synced::default();
    let mut seen = std::collections::HashSet::new();
    for row in rows {
        seen.insert(row.id.clone());
        if pending(&row.id) {
            continue;
        }
        let current = store
            .of_device(&row.aor, row.provider, &row.app_id, &row.token)
            .cloned();
        match current {
            None => {
                store.put(row.clone());
                out.added.push(row);
            }
            Some(mine) => {
                // A copy with a later REGISTER is newer than the row (rows of unchanged
                // refreshes are written only every PERSIST_EVERY).
                if row.last_register < mine.last_register {
                    continue;
                }
                let mut merged = row;
                merged.refresh_sent_for = mine.refresh_sent_for;
                if same_stored(&merged, &mine) {
                    continue;
                }
                store.put(merged.clone());
                out.updated.push(merged);
            }
        }
    }
    let gone: Vec<Binding> = match scope {
        Scope::Load => Vec::new(),
        Scope::Aor(aor) => store
            .of_aor(aor)
            .filter(|b| !seen.contains(&b.id) && !pending(&b.id))
            .cloned()
            .collect(),
        Scope::All => store
            .all()
            .filter(|b| !seen.contains(&b.id) && !pending(&b.id))
            .cloned()
            .collect(),
    };
    for b in gone {
        store.forget(&b);
        out.removed.push(b);
    }
    out
}

fn same_stored(a: &Binding, b: &Binding) -> bool {
    to_fields(a) == to_fields(b)
}

/// Writes on their way to the store, one per binding id: a newer write of a binding replaces
/// the queued one (only the latest state matters), and a write that was overtaken while being
/// stored is not taken off the queue by the thread that stored it.
#[derive(Debug, Clone)]
pub struct Pending<T> {
    writes: std::collections::BTreeMap<String, (u64, T)>,
    seq: u64,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Self {
            writes: std::collections::BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T: Clone> Pending<T> {
    /// Queues `write` for binding `id`, replacing a queued one.
    pub fn push(&mut self, id: &str, write: T) {
        self.seq += 1;
        self.writes.insert(id.to_string(), (self.seq, write));
    }

    /// The next write to try (it stays queued until [`Pending::done`]).
    pub fn next(&self) -> Option<(String, u64, T)> {
        self.writes
            .iter()
            .next()
            .map(|(id, (seq, w))| (id.clone(), *seq, w.clone()))
    }

    /// The write `seq` of `id` was stored (or given up): off the queue, unless a newer one
    /// replaced it meanwhile.
    pub fn done(&mut self, id: &str, seq: u64) {
        if self.writes.get(id).is_some_and(|(s, _)| *s == seq) {
            self.writes.remove(id);
        }
    }

    /// Every queued write: binding id, sequence number, write.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, &T)> {
        self.writes
            .iter()
            .map(|(id, (seq, w))| (id.as_str(), *seq, w))
    }

    /// The write queued for `id` (also while it is being stored).
    pub fn get(&self, id: &str) -> Option<&T> {
        self.writes.get(id).map(|(_, w)| w)
    }

    /// Whether `id` has a write queued (its copy in memory is newer than the store's).
    pub fn contains(&self, id: &str) -> bool {
        self.writes.contains_key(id)
    }

    /// Writes queued.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The store's lines in `push show status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// Wizards `push_binding` is mapped to (`sorcery.conf`).
    pub wizards: Vec<String>,
    /// Whether other nodes may share it.
    pub shared: bool,
    /// This node's name (`reg_server` of what it registers).
    pub node: String,
    /// Whether the last operation reached the store.
    pub up: bool,
    /// Since when.
    pub since: std::time::SystemTime,
    /// Operations that did not reach it since load.
    pub failures: u64,
    /// Writes queued, not yet stored.
    pub pending: usize,
    /// Bindings in this node's memory.
    pub bindings: usize,
}

impl StoreStatus {
    /// Lines aligned like the rest of `push show status`.
    pub fn render(&self, now: std::time::SystemTime) -> String {
        use std::fmt::Write as _;
        let mut o = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = writeln!(o, "{k:<20}: {v}");
        };
        let wizards = if self.wizards.is_empty() {
            "none".to_string()
        } else {
            self.wizards.join(",")
        };
        line(
            "Binding store",
            &format!(
                "{OBJECT_TYPE} via {wizards} ({})",
                if self.shared {
                    "shared"
                } else {
                    "this node only"
                }
            ),
        );
        line("Node name", &self.node);
        let ago = now.duration_since(self.since).unwrap_or_default();
        line(
            "Store state",
            &format!(
                "{} since {} ({} ago)",
                if self.up { "reachable" } else { "UNREACHABLE" },
                humantime::format_rfc3339_seconds(self.since),
                humantime::format_duration(std::time::Duration::from_secs(ago.as_secs()))
            ),
        );
        line("Store failures", &self.failures);
        line("Writes pending", &self.pending);
        line("Bindings in memory", &self.bindings);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::{Registration, binding_id};
    use crate::pn::PushParams;

    fn reg(aor: &str, token: &str, contact: &str) -> Registration {
        Registration {
            aor: aor.into(),
            params: PushParams {
                provider: Provider::Apns,
                app_id: "TEAM.com.example.voip".into(),
                token: token.into(),
                alert_token: None,
                environment: Some(Environment::Sandbox),
                form: Form::PnType,
                purr: None,
            },
            contact_uri: contact.into(),
            user_agent: Some("Phone/1.0".into()),
            instance: Some("<urn:uuid:1>".into()),
            ua_pnsreg: true,
            expires: 600,
        }
    }

    fn one(node: &str, aor: &str, token: &str, at: u64) -> Binding {
        let mut s = Store::new();
        s.set_node(node);
        s.register(reg(aor, token, "sip:x@10.0.0.1"), at);
        s.all().next().unwrap().clone()
    }

    #[test]
    fn fields_round_trip() {
        let b = one("a", "alice", "aa11", 1000);
        let f = to_fields(&b);
        assert_eq!(f[1], "apns");
        assert_eq!(f[4], "sandbox");
        assert_eq!(f[5], "pn-type");
        assert_eq!(f[9], "yes");
        let back = from_fields(&b.id, |i| f[i].clone()).unwrap();
        assert_eq!(back, b);
        assert_eq!(
            back.id,
            binding_id("alice", Provider::Apns, &b.app_id, "aa11")
        );
    }

    #[test]
    fn bad_records_are_named() {
        let b = one("a", "alice", "aa11", 1000);
        let mut f = to_fields(&b);
        f[1] = "gcm".into();
        let e = from_fields("x", |i| f[i].clone()).unwrap_err();
        assert_eq!((e.field, e.value.as_str()), ("provider", "gcm"));
        f[1] = "fcm".into();
        f[11] = "soon".into();
        assert_eq!(
            from_fields("x", |i| f[i].clone()).unwrap_err().field,
            "last_register"
        );
        // Databases hand booleans and empty numbers back in their own ways.
        f[11] = String::new();
        f[9] = "t".into();
        let b = from_fields("x", |i| f[i].clone()).unwrap();
        assert!(b.ua_pnsreg);
        assert_eq!(b.last_register, 0);
        // The health row is no binding.
        assert!(from_fields(HEALTH_ID, |_| String::new()).is_err());
    }

    #[test]
    fn the_shipped_schema_has_exactly_these_columns() {
        // The realtime wizard reads and writes FIELDS (plus id) as columns; a column the
        // object type lacks makes sorcery refuse every row.
        let sql = include_str!("../../../conf/push_bindings.sql");
        let body = &sql[sql.find("CREATE TABLE").unwrap()..];
        let body = &body[body.find('(').unwrap() + 1..body.find(");").unwrap()];
        let columns: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        let mut expected = vec!["id"];
        expected.extend(FIELDS);
        assert_eq!(columns, expected);
    }

    #[test]
    fn pending_writes_coalesce_and_survive_being_overtaken() {
        let mut p = Pending::default();
        p.push("a", 1);
        p.push("b", 2);
        p.push("a", 3);
        assert_eq!(p.len(), 2);
        let (id, seq, w) = p.next().unwrap();
        assert_eq!(
            (id.as_str(), w),
            ("a", 3),
            "only the latest write of a binding"
        );
        // Overtaken while being stored: the newer write stays.
        p.push("a", 4);
        p.done("a", seq);
        assert!(p.contains("a"));
        let (_, seq, w) = p.next().unwrap();
        assert_eq!(w, 4);
        p.done("a", seq);
        assert!(!p.contains("a"));
        let (id, seq, _) = p.next().unwrap();
        p.done(&id, seq);
        assert!(p.is_empty());
    }

    #[test]
    fn status_lines() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let s = StoreStatus {
            wizards: vec!["realtime".into()],
            shared: true,
            node: "pbx-a".into(),
            up: false,
            since: t,
            failures: 3,
            pending: 2,
            bindings: 7,
        }
        .render(t + std::time::Duration::from_secs(100));
        assert!(
            s.contains("Binding store       : push_binding via realtime (shared)\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "Store state         : UNREACHABLE since 2027-01-15T08:00:00Z (1m 40s ago)\n"
            ),
            "{s}"
        );
        assert!(s.contains("Writes pending      : 2\n"), "{s}");
    }

    #[test]
    fn shared_stores() {
        assert!(!is_shared(&["astdb".into()]));
        assert!(!is_shared(&["memory_cache".into(), "astdb".into()]));
        assert!(is_shared(&["realtime".into()]));
        assert!(!is_shared(&[]));
    }

    #[test]
    fn sync_adds_updates_and_forgets() {
        let mut b = Store::new();
        b.set_node("b");
        let x = one("a", "alice", "aa11", 1000);
        let y = one("a", "alice", "bb22", 1000);
        let s = sync(
            &mut b,
            Scope::Aor("alice"),
            vec![x.clone(), y.clone()],
            |_| false,
        );
        assert_eq!((s.added.len(), s.updated.len(), s.removed.len()), (2, 0, 0));
        // Nothing new: nothing to do.
        let s = sync(
            &mut b,
            Scope::Aor("alice"),
            vec![x.clone(), y.clone()],
            |_| false,
        );
        assert_eq!(s, Synced::default());
        // x moved on node a; y was unbound there.
        let mut x2 = x.clone();
        x2.contact_uri = "sip:x@10.0.0.9".into();
        x2.last_register = 1100;
        let s = sync(&mut b, Scope::Aor("alice"), vec![x2.clone()], |_| false);
        assert_eq!(s.updated, vec![x2.clone()]);
        assert_eq!(s.removed, vec![y.clone()]);
        assert_eq!(b.len(), 1);
        // An older row never overwrites a newer copy.
        let s = sync(&mut b, Scope::Aor("alice"), vec![x.clone()], |_| false);
        assert!(s.updated.is_empty());
        assert_eq!(b.all().next().unwrap().last_register, 1100);
    }

    #[test]
    fn pending_writes_win_and_load_removes_nothing() {
        let mut a = Store::new();
        a.set_node("a");
        a.register(reg("alice", "aa11", "sip:x"), 1000);
        let mine = a.all().next().unwrap().clone();
        // Not yet in the database: an empty answer must not drop it.
        let s = sync(&mut a, Scope::Aor("alice"), vec![], |id| id == mine.id);
        assert!(s.removed.is_empty());
        let s = sync(&mut a, Scope::Load, vec![], |_| false);
        assert!(s.removed.is_empty());
        let s = sync(&mut a, Scope::All, vec![], |_| false);
        assert_eq!(s.removed.len(), 1);
        // Other AORs are left alone by an AOR's lookup.
        a.register(reg("bob", "cc33", "sip:y"), 1000);
        let s = sync(&mut a, Scope::Aor("alice"), vec![], |_| false);
        assert!(s.removed.is_empty());
        assert_eq!(a.len(), 1);
    }
}
