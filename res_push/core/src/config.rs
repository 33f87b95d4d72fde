//! `push.conf`: the model of the file and its validation.
//!
//! Asterisk's config API (in the module crate) turns the file into [`Section`]s; this module
//! decides what they mean. Invalid values are errors naming the section, option and value; the
//! module refuses to load (or, on reload, keeps the configuration it had) rather than run
//! with something the operator did not write.

use std::path::PathBuf;
use std::time::Duration;

use res_push_proto::{AppConfig, Environment, Provider};

use crate::registrar::{Policy, UnsupportedPolicy};

/// One `[name]` section of the file, options in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The section name, without brackets.
    pub name: String,
    /// `(option, value)` pairs as written.
    pub entries: Vec<(String, String)>,
}

/// The `[general]` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct General {
    /// Unix socket of res-push-sidecar.
    pub sidecar_socket: PathBuf,
    /// Capacity of the queue between Asterisk threads and the link thread. Read at module load
    /// only: the queue cannot be resized under running producers.
    pub queue_size: usize,
    /// First reconnect delay after the link drops.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Interval of keepalive pings on an idle link; `None` disables them.
    pub heartbeat_interval: Option<Duration>,
    /// Deadline given to jobs that do not carry their own.
    pub job_deadline: Duration,
    /// How REGISTERs with push parameters are answered.
    pub policy: Policy,
    /// Bindings without a REGISTER for this long are forgotten.
    pub binding_max_age: Duration,
    /// Binding hygiene: `max_push_devices`, `token_exclusive`, `binding_max_failures`.
    pub binding_policy: crate::binding::Policy,
    /// Refresh pushes this long before a registration expires; zero disables them.
    pub refresh_before: Duration,
    /// How long a call waits for a pushed device to register.
    pub wake_timeout: Duration,
    /// What the caller hears while devices wake up.
    pub wait_audio: WaitAudio,
    /// Send a missed-call push to devices that were woken but never answered in time.
    pub missed_call_push: bool,
    /// Push the device when a plain `Dial(PJSIP/...)` sends an INVITE to a contact with push
    /// parameters (existing dialplans gain wake-ups without edits; the weaker mode: the INVITE
    /// goes to the old contact, and the woken phone must pick the call up from there).
    pub push_on_plain_dial: bool,
    /// Ring a push device's registered, unexpired contact at once, in parallel with its push
    /// (an awake phone does not re-register because it was pushed).
    pub ring_live_contact: bool,
    /// A device that registered more recently than this is rung without a push (OpenSIPS's
    /// `pn_skip_pn_interval`); zero always pushes.
    pub push_skip_recent: Duration,
    /// Remove push parameters from the Request-URI of INVITEs to push contacts.
    pub strip_pn_params: bool,
    /// Put the caller's number and name in push payloads (off: templates see empty values,
    /// for deployments where nothing personal may cross Apple's and Google's servers).
    pub push_caller_id: bool,
    /// With a shared binding store (sorcery realtime): how long a node trusts what it read of
    /// an AOR before a call reads it again; zero reads on every call.
    pub binding_cache: Duration,
    /// With a shared binding store: how long a call's wake-up leg waits for that read before
    /// it goes on with what the node has in memory.
    pub binding_lookup_timeout: Duration,
    /// Voicemail: an alert push to an endpoint's devices when a mailbox in its (or its AOR's)
    /// `mailboxes` gets new messages.
    pub mwi_push: bool,
    /// Voicemail: also a background push (APNs `content-available`) to iOS devices on every
    /// change of the counts, heard messages included, for apps that keep a badge.
    pub mwi_background_push: bool,
    /// How long after its call push a pushed device that never got the call is remembered
    /// (counted from the push, which is what made the app report a call to CallKit):
    /// when it registers within this window it gets an INVITE from the same caller followed
    /// at once by a CANCEL whose Reason says how the call ended (what Flexisip does), so an
    /// app that reported the push to CallKit can close that call. Zero disables.
    pub late_wake_window: Duration,
    /// Queued messages kept per AOR for sleeping devices (`MessageSend(push:...)`); a message
    /// beyond it is refused, never an older one dropped.
    pub message_queue_max: usize,
    /// Queued messages older than this are dropped undelivered.
    pub message_max_age: Duration,
    /// Show the start of the message in its alert push (off: only who sent it).
    pub push_message_preview: bool,
    /// A push device's registered, unexpired contact takes messages at once (off: only when
    /// it registered within `push_skip_recent`; otherwise the message waits for the REGISTER
    /// its alert push brings, for apps whose registered contact is dead while they sleep).
    pub message_live_contact: bool,
}

/// What the caller hears while devices wake up (XiVO's `XIVO_MAPP_WAIT_WITH_MUSIC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitAudio {
    /// Ringback.
    Ringing,
    /// Music on hold (default class).
    Moh,
    /// Silence.
    None,
}

impl Default for General {
    fn default() -> Self {
        Self {
            sidecar_socket: PathBuf::from("/run/res-push/sidecar.sock"),
            queue_size: 1024,
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(5),
            heartbeat_interval: Some(Duration::from_secs(10)),
            job_deadline: Duration::from_secs(10),
            policy: Policy::default(),
            binding_max_age: Duration::from_secs(30 * 86400),
            binding_policy: crate::binding::Policy::default(),
            refresh_before: Duration::from_secs(60),
            wake_timeout: Duration::from_secs(30),
            wait_audio: WaitAudio::Ringing,
            missed_call_push: false,
            push_on_plain_dial: false,
            ring_live_contact: true,
            push_skip_recent: Duration::ZERO,
            strip_pn_params: true,
            push_caller_id: true,
            binding_cache: Duration::from_secs(1),
            binding_lookup_timeout: Duration::from_millis(500),
            mwi_push: true,
            mwi_background_push: false,
            late_wake_window: Duration::from_secs(30),
            message_queue_max: 100,
            message_max_age: Duration::from_secs(7 * 86400),
            push_message_preview: true,
            message_live_contact: true,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushConfig {
    /// `[general]`.
    pub general: General,
    /// App sections (`type = app`), passed to the sidecar, which owns their credentials.
    pub apps: Vec<AppConfig>,
}

/// A value the module will not run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("push.conf [{section}] {option} = '{value}': {reason}")]
pub struct ConfigError {
    /// Section of the offending option.
    pub section: String,
    /// The option.
    pub option: String,
    /// Its value as written.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The result of parsing: the configuration plus warnings worth logging (unknown options...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The configuration to apply.
    pub config: PushConfig,
    /// Non-fatal remarks, one line each.
    pub warnings: Vec<String>,
}

impl PushConfig {
    /// Interprets the sections of `push.conf`. A missing file is an empty slice: defaults apply.
    pub fn from_sections(sections: &[Section]) -> Result<Parsed, ConfigError> {
        let mut config = PushConfig::default();
        let mut warnings = Vec::new();
        for section in sections {
            match section.name.as_str() {
                "general" => parse_general(section, &mut config.general, &mut warnings)?,
                _ if section
                    .entries
                    .iter()
                    .any(|(k, v)| k == "type" && v.trim() == "app") =>
                {
                    config.apps.push(parse_app(section)?);
                }
                other => warnings.push(format!(
                    "push.conf: section [{other}] has no 'type = app', ignored"
                )),
            }
        }
        let g = &config.general;
        if g.reconnect_min > g.reconnect_max {
            return Err(ConfigError {
                section: "general".into(),
                option: "reconnect_min_ms".into(),
                value: g.reconnect_min.as_millis().to_string(),
                reason: "must not exceed reconnect_max_ms".into(),
            });
        }
        Ok(Parsed { config, warnings })
    }
}

fn parse_general(
    s: &Section,
    g: &mut General,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (option, value) in &s.entries {
        let err = |reason: &str| ConfigError {
            section: s.name.clone(),
            option: option.clone(),
            value: value.clone(),
            reason: reason.to_string(),
        };
        let v = value.trim();
        match option.as_str() {
            "sidecar_socket" => {
                if !v.starts_with('/') {
                    return Err(err("must be an absolute path"));
                }
                // sockaddr_un holds 108 bytes including the terminating NUL.
                if v.len() > 107 {
                    return Err(err("longer than a Unix socket path may be (107 bytes)"));
                }
                g.sidecar_socket = PathBuf::from(v);
            }
            "queue_size" => {
                g.queue_size = parse_range(v, 1, 1_000_000).map_err(|r| err(&r))? as usize
            }
            "reconnect_min_ms" => {
                g.reconnect_min =
                    Duration::from_millis(parse_range(v, 10, 600_000).map_err(|r| err(&r))?)
            }
            "reconnect_max_ms" => {
                g.reconnect_max =
                    Duration::from_millis(parse_range(v, 10, 600_000).map_err(|r| err(&r))?)
            }
            "heartbeat_interval" => {
                let secs = parse_range(v, 0, 3600).map_err(|r| err(&r))?;
                g.heartbeat_interval = (secs > 0).then(|| Duration::from_secs(secs));
            }
            "job_deadline_ms" => {
                g.job_deadline =
                    Duration::from_millis(parse_range(v, 100, 600_000).map_err(|r| err(&r))?)
            }
            "providers" => {
                let mut providers = Vec::new();
                for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    providers.push(match name {
                        "apns" => Provider::Apns,
                        "fcm" => Provider::Fcm,
                        _ => return Err(err(&format!("unknown provider '{name}' (apns, fcm)"))),
                    });
                }
                g.policy.rules.providers = providers;
            }
            "unsupported_provider" => {
                g.policy.unsupported = match v {
                    "reject" => UnsupportedPolicy::Reject,
                    "accept" => UnsupportedPolicy::Accept,
                    _ => return Err(err("must be 'reject' (555) or 'accept'")),
                }
            }
            "mpush" => {
                g.policy.rules.mpush = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "max_token_length" => {
                g.policy.rules.max_token_len =
                    parse_range(v, 32, 4096).map_err(|r| err(&r))? as usize
            }
            "pnsreg" => {
                let secs = parse_duration(v).map_err(|r| err(&r))?.as_secs();
                g.policy.pnsreg = (secs > 0).then_some(secs.min(u64::from(u32::MAX)) as u32);
            }
            "binding_max_age" => {
                let d = parse_duration(v).map_err(|r| err(&r))?;
                if d < Duration::from_secs(60) {
                    return Err(err("must be at least 60 seconds"));
                }
                g.binding_max_age = d;
            }
            "refresh_before" => g.refresh_before = parse_duration(v).map_err(|r| err(&r))?,
            "max_push_devices" => {
                let n = parse_off_or_range(v, 1, 100).map_err(|r| err(&r))?;
                g.binding_policy.max_push_devices = n.map(|n| n as usize);
            }
            "token_exclusive" => {
                g.binding_policy.token_exclusive =
                    parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "binding_max_failures" => {
                let n = parse_off_or_range(v, 1, 1000).map_err(|r| err(&r))?;
                g.binding_policy.max_failures = n.map(|n| n as u32);
            }
            "wake_timeout" => {
                let d = parse_duration(v).map_err(|r| err(&r))?;
                if d.is_zero() || d > Duration::from_secs(600) {
                    return Err(err("must be between 1s and 10m"));
                }
                g.wake_timeout = d;
            }
            "wait_audio" => {
                g.wait_audio = match v {
                    "ringing" => WaitAudio::Ringing,
                    "moh" => WaitAudio::Moh,
                    "none" => WaitAudio::None,
                    _ => return Err(err("must be ringing, moh or none")),
                }
            }
            "push_on_plain_dial" => {
                g.push_on_plain_dial = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "ring_live_contact" => {
                g.ring_live_contact = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "push_skip_recent" => {
                let d = parse_duration(v).map_err(|r| err(&r))?;
                if d > Duration::from_secs(3600) {
                    return Err(err("must be at most 1h"));
                }
                g.push_skip_recent = d;
            }
            "push_caller_id" => {
                g.push_caller_id = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "late_wake_window" => {
                let d = parse_duration(v).map_err(|r| err(&r))?;
                if d > Duration::from_secs(3600) {
                    return Err(err("must be at most 1h"));
                }
                g.late_wake_window = d;
            }
            "message_queue_max" => {
                g.message_queue_max = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=10_000).contains(n))
                    .ok_or_else(|| err("must be a number from 1 to 10000"))?
            }
            "message_max_age" => {
                let d = parse_duration(v).map_err(|r| err(&r))?;
                if d.is_zero() {
                    return Err(err("must be at least 1 second"));
                }
                g.message_max_age = d;
            }
            "message_live_contact" => {
                g.message_live_contact = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "push_message_preview" => {
                g.push_message_preview = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "strip_pn_params" => {
                g.strip_pn_params = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "binding_cache" => {
                let d = parse_duration(v).map_err(|r| err(&r))?;
                if d > Duration::from_secs(3600) {
                    return Err(err("must be at most 1h"));
                }
                g.binding_cache = d;
            }
            "binding_lookup_timeout_ms" => {
                g.binding_lookup_timeout =
                    Duration::from_millis(parse_range(v, 10, 10_000).map_err(|r| err(&r))?)
            }
            "mwi_push" => g.mwi_push = parse_bool(v).ok_or_else(|| err("must be yes or no"))?,
            "mwi_background_push" => {
                g.mwi_background_push = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            "missed_call_push" => {
                g.missed_call_push = parse_bool(v).ok_or_else(|| err("must be yes or no"))?
            }
            _ => warnings.push(format!(
                "push.conf [{}]: unknown option '{option}', ignored",
                s.name
            )),
        }
    }
    Ok(())
}

/// An app section: the options res_push itself understands are checked here; the rest
/// (credentials, endpoints, templates) go to the sidecar verbatim, which validates them and
/// reports problems back (logged at load and reload).
fn parse_app(s: &Section) -> Result<AppConfig, ConfigError> {
    let err = |option: &str, value: &str, reason: &str| ConfigError {
        section: s.name.clone(),
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let mut provider = None;
    let mut app_ids = Vec::new();
    let mut environment = None;
    let mut options = std::collections::BTreeMap::new();
    for (option, value) in &s.entries {
        let v = value.trim();
        match option.as_str() {
            "type" => {}
            "provider" => {
                provider = Some(match v {
                    "apns" => Provider::Apns,
                    "fcm" => Provider::Fcm,
                    _ => return Err(err(option, v, "must be apns or fcm")),
                })
            }
            "app_ids" | "app_id" => app_ids.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_string),
            ),
            "environment" => {
                environment = match v {
                    "sandbox" => Some(Environment::Sandbox),
                    "production" => Some(Environment::Production),
                    "" | "any" => None,
                    _ => return Err(err(option, v, "must be sandbox, production or any")),
                }
            }
            _ => {
                options.insert(option.clone(), v.to_string());
            }
        }
    }
    let Some(provider) = provider else {
        return Err(err(
            "provider",
            "",
            "an app section needs provider = apns or fcm",
        ));
    };
    if app_ids.is_empty() {
        return Err(err(
            "app_ids",
            "",
            "an app section needs app_ids (bundle ids, FCM project ids or package names)",
        ));
    }
    Ok(AppConfig {
        name: s.name.clone(),
        provider,
        app_ids,
        environment,
        options,
    })
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Seconds, or a number with a unit: `90`, `90s`, `15m`, `12h`, `30d`.
fn parse_duration(v: &str) -> Result<Duration, String> {
    let (digits, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| "not a duration (e.g. 90, 15m, 12h, 30d)".to_string())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err("unknown unit (s, m, h, d)".into()),
    };
    n.checked_mul(mult)
        .filter(|s| *s <= 10 * 365 * 86400)
        .map(Duration::from_secs)
        .ok_or_else(|| "too large".to_string())
}

/// `0` or `off` (the default), or a number in range.
fn parse_off_or_range(v: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
    if v.eq_ignore_ascii_case("off") || v == "0" {
        return Ok(None);
    }
    parse_range(v, min, max)
        .map(Some)
        .map_err(|e| format!("{e}, or 0/off"))
}

fn parse_range(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| "not a whole number".to_string())?;
    if !(min..=max).contains(&n) {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn general(entries: &[(&str, &str)]) -> Vec<Section> {
        vec![Section {
            name: "general".into(),
            entries: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }]
    }

    #[test]
    fn empty_file_gives_defaults() {
        let p = PushConfig::from_sections(&[]).unwrap();
        assert_eq!(p.config, PushConfig::default());
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn options_are_applied() {
        let p = PushConfig::from_sections(&general(&[
            ("sidecar_socket", "/tmp/x.sock"),
            ("queue_size", "16"),
            ("reconnect_min_ms", "50"),
            ("reconnect_max_ms", "1000"),
            ("heartbeat_interval", "0"),
            ("job_deadline_ms", "2500"),
            ("binding_cache", "0"),
            ("binding_lookup_timeout_ms", "200"),
        ]))
        .unwrap();
        let g = p.config.general;
        assert_eq!(g.binding_cache, Duration::ZERO);
        assert_eq!(g.binding_lookup_timeout, Duration::from_millis(200));
        assert_eq!(g.sidecar_socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(g.queue_size, 16);
        assert_eq!(g.reconnect_min, Duration::from_millis(50));
        assert_eq!(g.reconnect_max, Duration::from_secs(1));
        assert_eq!(g.heartbeat_interval, None);
        assert_eq!(g.job_deadline, Duration::from_millis(2500));
    }

    #[test]
    fn bad_values_name_the_option() {
        let e = PushConfig::from_sections(&general(&[("queue_size", "lots")])).unwrap_err();
        assert_eq!(e.option, "queue_size");
        assert_eq!(
            e.to_string(),
            "push.conf [general] queue_size = 'lots': not a whole number"
        );
        let e =
            PushConfig::from_sections(&general(&[("binding_lookup_timeout_ms", "5")])).unwrap_err();
        assert_eq!(e.option, "binding_lookup_timeout_ms");
        let e = PushConfig::from_sections(&general(&[("binding_cache", "2h")])).unwrap_err();
        assert_eq!(e.option, "binding_cache");
        let e = PushConfig::from_sections(&general(&[("queue_size", "0")])).unwrap_err();
        assert!(e.reason.contains("between 1 and"), "{e}");
        let e = PushConfig::from_sections(&general(&[("sidecar_socket", "relative.sock")]))
            .unwrap_err();
        assert_eq!(e.option, "sidecar_socket");
        let long = format!("/{}", "a".repeat(120));
        assert!(PushConfig::from_sections(&general(&[("sidecar_socket", &long)])).is_err());
        let e = PushConfig::from_sections(&general(&[
            ("reconnect_min_ms", "900"),
            ("reconnect_max_ms", "100"),
        ]))
        .unwrap_err();
        assert_eq!(e.option, "reconnect_min_ms");
    }

    #[test]
    fn registrar_options() {
        let p = PushConfig::from_sections(&general(&[
            ("providers", "fcm"),
            ("unsupported_provider", "accept"),
            ("mpush", "yes"),
            ("max_token_length", "128"),
            ("pnsreg", "10m"),
            ("binding_max_age", "7d"),
            ("refresh_before", "0"),
        ]))
        .unwrap();
        let g = p.config.general;
        assert_eq!(g.policy.rules.providers, vec![Provider::Fcm]);
        assert_eq!(g.policy.unsupported, UnsupportedPolicy::Accept);
        assert!(g.policy.rules.mpush);
        assert_eq!(g.policy.rules.max_token_len, 128);
        assert_eq!(g.policy.pnsreg, Some(600));
        assert_eq!(g.binding_max_age, Duration::from_secs(7 * 86400));
        assert_eq!(g.refresh_before, Duration::ZERO);
        for (k, v) in [
            ("providers", "webpush"),
            ("mpush", "maybe"),
            ("binding_max_age", "5"),
            ("pnsreg", "3w"),
            ("unsupported_provider", "drop"),
        ] {
            let e = PushConfig::from_sections(&general(&[(k, v)])).unwrap_err();
            assert_eq!(e.option, k);
        }
    }

    #[test]
    fn binding_hygiene_options() {
        let g = PushConfig::from_sections(&[]).unwrap().config.general;
        assert_eq!(
            g.binding_policy,
            crate::binding::Policy::default(),
            "all off by default"
        );
        let g = PushConfig::from_sections(&general(&[
            ("max_push_devices", "1"),
            ("token_exclusive", "yes"),
            ("binding_max_failures", "3"),
        ]))
        .unwrap()
        .config
        .general;
        assert_eq!(g.binding_policy.max_push_devices, Some(1));
        assert!(g.binding_policy.token_exclusive);
        assert_eq!(g.binding_policy.max_failures, Some(3));
        let g = PushConfig::from_sections(&general(&[
            ("max_push_devices", "off"),
            ("binding_max_failures", "0"),
        ]))
        .unwrap()
        .config
        .general;
        assert_eq!(g.binding_policy.max_push_devices, None);
        assert_eq!(g.binding_policy.max_failures, None);
        for (k, v) in [
            ("max_push_devices", "101"),
            ("max_push_devices", "many"),
            ("binding_max_failures", "-1"),
            ("token_exclusive", "perhaps"),
        ] {
            let e = PushConfig::from_sections(&general(&[(k, v)])).unwrap_err();
            assert_eq!(e.option, k, "{e}");
        }
    }

    #[test]
    fn voicemail_options() {
        let g = PushConfig::from_sections(&[]).unwrap().config.general;
        assert!(
            g.mwi_push && !g.mwi_background_push,
            "alerts on, background off"
        );
        let g = PushConfig::from_sections(&general(&[
            ("mwi_push", "no"),
            ("mwi_background_push", "yes"),
        ]))
        .unwrap()
        .config
        .general;
        assert!(!g.mwi_push && g.mwi_background_push);
        let e = PushConfig::from_sections(&general(&[("mwi_push", "sometimes")])).unwrap_err();
        assert_eq!(e.option, "mwi_push");
    }

    #[test]
    fn app_sections_pass_through() {
        let sections = vec![Section {
            name: "ios".into(),
            entries: [
                ("type", "app"),
                ("provider", "apns"),
                ("app_ids", "com.example.phone, com.example.beta"),
                ("environment", "sandbox"),
                ("key_file", "/etc/asterisk/push/AuthKey_K.p8"),
                ("key_id", "K"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }];
        let p = PushConfig::from_sections(&sections).unwrap();
        let app = &p.config.apps[0];
        assert_eq!(app.name, "ios");
        assert_eq!(app.provider, Provider::Apns);
        assert_eq!(app.app_ids, ["com.example.phone", "com.example.beta"]);
        assert_eq!(app.environment, Some(Environment::Sandbox));
        assert_eq!(app.options.get("key_id").map(String::as_str), Some("K"));
        assert!(!app.options.contains_key("provider"));

        let mut bad = sections.clone();
        bad[0].entries.retain(|(k, _)| k != "app_ids");
        assert_eq!(
            PushConfig::from_sections(&bad).unwrap_err().option,
            "app_ids"
        );
        let mut bad = sections;
        bad[0].entries[1].1 = "webpush".into();
        assert_eq!(
            PushConfig::from_sections(&bad).unwrap_err().option,
            "provider"
        );
    }

    #[test]
    fn unknown_options_and_sections_warn() {
        let mut s = general(&[("colour", "blue")]);
        s.push(Section {
            name: "myapp".into(),
            entries: vec![],
        });
        let p = PushConfig::from_sections(&s).unwrap();
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("colour"));
    }

    #[test]
    fn late_wake_window_defaults_to_30s_and_0_turns_it_off() {
        assert_eq!(
            PushConfig::from_sections(&[])
                .unwrap()
                .config
                .general
                .late_wake_window,
            Duration::from_secs(30)
        );
        let g = |v: &str| {
            PushConfig::from_sections(&general(&[("late_wake_window", v)]))
                .map(|p| p.config.general.late_wake_window)
        };
        assert_eq!(g("0"), Ok(Duration::ZERO));
        assert_eq!(g("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(g("2h").unwrap_err().option, "late_wake_window");
        assert!(g("soon").is_err());
    }

    #[test]
    fn message_options() {
        let g = PushConfig::from_sections(&general(&[
            ("message_queue_max", "3"),
            ("message_max_age", "2"),
            ("push_message_preview", "no"),
            ("message_live_contact", "no"),
        ]))
        .unwrap()
        .config
        .general;
        assert_eq!(g.message_queue_max, 3);
        assert_eq!(g.message_max_age, Duration::from_secs(2));
        assert!(!g.push_message_preview);
        assert!(!g.message_live_contact);
        let d = General::default();
        assert_eq!(d.message_queue_max, 100);
        assert_eq!(d.message_max_age, Duration::from_secs(7 * 86400));
        assert!(d.push_message_preview);
        assert!(d.message_live_contact);
        for (k, v) in [
            ("message_queue_max", "0"),
            ("message_queue_max", "many"),
            ("message_max_age", "0"),
            ("push_message_preview", "maybe"),
        ] {
            assert_eq!(
                PushConfig::from_sections(&general(&[(k, v)]))
                    .unwrap_err()
                    .option,
                k
            );
        }
    }
}
