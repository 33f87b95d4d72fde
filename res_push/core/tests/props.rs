//! Property tests of the parsers that see network input.

use proptest::prelude::*;
use res_push_core::binding::{redact, redact_uri};
use res_push_core::pn::{Rules, from_mpush, may_concern, strip_push_params};
use res_push_core::registrar::{Action, Policy, RegisterRequest, Verdict, decide};
use res_push_core::sip::parse_contact;
use res_push_proto::Provider;

fn policy() -> Policy {
    Policy {
        rules: Rules {
            mpush: true,
            ..Rules::default()
        },
        ..Policy::default()
    }
}

/// Values shaped like real parameters, plus hostile characters.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{0,80}",
        "[A-Za-z0-9:_.-]{0,300}",
        ".{0,40}",
        Just("null".to_string()),
        Just(String::new()),
    ]
}

fn param_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("pn-provider"),
        Just("pn-param"),
        Just("pn-prid"),
        Just("pn-purr"),
        Just("pn-type"),
        Just("app-id"),
        Just("pn-tok"),
        Just("push-token-type"),
        Just("push-token-app"),
        Just("push-token-id"),
        Just("transport"),
    ]
    .prop_map(str::to_string)
}

fn contact() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((param_name(), value()), 0..6),
        any::<bool>(),
        0u32..100_000,
    )
        .prop_map(|(params, pnsreg, expires)| {
            let p: String = params.iter().map(|(n, v)| format!(";{n}={v}")).collect();
            let h = if pnsreg { ";+sip.pnsreg" } else { "" };
            format!("<sip:alice@192.0.2.1:5060{p}>;expires={expires}{h}")
        })
}

proptest! {
    #[test]
    fn contact_parser_never_panics(s in ".{0,400}") {
        let c = parse_contact(&s);
        let _ = (c.expires(), c.instance());
    }

    #[test]
    fn decide_never_panics_and_binds_only_valid_values(
        contacts in prop::collection::vec(prop_oneof![contact(), ".{0,200}"], 0..4),
        mpush in prop::option::of(prop_oneof![".{0,120}", "[spd]:[aijw]:[a-z.]{1,20}:[0-9a-f]{1,80}"]),
        expires in prop::option::of(0u32..100_000),
    ) {
        let req = RegisterRequest { contacts, expires, x_mpush: mpush };
        let rules = policy().rules;
        match decide(&req, &policy()) {
            Verdict::Reject { status, reason } => {
                prop_assert!(status == 400 || status == 555);
                prop_assert!(!reason.is_empty() && !reason.contains(['\r', '\n']));
            }
            Verdict::Accept { actions, .. } => {
                for a in actions {
                    if let Action::Bind { params, .. } = a {
                        prop_assert!(!params.token.is_empty() && params.token.len() <= rules.max_token_len);
                        prop_assert!(!params.app_id.is_empty() && params.app_id.len() <= 255);
                        if params.provider == Provider::Apns {
                            prop_assert!(params.token.bytes().all(|b| b.is_ascii_hexdigit()));
                        }
                        prop_assert!(params.token.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)));
                    }
                }
            }
            Verdict::Ignore => {}
        }
    }

    /// The prefilter runs on the raw message and skips everything it rejects, so it must
    /// never reject a REGISTER that `decide` would act on (unregister-all included).
    #[test]
    fn prefilter_no_means_decide_ignores(
        contacts in prop::collection::vec(prop_oneof![
            4 => contact(),
            1 => Just("*".to_string()),
            1 => "<sip:[a-z]{1,8}@192.0.2.1(;[a-zA-Z%0-9-]{1,12}=[a-z0-9]{1,8}){0,3}>",
            1 => ".{0,120}",
        ], 0..4),
        mpush in prop::option::of(prop_oneof![".{0,120}", "[spd]:[aijw]:[a-z.]{1,20}:[0-9a-f]{1,80}"]),
        expires in prop::option::of(prop_oneof![Just(0u32), 0u32..100_000]),
        compact in any::<bool>(),
        upper in any::<bool>(),
        mpush_on in any::<bool>(),
    ) {
        let mut raw = String::from("REGISTER sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1\r\n");
        for c in &contacts {
            let name = if compact { "m" } else { "Contact" };
            raw.push_str(&format!("{name}: {c}\r\n"));
        }
        if let Some(m) = &mpush {
            raw.push_str(&format!("{}: {m}\r\n", if upper { "X-MPUSH" } else { "x-mpush" }));
        }
        if let Some(e) = expires {
            raw.push_str(&format!("Expires: {e}\r\n"));
        }
        raw.push_str("Content-Length: 0\r\n\r\n");
        let raw = if upper { raw.to_uppercase() } else { raw };
        let req = RegisterRequest { contacts: contacts.clone(), expires, x_mpush: mpush };
        let mut p = policy();
        p.rules.mpush = mpush_on;
        if !may_concern(raw.as_bytes()) {
            prop_assert_eq!(decide(&req, &p), Verdict::Ignore, "{}", raw);
        }
    }

    #[test]
    fn stripped_uri_has_no_push_parameter_left(
        // URI parameter values as a URI can carry them (RFC 3261 paramchar: '@', '>', ';' and
        // '?' only escaped), as pjsip prints them.
        params in prop::collection::vec((param_name(), "[A-Za-z0-9:_.!~*'()%&+$\\[\\]/-]{0,40}"), 0..6),
    ) {
        let p: String = params.iter().map(|(n, v)| format!(";{n}={v}")).collect();
        let uri = format!("sip:alice@192.0.2.1:5060{p}");
        if let Some(s) = strip_push_params(&uri) {
            let c = parse_contact(&format!("<{s}>"));
            prop_assert!(c.uri_params.iter().all(|(n, _)| !n.starts_with("pn-") && !n.starts_with("push-token-")));
            prop_assert!(s.starts_with("sip:alice@192.0.2.1:5060"));
            prop_assert_eq!(s.matches(";transport=").count(), uri.matches(";transport=").count());
        }
    }

    #[test]
    fn mpush_never_panics(s in ".{0,300}") {
        let _ = from_mpush(&s, &policy().rules);
    }

    #[test]
    fn redaction_shows_at_most_six_characters(token in "[A-Za-z0-9:_-]{0,200}") {
        let r = redact(&token);
        prop_assert!(r.chars().count() <= 7);
        prop_assert!(token.ends_with(r.trim_start_matches('…')));
        let uri = format!("sip:a@h;pn-prid={token};pn-param=x");
        let shown = redact_uri(&uri);
        if token.len() > 6 {
            prop_assert!(!shown.contains(&token));
        }
    }
}
