//! Property tests of the parsers that see network input.

use proptest::prelude::*;
use res_push_core::binding::{redact, redact_uri};
use res_push_core::pn::{Rules, from_mpush};
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
