//! CLI commands.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use res_push_core::binding::{Binding, redact, redact_uri};
use res_push_proto::{Environment, Job, Outcome as JobOutcome, Provider, PushKind, PushTarget};

use crate::ast::cli::{Outcome, Output, Spec};
use crate::ast::sync;
use crate::bindings::{environment_name, now, provider_name};
use crate::ffi::rp_cli_command;
use crate::module::{self, Running, VERSION};
use crate::push;

const SPECS: &[Spec] = &[
    Spec {
        index: rp_cli_command::RP_CLI_SHOW_STATUS,
        words: c"push show status",
        usage: c"Usage: push show status\n       Shows the res_push version, the sidecar link (state, protocol, since when),\n       the job queue and counters.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_PING,
        words: c"push ping",
        usage: c"Usage: push ping\n       Sends a no-op job through the queue and the sidecar and prints the round trip.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_SHOW_BINDINGS,
        words: c"push show bindings",
        usage: c"Usage: push show bindings [<aor>]\n       Lists push bindings, all or those of one AOR. Tokens show their last 6 characters.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_SHOW_BINDING,
        words: c"push show binding",
        usage: c"Usage: push show binding <aor>\n       Shows every field of the push bindings of an AOR.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_SEND,
        words: c"push send",
        usage: c"Usage: push send <aor> [call|cancel|refresh|alert] [<text>]\n       Sends a push to every device bound to the AOR (default: alert) through the\n       sidecar and prints each outcome. A token the provider reports dead is removed.\n       'call' is a VoIP push on iOS: the app will show an incoming call.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_TEST,
        words: c"push test",
        usage: c"Usage: push test <apns|fcm> <app> <token> [sandbox|production]\n       Sends a test alert push to a token, without a binding, and prints the outcome.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_DELETE_BINDING,
        words: c"push delete binding",
        usage: c"Usage: push delete binding <aor> [<id>]\n       Deletes one push binding of an AOR (by the id shown by 'push show bindings'),\n       or all of them.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_SHOW_MESSAGES,
        words: c"push show messages",
        usage: c"Usage: push show messages [<aor>]\n       Lists the messages (MessageSend(push:...)) waiting for sleeping devices, all or\n       those of one AOR, oldest first: age, sender, size and how many devices wait.\n       Bodies are not shown.\n",
    },
    Spec {
        index: rp_cli_command::RP_CLI_DELETE_MESSAGES,
        words: c"push delete messages",
        usage: c"Usage: push delete messages <aor>\n       Deletes every queued message of an AOR (they will not be delivered).\n",
    },
];

/// How long a listing waits for a shared binding store to answer (a CLI thread, never a SIP
/// or dialplan one).
const STORE_WAIT: Duration = Duration::from_secs(3);
const STALE: &str = "(the shared binding store did not answer: this node's copy is shown)\n";

/// Extra arguments each command accepts after its words: (min, max).
fn extra_args(index: u32) -> (usize, usize) {
    match index {
        rp_cli_command::RP_CLI_SHOW_BINDINGS | rp_cli_command::RP_CLI_SHOW_MESSAGES => (0, 1),
        rp_cli_command::RP_CLI_DELETE_MESSAGES => (1, 1),
        rp_cli_command::RP_CLI_SHOW_BINDING => (1, 1),
        rp_cli_command::RP_CLI_DELETE_BINDING => (1, 2),
        // Free text may span several words.
        rp_cli_command::RP_CLI_SEND => (1, 64),
        rp_cli_command::RP_CLI_TEST => (3, 4),
        _ => (0, 0),
    }
}

/// The spec of a shim index.
pub fn spec(index: i32) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.index as i32 == index)
}

/// Runs command `index` with the words Asterisk matched (`args[0]` is `push`).
pub fn exec(index: i32, out: Output, args: &[String]) -> Outcome {
    let Some(spec) = spec(index) else {
        return Outcome::Failure;
    };
    let words = spec.words.to_bytes().split(|b| *b == b' ').count();
    let (min, max) = extra_args(spec.index);
    if args.len() < words + min || args.len() > words + max {
        return Outcome::ShowUsage;
    }
    let extra = &args[words..];
    let Some(running) = module::running() else {
        out.write("res_push is not running\n");
        return Outcome::Failure;
    };
    match spec.index {
        rp_cli_command::RP_CLI_SHOW_STATUS => {
            let mut status = running.link.status(VERSION);
            status.wake = running.wake.counters();
            status.built_for = crate::ast::identity::built_for();
            status.running_in = Some(crate::ast::identity::running_in());
            out.write(&status.render());
            out.write(
                &running
                    .bindings
                    .store_status()
                    .render(std::time::SystemTime::now()),
            );
            Outcome::Success
        }
        rp_cli_command::RP_CLI_PING => ping(&running, out),
        rp_cli_command::RP_CLI_SHOW_BINDINGS => {
            let aor = extra.first().map(String::as_str);
            let stale = !running.bindings.refresh_now(aor, STORE_WAIT);
            out.write(&table(&running.bindings.list(aor), now()));
            if stale {
                out.write(STALE);
            }
            Outcome::Success
        }
        rp_cli_command::RP_CLI_SHOW_BINDING => {
            let stale = !running.bindings.refresh_now(Some(&extra[0]), STORE_WAIT);
            if stale {
                out.write(STALE);
            }
            let list = running.bindings.list(Some(&extra[0]));
            if list.is_empty() {
                out.write(&format!("No push bindings for '{}'\n", extra[0]));
                return Outcome::Failure;
            }
            out.write(&details(&list, now()));
            Outcome::Success
        }
        rp_cli_command::RP_CLI_DELETE_BINDING => {
            // A shared store: a binding made on another node can be removed here too.
            running.bindings.refresh_now(Some(&extra[0]), STORE_WAIT);
            let n = running
                .bindings
                .delete(&extra[0], extra.get(1).map(String::as_str));
            out.write(&format!("{n} push binding(s) of '{}' deleted\n", extra[0]));
            if n == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        }
        rp_cli_command::RP_CLI_SHOW_MESSAGES => {
            out.write(&messages_table(
                &running.messages.list(extra.first().map(String::as_str)),
                now(),
            ));
            Outcome::Success
        }
        rp_cli_command::RP_CLI_DELETE_MESSAGES => {
            let n = running.messages.clear(&extra[0]);
            out.write(&format!(
                "{n} queued message(s) of '{}' deleted\n",
                extra[0]
            ));
            Outcome::Success
        }
        rp_cli_command::RP_CLI_SEND => send(&running, out, extra),
        rp_cli_command::RP_CLI_TEST => test(&running, out, extra),
        _ => Outcome::Failure,
    }
}

fn send(running: &Running, out: Output, extra: &[String]) -> Outcome {
    let aor = &extra[0];
    if !running.bindings.refresh_now(Some(aor), STORE_WAIT) {
        out.write(STALE);
    }
    // The kind word is optional: without it, every word after the AOR is the alert's text.
    let (kind, text) = match extra.get(1).and_then(|w| push::parse_kind(w)) {
        Some(kind) => (kind, extra[2..].join(" ")),
        None => (PushKind::Message, extra[1..].join(" ")),
    };
    let results = push::send_to_aor(running, aor, kind, (!text.is_empty()).then_some(text));
    if results.is_empty() {
        out.write(&format!("No push bindings for '{aor}'\n"));
        return Outcome::Failure;
    }
    let mut all_ok = true;
    for (b, r) in &results {
        all_ok &= matches!(r, Ok(JobOutcome::Sent { .. }));
        out.write(&format!(
            "{} {} {} {}: {}\n",
            b.aor,
            b.id,
            provider_name(b.provider),
            redact(&b.token),
            push::describe(r)
        ));
    }
    if all_ok {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

fn test(running: &Running, out: Output, extra: &[String]) -> Outcome {
    let provider = match extra[0].as_str() {
        "apns" => Provider::Apns,
        "fcm" => Provider::Fcm,
        _ => return Outcome::ShowUsage,
    };
    let environment = match extra.get(3).map(String::as_str) {
        None => None,
        Some("sandbox") => Some(Environment::Sandbox),
        Some("production") => Some(Environment::Production),
        Some(_) => return Outcome::ShowUsage,
    };
    let target = PushTarget {
        provider,
        app_id: extra[1].clone(),
        token: extra[2].clone(),
        environment,
    };
    let r = push::send_to_token(running, target, "res_push test".into());
    out.write(&format!(
        "{} {} {}: {}\n",
        extra[0],
        extra[1],
        redact(&extra[2]),
        push::describe(&r)
    ));
    if matches!(r, Ok(JobOutcome::Sent { .. })) {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// "in 9m 59s" / "expired 3s ago".
fn relative(at: u64, now: u64) -> String {
    if at > now {
        format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(at - now))
        )
    } else {
        format!(
            "expired {} ago",
            humantime::format_duration(Duration::from_secs(now - at))
        )
    }
}

fn table(list: &[Binding], now: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<20} {:<10} {:<8} {:<32} {:<9} {:<11} Registration",
        "AOR", "ID", "Provider", "App", "Token", "Env"
    );
    for b in list {
        let _ = writeln!(
            o,
            "{:<20} {:<10} {:<8} {:<32} {:<9} {:<11} {}",
            b.aor,
            b.id,
            provider_name(b.provider),
            b.app_id,
            redact(&b.token),
            environment_name(b.environment),
            relative(b.expires_at, now)
        );
    }
    let _ = writeln!(o, "{} push binding(s)", list.len());
    o
}

fn messages_table(list: &[res_push_core::message::Queued], now: u64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<20} {:<8} {:<12} {:<32} {:>6} Waiting",
        "AOR", "Seq", "Age", "From", "Bytes"
    );
    for m in list {
        let age = humantime::format_duration(Duration::from_secs(now.saturating_sub(m.created)));
        let _ = writeln!(
            o,
            "{:<20} {:<8} {:<12} {:<32} {:>6} {} device(s)",
            m.aor,
            m.seq,
            age.to_string(),
            m.from,
            m.body.len(),
            m.devices.len()
        );
    }
    let _ = writeln!(o, "{} queued message(s)", list.len());
    o
}

fn details(list: &[Binding], now: u64) -> String {
    let mut o = String::new();
    for b in list {
        let mut line = |k: &str, v: &str| {
            let _ = writeln!(o, "{k:<16}: {v}");
        };
        line("AOR", &b.aor);
        line("ID", &b.id);
        line("Provider", provider_name(b.provider));
        line("App", &b.app_id);
        line("Token", &redact(&b.token));
        if let Some(t) = &b.alert_token {
            line("Alert token", &redact(t));
        }
        line("Environment", environment_name(b.environment));
        line("Syntax", &format!("{:?}", b.form));
        line("Contact", &redact_uri(&b.contact_uri));
        line("User-Agent", b.user_agent.as_deref().unwrap_or("-"));
        line("Instance", b.instance.as_deref().unwrap_or("-"));
        line(
            "Self-refreshing",
            if b.ua_pnsreg {
                "yes (+sip.pnsreg)"
            } else {
                "no"
            },
        );
        line(
            "Last REGISTER",
            &format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(
                    now.saturating_sub(b.last_register)
                ))
            ),
        );
        line("Registration", &relative(b.expires_at, now));
        // Which node saw the latest REGISTER (several nodes sharing a store).
        line(
            "Registered on",
            if b.reg_server.is_empty() {
                "-"
            } else {
                &b.reg_server
            },
        );
        line("Push failures", &b.failures.to_string());
        o.push('\n');
    }
    o
}

fn ping(running: &Running, out: Output) -> Outcome {
    const BUDGET: Duration = Duration::from_secs(3);
    let (filler, slot) = sync::slot();
    let started = Instant::now();
    if let Err(e) = running
        .link
        .submit(Job::Ping, Some(BUDGET), Box::new(move |r| filler.fill(r)))
    {
        out.write(&format!("Ping not sent: {e}\n"));
        return Outcome::Failure;
    }
    // Operators expect the answer on screen; the link answers every accepted job, at the
    // latest at its deadline, so this wait is bounded.
    match slot.wait(BUDGET + Duration::from_secs(2)) {
        Some(Ok(JobOutcome::Pong)) => {
            out.write(&format!(
                "Pong from sidecar in {:.1} ms\n",
                started.elapsed().as_secs_f64() * 1000.0
            ));
            Outcome::Success
        }
        Some(Ok(other)) => {
            out.write(&format!("Unexpected answer from sidecar: {other:?}\n"));
            Outcome::Failure
        }
        Some(Err(e)) => {
            out.write(&format!("Ping failed: {e}\n"));
            Outcome::Failure
        }
        None => {
            out.write("Ping got no answer\n");
            Outcome::Failure
        }
    }
}
