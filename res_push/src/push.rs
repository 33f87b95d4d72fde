//! Sending pushes on an operator's request (`push send`, `push test`, AMI `PushSend`), waiting
//! for the outcomes, and reacting to them (a dead token drops its binding).

use std::time::{Duration, Instant};

use res_push_core::binding::{Binding, redact};
use res_push_proto::{Job, Outcome, Provider, PushData, PushKind, PushRequest, PushTarget};

use crate::ast::sync;
use crate::bindings::{Work, target};
use crate::link::LinkError;
use crate::module::Running;

/// How long an operator command waits for the sidecar's answers.
const BUDGET: Duration = Duration::from_secs(8);

/// `call|cancel|refresh|alert` → push kind.
pub fn parse_kind(word: &str) -> Option<PushKind> {
    Some(match word {
        "call" => PushKind::Call,
        "cancel" => PushKind::Cancel,
        "refresh" => PushKind::Refresh,
        "alert" | "message" => PushKind::Message,
        _ => return None,
    })
}

/// A random RFC 4122 version 4 UUID (the call UUID CallKit needs).
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    // /dev/urandom cannot fail on Linux short of a broken system; then time-derived bytes do.
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What happened to one push.
pub type Result = std::result::Result<Outcome, LinkError>;

/// One line describing an outcome, for people.
pub fn describe(r: &Result) -> String {
    match r {
        Ok(Outcome::Sent {
            provider_id,
            attempts,
        }) => {
            format!(
                "sent (id {}, {attempts} attempt(s))",
                provider_id.as_deref().unwrap_or("-")
            )
        }
        Ok(Outcome::InvalidToken { reason }) => {
            format!("invalid token ({reason}); binding removed")
        }
        Ok(Outcome::Failed { class, reason }) => format!("failed ({class:?}): {reason}"),
        Ok(Outcome::Expired) => "expired before it could be sent".into(),
        Ok(Outcome::Unsupported { detail }) => format!("not supported by the sidecar: {detail}"),
        Ok(other) => format!("unexpected answer {other:?}"),
        Err(e) => format!("not sent: {e}"),
    }
}

/// Sends one push to every binding of `aor` and waits (bounded) for the outcomes.
pub fn send_to_aor(
    running: &Running,
    aor: &str,
    kind: PushKind,
    text: Option<String>,
) -> Vec<(Binding, Result)> {
    let call_uuid = uuid_v4();
    let waiting: Vec<(Binding, Option<sync::Slot<Result>>, Option<Result>)> = running
        .bindings
        .list(Some(aor))
        .into_iter()
        .map(|b| {
            let data = PushData {
                caller_number: None,
                caller_name: None,
                call_uuid: Some(call_uuid.clone()),
                call_id: None,
                endpoint: Some(aor.to_string()),
                text: text.clone(),
            };
            match submit(running, target(&b, kind), kind, data, Some((&b.aor, &b.id))) {
                Ok(slot) => (b, Some(slot), None),
                Err(e) => (b, None, Some(Err(e))),
            }
        })
        .collect();
    let end = Instant::now() + BUDGET;
    waiting
        .into_iter()
        .map(|(b, slot, early)| {
            let r = early.or_else(|| {
                slot.and_then(|s| s.wait(end.saturating_duration_since(Instant::now())))
            });
            let r = r.unwrap_or(Err(LinkError::TimedOut));
            (b, r)
        })
        .collect()
}

/// Sends one push to a raw target (`push test`).
pub fn send_to_token(running: &Running, target: PushTarget, text: String) -> Result {
    let data = PushData {
        text: Some(text),
        call_uuid: Some(uuid_v4()),
        ..Default::default()
    };
    match submit(running, target, PushKind::Message, data, None) {
        Ok(slot) => slot.wait(BUDGET).unwrap_or(Err(LinkError::TimedOut)),
        Err(e) => Err(e),
    }
}

/// Queues a push whose outcome fills the returned slot; a dead token also drops its bindings,
/// and the outcome counts against `binding` (AOR, id) when the push went to one.
fn submit(
    running: &Running,
    target: PushTarget,
    kind: PushKind,
    data: PushData,
    binding: Option<(&str, &str)>,
) -> std::result::Result<sync::Slot<Result>, LinkError> {
    let (filler, slot) = sync::slot();
    let bindings = running.bindings.clone();
    let binding = binding.map(|(aor, id)| (aor.to_string(), id.to_string()));
    let (provider, token): (Provider, String) = (target.provider, target.token.clone());
    let job = Job::Push(PushRequest { target, kind, data });
    running.link.submit(
        job,
        Some(BUDGET - Duration::from_secs(1)),
        Box::new(move |r| {
            if let Some((aor, id)) = &binding {
                bindings.push_result(aor, id, &r);
            }
            if let Ok(Outcome::InvalidToken { reason }) = &r {
                tracing::info!(
                    "token {} reported dead ({reason}); removing its bindings",
                    redact(&token)
                );
                bindings.submit(Work::InvalidToken(provider, token));
            }
            filler.fill(r);
        }),
    )?;
    Ok(slot)
}
