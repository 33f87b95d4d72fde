//! The decision for one REGISTER: reject it (400/555), or let Asterisk's registrar take it and
//! then apply these binding changes, with this Feature-Caps on the 200 OK.
//!
//! Pure, so the SIP hook only copies strings in and acts on the answer, and so every input can
//! be unit-, property- and fuzz-tested without Asterisk.

use res_push_proto::Provider;

use crate::pn::{self, PushParams, Request, Rules, Unbind};
use crate::sip::{Contact, parse_contact};

/// What res_push needs from a REGISTER.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterRequest {
    /// Each Contact header value, as pjsip printed it.
    pub contacts: Vec<String>,
    /// The `Expires` header.
    pub expires: Option<u32>,
    /// The `X-MPUSH` header.
    pub x_mpush: Option<String>,
}

/// A binding change to make once the registrar has answered 200 OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create or refresh a binding for this contact.
    Bind {
        /// Push parameters.
        params: PushParams,
        /// The Contact URI.
        contact_uri: String,
        /// `+sip.instance`.
        instance: Option<String>,
        /// `+sip.pnsreg` present.
        ua_pnsreg: bool,
        /// Requested expiry; the registrar's granted value replaces it when known.
        expires: Option<u32>,
    },
    /// `Expires: 0` on a contact with push parameters.
    Unregister(PushParams),
    /// `Contact: *`.
    UnregisterAll,
    /// `pn-prid=null`, `X-MPUSH: null`.
    Unbind(Unbind),
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a push REGISTER: nothing to do.
    Ignore,
    /// Answer with this status and reason phrase; the registrar never sees it.
    Reject { status: u16, reason: String },
    /// Let the registrar handle it; on 200 OK add `feature_caps` and apply `actions`.
    Accept {
        feature_caps: Option<String>,
        actions: Vec<Action>,
    },
}

/// What to do with providers we do not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsupportedPolicy {
    /// 555 Push Notification Service Not Supported (RFC 8599).
    Reject,
    /// Register the contact as a plain one, without Feature-Caps (as the Mizu gateway does).
    Accept,
}

/// Registrar settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Parsing rules.
    pub rules: Rules,
    /// Unknown providers.
    pub unsupported: UnsupportedPolicy,
    /// Seconds advertised as `+sip.pnsreg`; `None` advertises nothing.
    pub pnsreg: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            rules: Rules::default(),
            unsupported: UnsupportedPolicy::Reject,
            pnsreg: None,
        }
    }
}

/// `*;+sip.pns="apns";+sip.pnsreg="600"` (RFC 8599 feature-capability indicators, RFC 6809
/// syntax).
pub fn feature_caps(provider: Provider, pnsreg: Option<u32>) -> String {
    let name = match provider {
        Provider::Apns => "apns",
        Provider::Fcm => "fcm",
    };
    match pnsreg {
        Some(s) => format!("*;+sip.pns=\"{name}\";+sip.pnsreg=\"{s}\""),
        None => format!("*;+sip.pns=\"{name}\""),
    }
}

/// Decides what to do with a REGISTER.
pub fn decide(req: &RegisterRequest, policy: &Policy) -> Verdict {
    decide_parts(&req.contacts, req.expires, req.x_mpush.as_deref(), policy)
}

/// [`decide`] on the parts of a REGISTER, borrowed from wherever they are (the REGISTER hook
/// copies nothing for it).
pub fn decide_parts<S: AsRef<str>>(
    contacts: &[S],
    expires: Option<u32>,
    x_mpush: Option<&str>,
    policy: &Policy,
) -> Verdict {
    let contacts: Vec<Contact> = contacts.iter().map(|c| parse_contact(c.as_ref())).collect();
    let mpush = if policy.rules.mpush {
        x_mpush.map(|v| pn::from_mpush(v, &policy.rules))
    } else {
        None
    };
    let mut actions = Vec::new();
    let mut caps: Option<Provider> = None;

    if contacts.iter().any(|c| c.star) {
        return if expires == Some(0) {
            Verdict::Accept {
                feature_caps: None,
                actions: vec![Action::UnregisterAll],
            }
        } else {
            // The registrar answers this malformed request itself.
            Verdict::Ignore
        };
    }

    for c in &contacts {
        let expires = c.expires().or(expires);
        let mut request = pn::from_contact(c, &policy.rules);
        if request == Request::None {
            if let Some(m) = &mpush {
                request = m.clone();
            }
        }
        match request {
            Request::None => {}
            Request::Malformed(reason) => {
                return Verdict::Reject {
                    status: 400,
                    reason,
                };
            }
            Request::Unsupported(provider) => match policy.unsupported {
                UnsupportedPolicy::Reject => {
                    return Verdict::Reject {
                        status: 555,
                        reason: format!("Push Notification Service Not Supported ({provider})"),
                    };
                }
                UnsupportedPolicy::Accept => {}
            },
            Request::Query(p) => caps = caps.or(Some(p)),
            Request::Unbind(u) => actions.push(Action::Unbind(u)),
            Request::Bind(params) if expires == Some(0) => actions.push(Action::Unregister(params)),
            Request::Bind(params) => {
                caps = caps.or(Some(params.provider));
                actions.push(Action::Bind {
                    params,
                    contact_uri: c.uri.clone(),
                    instance: c.instance(),
                    ua_pnsreg: c.header_param("+sip.pnsreg").is_some(),
                    expires,
                });
            }
        }
    }
    // X-MPUSH: null with no contact to carry it (a pure unbind REGISTER) still unbinds.
    if contacts.is_empty() {
        match mpush {
            Some(Request::Unbind(u)) => actions.push(Action::Unbind(u)),
            Some(Request::Malformed(reason)) => {
                return Verdict::Reject {
                    status: 400,
                    reason,
                };
            }
            _ => {}
        }
    }
    if caps.is_none() && actions.is_empty() {
        return Verdict::Ignore;
    }
    Verdict::Accept {
        feature_caps: caps.map(|p| feature_caps(p, policy.pnsreg)),
        actions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOK: &str = "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0";

    fn reg(contacts: &[&str]) -> RegisterRequest {
        RegisterRequest {
            contacts: contacts.iter().map(|s| s.to_string()).collect(),
            expires: None,
            x_mpush: None,
        }
    }

    #[test]
    fn bind_with_feature_caps() {
        let v = decide(
            &reg(&[&format!(
                "<sip:a@h:5060;pn-provider=apns;pn-param=T.b.voip;pn-prid={TOK}>;expires=300;+sip.pnsreg"
            )]),
            &Policy {
                pnsreg: Some(600),
                ..Policy::default()
            },
        );
        let Verdict::Accept {
            feature_caps,
            actions,
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(
            feature_caps.as_deref(),
            Some("*;+sip.pns=\"apns\";+sip.pnsreg=\"600\"")
        );
        assert!(matches!(
            &actions[..],
            [Action::Bind {
                expires: Some(300),
                ua_pnsreg: true,
                ..
            }]
        ));
    }

    #[test]
    fn query_answers_caps_without_binding() {
        let v = decide(&reg(&["<sip:a@h;pn-provider=fcm>"]), &Policy::default());
        assert_eq!(
            v,
            Verdict::Accept {
                feature_caps: Some("*;+sip.pns=\"fcm\"".into()),
                actions: vec![]
            }
        );
    }

    #[test]
    fn unsupported_rejects_or_passes() {
        let r = reg(&["<sip:a@h;pn-provider=webpush;pn-param=x;pn-prid=y>"]);
        assert!(matches!(
            decide(&r, &Policy::default()),
            Verdict::Reject { status: 555, .. }
        ));
        let accept = Policy {
            unsupported: UnsupportedPolicy::Accept,
            ..Policy::default()
        };
        assert_eq!(decide(&r, &accept), Verdict::Ignore);
    }

    #[test]
    fn malformed_is_400_with_reason() {
        let v = decide(
            &reg(&["<sip:a@h;pn-provider=apns;pn-param=x.y;pn-prid=nothex>"]),
            &Policy::default(),
        );
        assert_eq!(
            v,
            Verdict::Reject {
                status: 400,
                reason: "pn-prid is not an APNs device token (hex expected)".into()
            }
        );
    }

    #[test]
    fn expires_zero_and_star() {
        let mut r = reg(&[&format!(
            "<sip:a@h;pn-provider=apns;pn-param=T.b;pn-prid={TOK}>"
        )]);
        r.expires = Some(0);
        assert!(
            matches!(decide(&r, &Policy::default()), Verdict::Accept { feature_caps: None, actions } if matches!(&actions[..], [Action::Unregister(_)]))
        );
        let mut star = reg(&["*"]);
        star.expires = Some(0);
        assert_eq!(
            decide(&star, &Policy::default()),
            Verdict::Accept {
                feature_caps: None,
                actions: vec![Action::UnregisterAll]
            }
        );
        assert_eq!(
            decide(&reg(&["<sip:a@h>"]), &Policy::default()),
            Verdict::Ignore
        );
    }

    #[test]
    fn mpush_only_when_enabled() {
        let mut r = reg(&["<sip:a@h:5060>"]);
        r.x_mpush = Some(format!("i:com.voip.phone:{TOK}"));
        assert_eq!(decide(&r, &Policy::default()), Verdict::Ignore);
        let on = Policy {
            rules: Rules {
                mpush: true,
                ..Rules::default()
            },
            ..Policy::default()
        };
        assert!(
            matches!(decide(&r, &on), Verdict::Accept { feature_caps: Some(_), actions } if actions.len() == 1)
        );
        r.x_mpush = Some("null".into());
        assert_eq!(
            decide(&r, &on),
            Verdict::Accept {
                feature_caps: None,
                actions: vec![Action::Unbind(Unbind::Mpush)]
            }
        );
    }
}
