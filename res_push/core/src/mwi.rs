//! Voicemail notifications from Asterisk's MWI (message waiting) state: which AORs a mailbox
//! concerns, and which changes of its counts are worth a push.
//!
//! Asterisk publishes a mailbox's state (`mailbox@context`, new, old and urgent counts) each
//! time app_voicemail (or anything else) changes it, and often several times for one change
//! (a message left publishes once from the recording and again from the mailbox poll). A phone
//! must get one alert per change, so [`Tracker`] remembers the last counts of each mailbox.

use std::collections::{BTreeSet, HashMap};

use res_push_proto::Provider;

use crate::binding::Binding;

/// One MWI state as Asterisk publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// `mailbox@context` (Asterisk's `uniqueid`).
    pub mailbox: String,
    /// The counts.
    pub counts: Counts,
}

/// A mailbox's message counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// New (unheard) messages.
    pub new: u32,
    /// Old (heard, kept) messages.
    pub old: u32,
    /// Urgent messages among the new ones.
    pub urgent: u32,
}

impl Counts {
    /// From Asterisk's ints (negative values, which nothing should publish, count as zero).
    pub fn from_ints(new: i32, old: i32, urgent: i32) -> Counts {
        let n = |v: i32| u32::try_from(v).unwrap_or(0);
        Counts {
            new: n(new),
            old: n(old),
            urgent: n(urgent),
        }
    }
}

/// What a change of a mailbox's counts calls for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Decision {
    /// New messages arrived: an alert push for the user.
    pub alert: bool,
    /// The counts changed at all (also when messages were heard or deleted): a background
    /// push, where configured, lets the app update its badge or list.
    pub update: bool,
}

/// The last counts seen per mailbox.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    last: HashMap<String, Counts>,
}

/// Mailboxes remembered at most (MWI uniqueids come from configuration, but anything may
/// publish on the topic): beyond it the table starts over, which costs at worst one repeated
/// push per mailbox.
const MAX_MAILBOXES: usize = 100_000;

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records counts already in force when res_push started (Asterisk's MWI cache), so that a
    /// module load or reload does not alert about messages the user was told about before.
    pub fn seed(&mut self, state: &State) {
        self.remember(state);
    }

    /// A published state: what it calls for. Unchanged counts call for nothing; a mailbox never
    /// seen before counts as empty until now.
    pub fn observe(&mut self, state: &State) -> Decision {
        let before = self
            .last
            .get(&normalize(&state.mailbox))
            .copied()
            .unwrap_or_default();
        self.remember(state);
        let now = state.counts;
        Decision {
            alert: now.new > before.new,
            update: now != before,
        }
    }

    fn remember(&mut self, state: &State) {
        if self.last.len() >= MAX_MAILBOXES {
            self.last.clear();
        }
        self.last.insert(normalize(&state.mailbox), state.counts);
    }
}

/// A mailbox name as compared: trimmed, lower case (Asterisk's MWI topics ignore case), with
/// `@default` when it names no context (app_voicemail's default context).
pub fn normalize(mailbox: &str) -> String {
    let m = mailbox.trim().to_ascii_lowercase();
    if m.contains('@') {
        m
    } else {
        format!("{m}@default")
    }
}

/// The mailboxes of a `mailboxes` option (comma-separated), normalized.
pub fn parse_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(normalize)
        .collect()
}

/// A PJSIP object with a `mailboxes` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// An endpoint: its name, `mailboxes` and `aors`.
    Endpoint {
        /// Endpoint name.
        name: String,
        /// Its `mailboxes`.
        mailboxes: String,
        /// Its `aors`.
        aors: String,
    },
    /// An AOR: its name and `mailboxes`.
    Aor {
        /// AOR name.
        name: String,
        /// Its `mailboxes`.
        mailboxes: String,
    },
}

/// The AORs whose devices hear about `mailbox`: every AOR of an endpoint whose `mailboxes`
/// list it, and every AOR whose own `mailboxes` list it (push bindings belong to AORs).
pub fn aors_for(mailbox: &str, owners: &[Owner]) -> BTreeSet<String> {
    let wanted = normalize(mailbox);
    let lists = |mailboxes: &str| parse_list(mailboxes).contains(&wanted);
    let mut aors = BTreeSet::new();
    for owner in owners {
        match owner {
            Owner::Endpoint {
                mailboxes,
                aors: endpoint_aors,
                ..
            } if lists(mailboxes) => aors.extend(
                endpoint_aors
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string),
            ),
            Owner::Aor { name, mailboxes } if lists(mailboxes) => {
                aors.insert(name.clone());
            }
            _ => {}
        }
    }
    aors
}

/// One binding per device: a token bound to two AORs that both hear about the mailbox is
/// still one phone, and gets one push.
pub fn devices(bindings: impl IntoIterator<Item = Binding>) -> Vec<Binding> {
    let mut seen = BTreeSet::new();
    bindings
        .into_iter()
        .filter(|b| seen.insert((b.provider, b.app_id.clone(), b.token.clone())))
        .collect()
}

/// Whether a device gets the background push besides (or, when no new message arrived,
/// instead of) the alert: only on APNs (an FCM data message already reaches the app), and only
/// where configured.
pub fn wants_background(provider: Provider, configured: bool, decision: Decision) -> bool {
    configured && provider == Provider::Apns && decision.update
}

/// APNs allows collapse ids of at most 64 bytes.
const COLLAPSE_ID_LIMIT: usize = 64;

/// The collapse id of a mailbox's pushes (APNs `apns-collapse-id`, FCM `collapse_key`): the
/// same for every push about the mailbox, so a phone shows only its latest counts. The mailbox
/// itself when it fits, otherwise a stable hash of it.
pub fn collapse_id(mailbox: &str) -> String {
    let m = normalize(mailbox);
    let plain = format!("mwi-{m}");
    if plain.len() <= COLLAPSE_ID_LIMIT && plain.bytes().all(|b| b.is_ascii_graphic()) {
        plain
    } else {
        format!("mwi-{:016x}", crate::binding::fnv1a(&[&m]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(mailbox: &str, new: u32, old: u32) -> State {
        State {
            mailbox: mailbox.into(),
            counts: Counts {
                new,
                old,
                urgent: 0,
            },
        }
    }

    #[test]
    fn one_alert_per_new_message_and_none_for_repeats() {
        let mut t = Tracker::new();
        let d = t.observe(&state("1000@default", 1, 0));
        assert_eq!(
            d,
            Decision {
                alert: true,
                update: true
            }
        );
        assert_eq!(
            t.observe(&state("1000@default", 1, 0)),
            Decision::default(),
            "the same counts published again"
        );
        assert_eq!(
            t.observe(&state("1000@Default", 1, 0)),
            Decision::default(),
            "case does not make another mailbox"
        );
        assert!(t.observe(&state("1000@default", 2, 0)).alert);
        let heard = t.observe(&state("1000@default", 1, 1));
        assert_eq!(
            heard,
            Decision {
                alert: false,
                update: true
            },
            "a message heard: no alert, but the counts changed"
        );
        assert!(t.observe(&state("1000@default", 2, 1)).alert);
    }

    #[test]
    fn an_empty_mailbox_seen_first_is_no_change() {
        let mut t = Tracker::new();
        assert_eq!(t.observe(&state("2000@default", 0, 0)), Decision::default());
        assert_eq!(
            t.observe(&state("2000@default", 0, 3)),
            Decision {
                alert: false,
                update: true
            }
        );
    }

    #[test]
    fn seeded_counts_do_not_alert_again() {
        let mut t = Tracker::new();
        t.seed(&state("1000@default", 3, 0));
        assert_eq!(t.observe(&state("1000@default", 3, 0)), Decision::default());
        assert!(t.observe(&state("1000@default", 4, 0)).alert);
    }

    #[test]
    fn mailbox_lists_and_owners() {
        assert_eq!(
            parse_list(" 1000@default, 1001 ,,2000@Sales"),
            ["1000@default", "1001@default", "2000@sales"]
        );
        let owners = vec![
            Owner::Endpoint {
                name: "alice".into(),
                mailboxes: "1000@default".into(),
                aors: "alice, alice-mobile".into(),
            },
            Owner::Endpoint {
                name: "carol".into(),
                mailboxes: "3000".into(),
                aors: "carol".into(),
            },
            Owner::Aor {
                name: "bob".into(),
                mailboxes: "1000".into(),
            },
        ];
        let aors: Vec<String> = aors_for("1000@default", &owners).into_iter().collect();
        assert_eq!(aors, ["alice", "alice-mobile", "bob"]);
        assert!(aors_for("9999@default", &owners).is_empty());
        assert_eq!(aors_for("3000@default", &owners).len(), 1);
    }

    #[test]
    fn collapse_ids_fit_apns() {
        assert_eq!(collapse_id("1000@default"), "mwi-1000@default");
        assert_eq!(collapse_id("1000"), "mwi-1000@default");
        let long = format!("{}@default", "9".repeat(80));
        let id = collapse_id(&long);
        assert!(id.len() <= 64, "{id}");
        assert_eq!(id, collapse_id(&long), "stable");
        assert_ne!(id, collapse_id(&format!("8{long}")));
        assert!(collapse_id("a b@default").len() <= 64);
        assert_ne!(collapse_id("a b@default"), "mwi-a b@default");
    }

    #[test]
    fn background_only_on_apns_when_configured() {
        let changed = Decision {
            alert: false,
            update: true,
        };
        assert!(wants_background(Provider::Apns, true, changed));
        assert!(!wants_background(Provider::Fcm, true, changed));
        assert!(!wants_background(Provider::Apns, false, changed));
        assert!(!wants_background(Provider::Apns, true, Decision::default()));
    }

    #[test]
    fn one_push_per_device() {
        let mut store = crate::binding::Store::new();
        for (aor, token) in [("alice", "t1"), ("bob", "t1"), ("alice", "t2")] {
            store.register(
                crate::binding::Registration {
                    aor: aor.into(),
                    params: crate::pn::PushParams {
                        provider: Provider::Fcm,
                        app_id: "p".into(),
                        token: token.into(),
                        alert_token: None,
                        environment: None,
                        form: crate::pn::Form::Rfc8599,
                        purr: None,
                    },
                    contact_uri: format!("sip:{aor}@h"),
                    user_agent: None,
                    instance: None,
                    ua_pnsreg: false,
                    expires: 60,
                },
                1,
            );
        }
        let d = devices(store.all().cloned());
        assert_eq!(d.len(), 2);
    }
}
