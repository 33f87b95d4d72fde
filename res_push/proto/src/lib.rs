//! The wire protocol spoken between `res_push.so` (inside Asterisk) and `res-push-sidecar`.
//!
//! Transport: a Unix stream socket. Each frame is a 4-byte big-endian length followed by that
//! many bytes of JSON (the framing tokio-util's `LengthDelimitedCodec` uses by default, so the
//! sidecar needs no hand-written codec). Frames larger than [`MAX_FRAME_LEN`] are a protocol
//! error: the peer closes the connection rather than allocate whatever a corrupt header claims.
//!
//! Conversation:
//! 1. the module sends [`ClientFrame::Hello`] with the range of versions it speaks;
//! 2. the sidecar answers [`ServerFrame::Welcome`] with the version chosen, or
//!    [`ServerFrame::Reject`] and closes;
//! 3. the module sends [`ClientFrame::Submit`] jobs, each with an id and a deadline; the sidecar
//!    answers each with exactly one [`ServerFrame::Outcome`] carrying the same id, in any order.
//!
//! A frame that cannot be parsed gets a [`ServerFrame::Error`] and the connection is closed: after
//! garbage, the framing itself can no longer be trusted.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Largest frame body accepted, in bytes. Push payloads are capped at 4 KiB by Apple and Google,
/// so 1 MiB leaves room for configuration frames without letting a bad length header hurt.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Bounds on one write of several queued frames by the module (the frames after them go in the
/// next write, so that outcomes and timers are not held up behind a long queue).
pub const MAX_BATCH_FRAMES: usize = 64;
/// See [`MAX_BATCH_FRAMES`]; a batch stops growing once it holds this many bytes.
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Frames sent by the module to the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// First frame of every connection.
    Hello {
        /// Oldest protocol version the client speaks.
        min_version: u32,
        /// Newest protocol version the client speaks.
        max_version: u32,
        /// Who is calling, for the sidecar's logs (e.g. `res_push`).
        client: String,
        /// The client's software version.
        client_version: String,
        /// The Asterisk system name or host, so a sidecar serving several PBXes can tell them apart.
        node: String,
    },
    /// A job to run. Answered by exactly one [`ServerFrame::Outcome`] with the same `id`.
    Submit {
        /// Chosen by the client, unique per connection.
        id: u64,
        /// Milliseconds the job may take from the moment it is received; past it the job is dropped.
        deadline_ms: u64,
        /// What to do.
        job: Job,
    },
}

/// Work the sidecar can do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Job {
    /// No-op round trip: proves the link and the sidecar's job path work.
    Ping,
    /// Replaces the sidecar's app configuration for this connection's node. Sent by the module
    /// after each handshake and on `module reload res_push`, so push.conf is the one file an
    /// operator edits. Answered with [`Outcome::Configured`].
    Configure {
        /// Every app section of push.conf.
        apps: Vec<AppConfig>,
    },
    /// Send one push. Answered with [`Outcome::Sent`], [`Outcome::InvalidToken`],
    /// [`Outcome::Failed`] or [`Outcome::Expired`].
    Push(PushRequest),
    /// Tell a device its voicemail counts changed (Asterisk's MWI). A job of its own rather
    /// than a [`PushKind`], so that a sidecar too old to know it answers
    /// [`Outcome::Unsupported`] instead of failing to parse the frame. Answered like `Push`.
    Voicemail(VoicemailPush),
    /// A job kind this side does not know (sent by a newer peer); answered with
    /// [`Outcome::Unsupported`] instead of tearing the connection down.
    #[serde(other)]
    Unknown,
}

/// A push service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Apple Push Notification service (HTTP/2 provider API).
    Apns,
    /// Firebase Cloud Messaging (HTTP v1 API).
    Fcm,
}

/// APNs environment of a device token (FCM has one environment; the field is ignored there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// Development builds: `api.sandbox.push.apple.com`.
    Sandbox,
    /// App Store / TestFlight builds: `api.push.apple.com`.
    Production,
}

/// One app section of push.conf, passed through as written: the sidecar owns the meaning of
/// provider options (credentials, endpoints, templates) and reports problems in
/// [`Outcome::Configured`], so the module need not know every provider's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppConfig {
    /// The section name (e.g. `myphone-ios`), used in logs, metrics and `push test`.
    pub name: String,
    /// Which service this app's pushes go through.
    pub provider: Provider,
    /// App identifiers a binding may carry that select this app: APNs bundle ids
    /// (`com.example.phone`), FCM project ids or Android package names. A binding's `app_id`
    /// matches when it equals one of these, or (APNs) equals `<team id>.<bundle id>` with an
    /// optional `.voip` suffix, as RFC 8599 `pn-param` values are written.
    pub app_ids: Vec<String>,
    /// Restricts the app to one APNs environment; `None` serves both.
    pub environment: Option<Environment>,
    /// Every other option of the section, verbatim (`key_file`, `key_id`, `team_id`,
    /// `cert_file`, `service_account_file`, `apns_url`, `fcm_url`, `ca_file`, `template_*`, ...).
    pub options: std::collections::BTreeMap<String, String>,
}

/// What a push is for. Decides the APNs push type (only `call` is ever a VoIP push: iOS kills
/// apps that get a VoIP push they do not report to CallKit) and the default payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    /// Incoming call: wake the app now (APNs `voip`, FCM high-priority data).
    Call,
    /// The call was answered elsewhere or the caller hung up (APNs `alert`, never `voip`).
    Cancel,
    /// Nobody answered (APNs `alert`).
    Missed,
    /// Ask the app to re-register before its registration expires (APNs `background`).
    Refresh,
    /// Free text for the user (APNs `alert`).
    Message,
}

/// Where a push goes: the device's push binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTarget {
    /// The service.
    pub provider: Provider,
    /// The app as the device named it (RFC 8599 `pn-param`, legacy `app-id`, Mizu package).
    pub app_id: String,
    /// The device token (RFC 8599 `pn-prid`).
    pub token: String,
    /// APNs environment when the device said (`apns.dev`, Mizu `s:`); `None` lets the app's
    /// configuration decide, defaulting to production.
    pub environment: Option<Environment>,
}

/// Data shown to the user or used by the app; each field becomes a template placeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushData {
    /// Caller id number.
    pub caller_number: Option<String>,
    /// Caller id name.
    pub caller_name: Option<String>,
    /// A UUID for the call, stable across call, cancel and missed pushes (CallKit needs it).
    pub call_uuid: Option<String>,
    /// SIP Call-ID of the incoming call.
    pub call_id: Option<String>,
    /// The Asterisk endpoint (AOR) being called.
    pub endpoint: Option<String>,
    /// Free text (`message` pushes, `push send ... <text>`).
    pub text: Option<String>,
}

/// A push to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// The device.
    pub target: PushTarget,
    /// What for.
    pub kind: PushKind,
    /// Payload data.
    #[serde(default)]
    pub data: PushData,
}

/// A voicemail notification to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoicemailPush {
    /// The device.
    pub target: PushTarget,
    /// The mailbox as Asterisk names it (`mailbox@context`).
    pub mailbox: String,
    /// New (unheard) messages.
    pub new_messages: u32,
    /// Old (heard, kept) messages.
    pub old_messages: u32,
    /// Urgent messages among the new ones.
    #[serde(default)]
    pub urgent_messages: u32,
    /// The AOR the device is bound to.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Pushes with the same collapse id replace each other on the device (APNs
    /// `apns-collapse-id`, FCM `collapse_key`): one per mailbox, so only the latest counts show.
    pub collapse_id: String,
    /// APNs only: a background push (`content-available`, no alert) for the app to update
    /// itself, instead of an alert for the user.
    #[serde(default)]
    pub background: bool,
}

/// Why a push failed, by what the module should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Our configuration is wrong (credentials, topic, sender id): not retried; an operator
    /// must act.
    Config,
    /// No app section matches the target.
    NoApp,
    /// The provider kept failing (throttled, unavailable) until retries or the deadline ran out.
    Provider,
    /// The payload was refused (too large, invalid).
    Payload,
    /// Anything else, reason kept verbatim.
    Other,
}

/// Frames sent by the sidecar to the module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Handshake accepted.
    Welcome {
        /// The protocol version both sides now speak.
        version: u32,
        /// The sidecar's software version.
        server_version: String,
    },
    /// Handshake refused (no common version); the sidecar closes after sending it.
    Reject {
        /// Human-readable reason, logged by the module.
        reason: String,
    },
    /// The result of one submitted job.
    Outcome {
        /// The id of the [`ClientFrame::Submit`] this answers.
        id: u64,
        /// What happened.
        outcome: Outcome,
    },
    /// The peer sent something unparseable; the sidecar closes after sending it.
    Error {
        /// What was wrong, for the module's log.
        message: String,
    },
}

/// The result of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Answer to [`Job::Ping`].
    Pong,
    /// Answer to [`Job::Configure`].
    Configured {
        /// Apps now active.
        apps: Vec<String>,
        /// One line per app that could not be set up (that app is inactive), naming the app,
        /// the option or file, and the problem.
        errors: Vec<String>,
    },
    /// The provider accepted the push.
    Sent {
        /// The provider's id for it (APNs `apns-id`, FCM message `name`), for tracing.
        provider_id: Option<String>,
        /// HTTP attempts it took (1 when nothing had to be retried).
        attempts: u32,
    },
    /// The provider says the token is dead (APNs 410 / BadDeviceToken, FCM UNREGISTERED or
    /// invalid token): the module drops the binding.
    InvalidToken {
        /// The provider's reason, verbatim.
        reason: String,
    },
    /// The job's deadline passed before it could run; nothing was sent.
    Expired,
    /// The sidecar does not know this job kind.
    Unsupported {
        /// What was not understood.
        detail: String,
    },
    /// The job ran and failed.
    Failed {
        /// What kind of failure, for the module's reaction.
        class: FailureClass,
        /// Why, verbatim (e.g. a provider's reason string).
        reason: String,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The length header announced more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLarge(usize),
    /// The body is not a valid frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Serializes `frame` as a frame body (JSON, no length header).
pub fn encode_body<T: Serialize>(frame: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(frame)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    Ok(body)
}

/// Parses a frame body (JSON, no length header).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    Ok(serde_json::from_slice(body)?)
}

/// Parses a frame from the module, as [`decode_body`] does, faster for the frame that matters:
/// a `submit` of a `push` job.
///
/// `ClientFrame` and `Job` are internally tagged, so serde buffers a frame into an
/// intermediate tree before it can look at the tag, twice over for the nested job; that was a
/// visible share of the sidecar's CPU time per push. A push submit is first parsed here as plain
/// structs, tags included as fields; when that works and the tags say `submit` and `push` the
/// result is what [`decode_body`] would have returned (plain structs and tagged variants ignore
/// unknown fields alike), and anything else goes through [`decode_body`], errors included.
pub fn decode_client_frame(body: &[u8]) -> Result<ClientFrame, FrameError> {
    #[derive(Deserialize)]
    struct PushJob {
        #[serde(rename = "type")]
        tag: String,
        target: PushTarget,
        kind: PushKind,
        #[serde(default)]
        data: PushData,
    }
    #[derive(Deserialize)]
    struct PushSubmit {
        #[serde(rename = "type")]
        tag: String,
        id: u64,
        deadline_ms: u64,
        job: PushJob,
    }
    if let Ok(frame) = serde_json::from_slice::<PushSubmit>(body) {
        if frame.tag == "submit" && frame.job.tag == "push" {
            return Ok(ClientFrame::Submit {
                id: frame.id,
                deadline_ms: frame.deadline_ms,
                job: Job::Push(PushRequest {
                    target: frame.job.target,
                    kind: frame.job.kind,
                    data: frame.job.data,
                }),
            });
        }
    }
    decode_body(body)
}

/// Appends one length-prefixed frame to `buf`, so that several frames can go out in one write.
/// On error `buf` is as it was.
pub fn encode_frame_into<T: Serialize>(buf: &mut Vec<u8>, frame: &T) -> Result<(), FrameError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = serde_json::to_writer(&mut *buf, frame) {
        buf.truncate(start);
        return Err(e.into());
    }
    let len = buf.len() - start - 4;
    if len > MAX_FRAME_LEN {
        buf.truncate(start);
        return Err(FrameError::TooLarge(len));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Writes one length-prefixed frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, frame: &T) -> Result<(), FrameError> {
    // One buffer, one write: a frame is never interleaved with a partial header on the wire.
    let mut buf = Vec::new();
    encode_frame_into(&mut buf, frame)?;
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

/// Reads one length-prefixed frame from a blocking reader.
///
/// Returns [`FrameError::Closed`] on a clean end of stream before a header, and an I/O error of
/// kind `UnexpectedEof` when the stream ends inside a frame.
pub fn read_frame<R: Read, T: DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    decode_body(&body)
}

/// Picks the version to speak given the client's range, or `None` when the ranges do not meet.
pub fn negotiate(client_min: u32, client_max: u32) -> Option<u32> {
    let hi = client_max.min(PROTOCOL_VERSION);
    let lo = client_min.max(MIN_PROTOCOL_VERSION);
    (lo <= hi).then_some(hi)
}

/// A device token as shown to people, in logs, CLI and AMI of the module and the sidecar
/// alike: its last 6 characters (enough to tell devices apart and match `push show
/// bindings`, not enough to push to one; RFC 8599 asks that `pn-prid` not leak).
pub fn redact(token: &str) -> String {
    let start = token.char_indices().rev().nth(5).map_or(0, |(i, _)| i);
    format!("…{}", &token[start..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn decode_client_frame_agrees_with_decode_body() {
        let push = |data: &str, env: &str| {
            format!(
                r#"{{"type":"submit","id":7,"deadline_ms":900,"job":{{"type":"push","target":{{"provider":"apns","app_id":"a.b","token":"ab12","environment":{env}}},"kind":"call"{data}}}}}"#
            )
        };
        let frames = [
            push("", "null"),
            push(r#","data":{"caller_name":"Al\u00e9","call_uuid":"u"}"#, r#""sandbox""#),
            // Order, unknown fields and the tag anywhere.
            r#"{"job":{"kind":"cancel","extra":1,"target":{"token":"t","provider":"fcm","app_id":"p"},"type":"push"},"deadline_ms":1,"new_field":[1],"id":2,"type":"submit"}"#.to_owned(),
            r#"{"type":"submit","id":3,"deadline_ms":10,"job":{"type":"ping"}}"#.to_owned(),
            r#"{"type":"submit","id":3,"deadline_ms":10,"job":{"type":"teleport"}}"#.to_owned(),
            r#"{"type":"submit","id":3,"deadline_ms":10,"job":{"type":"configure","apps":[]}}"#.to_owned(),
            r#"{"type":"hello","min_version":1,"max_version":1,"client":"c","client_version":"1","node":"n"}"#.to_owned(),
            // A push-shaped frame with another tag is not a submit.
            push("", "null").replacen(r#""type":"submit""#, r#""type":"resubmit""#, 1),
            push("", "null").replacen(r#""type":"push""#, r#""type":"pull""#, 1),
            // Broken ones fail the same way.
            push("", r#""moon""#),
            r#"{"type":"submit","id":3,"job":{"type":"ping"}}"#.to_owned(),
            r#"{"type":"submit","id":"x","deadline_ms":10,"job":{"type":"push"}}"#.to_owned(),
            "not json".to_owned(),
        ];
        for frame in &frames {
            let fast = decode_client_frame(frame.as_bytes());
            let slow = decode_body::<ClientFrame>(frame.as_bytes());
            match (&fast, &slow) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{frame}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{frame}"),
                _ => panic!("{frame}: {fast:?} vs {slow:?}"),
            }
        }
        assert!(matches!(
            decode_client_frame(frames[1].as_bytes()),
            Ok(ClientFrame::Submit {
                job: Job::Push(_),
                ..
            })
        ));
    }

    use super::*;
    use std::io::Cursor;

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(frame: T) {
        let mut buf = Vec::new();
        write_frame(&mut buf, &frame).unwrap();
        let back: T = read_frame(&mut Cursor::new(buf)).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(ClientFrame::Hello {
            min_version: 1,
            max_version: 1,
            client: "res_push".into(),
            client_version: "0.1.0".into(),
            node: "pbx1".into(),
        });
        roundtrip(ClientFrame::Submit {
            id: 7,
            deadline_ms: 5000,
            job: Job::Ping,
        });
        roundtrip(ServerFrame::Outcome {
            id: 7,
            outcome: Outcome::Pong,
        });
        roundtrip(ServerFrame::Outcome {
            id: 8,
            outcome: Outcome::Failed {
                class: FailureClass::Config,
                reason: "BadTopic".into(),
            },
        });
        roundtrip(ServerFrame::Reject {
            reason: "no".into(),
        });
    }

    #[test]
    fn wire_format_is_length_prefixed_json() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &ClientFrame::Submit {
                id: 1,
                deadline_ms: 2,
                job: Job::Ping,
            },
        )
        .unwrap();
        let body = br#"{"type":"submit","id":1,"deadline_ms":2,"job":{"type":"ping"}}"#;
        assert_eq!(&buf[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&buf[4..], body);
    }

    #[test]
    fn frames_encoded_into_one_buffer_read_back_in_order() {
        let mut buf = b"kept".to_vec();
        for id in 1..=3 {
            let frame = ClientFrame::Submit {
                id,
                deadline_ms: 2,
                job: Job::Ping,
            };
            encode_frame_into(&mut buf, &frame).unwrap();
        }
        let too_big = ServerFrame::Reject {
            reason: "x".repeat(MAX_FRAME_LEN),
        };
        assert!(matches!(
            encode_frame_into(&mut buf, &too_big),
            Err(FrameError::TooLarge(_))
        ));
        assert_eq!(&buf[..4], b"kept");
        let mut r = Cursor::new(&buf[4..]);
        for id in 1..=3 {
            match read_frame::<_, ClientFrame>(&mut r).unwrap() {
                ClientFrame::Submit { id: got, .. } => assert_eq!(got, id),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            read_frame::<_, ClientFrame>(&mut r),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn push_jobs_roundtrip() {
        roundtrip(ClientFrame::Submit {
            id: 9,
            deadline_ms: 5000,
            job: Job::Push(PushRequest {
                target: PushTarget {
                    provider: Provider::Apns,
                    app_id: "TEAM123.com.example.phone.voip".into(),
                    token: "ab".repeat(32),
                    environment: Some(Environment::Sandbox),
                },
                kind: PushKind::Call,
                data: PushData {
                    caller_number: Some("1000".into()),
                    ..Default::default()
                },
            }),
        });
        roundtrip(ClientFrame::Submit {
            id: 10,
            deadline_ms: 5000,
            job: Job::Voicemail(VoicemailPush {
                target: PushTarget {
                    provider: Provider::Fcm,
                    app_id: "proj".into(),
                    token: "tok".into(),
                    environment: None,
                },
                mailbox: "1000@default".into(),
                new_messages: 2,
                old_messages: 1,
                urgent_messages: 0,
                endpoint: Some("alice".into()),
                collapse_id: "mwi-1000@default".into(),
                background: false,
            }),
        });
        roundtrip(ClientFrame::Submit {
            id: 10,
            deadline_ms: 5000,
            job: Job::Configure {
                apps: vec![AppConfig {
                    name: "ios".into(),
                    provider: Provider::Apns,
                    app_ids: vec!["com.example.phone".into()],
                    environment: None,
                    options: [("key_id".to_string(), "ABC".to_string())].into(),
                }],
            },
        });
        roundtrip(ServerFrame::Outcome {
            id: 9,
            outcome: Outcome::InvalidToken {
                reason: "Unregistered".into(),
            },
        });
        roundtrip(ServerFrame::Outcome {
            id: 9,
            outcome: Outcome::Sent {
                provider_id: None,
                attempts: 2,
            },
        });
        roundtrip(ServerFrame::Outcome {
            id: 10,
            outcome: Outcome::Configured {
                apps: vec!["ios".into()],
                errors: vec![],
            },
        });
    }

    #[test]
    fn unknown_job_kind_is_not_a_protocol_error() {
        let f: ClientFrame =
            decode_body(br#"{"type":"submit","id":3,"deadline_ms":10,"job":{"type":"teleport"}}"#)
                .unwrap();
        assert_eq!(
            f,
            ClientFrame::Submit {
                id: 3,
                deadline_ms: 10,
                job: Job::Unknown
            }
        );
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        for bad in [
            &b"\x00\x00\x00\x03abc"[..],
            b"\x00\x00\x00\x02{}",
            b"\x00\x00\x00\x04null",
        ] {
            let r: Result<ClientFrame, _> = read_frame(&mut Cursor::new(bad));
            assert!(
                matches!(r, Err(FrameError::Malformed(_))),
                "{bad:?} gave {r:?}"
            );
        }
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let r: Result<ClientFrame, _> = read_frame(&mut Cursor::new(b"\xff\xff\xff\xff"));
        assert!(matches!(r, Err(FrameError::TooLarge(0xffff_ffff))));
    }

    #[test]
    fn truncated_and_empty_streams() {
        let r: Result<ClientFrame, _> = read_frame(&mut Cursor::new(b""));
        assert!(matches!(r, Err(FrameError::Closed)));
        let r: Result<ClientFrame, _> = read_frame(&mut Cursor::new(b"\x00\x00"));
        assert!(matches!(r, Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
        let r: Result<ClientFrame, _> = read_frame(&mut Cursor::new(b"\x00\x00\x00\x09{}"));
        assert!(matches!(r, Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn version_negotiation() {
        assert_eq!(negotiate(1, 1), Some(1));
        assert_eq!(negotiate(1, 9), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3), None);
        assert_eq!(negotiate(0, 0), None);
    }
}
