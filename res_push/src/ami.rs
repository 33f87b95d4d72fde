//! AMI actions: bindings managed by a provisioning system without SIP (XiVO registers mobile
//! tokens through its own API).

use res_push_core::binding::redact;
use res_push_core::pn::{Form, PushParams, Request, Rules, from_contact};
use res_push_core::sip::Contact;
use res_push_proto::{Environment, Outcome, PushKind};

use crate::ast::manager::Session;
use crate::bindings::{event_fields, provisioned};
use crate::ffi::rp_ami_action;
use crate::{module, push};

/// Serves AMI action `action`.
pub fn exec(action: i32, s: Session) {
    let action = action as u32;
    let Some(running) = module::running() else {
        s.error("res_push is not running");
        return;
    };
    let bindings = &running.bindings;
    match action {
        rp_ami_action::RP_AMI_BINDING_LIST => {
            let aor = s.header("AOR");
            let aor = (!aor.is_empty()).then_some(aor.as_str());
            // A shared store: what other nodes stored too (this is the AMI session's thread;
            // the wait is bounded, and the copy in memory is listed if the store is away).
            bindings.refresh_now(aor, std::time::Duration::from_secs(3));
            let list = bindings.list(aor);
            s.list_start("Push bindings will follow");
            for b in &list {
                s.list_entry("PushBindingEntry", &event_fields(b, None));
            }
            s.list_complete("PushBindingListComplete", list.len());
        }
        rp_ami_action::RP_AMI_BINDING_ADD => match add(&s, &running.general().policy.rules) {
            Ok((aor, params, contact, expires)) => {
                let b = bindings.provision(provisioned(&aor, params, contact, expires));
                s.ack(&format!(
                    "Binding {} for {} ({})",
                    b.id,
                    b.aor,
                    redact(&b.token)
                ));
            }
            Err(e) => s.error(&e),
        },
        rp_ami_action::RP_AMI_BINDING_REMOVE => {
            let aor = s.header("AOR");
            if aor.is_empty() {
                s.error("AOR: header required");
                return;
            }
            let id = s.header("ID");
            // A shared store: a binding made on another node can be removed here too.
            bindings.refresh_now(Some(&aor), std::time::Duration::from_secs(3));
            match bindings.delete(&aor, (!id.is_empty()).then_some(id.as_str())) {
                0 => s.error("No such binding"),
                n => s.ack(&format!("{n} binding(s) removed")),
            }
        }
        rp_ami_action::RP_AMI_PUSH_SEND => {
            let aor = s.header("AOR");
            if aor.is_empty() {
                s.error("AOR: header required");
                return;
            }
            let kind = match s.header("Kind").as_str() {
                "" => PushKind::Message,
                k => match push::parse_kind(k) {
                    Some(k) => k,
                    None => {
                        s.error("Kind: must be call, cancel, refresh or alert");
                        return;
                    }
                },
            };
            let text = s.header("Text");
            bindings.refresh_now(Some(&aor), std::time::Duration::from_secs(3));
            let results =
                push::send_to_aor(&running, &aor, kind, (!text.is_empty()).then_some(text));
            if results.is_empty() {
                s.error("No push bindings for this AOR");
                return;
            }
            s.list_start("Push results will follow");
            for (b, r) in &results {
                let status = match r {
                    Ok(Outcome::Sent { .. }) => "sent",
                    Ok(Outcome::InvalidToken { .. }) => "invalid-token",
                    Ok(Outcome::Expired) => "expired",
                    _ => "failed",
                };
                s.list_entry(
                    "PushSendResult",
                    &[
                        ("AOR", b.aor.clone()),
                        ("ID", b.id.clone()),
                        ("Token", redact(&b.token)),
                        ("Status", status.to_string()),
                        ("Detail", push::describe(r)),
                    ],
                );
            }
            s.list_complete("PushSendComplete", results.len());
        }
        _ => s.error("Unknown action"),
    }
}

/// Validates `PushBindingAdd` with the same rules as a REGISTER.
fn add(s: &Session, rules: &Rules) -> Result<(String, PushParams, String, u32), String> {
    let aor = s.header("AOR");
    if aor.is_empty() {
        return Err("AOR: header required".into());
    }
    let (provider, app, token) = (s.header("Provider"), s.header("AppID"), s.header("Token"));
    let env = match s.header("Environment").as_str() {
        "" => None,
        "sandbox" => Some(Environment::Sandbox),
        "production" => Some(Environment::Production),
        other => {
            return Err(format!(
                "Environment: '{other}' is not sandbox or production"
            ));
        }
    };
    // Reuse the REGISTER parser so AMI and SIP accept exactly the same values.
    let contact = Contact {
        uri_params: vec![
            ("pn-provider".into(), Some(provider)),
            ("pn-param".into(), Some(app)),
            ("pn-prid".into(), Some(token)),
        ],
        ..Contact::default()
    };
    let mut params = match from_contact(&contact, rules) {
        Request::Bind(p) => p,
        Request::Malformed(reason) => return Err(reason),
        Request::Unsupported(p) => return Err(format!("Provider '{p}' not supported")),
        Request::Unbind(_) => return Err("Token 'null' unbinds; use PushBindingRemove".into()),
        Request::Query(_) | Request::None => {
            return Err("Provider, AppID and Token: headers required".into());
        }
    };
    params.environment = env.or(params.environment);
    params.form = Form::Rfc8599;
    let expires = match s.header("Expires").as_str() {
        "" => 0,
        e => e
            .parse()
            .map_err(|_| format!("Expires: '{e}' is not a number of seconds"))?,
    };
    Ok((aor, params, s.header("ContactURI"), expires))
}
