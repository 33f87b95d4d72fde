//! Mock APNs: the HTTP/2 provider API (`POST /3/device/<token>`) with token-based auth and
//! optional certificate-based auth ([`ApnsOptions::client_cert_auth`]), on two listeners
//! standing in for the sandbox and production hosts.
//!
//! Rules follow Apple's "Sending notification requests to APNs", "Handling notification
//! responses from APNs", "Establishing a token-based connection to APNs" and "Establishing a
//! certificate-based connection to APNs"; where Apple does
//! not document an answer the choice is marked "mock choice" below.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hyper::Method;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::clock::{Clock, real_unix_millis};
use crate::jwt::{self, DecodedJwt};
use crate::record::{Endpoint, Environment, RecordedRequest, Recorder, Service};
use crate::script::{Behavior, Scripts};
use crate::server::{
    ConnState, ConnToken, Handler, IncomingRequest, Resp, authority, header_list, json_response,
    spawn_tls_listener, version_text,
};
use crate::tls::{ClientCert, TestCa};

/// Apple: a provider token older than one hour is rejected.
const TOKEN_MAX_AGE_SECS: u64 = 3600;
/// Apple: refresh the token no more than once every 20 minutes.
const TOKEN_MIN_REFRESH_SECS: u64 = 20 * 60;
/// Mock choice: Apple documents no rule for an `iat` in the future; allow this much clock skew
/// and call anything later an invalid token.
const TOKEN_FUTURE_SKEW_SECS: u64 = 300;
/// Apple: 4 KB for notifications in general.
const MAX_PAYLOAD: usize = 4096;
/// Apple: 5 KB for VoIP notifications.
const MAX_PAYLOAD_VOIP: usize = 5120;
/// Apple: `apns-collapse-id` may not exceed 64 bytes.
const MAX_COLLAPSE_ID: usize = 64;

/// Configuration of a [`MockApns`].
#[derive(Debug, Clone)]
pub struct ApnsOptions {
    /// The 10-character team id the provider token's `iss` must carry.
    pub team_id: String,
    /// The 10-character key id the provider token's `kid` must carry.
    pub key_id: String,
    /// Bundle ids the key may push to; topics are these plus the push type's suffix.
    pub bundle_ids: Vec<String>,
    /// Reject requests without `apns-push-type` (400 `InvalidPushType`). Apple requires the
    /// header on watchOS and warns that iOS features may not work without it; a VoIP push
    /// without it is a client bug, so the mock is strict by default.
    pub require_push_type: bool,
    /// Restrict the key to one environment, like Apple's environment-scoped keys; using it on
    /// the other listener answers 403 `BadEnvironmentKeyIdInToken`.
    pub key_environment: Option<Environment>,
    /// The signing key (PKCS#8 PEM); `None` generates a fresh P-256 key.
    pub signing_key_pem: Option<String>,
    /// Certificate-based authentication: the listeners ask for a TLS client certificate and
    /// verify it against the mock's [`TestCa`] (see [`TestCa::issue_apns_client_cert`]). A
    /// request without `authorization` on such a connection is authenticated by the
    /// certificate, whose subject `UID` (the bundle id) must match the topic's bundle id
    /// (400 `TopicDisallowed`); a certificate without `UID` is 403 `BadCertificate`.
    /// Connections without a certificate still use provider tokens.
    pub client_cert_auth: bool,
    /// Restrict client certificates to one environment, like Apple's sandbox-only
    /// certificates; using one on the other listener answers 403 `BadCertificateEnvironment`.
    pub client_cert_environment: Option<Environment>,
}

impl Default for ApnsOptions {
    fn default() -> Self {
        ApnsOptions {
            team_id: "TEAM123456".into(),
            key_id: "KEY1234567".into(),
            bundle_ids: vec!["com.example.phone".into()],
            require_push_type: true,
            key_environment: None,
            signing_key_pem: None,
            client_cert_auth: false,
            client_cert_environment: None,
        }
    }
}

/// Files written by [`MockApns::write_credentials`] and what a client needs besides them.
#[derive(Debug, Clone, Serialize)]
pub struct ApnsCredentials {
    /// `AuthKey_<key_id>.p8`: the PKCS#8 PEM signing key, as Apple delivers it.
    pub key_path: PathBuf,
    /// `ca.pem`: the root to trust.
    pub ca_path: PathBuf,
    /// The key id (`kid`).
    pub key_id: String,
    /// The team id (`iss`).
    pub team_id: String,
    /// Bundle ids the key may push to.
    pub bundle_ids: Vec<String>,
    /// Base URL of the sandbox listener.
    pub sandbox_url: String,
    /// Base URL of the production listener.
    pub production_url: String,
}

/// Where a device token is known to belong; tokens not registered are accepted anywhere.
#[derive(Debug, Clone)]
struct DeviceRegistration {
    environment: Environment,
    bundle_id: String,
}

struct ApnsState {
    opts: ApnsOptions,
    p8_pem: String,
    public_key: Vec<u8>,
    clock: Clock,
    scripts: Scripts,
    recorder: Recorder,
    devices: Mutex<HashMap<String, DeviceRegistration>>,
    connections: Arc<AtomicU64>,
}

/// A running mock APNs (both environments). Stops serving when dropped.
pub struct MockApns {
    state: Arc<ApnsState>,
    ca: TestCa,
    sandbox: SocketAddr,
    production: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for MockApns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockApns")
            .field("sandbox", &self.sandbox)
            .field("production", &self.production)
            .field("team_id", &self.state.opts.team_id)
            .field("key_id", &self.state.opts.key_id)
            .finish_non_exhaustive()
    }
}

impl Drop for MockApns {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl MockApns {
    /// Starts both listeners with a new [`TestCa`].
    pub async fn start(opts: ApnsOptions) -> anyhow::Result<MockApns> {
        Self::start_with_ca(opts, &TestCa::new()?).await
    }

    /// Starts both listeners presenting a certificate from `ca` (share it with a
    /// [`crate::MockFcm`] so one `ca.pem` trusts both).
    pub async fn start_with_ca(opts: ApnsOptions, ca: &TestCa) -> anyhow::Result<MockApns> {
        Self::start_with_clock(opts, ca, Clock::new()).await
    }

    /// Like [`MockApns::start_with_ca`] with a caller-provided (possibly shared) clock.
    pub async fn start_with_clock(
        opts: ApnsOptions,
        ca: &TestCa,
        clock: Clock,
    ) -> anyhow::Result<MockApns> {
        let p8_pem = match &opts.signing_key_pem {
            Some(pem) => pem.clone(),
            None => rcgen::KeyPair::generate()
                .context("generating the APNs signing key")?
                .serialize_pem(),
        };
        let public_key = jwt::p256_public_key(&p8_pem).context("APNs signing key")?;
        let state = Arc::new(ApnsState {
            opts,
            p8_pem,
            public_key,
            clock,
            scripts: Scripts::default(),
            recorder: Recorder::default(),
            devices: Mutex::default(),
            connections: Arc::new(AtomicU64::new(0)),
        });
        // APNs speaks HTTP/2 only: offering nothing but h2 makes an HTTP/1.1-only client fail
        // the handshake, as it would against Apple.
        let tls = if state.opts.client_cert_auth {
            ca.server_config_with_client_auth(&[b"h2"])?
        } else {
            ca.server_config(&[b"h2"])?
        };
        let (shutdown, rx) = watch::channel(false);
        let mut addrs = Vec::new();
        for env in [Environment::Sandbox, Environment::Production] {
            addrs.push(
                spawn_tls_listener(
                    tls.clone(),
                    true,
                    Some(env),
                    state.clone(),
                    state.connections.clone(),
                    rx.clone(),
                )
                .await?,
            );
        }
        Ok(MockApns {
            state,
            ca: ca.clone(),
            sandbox: addrs[0],
            production: addrs[1],
            shutdown,
        })
    }

    /// `https://127.0.0.1:PORT` of the sandbox listener.
    pub fn sandbox_url(&self) -> String {
        format!("https://{}", self.sandbox)
    }

    /// `https://127.0.0.1:PORT` of the production listener.
    pub fn production_url(&self) -> String {
        format!("https://{}", self.production)
    }

    /// The base URL for `env`.
    pub fn url(&self, env: Environment) -> String {
        match env {
            Environment::Sandbox => self.sandbox_url(),
            Environment::Production => self.production_url(),
        }
    }

    /// The CA certificate (PEM) that issued the listeners' certificate.
    pub fn ca_pem(&self) -> String {
        self.ca.ca_pem()
    }

    /// The CA.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// A client certificate and key for `bundle_id`, issued by the mock's CA the way Apple
    /// issues push certificates (see [`TestCa::issue_apns_client_cert`]); only accepted when
    /// the mock runs with [`ApnsOptions::client_cert_auth`].
    pub fn issue_client_cert(&self, bundle_id: &str) -> anyhow::Result<ClientCert> {
        self.ca.issue_apns_client_cert(bundle_id)
    }

    /// The signing key as Apple delivers it (PKCS#8 PEM, the `.p8` file's content).
    pub fn signing_key_pem(&self) -> String {
        self.state.p8_pem.clone()
    }

    /// The key id expected in `kid`.
    pub fn key_id(&self) -> &str {
        &self.state.opts.key_id
    }

    /// The team id expected in `iss`.
    pub fn team_id(&self) -> &str {
        &self.state.opts.team_id
    }

    /// The configured bundle ids.
    pub fn bundle_ids(&self) -> &[String] {
        &self.state.opts.bundle_ids
    }

    /// Writes `AuthKey_<key_id>.p8` and `ca.pem` into `dir`.
    pub fn write_credentials(&self, dir: &Path) -> anyhow::Result<ApnsCredentials> {
        let key_path = dir.join(format!("AuthKey_{}.p8", self.state.opts.key_id));
        std::fs::write(&key_path, &self.state.p8_pem)
            .with_context(|| format!("writing {}", key_path.display()))?;
        let ca_path = self.ca.try_write_ca(dir)?;
        Ok(ApnsCredentials {
            key_path,
            ca_path,
            key_id: self.state.opts.key_id.clone(),
            team_id: self.state.opts.team_id.clone(),
            bundle_ids: self.state.opts.bundle_ids.clone(),
            sandbox_url: self.sandbox_url(),
            production_url: self.production_url(),
        })
    }

    /// A valid provider token for this mock's key, issued at the mock's "now".
    pub fn provider_token(&self) -> String {
        self.provider_token_at(self.state.clock.unix_secs())
    }

    /// A provider token for this mock's key with the given `iat`.
    pub fn provider_token_at(&self, iat: u64) -> String {
        jwt::apns_provider_token(
            &self.state.p8_pem,
            &self.state.opts.key_id,
            &self.state.opts.team_id,
            iat,
        )
        .unwrap_or_else(|e| panic!("signing with the mock's own key failed: {e:#}"))
    }

    /// Queues behaviours for requests to `token`, consumed in order; afterwards: success.
    pub fn script(&self, token: &str, behaviours: Vec<Behavior>) {
        self.state.scripts.push(token, behaviours);
    }

    /// Forgets all queued scripts.
    pub fn clear_scripts(&self) {
        self.state.scripts.clear();
    }

    /// Ties a device token to an environment and bundle id, as APNs knows which app and
    /// environment issued each token: the other environment answers 400 `BadDeviceToken`,
    /// another bundle's topic 400 `DeviceTokenNotForTopic`.
    pub fn register_device(&self, token: &str, environment: Environment, bundle_id: &str) {
        self.state
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                token.to_owned(),
                DeviceRegistration {
                    environment,
                    bundle_id: bundle_id.to_owned(),
                },
            );
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.all()
    }

    /// Forgets recorded requests (scripts stay; see [`MockApns::clear_scripts`]).
    pub fn clear(&self) {
        self.state.recorder.clear();
    }

    /// Stops (`false`) or resumes keeping a record of every request. Answers do not change;
    /// benchmarks turn recording off so the mock's cost per request stays flat. On by default.
    pub fn set_recording(&self, on: bool) {
        self.state.recorder.set_enabled(on);
    }

    /// The first request, already recorded or arriving within `timeout`, matching `pred`.
    pub async fn wait_for_request(
        &self,
        pred: impl Fn(&RecordedRequest) -> bool,
        timeout: Duration,
    ) -> Option<RecordedRequest> {
        self.state.recorder.wait_for(pred, timeout).await
    }

    /// TLS connections accepted so far on both listeners.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Moves the mock's "now" forward (token age, 20-minute refresh rule, 410 timestamps).
    pub fn advance_clock(&self, by: Duration) {
        self.state.clock.advance(by);
    }

    /// The mock's clock (clones share the offset).
    pub fn clock(&self) -> Clock {
        self.state.clock.clone()
    }

    /// The mock's "now".
    pub fn now(&self) -> SystemTime {
        self.state.clock.now()
    }
}

/// An APNs rejection: status and `reason`.
struct Reject(u16, &'static str);

/// The topic suffix Apple requires for each push type; `None` for types whose topic is not
/// derived from the bundle id (`mdm` uses the topic of the MDM certificate).
fn topic_suffix(push_type: &str) -> Option<Option<&'static str>> {
    Some(match push_type {
        "alert" | "background" => Some(""),
        "voip" => Some(".voip"),
        "complication" => Some(".complication"),
        "fileprovider" => Some(".pushkit.fileprovider"),
        "location" => Some(".location-query"),
        "liveactivity" => Some(".push-type.liveactivity"),
        "pushtotalk" => Some(".voip-ptt"),
        "widgets" => Some(".push-type.widgets"),
        "mdm" => None,
        _ => return None,
    })
}

const KNOWN_SUFFIXES: &[&str] = &[
    ".voip",
    ".complication",
    ".pushkit.fileprovider",
    ".location-query",
    ".push-type.liveactivity",
    ".voip-ptt",
    ".push-type.widgets",
];

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// How a request was authenticated.
enum Auth {
    /// A valid provider token (JWT).
    Token,
    /// The connection's client certificate, carrying this bundle id.
    Certificate(String),
}

/// The request facts validation produced, needed to answer it.
struct Valid {
    token: String,
}

impl ApnsState {
    fn single_header<'a>(
        &self,
        req: &'a IncomingRequest,
        name: &str,
    ) -> Result<Option<&'a str>, Reject> {
        let mut values = req.parts.headers.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(Reject(400, "DuplicateHeaders"));
        }
        let unreadable = match name {
            "authorization" => Reject(403, "InvalidProviderToken"),
            "apns-push-type" => Reject(400, "InvalidPushType"),
            "apns-priority" => Reject(400, "BadPriority"),
            "apns-expiration" => Reject(400, "BadExpirationDate"),
            "apns-id" => Reject(400, "BadMessageId"),
            "apns-collapse-id" => Reject(400, "BadCollapseId"),
            _ => Reject(400, "BadTopic"),
        };
        match first {
            None => Ok(None),
            Some(v) => v.to_str().map(Some).map_err(|_| unreadable),
        }
    }

    fn authenticate(
        &self,
        req: &IncomingRequest,
        conn: &ConnState,
        rec: &mut RecordedRequest,
    ) -> Result<Auth, Reject> {
        let Some(auth) = self.single_header(req, "authorization")? else {
            // Apple: with certificate-based trust, requests carry no authentication token.
            if let Some(cert) = conn
                .client_cert
                .as_ref()
                .filter(|_| self.opts.client_cert_auth)
            {
                let Some(uid) = &cert.uid else {
                    return Err(Reject(403, "BadCertificate"));
                };
                if let Some(env) = self.opts.client_cert_environment {
                    if conn.environment != Some(env) {
                        return Err(Reject(403, "BadCertificateEnvironment"));
                    }
                }
                return Ok(Auth::Certificate(uid.clone()));
            }
            return Err(Reject(403, "MissingProviderToken"));
        };
        let token = match auth.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(Reject(403, "InvalidProviderToken")),
        };
        if token.is_empty() {
            return Err(Reject(403, "MissingProviderToken"));
        }
        let decoded: DecodedJwt =
            jwt::decode(token).map_err(|_| Reject(403, "InvalidProviderToken"))?;
        rec.jwt = Some(decoded.clone());
        // The very token this connection already accepted has a good signature: checking it
        // again per request (an ECDSA verification) made the mock the bottleneck of benchmarks.
        // Its age is still checked below on every request.
        let verified = conn
            .token
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|c| c.token == token);
        // Apple accepts ES256 only; `kid` must name the key and `iss` the team owning it.
        if decoded.alg() != Some("ES256")
            || decoded.kid() != Some(self.opts.key_id.as_str())
            || decoded.claim_str("iss") != Some(self.opts.team_id.as_str())
            || !(verified || decoded.verify_es256(&self.public_key))
        {
            return Err(Reject(403, "InvalidProviderToken"));
        }
        let Some(iat) = decoded.claim_secs("iat") else {
            return Err(Reject(403, "InvalidProviderToken"));
        };
        let now = self.clock.unix_secs();
        if iat > now + TOKEN_FUTURE_SKEW_SECS {
            return Err(Reject(403, "InvalidProviderToken"));
        }
        if now.saturating_sub(iat) > TOKEN_MAX_AGE_SECS {
            return Err(Reject(403, "ExpiredProviderToken"));
        }
        if let Some(env) = self.opts.key_environment {
            if conn.environment != Some(env) {
                return Err(Reject(403, "BadEnvironmentKeyIdInToken"));
            }
        }
        // Apple limits how often the token is *recreated*; `iat` is the recreation time, so a
        // client refreshing 40-55 minutes after issuing passes whenever it connected, while
        // one that signs per request (same or close `iat`, fresh ECDSA signature) is caught.
        let mut current = conn.token.lock().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(c) if c.token == token => {}
            Some(c) if iat < c.iat + TOKEN_MIN_REFRESH_SECS => {
                return Err(Reject(429, "TooManyProviderTokenUpdates"));
            }
            _ => {
                *current = Some(ConnToken {
                    token: token.to_owned(),
                    iat,
                });
            }
        }
        Ok(Auth::Token)
    }

    fn validate(
        &self,
        req: &IncomingRequest,
        conn: &ConnState,
        rec: &mut RecordedRequest,
    ) -> Result<Valid, Reject> {
        let path = req.parts.uri.path();
        let Some(token) = path.strip_prefix("/3/device/") else {
            return Err(Reject(404, "BadPath"));
        };
        if req.parts.method != Method::POST {
            return Err(Reject(405, "MethodNotAllowed"));
        }
        if token.is_empty() {
            return Err(Reject(400, "MissingDeviceToken"));
        }
        rec.device_token = Some(token.to_owned());
        for name in [
            "apns-topic",
            "apns-push-type",
            "apns-priority",
            "apns-expiration",
            "apns-id",
            "apns-collapse-id",
        ] {
            self.single_header(req, name)?;
        }
        let auth = self.authenticate(req, conn, rec)?;

        let topic = match (self.single_header(req, "apns-topic")?, &auth) {
            (Some(t), _) => t,
            // Apple: without the header, a certificate connection uses the certificate's
            // subject as the topic.
            (None, Auth::Certificate(uid)) => uid.as_str(),
            (None, Auth::Token) => return Err(Reject(400, "MissingTopic")),
        };
        let push_type = match self.single_header(req, "apns-push-type")? {
            Some(p) => p,
            None if self.opts.require_push_type => return Err(Reject(400, "InvalidPushType")),
            None => "alert",
        };
        let Some(suffix) = topic_suffix(push_type) else {
            return Err(Reject(400, "InvalidPushType"));
        };
        let base = KNOWN_SUFFIXES
            .iter()
            .find_map(|s| topic.strip_suffix(s))
            .unwrap_or(topic);
        let allowed = match &auth {
            Auth::Token => self.opts.bundle_ids.iter().any(|b| b == base),
            // A push certificate covers its bundle id and that app's derived topics (`.voip`
            // for a VoIP Services certificate, and so on).
            Auth::Certificate(uid) => uid == base,
        };
        if !allowed {
            // Mock choice: Apple answers a topic outside the key's team (or the certificate's
            // app) with TopicDisallowed ("Pushing to this topic is not allowed").
            return Err(Reject(400, "TopicDisallowed"));
        }
        if let Some(suffix) = suffix {
            if topic != format!("{base}{suffix}") {
                // Mock choice: a VoIP push must go to `<bundle>.voip` (and so on); a token is
                // issued for one of those topics, so the mismatch is DeviceTokenNotForTopic.
                return Err(Reject(400, "DeviceTokenNotForTopic"));
            }
        }
        if let Some(p) = self.single_header(req, "apns-priority")? {
            if !matches!(p, "10" | "5" | "1") {
                return Err(Reject(400, "BadPriority"));
            }
        }
        if let Some(e) = self.single_header(req, "apns-expiration")? {
            if e.is_empty() || !e.bytes().all(|c| c.is_ascii_digit()) || e.parse::<u64>().is_err() {
                return Err(Reject(400, "BadExpirationDate"));
            }
        }
        if let Some(id) = self.single_header(req, "apns-id")? {
            if !is_uuid(id) {
                return Err(Reject(400, "BadMessageId"));
            }
        }
        if let Some(c) = self.single_header(req, "apns-collapse-id")? {
            if c.len() > MAX_COLLAPSE_ID {
                return Err(Reject(400, "BadCollapseId"));
            }
        }
        if token.len() % 2 != 0 || !token.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(Reject(400, "BadDeviceToken"));
        }
        if let Some(reg) = self
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
        {
            if Some(reg.environment) != conn.environment {
                return Err(Reject(400, "BadDeviceToken"));
            }
            if reg.bundle_id != base {
                return Err(Reject(400, "DeviceTokenNotForTopic"));
            }
        }
        if req.body.is_empty() {
            return Err(Reject(400, "PayloadEmpty"));
        }
        let limit = if push_type == "voip" {
            MAX_PAYLOAD_VOIP
        } else {
            MAX_PAYLOAD
        };
        if req.body.len() > limit {
            return Err(Reject(413, "PayloadTooLarge"));
        }
        if !rec.json.as_ref().is_some_and(Value::is_object) {
            // Mock choice: Apple lists no reason for a body that is not a JSON dictionary.
            return Err(Reject(400, "BadPayload"));
        }
        Ok(Valid {
            token: token.to_owned(),
        })
    }

    fn error_body(&self, status: u16, reason: &str) -> String {
        if status == 410 {
            json!({"reason": reason, "timestamp": self.clock.unix_millis()}).to_string()
        } else {
            json!({"reason": reason}).to_string()
        }
    }
}

impl Handler for ApnsState {
    async fn handle(self: Arc<Self>, req: IncomingRequest, conn: Arc<ConnState>) -> Resp {
        let mut rec = RecordedRequest {
            seq: 0,
            service: Service::Apns,
            environment: conn.environment,
            endpoint: if req.parts.uri.path().starts_with("/3/device/") {
                Endpoint::ApnsPush
            } else {
                Endpoint::Other
            },
            connection_id: conn.id,
            http_version: version_text(&req.parts),
            method: req.parts.method.to_string(),
            path: req.parts.uri.path().to_owned(),
            authority: authority(&req.parts),
            headers: header_list(&req.parts),
            body: req.body.to_vec(),
            body_text: String::from_utf8_lossy(&req.body).into_owned(),
            json: serde_json::from_slice(&req.body).ok(),
            device_token: None,
            jwt: None,
            client_cert_uid: conn.client_cert.as_ref().and_then(|c| c.uid.clone()),
            status: 0,
            reason: None,
            response_body: String::new(),
            response_headers: Vec::new(),
            scripted: None,
            received_at_ms: self.clock.unix_millis(),
            real_received_at_ms: real_unix_millis(),
        };
        // Apple echoes a valid apns-id and generates one otherwise, on errors too.
        let apns_id = req
            .parts
            .headers
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_uuid(v))
            .map(str::to_owned)
            .unwrap_or_else(jwt::random_uuid);
        let mut headers = vec![("apns-id".to_owned(), apns_id)];

        let mut behavior = match self.validate(&req, &conn, &mut rec) {
            Err(Reject(status, reason)) => Behavior::error(status, reason),
            Ok(valid) => {
                let (b, scripted) = self.scripts.next(&valid.token);
                if scripted {
                    rec.scripted = Some(b.clone());
                }
                b
            }
        };
        let (status, body) = loop {
            match behavior {
                Behavior::Success => break (200, String::new()),
                Behavior::GoAway => {
                    conn.go_away().await;
                    break (200, String::new());
                }
                Behavior::Unregistered => {
                    let reason = "Unregistered";
                    rec.reason = Some(reason.into());
                    break (410, self.error_body(410, reason));
                }
                Behavior::Error {
                    status,
                    reason,
                    retry_after,
                } => {
                    if let Some(secs) = retry_after {
                        headers.push(("retry-after".into(), secs.to_string()));
                    }
                    let body = self.error_body(status, &reason);
                    rec.reason = Some(reason);
                    break (status, body);
                }
                Behavior::Delay { ms, then } => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    behavior = *then;
                }
                Behavior::Disconnect => {
                    rec.reason = Some("disconnect".into());
                    self.recorder.push(rec);
                    conn.disconnect().await;
                    return json_response(500, "", &[]);
                }
            }
        };
        if status == 200 && conn.environment == Some(Environment::Sandbox) {
            // Apple adds this Push Notifications Console id in the development environment only.
            headers.push(("apns-unique-id".into(), jwt::random_uuid()));
        }
        rec.status = status;
        rec.response_body = body.clone();
        rec.response_headers = headers.clone();
        self.recorder.push(rec);
        json_response(status, &body, &headers)
    }
}
