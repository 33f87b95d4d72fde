//! The apps of push.conf: building them from [`AppConfig`], matching a push's target to one,
//! and turning a push into a provider request.
//!
//! An app's clients (HTTP/2 connections, the cached JWT or OAuth2 token) are expensive to lose:
//! a new APNs JWT more often than every 20 minutes gets throttled. So built apps live in a
//! sidecar-wide registry keyed by a fingerprint of their settings *and* the contents of the
//! files they name. A `module reload` that leaves an app alone, or a module that reconnects,
//! gets the very same app back; an edited option or a replaced key file builds a new one. Pushes
//! in flight hold their app, so replacing it never cuts them off.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::Url;
use res_push_proto::{
    AppConfig, Environment, FailureClass, Outcome, Provider, PushKind, PushRequest, PushTarget,
    VoicemailPush,
};
use rustls_pki_types::PrivateKeyDer;
use serde_json::Value;
use tokio::{sync::Semaphore, time::Instant};
use tracing::{debug, info, warn};

use crate::{
    apns::{self, ApnsClient},
    classify::{Attempt, Reason},
    clock::Clock,
    fcm::{self, FcmClient},
    metrics::Metrics,
    payload::{KINDS, Template, Templates, Values, kind_name},
    tls,
};

/// Options every app may have.
pub const COMMON_OPTIONS: &[&str] = &[
    "ca_file",
    "max_concurrency",
    "template_call",
    "template_cancel",
    "template_missed",
    "template_refresh",
    "template_message",
    "template_voicemail",
];
/// Options of APNs apps only.
pub const APNS_OPTIONS: &[&str] = &[
    "key_file",
    "key_id",
    "team_id",
    "cert_file",
    "cert_password",
    "apns_url",
    "apns_sandbox_url",
    "jwt_refresh_minutes",
];
/// Options of FCM apps only.
pub const FCM_OPTIONS: &[&str] = &["service_account_file", "project_id", "fcm_url"];
/// Options that name a file, read when the app is configured.
const FILE_OPTIONS: &[&str] = &[
    "ca_file",
    "key_file",
    "cert_file",
    "service_account_file",
    "template_call",
    "template_cancel",
    "template_missed",
    "template_refresh",
    "template_message",
    "template_voicemail",
];
/// Options the module may pass through that mean nothing here.
const IGNORED_OPTIONS: &[&str] = &["type"];

/// Default age, in minutes, after which an APNs provider token is replaced.
pub const DEFAULT_JWT_REFRESH_MINUTES: u64 = 50;
/// Shortest `jwt_refresh_minutes`: APNs throttles more frequent token updates.
pub const MIN_JWT_REFRESH_MINUTES: u64 = 20;
/// Longest `jwt_refresh_minutes`: Apple refuses tokens from 60 minutes on, by *its* clock; five
/// minutes leave room for Apple's clock running ahead of ours.
pub const MAX_JWT_REFRESH_MINUTES: u64 = 55;
/// Largest APNs payload for VoIP pushes, in bytes.
const APNS_VOIP_LIMIT: usize = 5120;
/// Largest APNs payload for other pushes, and FCM's data limit, in bytes.
const PAYLOAD_LIMIT: usize = 4096;
/// Longest `apns-collapse-id` APNs accepts, in bytes.
const COLLAPSE_ID_LIMIT: usize = 64;

/// What building an app needs from the sidecar.
#[derive(Debug, Clone)]
pub(crate) struct BuildContext {
    pub(crate) clock: Clock,
    pub(crate) metrics: Arc<Metrics>,
    /// Whether a newly built app signs its credential and opens its connections right away
    /// (in the background) rather than on its first push.
    pub(crate) prewarm: bool,
}

#[derive(Debug)]
// One per app, built once: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Client {
    Apns(ApnsClient),
    Fcm(FcmClient),
}

/// One configured app, with its provider client.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) name: Arc<str>,
    pub(crate) provider: Provider,
    app_ids: Vec<String>,
    environment: Option<Environment>,
    /// APNs team id, for matching `<team>.<bundle>` app ids.
    team_id: Option<String>,
    /// FCM project, which also matches as an app id.
    project: Option<String>,
    templates: Templates,
    client: Client,
    /// The app's own cap on concurrent pushes (`max_concurrency`).
    pub(crate) limit: Option<Arc<Semaphore>>,
    /// Configuration problems already logged, so each is logged once rather than per push.
    logged: Mutex<HashSet<String>>,
}

/// A push's app, and what the match decided.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) app: Arc<App>,
    /// The APNs bundle id the target named (the topic, before any `.voip`).
    bundle: Option<String>,
    environment: Environment,
}

/// A push turned into a provider request.
#[derive(Debug)]
pub(crate) enum Prepared {
    Apns(apns::Request),
    Fcm(Value),
}

fn is_team_id(s: &str) -> bool {
    s.len() == 10
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl App {
    /// The bundle id `app_id` selects, if it selects this (APNs) app.
    fn apns_bundle(&self, app_id: &str) -> Option<String> {
        let plain = |candidate: &str| {
            self.app_ids.iter().find(|bundle| {
                candidate == bundle.as_str()
                    || candidate.strip_suffix(".voip") == Some(bundle.as_str())
            })
        };
        if let Some(bundle) = plain(app_id) {
            return Some(bundle.clone());
        }
        // RFC 8599 pn-param for APNs: `<team id>.<bundle id>[.voip]`.
        let (prefix, rest) = app_id.split_once('.')?;
        let team_ok = match &self.team_id {
            Some(team) => prefix == team,
            None => is_team_id(prefix),
        };
        if team_ok { plain(rest).cloned() } else { None }
    }

    fn matches_fcm(&self, app_id: &str) -> bool {
        self.app_ids.iter().any(|id| id == app_id) || self.project.as_deref() == Some(app_id)
    }

    fn route(self: &Arc<Self>, target: &PushTarget) -> Option<Route> {
        if target.provider != self.provider {
            return None;
        }
        match self.provider {
            Provider::Apns => {
                if let (Some(only), Some(asked)) = (self.environment, target.environment) {
                    if only != asked {
                        return None;
                    }
                }
                let bundle = self.apns_bundle(&target.app_id)?;
                Some(Route {
                    app: Arc::clone(self),
                    bundle: Some(bundle),
                    environment: target
                        .environment
                        .or(self.environment)
                        .unwrap_or(Environment::Production),
                })
            }
            Provider::Fcm => self.matches_fcm(&target.app_id).then(|| Route {
                app: Arc::clone(self),
                bundle: None,
                environment: Environment::Production,
            }),
        }
    }

    /// Turns `req` into a provider request, or says why it cannot be sent at all.
    /// `ttl` is the seconds left before the deadline, `now_unix` the wall clock.
    pub(crate) fn prepare(
        &self,
        route: &Route,
        req: &PushRequest,
        ttl: u64,
        now_unix: u64,
    ) -> Result<Prepared, Outcome> {
        let payload_error = |reason: String| Outcome::Failed {
            class: FailureClass::Payload,
            reason,
        };
        let token = req.target.token.trim();
        let values = Values::new(&self.name, req.kind, &req.data, ttl, now_unix);
        match &self.client {
            Client::Apns(_) => {
                // The token goes into the URL path: anything but hex-like text is not a token
                // APNs ever issued, and must not be allowed to bend the path.
                if token.is_empty()
                    || token.len() > 200
                    || !token.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(Outcome::InvalidToken {
                        reason: "malformed device token".to_owned(),
                    });
                }
                let payload = self
                    .templates
                    .apns_payload(req.kind, &values)
                    .map_err(|e| {
                        payload_error(format!("payload for {}: {e}", kind_name(req.kind)))
                    })?;
                let limit = if req.kind == PushKind::Call {
                    APNS_VOIP_LIMIT
                } else {
                    PAYLOAD_LIMIT
                };
                if payload.len() > limit {
                    return Err(payload_error(format!(
                        "payload of {} bytes exceeds APNs' {limit}-byte limit",
                        payload.len()
                    )));
                }
                let bundle = route.bundle.clone().unwrap_or_default();
                let collapse_id = values
                    .call_uuid()
                    .filter(|id| id.len() <= COLLAPSE_ID_LIMIT)
                    .map(str::to_owned);
                let (push_type, topic, priority, expiration, collapse_id) = match req.kind {
                    // Only calls are VoIP pushes: iOS kills apps that get a VoIP push they do
                    // not report to CallKit as a call.
                    PushKind::Call => ("voip", format!("{bundle}.voip"), 10, Some(0), None),
                    // A cancel is worthless once the ringing is over: deliver now or never.
                    PushKind::Cancel => ("alert", bundle, 10, Some(0), collapse_id),
                    PushKind::Missed => ("alert", bundle, 10, None, collapse_id),
                    PushKind::Message => ("alert", bundle, 10, None, None),
                    PushKind::Refresh => ("background", bundle, 5, None, None),
                };
                Ok(Prepared::Apns(apns::Request {
                    device_token: token.to_owned(),
                    environment: route.environment,
                    topic,
                    push_type,
                    priority,
                    expiration,
                    collapse_id,
                    payload: payload.into(),
                }))
            }
            Client::Fcm(_) => {
                if token.is_empty() {
                    return Err(Outcome::InvalidToken {
                        reason: "empty registration token".to_owned(),
                    });
                }
                let message = self
                    .templates
                    .fcm_message(req.kind, &values, token)
                    .map_err(|e| {
                        payload_error(format!("message for {}: {e}", kind_name(req.kind)))
                    })?;
                let data_len = message.get("data").map_or(0, |d| d.to_string().len());
                if data_len > PAYLOAD_LIMIT {
                    return Err(payload_error(format!(
                        "data of {data_len} bytes exceeds FCM's {PAYLOAD_LIMIT}-byte limit"
                    )));
                }
                Ok(Prepared::Fcm(message))
            }
        }
    }

    /// Turns a voicemail push into a provider request. APNs: an `alert` push (or, with
    /// `background`, a `background` push with `content-available`) with the mailbox's
    /// `apns-collapse-id`; FCM: a high-priority data message with its `collapse_key`.
    pub(crate) fn prepare_voicemail(
        &self,
        route: &Route,
        vm: &VoicemailPush,
        ttl: u64,
        now_unix: u64,
    ) -> Result<Prepared, Outcome> {
        let payload_error = |reason: String| Outcome::Failed {
            class: FailureClass::Payload,
            reason,
        };
        let token = vm.target.token.trim();
        let values = Values::voicemail(&self.name, vm, ttl, now_unix);
        let collapse_id = Some(vm.collapse_id.clone())
            .filter(|id| !id.is_empty() && id.len() <= COLLAPSE_ID_LIMIT);
        match &self.client {
            Client::Apns(_) => {
                if token.is_empty()
                    || token.len() > 200
                    || !token.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(Outcome::InvalidToken {
                        reason: "malformed device token".to_owned(),
                    });
                }
                let payload = self
                    .templates
                    .apns_voicemail(&values, vm.background)
                    .map_err(|e| payload_error(format!("payload for voicemail: {e}")))?;
                if payload.len() > PAYLOAD_LIMIT {
                    return Err(payload_error(format!(
                        "payload of {} bytes exceeds APNs' {PAYLOAD_LIMIT}-byte limit",
                        payload.len()
                    )));
                }
                let (push_type, priority) = if vm.background {
                    ("background", 5)
                } else {
                    ("alert", 10)
                };
                Ok(Prepared::Apns(apns::Request {
                    device_token: token.to_owned(),
                    environment: route.environment,
                    topic: route.bundle.clone().unwrap_or_default(),
                    push_type,
                    priority,
                    expiration: None,
                    collapse_id,
                    payload: payload.into(),
                }))
            }
            Client::Fcm(_) => {
                if token.is_empty() {
                    return Err(Outcome::InvalidToken {
                        reason: "empty registration token".to_owned(),
                    });
                }
                let message = self
                    .templates
                    .fcm_voicemail(&values, token, collapse_id.as_deref().unwrap_or_default())
                    .map_err(|e| payload_error(format!("message for voicemail: {e}")))?;
                let data_len = message.get("data").map_or(0, |d| d.to_string().len());
                if data_len > PAYLOAD_LIMIT {
                    return Err(payload_error(format!(
                        "data of {data_len} bytes exceeds FCM's {PAYLOAD_LIMIT}-byte limit"
                    )));
                }
                Ok(Prepared::Fcm(message))
            }
        }
    }

    /// Mints the app's credential and opens the connections its pushes will use, so that the
    /// first push costs no more than the others. Returns what was done, for the log.
    pub(crate) async fn prewarm(&self) -> Result<String, String> {
        match &self.client {
            Client::Apns(client) => {
                let environments: &[Environment] = match self.environment {
                    Some(Environment::Production) => &[Environment::Production],
                    Some(Environment::Sandbox) => &[Environment::Sandbox],
                    None => &[Environment::Production, Environment::Sandbox],
                };
                client.prewarm(environments).await
            }
            Client::Fcm(client) => client.prewarm().await,
        }
    }

    /// Sends a prepared request once.
    pub(crate) async fn attempt(&self, prepared: &Prepared, deadline: Instant) -> Attempt {
        match (&self.client, prepared) {
            (Client::Apns(client), Prepared::Apns(req)) => client.send(req, deadline).await,
            (Client::Fcm(client), Prepared::Fcm(message)) => client.send(message, deadline).await,
            // prepare() builds the request for this app's own client.
            _ => Attempt {
                verdict: crate::classify::Verdict::Other(Reason::code(
                    "internal: provider mismatch",
                )),
                auth_generation: None,
            },
        }
    }

    /// The provider called credential `generation` expired: replace it (once). Returns whether
    /// trying again is worthwhile.
    pub(crate) async fn expire_credential(&self, generation: u64) -> bool {
        match &self.client {
            Client::Apns(client) => client.expire_token(generation),
            Client::Fcm(client) => client.expire_token(generation),
        }
    }

    /// Records a configuration problem; logs it the first time it is seen for this app.
    pub(crate) fn config_problem(&self, metrics: &Metrics, reason: &Reason) {
        metrics.config_error(&self.name, &reason.code);
        let first = self
            .logged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(reason.code.clone());
        if first {
            warn!(
                app = %self.name,
                reason = %reason.text,
                "push refused because of the app's configuration; fix push.conf or the \
                 provider console (further pushes failing this way are counted, not logged)"
            );
        } else {
            debug!(app = %self.name, reason = %reason.text, "configuration problem (again)");
        }
    }
}

/// The apps one connection configured, in push.conf order (the first match wins).
#[derive(Debug, Default)]
pub(crate) struct AppSet {
    apps: Vec<Arc<App>>,
}

impl AppSet {
    /// The apps, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.apps.iter()
    }

    /// Whether no app is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.apps.is_empty()
    }

    /// The app serving `target`: same provider, `app_id` among its ids (or, for APNs,
    /// `<team>.<bundle>[.voip]`), and an environment it serves.
    pub(crate) fn route(&self, target: &PushTarget) -> Option<Route> {
        self.apps.iter().find_map(|app| app.route(target))
    }
}

/// An app's settings with the files it names read in.
struct Loaded {
    config: AppConfig,
    /// Option name -> (path as written, contents).
    files: BTreeMap<&'static str, (String, Vec<u8>)>,
    fingerprint: Vec<u8>,
}

impl Loaded {
    fn opt(&self, name: &str) -> Option<&str> {
        self.config
            .options
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn file(&self, name: &str) -> Option<(&str, &[u8])> {
        self.files
            .get(name)
            .map(|(path, data)| (path.as_str(), data.as_slice()))
    }
}

fn provider_name(p: Provider) -> &'static str {
    crate::metrics::provider_label(p)
}

/// Reads `jwt_refresh_minutes`, and says whether it was clamped: values above
/// [`MAX_JWT_REFRESH_MINUTES`] up to Apple's 60 are lowered rather than refused, so that a
/// push.conf that said 60 keeps working; anything else out of range is an error.
fn jwt_refresh_minutes(value: &str) -> Result<(u64, bool), String> {
    match value.parse::<u64>() {
        Ok(m) if (MIN_JWT_REFRESH_MINUTES..=60).contains(&m) => {
            Ok((m.min(MAX_JWT_REFRESH_MINUTES), m > MAX_JWT_REFRESH_MINUTES))
        }
        _ => Err(format!(
            "must be a whole number from {MIN_JWT_REFRESH_MINUTES} to {MAX_JWT_REFRESH_MINUTES} \
             (APNs throttles more frequent token updates and refuses tokens an hour old)"
        )),
    }
}

async fn load(config: AppConfig) -> Result<Loaded, String> {
    let (own, other, other_name) = match config.provider {
        Provider::Apns => (APNS_OPTIONS, FCM_OPTIONS, "fcm"),
        Provider::Fcm => (FCM_OPTIONS, APNS_OPTIONS, "apns"),
    };
    for key in config.options.keys() {
        let key = key.as_str();
        if other.contains(&key) {
            return Err(format!(
                "{key} is an option of {other_name} apps, and this app's provider is {}",
                provider_name(config.provider)
            ));
        }
        if !own.contains(&key) && !COMMON_OPTIONS.contains(&key) && !IGNORED_OPTIONS.contains(&key)
        {
            warn!(app = %config.name, option = key, "unknown option ignored");
        }
    }
    let mut files = BTreeMap::new();
    for &option in FILE_OPTIONS {
        let Some(path) = config
            .options
            .get(option)
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
        else {
            continue;
        };
        let data = tokio::fs::read(path)
            .await
            .map_err(|e| format!("{option} {path}: cannot read: {e}"))?;
        files.insert(option, (path.to_owned(), data));
    }
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&serde_json::to_vec(&config).unwrap_or_default());
    for (option, (_, data)) in &files {
        digest.update(option.as_bytes());
        digest.update(&(data.len() as u64).to_be_bytes());
        digest.update(data);
    }
    Ok(Loaded {
        config,
        files,
        fingerprint: digest.finish().as_ref().to_vec(),
    })
}

fn parse_url(option: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{option} {value:?}: not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(format!(
            "{option} {value:?}: must be an https:// (or http://) URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{option} {value:?}: must not have a query or fragment"
        ));
    }
    Ok(url)
}

fn check_identifier(option: &str, value: &str) -> Result<String, String> {
    if value.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "{option} {value:?}: must be letters and digits only"
        ))
    }
}

fn templates(loaded: &Loaded) -> Result<Templates, String> {
    let mut templates = Templates::default();
    let read = |option: &str| -> Result<Option<Template>, String> {
        let Some((path, data)) = loaded.file(option) else {
            return Ok(None);
        };
        let text =
            std::str::from_utf8(data).map_err(|_| format!("{option} {path}: not UTF-8 text"))?;
        let template = Template::parse(text).map_err(|e| format!("{option} {path}: {e}"))?;
        template
            .validate(loaded.config.provider)
            .map_err(|e| format!("{option} {path}: {e}"))?;
        Ok(Some(template))
    };
    for kind in KINDS {
        if let Some(template) = read(&format!("template_{}", kind_name(kind)))? {
            templates.set(kind, template);
        }
    }
    if let Some(template) = read("template_voicemail")? {
        templates.set_voicemail(template);
    }
    Ok(templates)
}

fn apns_auth(loaded: &Loaded) -> Result<(apns::Auth, &'static str), String> {
    let team_id = loaded.opt("team_id");
    if let Some(key_id) = loaded.opt("key_id") {
        if loaded.opt("cert_file").is_some() {
            return Err(
                "both key_id (token-based auth) and cert_file (certificate-based auth) \
                        are set; keep one"
                    .to_owned(),
            );
        }
        let key_id = check_identifier("key_id", key_id)?;
        let team_id = check_identifier(
            "team_id",
            team_id.ok_or("team_id is required with key_id (token-based auth)")?,
        )?;
        let (path, data) = loaded
            .file("key_file")
            .ok_or("key_file (the .p8 key) is required with key_id")?;
        let key = tls::private_key_from_pem(data).map_err(|e| format!("key_file {path}: {e}"))?;
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            return Err(format!(
                "key_file {path}: not a PKCS#8 key (\"BEGIN PRIVATE KEY\") as Apple's .p8 files are"
            ));
        };
        let minutes = match loaded.opt("jwt_refresh_minutes") {
            None => DEFAULT_JWT_REFRESH_MINUTES,
            Some(v) => {
                let (minutes, clamped) = jwt_refresh_minutes(v)
                    .map_err(|e| format!("jwt_refresh_minutes {v:?}: {e}"))?;
                if clamped {
                    warn!(
                        app = %loaded.config.name,
                        "jwt_refresh_minutes {v}: APNs refuses tokens an hour old by its own \
                         clock, which may be ahead of ours; using {minutes}"
                    );
                }
                minutes
            }
        };
        // Checked now, so a bad key shows at configure time, not at the first call.
        apns::token::Signer::new(
            pkcs8.secret_pkcs8_der(),
            &key_id,
            &team_id,
            Duration::from_secs(60),
            Clock::system(),
        )
        .map_err(|e| format!("key_file {path}: {e}"))?;
        return Ok((
            apns::Auth::Token {
                pkcs8: pkcs8.secret_pkcs8_der().to_vec(),
                key_id,
                team_id,
                refresh_after: Duration::from_secs(minutes * 60),
            },
            "token",
        ));
    }
    let Some((path, data)) = loaded.file("cert_file") else {
        return Err(
            "no credentials: set key_file, key_id and team_id (token-based auth) or \
                    cert_file (certificate-based auth)"
                .to_owned(),
        );
    };
    let is_p12 = Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
        || !tls::looks_like_pem(data);
    let identity = if is_p12 {
        tls::identity_from_pkcs12(data, loaded.opt("cert_password").unwrap_or(""))
            .map_err(|e| format!("cert_file {path}: {e}"))?
    } else {
        let certs =
            tls::certificates_from_pem(data).map_err(|e| format!("cert_file {path}: {e}"))?;
        let key = match tls::private_key_from_pem(data) {
            Ok(key) => key,
            Err(_) => {
                let (key_path, key_data) = loaded.file("key_file").ok_or_else(|| {
                    format!(
                        "cert_file {path}: holds no private key; add it to the file or name it \
                         with key_file"
                    )
                })?;
                tls::private_key_from_pem(key_data)
                    .map_err(|e| format!("key_file {key_path}: {e}"))?
            }
        };
        tls::Identity { certs, key }
    };
    // rustls checks that the key fits the certificate; do it now for a clear error.
    tls::client_config(&[], Some(identity.clone()), tls::ALPN_H2)
        .map_err(|e| format!("cert_file {path}: {e}"))?;
    Ok((apns::Auth::Certificate(identity), "certificate"))
}

fn build(loaded: Loaded, ctx: &BuildContext) -> Result<App, String> {
    let config = &loaded.config;
    let name: Arc<str> = config.name.as_str().into();
    let extra_roots = match loaded.file("ca_file") {
        Some((path, data)) => {
            tls::certificates_from_pem(data).map_err(|e| format!("ca_file {path}: {e}"))?
        }
        None => Vec::new(),
    };
    let templates = templates(&loaded)?;
    let limit = match loaded.opt("max_concurrency") {
        None => None,
        Some(v) => Some(Arc::new(Semaphore::new(
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=Semaphore::MAX_PERMITS).contains(n))
                .ok_or_else(|| format!("max_concurrency {v:?}: must be a whole number above 0"))?,
        ))),
    };
    for id in &config.app_ids {
        if id.trim().is_empty() || id.chars().any(char::is_whitespace) {
            return Err(format!("app_ids: {id:?} is not an app id"));
        }
    }
    let (client, team_id, project, detail) =
        match config.provider {
            Provider::Apns => {
                if config.app_ids.is_empty() {
                    return Err(
                        "app_ids is empty: an APNs app needs its bundle id (the push topic)"
                            .to_owned(),
                    );
                }
                let team_id = loaded.opt("team_id").map(str::to_owned);
                let (auth, kind) = apns_auth(&loaded)?;
                let production_url = parse_url(
                    "apns_url",
                    loaded.opt("apns_url").unwrap_or(apns::PRODUCTION_URL),
                )?;
                let sandbox_url = parse_url(
                    "apns_sandbox_url",
                    loaded.opt("apns_sandbox_url").unwrap_or(apns::SANDBOX_URL),
                )?;
                let settings = apns::Settings {
                    auth,
                    production_url,
                    sandbox_url,
                    extra_roots,
                };
                let client = ApnsClient::new(
                    Arc::clone(&name),
                    settings,
                    ctx.clock.clone(),
                    Arc::clone(&ctx.metrics),
                )?;
                (
                    Client::Apns(client),
                    team_id,
                    None,
                    format!("{kind}-based auth"),
                )
            }
            Provider::Fcm => {
                let (path, data) = loaded
                    .file("service_account_file")
                    .ok_or("service_account_file (the service-account JSON key) is required")?;
                let key: fcm::oauth::ServiceAccountKey =
                    serde_json::from_slice(data).map_err(|e| {
                        format!("service_account_file {path}: not a service-account JSON key: {e}")
                    })?;
                let project = match loaded.opt("project_id") {
                Some(p) => p.to_owned(),
                None => key.project_id.clone().filter(|p| !p.is_empty()).ok_or_else(|| {
                    format!("service_account_file {path}: the key names no project; set project_id")
                })?,
            };
                if !project
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
                {
                    return Err(format!("project_id {project:?}: not a Firebase project id"));
                }
                let fcm_url = parse_url("fcm_url", loaded.opt("fcm_url").unwrap_or(fcm::FCM_URL))?;
                let settings = fcm::Settings {
                    key,
                    project: project.clone(),
                    fcm_url,
                    extra_roots,
                };
                let client = FcmClient::new(
                    Arc::clone(&name),
                    settings,
                    ctx.clock.clone(),
                    Arc::clone(&ctx.metrics),
                )
                .map_err(|e| format!("service_account_file {path}: {e}"))?;
                let detail = format!("project {project}");
                (Client::Fcm(client), None, Some(project), detail)
            }
        };
    info!(
        app = %name,
        provider = provider_name(config.provider),
        app_ids = ?config.app_ids,
        environment = ?config.environment,
        "app ready ({detail})"
    );
    Ok(App {
        name,
        provider: config.provider,
        app_ids: config.app_ids.clone(),
        environment: config.environment,
        team_id,
        project,
        templates,
        client,
        limit,
        logged: Mutex::new(HashSet::new()),
    })
}

/// Every app built so far, by fingerprint, shared by all connections.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    built: Mutex<HashMap<Vec<u8>, Arc<App>>>,
}

impl Registry {
    fn built(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<App>>> {
        self.built.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the app set for `configs`, reusing apps whose settings and files are unchanged.
    /// Returns the set and one error line per app left out.
    pub(crate) async fn configure(
        &self,
        configs: Vec<AppConfig>,
        ctx: &BuildContext,
    ) -> (AppSet, Vec<String>) {
        let mut set = AppSet::default();
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        for config in configs {
            let name = config.name.clone();
            if name.trim().is_empty() {
                errors.push("an app has an empty name".to_owned());
                continue;
            }
            if !names.insert(name.clone()) {
                errors.push(format!(
                    "app '{name}': defined twice; the first definition is used"
                ));
                continue;
            }
            let loaded = match load(config).await {
                Ok(loaded) => loaded,
                Err(e) => {
                    errors.push(format!("app '{name}': {e}"));
                    continue;
                }
            };
            let existing = self.built().get(&loaded.fingerprint).cloned();
            if let Some(app) = existing {
                debug!(app = %name, "unchanged; keeping its connections and credentials");
                set.apps.push(app);
                continue;
            }
            let fingerprint = loaded.fingerprint.clone();
            match build(loaded, ctx) {
                Ok(app) => {
                    let app = Arc::new(app);
                    self.built().insert(fingerprint, Arc::clone(&app));
                    if ctx.prewarm {
                        spawn_prewarm(Arc::clone(&app));
                    }
                    set.apps.push(app);
                }
                Err(e) => errors.push(format!("app '{name}': {e}")),
            }
        }
        for error in &errors {
            warn!("{error}");
        }
        // Forget apps nobody uses any more (only the registry holds them). Those still held by
        // another connection or an in-flight push stay.
        self.built().retain(|_, app| Arc::strong_count(app) > 1);
        (set, errors)
    }

    /// Apps currently built.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.built().len()
    }
}

/// Prewarms `app` in a task of its own: the Configure is answered meanwhile, and a push that
/// comes before the prewarm is done waits for the same connection and credential rather than
/// making its own. A failure changes nothing else: pushes connect and mint as they would have.
fn spawn_prewarm(app: Arc<App>) {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        match app.prewarm().await {
            Ok(what) => info!(
                app = %app.name,
                "prewarmed app {}: {what} in {} ms",
                app.name,
                started.elapsed().as_millis()
            ),
            Err(e) => warn!(
                app = %app.name,
                "could not prewarm app {} (its first push will connect and retry): {e}",
                app.name
            ),
        }
    });
}

/// The outcome of a push no app matched.
pub(crate) fn no_app(target: &PushTarget, configured: bool) -> Outcome {
    let env = match target.environment {
        Some(Environment::Sandbox) => " (sandbox)",
        Some(Environment::Production) => " (production)",
        None => "",
    };
    let reason = if configured {
        format!(
            "no {} app matches app id {:?}{env}",
            provider_name(target.provider),
            target.app_id
        )
    } else {
        "no apps configured on this connection".to_owned()
    };
    Outcome::Failed {
        class: FailureClass::NoApp,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ctx() -> BuildContext {
        BuildContext {
            clock: Clock::system(),
            metrics: Arc::new(Metrics::new()),
            // These apps point at Apple's and Google's real hosts.
            prewarm: false,
        }
    }

    struct Files(tempfile::TempDir);

    impl Files {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn write(&self, name: &str, data: &[u8]) -> String {
            let path = self.0.path().join(name);
            std::fs::File::create(&path)
                .unwrap()
                .write_all(data)
                .unwrap();
            path.display().to_string()
        }

        /// A fresh P-256 key in .p8 form.
        fn p8(&self, name: &str) -> String {
            let rng = ring::rand::SystemRandom::new();
            let der = ring::signature::EcdsaKeyPair::generate_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &rng,
            )
            .unwrap();
            self.write(name, pem("PRIVATE KEY", der.as_ref()).as_bytes())
        }
    }

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    fn apns_app(name: &str, key_file: &str, extra: &[(&str, &str)]) -> AppConfig {
        let mut options: BTreeMap<String, String> = [
            ("key_file", key_file),
            ("key_id", "KEY1234567"),
            ("team_id", "TEAM123456"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            options.insert(k.to_string(), v.to_string());
        }
        AppConfig {
            name: name.into(),
            provider: Provider::Apns,
            app_ids: vec!["com.example.phone".into()],
            environment: None,
            options,
        }
    }

    fn target(app_id: &str, env: Option<Environment>) -> PushTarget {
        PushTarget {
            provider: Provider::Apns,
            app_id: app_id.into(),
            token: "ab".repeat(32),
            environment: env,
        }
    }

    #[tokio::test]
    async fn apns_app_matches_bundle_team_prefix_and_voip_suffix() {
        let files = Files::new();
        let key = files.p8("k.p8");
        let (set, errors) = Registry::default()
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        assert!(errors.is_empty(), "{errors:?}");
        for id in [
            "com.example.phone",
            "com.example.phone.voip",
            "TEAM123456.com.example.phone",
            "TEAM123456.com.example.phone.voip",
        ] {
            let route = set
                .route(&target(id, None))
                .unwrap_or_else(|| panic!("{id}"));
            assert_eq!(route.bundle.as_deref(), Some("com.example.phone"));
            assert_eq!(route.environment, Environment::Production);
        }
        for id in [
            "OTHERTEAM1.com.example.phone",
            "com.example",
            "com.example.phone.other",
        ] {
            assert!(set.route(&target(id, None)).is_none(), "{id}");
        }
        let fcm = PushTarget {
            provider: Provider::Fcm,
            ..target("com.example.phone", None)
        };
        assert!(set.route(&fcm).is_none());
        let sandbox = set
            .route(&target("com.example.phone", Some(Environment::Sandbox)))
            .unwrap();
        assert_eq!(sandbox.environment, Environment::Sandbox);
    }

    #[tokio::test]
    async fn environment_restriction_is_honoured() {
        let files = Files::new();
        let key = files.p8("k.p8");
        let mut dev = apns_app("ios-dev", &key, &[]);
        dev.environment = Some(Environment::Sandbox);
        let (set, errors) = Registry::default().configure(vec![dev], &ctx()).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(
            set.route(&target("com.example.phone", Some(Environment::Production)))
                .is_none()
        );
        // No environment on the binding: the app's decides.
        let route = set.route(&target("com.example.phone", None)).unwrap();
        assert_eq!(route.environment, Environment::Sandbox);
    }

    #[tokio::test]
    async fn errors_name_the_app_the_option_and_the_problem() {
        let files = Files::new();
        let key = files.p8("k.p8");
        let bad_template = files.write("call.json", br#"{"a": "{{bogus}}"}"#);
        let not_a_key = files.write("nokey.p8", b"hello");
        let configs = vec![
            apns_app("missing", "/nonexistent/AuthKey.p8", &[]),
            apns_app("garbage", &not_a_key, &[]),
            apns_app("jwt", &key, &[("jwt_refresh_minutes", "90")]),
            apns_app("tpl", &key, &[("template_call", &bad_template)]),
            apns_app("url", &key, &[("apns_url", "ftp://x")]),
            apns_app("mixed", &key, &[("service_account_file", "/x.json")]),
            AppConfig {
                options: BTreeMap::new(),
                ..apns_app("nocreds", &key, &[])
            },
            apns_app("ok", &key, &[]),
            apns_app("ok", &key, &[]),
        ];
        let (set, errors) = Registry::default().configure(configs, &ctx()).await;
        let find = |needle: &str| {
            errors
                .iter()
                .find(|e| e.contains(needle))
                .unwrap_or_else(|| panic!("no error with {needle:?} in {errors:#?}"))
                .clone()
        };
        assert!(find("app 'missing'").contains("key_file /nonexistent/AuthKey.p8: cannot read"));
        assert!(find("app 'garbage'").contains("key_file"));
        assert!(find("app 'jwt'").contains("jwt_refresh_minutes \"90\""));
        let tpl = find("app 'tpl'");
        assert!(
            tpl.contains("template_call") && tpl.contains("call.json") && tpl.contains("{{bogus}}"),
            "{tpl}"
        );
        assert!(find("app 'url'").contains("apns_url"));
        assert!(find("app 'mixed'").contains("service_account_file is an option of fcm apps"));
        assert!(find("app 'nocreds'").contains("no credentials"));
        assert!(find("app 'ok'").contains("defined twice"));
        assert_eq!(errors.len(), 8, "{errors:#?}");
        assert_eq!(set.apps.len(), 1);
    }

    #[test]
    fn jwt_refresh_minutes_tops_out_below_apples_hour() {
        assert_eq!(jwt_refresh_minutes("20"), Ok((20, false)));
        assert_eq!(jwt_refresh_minutes("55"), Ok((55, false)));
        // What push.conf accepted before keeps working, at the safe maximum.
        assert_eq!(jwt_refresh_minutes("58"), Ok((55, true)));
        assert_eq!(jwt_refresh_minutes("60"), Ok((55, true)));
        for bad in ["19", "61", "90", "0", "-5", "50.5", "fifty"] {
            let e = jwt_refresh_minutes(bad).unwrap_err();
            assert!(e.contains("from 20 to 55"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn unchanged_apps_are_reused_and_changed_ones_rebuilt() {
        let files = Files::new();
        let key = files.p8("k.p8");
        let registry = Registry::default();
        let (first, _) = registry
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        let (second, _) = registry
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        assert!(Arc::ptr_eq(&first.apps[0], &second.apps[0]));
        // Same options, new key contents: a new app.
        files.p8("k.p8");
        let (third, _) = registry
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        assert!(!Arc::ptr_eq(&second.apps[0], &third.apps[0]));
        drop((first, second));
        let (_fourth, _) = registry
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        // The old app went once nothing held it.
        assert_eq!(registry.len(), 1);
    }

    #[tokio::test]
    async fn call_and_cancel_requests_follow_the_callkit_rules() {
        let files = Files::new();
        let key = files.p8("k.p8");
        let (set, _) = Registry::default()
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        let route = set
            .route(&target("TEAM123456.com.example.phone.voip", None))
            .unwrap();
        let req = |kind| PushRequest {
            target: target("TEAM123456.com.example.phone.voip", None),
            kind,
            data: res_push_proto::PushData {
                call_uuid: Some("uuid-1".into()),
                ..Default::default()
            },
        };
        let apns = |kind| match route.app.prepare(&route, &req(kind), 20, 0) {
            Ok(Prepared::Apns(r)) => r,
            other => panic!("{other:?}"),
        };
        let call = apns(PushKind::Call);
        assert_eq!(
            (
                call.push_type,
                call.topic.as_str(),
                call.priority,
                call.expiration
            ),
            ("voip", "com.example.phone.voip", 10, Some(0))
        );
        let cancel = apns(PushKind::Cancel);
        assert_eq!(
            (
                cancel.push_type,
                cancel.topic.as_str(),
                cancel.collapse_id.as_deref()
            ),
            ("alert", "com.example.phone", Some("uuid-1"))
        );
        let refresh = apns(PushKind::Refresh);
        assert_eq!((refresh.push_type, refresh.priority), ("background", 5));
        let bad = PushRequest {
            target: PushTarget {
                token: "../../etc".into(),
                ..target("com.example.phone", None)
            },
            ..req(PushKind::Call)
        };
        assert!(matches!(
            route.app.prepare(&route, &bad, 20, 0),
            Err(Outcome::InvalidToken { .. })
        ));
    }
    #[tokio::test]
    async fn voicemail_requests_are_alerts_or_background_collapsed_per_mailbox() {
        let files = Files::new();
        let key = files.p8("k.p8");
        let (set, _) = Registry::default()
            .configure(vec![apns_app("ios", &key, &[])], &ctx())
            .await;
        let route = set
            .route(&target("TEAM123456.com.example.phone.voip", None))
            .unwrap();
        let vm = |background| VoicemailPush {
            target: target("TEAM123456.com.example.phone.voip", None),
            mailbox: "1000@default".into(),
            new_messages: 2,
            old_messages: 1,
            urgent_messages: 0,
            endpoint: Some("alice".into()),
            collapse_id: "mwi-1000@default".into(),
            background,
        };
        let apns = |background| match route.app.prepare_voicemail(&route, &vm(background), 20, 0) {
            Ok(Prepared::Apns(r)) => r,
            other => panic!("{other:?}"),
        };
        let alert = apns(false);
        assert_eq!(
            (
                alert.push_type,
                alert.topic.as_str(),
                alert.priority,
                alert.collapse_id.as_deref()
            ),
            ("alert", "com.example.phone", 10, Some("mwi-1000@default")),
            "never a VoIP push: iOS kills apps that get one without a call"
        );
        let body: Value = serde_json::from_slice(&alert.payload).unwrap();
        assert_eq!(body["aps"]["alert"]["body"], "2 new voicemail messages");
        assert_eq!(body["new_messages"], "2");
        assert_eq!(body["mailbox"], "1000@default");
        let background = apns(true);
        assert_eq!(
            (
                background.push_type,
                background.priority,
                background.collapse_id.as_deref()
            ),
            ("background", 5, Some("mwi-1000@default"))
        );
        let body: Value = serde_json::from_slice(&background.payload).unwrap();
        assert_eq!(body["aps"], serde_json::json!({"content-available": 1}));
    }
}
