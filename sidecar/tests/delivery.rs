//! Push delivery end to end: a real sidecar in-process, driven over its Unix socket the way
//! `res_push.so` drives it (Hello, Configure, Push), delivering to the mock APNs and FCM servers
//! of `res-push-mocks` over TLS with a test CA passed as `ca_file`.
//!
//! Every test runs on a current-thread runtime, so the mocks, the sidecar and the client share
//! one thread; time-dependent credentials are aged by moving the sidecar's injected clock and
//! the mock's clock forward, never by waiting.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::{SinkExt, StreamExt};
use res_push_mocks::{
    ApnsCredentials, ApnsOptions, Behavior, Endpoint, Environment as MockEnv, FcmOptions, MockApns,
    MockFcm, RecordedRequest, TestCa,
};
use res_push_proto::{
    AppConfig, ClientFrame, Environment, FailureClass, Job, MAX_FRAME_LEN, Outcome, Provider,
    PushData, PushKind, PushRequest, PushTarget, ServerFrame, decode_body, encode_body,
};
use res_push_sidecar::{Config, ManualClock, RetryPolicy, SocketOptions, Stats, bind, run_with};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixStream},
    sync::oneshot,
    task::JoinHandle,
};
use tokio_util::{
    bytes::Bytes,
    codec::{Framed, LengthDelimitedCodec},
};

/// Long enough for a loaded CI machine, short enough that a hang fails rather than stalls.
const PATIENCE: Duration = Duration::from_secs(20);
/// Deadline for pushes that are expected to succeed.
const DEADLINE_MS: u64 = 15_000;
const TEAM: &str = "TEAM123456";
const BUNDLE: &str = "com.example.phone";
const ANDROID_APP: &str = "com.example.phone.android";

// ---------------------------------------------------------------------------------------------
// Harness

struct Sidecar {
    _dir: TempDir,
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Stats>>,
    clock: Arc<ManualClock>,
    metrics: SocketAddr,
}

impl Sidecar {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sidecar.sock");
        let listener = bind(&SocketOptions::new(&path)).await.expect("bind");
        let metrics = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("metrics port");
        let metrics_addr = metrics.local_addr().expect("metrics addr");
        let clock = ManualClock::new();
        let mut config = Config {
            clock: Arc::clone(&clock).into(),
            // Quick retries keep the retry tests short; the policy itself is unit-tested.
            retry: RetryPolicy {
                base_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(400),
                max_attempts: 50,
            },
            ..Config::default()
        };
        tweak(&mut config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_with(listener, config, Some(metrics), async {
            let _ = stopped.await;
        }));
        Self {
            _dir: dir,
            path,
            stop: Some(stop),
            task: Some(task),
            clock,
            metrics: metrics_addr,
        }
    }

    async fn client(&self) -> Client {
        let stream = UnixStream::connect(&self.path).await.expect("connect");
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME_LEN)
            .new_codec();
        let mut client = Client {
            framed: Framed::new(stream, codec),
            early: HashMap::new(),
            next_id: 0,
        };
        client
            .send(&ClientFrame::Hello {
                min_version: 1,
                max_version: 1,
                client: "delivery-test".into(),
                client_version: "0".into(),
                node: "pbx-test".into(),
            })
            .await;
        let welcome = client.recv().await;
        assert!(
            matches!(welcome, ServerFrame::Welcome { .. }),
            "{welcome:?}"
        );
        client
    }

    /// Moves the sidecar's wall clock forward (credential ages only).
    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The body of `GET path` on the metrics endpoint, with its status line.
    async fn http_get(&self, path: &str) -> (String, String) {
        let mut stream = TcpStream::connect(self.metrics)
            .await
            .expect("metrics connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
            .await
            .expect("metrics answer in time")
            .expect("read");
        let status = response.lines().next().unwrap_or_default().to_owned();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics").await;
        assert!(status.contains("200"), "{status}");
        body
    }

    /// Polls the metrics until `line` shows, so a test can wait for a state, not a duration.
    async fn wait_for_metric(&self, line: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric line {line:?} never showed:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Client {
    framed: Framed<UnixStream, LengthDelimitedCodec>,
    /// Outcomes that arrived while another was awaited.
    early: HashMap<u64, Outcome>,
    next_id: u64,
}

impl Client {
    async fn send(&mut self, frame: &ClientFrame) {
        let body = encode_body(frame).expect("encode");
        self.framed.send(Bytes::from(body)).await.expect("send");
    }

    async fn recv(&mut self) -> ServerFrame {
        let body = tokio::time::timeout(PATIENCE, self.framed.next())
            .await
            .expect("an answer in time")
            .expect("a frame, not end of stream")
            .expect("a readable frame");
        decode_body(&body).expect("a valid server frame")
    }

    async fn submit(&mut self, deadline_ms: u64, job: Job) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&ClientFrame::Submit {
            id,
            deadline_ms,
            job,
        })
        .await;
        id
    }

    async fn outcome(&mut self, id: u64) -> Outcome {
        if let Some(outcome) = self.early.remove(&id) {
            return outcome;
        }
        loop {
            match self.recv().await {
                ServerFrame::Outcome { id: got, outcome } if got == id => return outcome,
                ServerFrame::Outcome { id: got, outcome } => {
                    self.early.insert(got, outcome);
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    async fn run(&mut self, deadline_ms: u64, job: Job) -> Outcome {
        let id = self.submit(deadline_ms, job).await;
        self.outcome(id).await
    }

    async fn configure(&mut self, apps: Vec<AppConfig>) -> (Vec<String>, Vec<String>) {
        match self.run(DEADLINE_MS, Job::Configure { apps }).await {
            Outcome::Configured { apps, errors } => (apps, errors),
            other => panic!("configure answered {other:?}"),
        }
    }

    /// Configures `apps` and insists that all of them came up.
    async fn configure_ok(&mut self, apps: Vec<AppConfig>) {
        let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
        let (active, errors) = self.configure(apps).await;
        assert!(errors.is_empty(), "configuration errors: {errors:#?}");
        assert_eq!(active, names);
    }

    async fn push(&mut self, job: Job) -> Outcome {
        self.run(DEADLINE_MS, job).await
    }
}

/// Both mocks behind one test CA, and the files an operator would have.
struct Mocks {
    dir: TempDir,
    apns: MockApns,
    fcm: MockFcm,
    creds: ApnsCredentials,
    service_account: PathBuf,
}

impl Mocks {
    async fn start() -> Self {
        Self::start_with(ApnsOptions::default(), FcmOptions::default()).await
    }

    async fn start_with(apns: ApnsOptions, fcm: FcmOptions) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = TestCa::new().expect("test CA");
        let apns = MockApns::start_with_ca(apns, &ca).await.expect("mock APNs");
        let fcm = MockFcm::start_with_ca(fcm, &ca).await.expect("mock FCM");
        let creds = apns
            .write_credentials(dir.path())
            .expect("APNs credentials");
        let service_account = fcm.write_service_account(dir.path());
        Self {
            dir,
            apns,
            fcm,
            creds,
            service_account,
        }
    }

    fn ca_file(&self) -> String {
        self.creds.ca_path.display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write file");
        path.display().to_string()
    }

    /// The APNs app of push.conf, pointed at the mock.
    fn ios_app(&self, extra: &[(&str, &str)]) -> AppConfig {
        let mut options = opts(&[
            ("key_file", &self.creds.key_path.display().to_string()),
            ("key_id", &self.creds.key_id),
            ("team_id", &self.creds.team_id),
            ("ca_file", &self.ca_file()),
            ("apns_url", &self.apns.production_url()),
            ("apns_sandbox_url", &self.apns.sandbox_url()),
        ]);
        options.extend(opts(extra));
        AppConfig {
            name: "ios".into(),
            provider: Provider::Apns,
            app_ids: vec![BUNDLE.into()],
            environment: None,
            options,
        }
    }

    /// The FCM app of push.conf, pointed at the mock (the key's token_uri already is).
    fn android_app(&self, extra: &[(&str, &str)]) -> AppConfig {
        let mut options = opts(&[
            (
                "service_account_file",
                &self.service_account.display().to_string(),
            ),
            ("ca_file", &self.ca_file()),
            ("fcm_url", &self.fcm.url()),
        ]);
        options.extend(opts(extra));
        AppConfig {
            name: "android".into(),
            provider: Provider::Fcm,
            app_ids: vec![ANDROID_APP.into()],
            environment: None,
            options,
        }
    }
}

/// Waits until `cond` holds, failing the test after [`PATIENCE`].
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let until = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Captures the log lines at info and above written on this thread while the guard lives.
///
/// One global subscriber routes each event to the capture of the thread that emits it (every
/// test runs on its own current-thread runtime). Per-test `set_default` subscribers were flaky:
/// tracing caches each callsite's interest globally, and a callsite first hit while another
/// test's subscriber was being dropped could stay disabled for everyone.
fn capture_logs() -> (Logs, LogCapture) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(ThreadLogs)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    });
    let logs = Logs::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
    (logs, LogCapture)
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Stops this thread's capture when dropped.
struct LogCapture;

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

/// Writes to the capture of the calling thread, or nowhere.
struct ThreadLogs;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ThreadLogs {
    type Writer = Box<dyn std::io::Write>;

    fn make_writer(&'a self) -> Self::Writer {
        match CAPTURE.with(|c| c.borrow().clone()) {
            Some(logs) => Box::new(logs),
            None => Box::new(std::io::sink()),
        }
    }
}

fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A distinct 64-hex-digit device token.
fn token(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn call_data() -> PushData {
    PushData {
        caller_number: Some("1000".into()),
        caller_name: Some("Alice".into()),
        call_uuid: Some("6f1c1b3a-54d4-4b1c-9a4e-8c6e2a9f3b11".into()),
        call_id: Some("a84b4c76e66710@pbx".into()),
        endpoint: Some("bob".into()),
        text: None,
    }
}

fn apns_push(kind: PushKind, token: &str, environment: Option<Environment>) -> Job {
    Job::Push(PushRequest {
        target: PushTarget {
            provider: Provider::Apns,
            // As RFC 8599 pn-param values look.
            app_id: format!("{TEAM}.{BUNDLE}.voip"),
            token: token.into(),
            environment,
        },
        kind,
        data: call_data(),
    })
}

fn fcm_push(kind: PushKind, token: &str) -> Job {
    Job::Push(PushRequest {
        target: PushTarget {
            provider: Provider::Fcm,
            app_id: ANDROID_APP.into(),
            token: token.into(),
            environment: None,
        },
        kind,
        data: call_data(),
    })
}

fn requests_for(requests: &[RecordedRequest], token: &str) -> Vec<RecordedRequest> {
    requests
        .iter()
        .filter(|r| r.device_token.as_deref() == Some(token) || fcm_token(r) == Some(token))
        .cloned()
        .collect()
}

fn fcm_token(r: &RecordedRequest) -> Option<&str> {
    r.json.as_ref()?.pointer("/message/token")?.as_str()
}

fn sent(outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Sent { attempts, .. } => *attempts,
        other => panic!("expected Sent, got {other:?}"),
    }
}

fn auth(r: &RecordedRequest) -> String {
    r.header("authorization").unwrap_or_default().to_owned()
}

/// Log lines written while it is installed, for "logged once" assertions.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// APNs request shape

#[tokio::test]
async fn apns_call_is_a_voip_push_with_callkit_headers_and_call_payload() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;

    let t = token(1);
    let outcome = client.push(apns_push(PushKind::Call, &t, None)).await;
    let Outcome::Sent {
        provider_id,
        attempts,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(attempts, 1);

    let requests = mocks.apns.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/3/device/{t}"));
    assert_eq!(r.http_version, "HTTP/2.0");
    assert_eq!(r.environment, Some(MockEnv::Production));
    assert_eq!(r.header("apns-push-type"), Some("voip"));
    assert_eq!(r.header("apns-topic"), Some("com.example.phone.voip"));
    assert_eq!(r.header("apns-priority"), Some("10"));
    assert_eq!(r.header("apns-expiration"), Some("0"));
    assert_eq!(r.header("apns-collapse-id"), None);
    assert_eq!(provider_id.as_deref(), r.response_header("apns-id"));

    let body = r.json.as_ref().expect("JSON body");
    assert_eq!(body["aps"], json!({}));
    assert_eq!(body["kind"], "call");
    assert_eq!(body["caller_number"], "1000");
    assert_eq!(body["caller_name"], "Alice");
    assert_eq!(body["call_uuid"], "6f1c1b3a-54d4-4b1c-9a4e-8c6e2a9f3b11");
    assert_eq!(body["call_id"], "a84b4c76e66710@pbx");
    assert_eq!(body["endpoint"], "bob");

    // The provider token: ES256 with the key id, issued by the team, now.
    let jwt = r.jwt.as_ref().expect("a provider token");
    assert_eq!(jwt.alg(), Some("ES256"));
    assert_eq!(jwt.kid(), Some("KEY1234567"));
    assert_eq!(jwt.claim_str("iss"), Some(TEAM));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(jwt.claim_secs("iat").unwrap().abs_diff(now) < 120);
    assert!(auth(r).starts_with("bearer "));
}

#[tokio::test]
async fn cancel_and_missed_are_alert_pushes_collapsed_per_call_never_voip() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;

    let t = token(2);
    sent(&client.push(apns_push(PushKind::Cancel, &t, None)).await);
    sent(&client.push(apns_push(PushKind::Missed, &t, None)).await);
    let requests = mocks.apns.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.header("apns-push-type"), Some("alert"));
        assert_eq!(
            r.header("apns-topic"),
            Some(BUNDLE),
            "never the .voip topic"
        );
        assert_eq!(r.header("apns-priority"), Some("10"));
        assert_eq!(
            r.header("apns-collapse-id"),
            Some("6f1c1b3a-54d4-4b1c-9a4e-8c6e2a9f3b11")
        );
    }
    let cancel = requests[0].json.as_ref().unwrap();
    assert_eq!(cancel["kind"], "cancel");
    assert_eq!(cancel["aps"]["alert"]["title"], "Call ended");
    assert_eq!(cancel["aps"]["alert"]["body"], "Alice (1000)");
    assert_eq!(requests[0].header("apns-expiration"), Some("0"));
    let missed = requests[1].json.as_ref().unwrap();
    assert_eq!(missed["kind"], "missed");
    assert_eq!(missed["aps"]["alert"]["title"], "Missed call");
}

#[tokio::test]
async fn refresh_is_a_low_priority_background_push() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;

    sent(
        &client
            .push(apns_push(PushKind::Refresh, &token(3), None))
            .await,
    );
    let r = &mocks.apns.requests()[0];
    assert_eq!(r.header("apns-push-type"), Some("background"));
    assert_eq!(r.header("apns-topic"), Some(BUNDLE));
    assert_eq!(r.header("apns-priority"), Some("5"));
    assert_eq!(
        r.json.as_ref().unwrap()["aps"],
        json!({"content-available": 1})
    );
}

#[tokio::test]
async fn environment_picks_the_sandbox_or_production_host() {
    let mocks = Mocks::start_with(
        ApnsOptions {
            bundle_ids: vec![BUNDLE.into(), "com.example.dev".into()],
            ..ApnsOptions::default()
        },
        FcmOptions::default(),
    )
    .await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let mut dev = mocks.ios_app(&[]);
    dev.name = "ios-dev".into();
    dev.app_ids = vec!["com.example.dev".into()];
    dev.environment = Some(Environment::Sandbox);
    client.configure_ok(vec![mocks.ios_app(&[]), dev]).await;

    let apns = &mocks.apns;
    // The binding says sandbox.
    sent(
        &client
            .push(apns_push(
                PushKind::Call,
                &token(4),
                Some(Environment::Sandbox),
            ))
            .await,
    );
    // The binding says nothing: production by default.
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(5), None))
            .await,
    );
    // The binding says nothing, the app is sandbox-only.
    let dev_push = Job::Push(PushRequest {
        target: PushTarget {
            provider: Provider::Apns,
            app_id: format!("{TEAM}.com.example.dev.voip"),
            token: token(6),
            environment: None,
        },
        kind: PushKind::Call,
        data: call_data(),
    });
    sent(&client.push(dev_push).await);

    let requests = apns.requests();
    let env_of = |t: &str| requests_for(&requests, t)[0].environment;
    assert_eq!(env_of(&token(4)), Some(MockEnv::Sandbox));
    assert_eq!(env_of(&token(5)), Some(MockEnv::Production));
    assert_eq!(env_of(&token(6)), Some(MockEnv::Sandbox));
}

// ---------------------------------------------------------------------------------------------
// APNs provider token lifecycle

#[tokio::test]
async fn provider_token_is_reused_across_pushes_then_rotated_after_the_refresh_age() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;

    for n in 0..5 {
        sent(
            &client
                .push(apns_push(PushKind::Call, &token(10 + n), None))
                .await,
        );
    }
    let first: Vec<String> = mocks.apns.requests().iter().map(auth).collect();
    assert_eq!(first.len(), 5);
    assert!(
        first.iter().all(|a| *a == first[0]),
        "one JWT for every push"
    );

    // 49 minutes on: still the same token (default refresh age is 50 minutes).
    sidecar.advance(Duration::from_secs(49 * 60));
    mocks.apns.advance_clock(Duration::from_secs(49 * 60));
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(20), None))
            .await,
    );
    assert_eq!(auth(mocks.apns.requests().last().unwrap()), first[0]);

    // Two more minutes: a new token, which APNs accepts on the same connection.
    sidecar.advance(Duration::from_secs(2 * 60));
    mocks.apns.advance_clock(Duration::from_secs(2 * 60));
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(21), None))
            .await,
    );
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(22), None))
            .await,
    );
    let requests = mocks.apns.requests();
    let rotated = auth(&requests[6]);
    assert_ne!(rotated, first[0]);
    assert_eq!(
        auth(&requests[7]),
        rotated,
        "the new token is reused in turn"
    );
    let iat = |r: &RecordedRequest| r.jwt.as_ref().unwrap().claim_secs("iat").unwrap();
    assert!(iat(&requests[6]) >= iat(&requests[0]) + 51 * 60);
    assert_eq!(
        requests[0].connection_id, requests[7].connection_id,
        "one long-lived connection"
    );
    let text = sidecar.metrics().await;
    assert!(
        text.contains(r#"res_push_credential_refreshes_total{provider="apns",app="ios"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn jwt_refresh_age_is_configurable() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client
        .configure_ok(vec![mocks.ios_app(&[("jwt_refresh_minutes", "25")])])
        .await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(23), None))
            .await,
    );
    sidecar.advance(Duration::from_secs(26 * 60));
    mocks.apns.advance_clock(Duration::from_secs(26 * 60));
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(24), None))
            .await,
    );
    let requests = mocks.apns.requests();
    assert_ne!(auth(&requests[0]), auth(&requests[1]));
}

#[tokio::test]
async fn expired_provider_token_forces_one_refresh_and_the_push_goes_through() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(30), None))
            .await,
    );

    // Our clock runs 15 minutes behind Apple's: at 46 minutes our token looks young to us and
    // is past the hour to APNs.
    sidecar.advance(Duration::from_secs(46 * 60));
    mocks.apns.advance_clock(Duration::from_secs(61 * 60));
    let attempts = sent(
        &client
            .push(apns_push(PushKind::Call, &token(31), None))
            .await,
    );
    assert_eq!(attempts, 2);
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(32), None))
            .await,
    );

    let requests = mocks.apns.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[1].reason.as_deref(), Some("ExpiredProviderToken"));
    assert_eq!(auth(&requests[1]), auth(&requests[0]));
    assert_ne!(auth(&requests[2]), auth(&requests[1]), "a fresh token");
    assert_eq!(requests[2].status, 200);
    assert_eq!(
        auth(&requests[3]),
        auth(&requests[2]),
        "refreshed once, then reused"
    );
}

#[tokio::test]
async fn expired_provider_token_on_a_young_token_is_a_config_error_not_a_refresh_loop() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    // APNs' clock is an hour ahead of ours: nothing we sign can satisfy it.
    mocks.apns.advance_clock(Duration::from_secs(61 * 60));
    let outcome = client
        .push(apns_push(PushKind::Call, &token(33), None))
        .await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            class: FailureClass::Config,
            reason: "ExpiredProviderToken".into()
        }
    );
    assert_eq!(mocks.apns.requests().len(), 1, "no token storm");
}

// ---------------------------------------------------------------------------------------------
// FCM

#[tokio::test]
async fn fcm_call_is_a_data_only_high_priority_message_with_ttl_from_the_deadline() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;

    let t = "fcm-token-1:APA91b".to_owned();
    let outcome = client.run(30_000, fcm_push(PushKind::Call, &t)).await;
    let Outcome::Sent {
        provider_id,
        attempts,
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!(attempts, 1);
    assert!(
        provider_id
            .as_deref()
            .is_some_and(|id| id.starts_with("projects/res-push-test/messages/")),
        "{provider_id:?}"
    );
    let requests = mocks.fcm.requests();
    let r = requests
        .iter()
        .find(|r| r.path.ends_with("messages:send"))
        .expect("a send request");
    assert_eq!(r.path, "/v1/projects/res-push-test/messages:send");
    assert_eq!(r.status, 200);
    assert!(auth(r).starts_with("Bearer "));
    let message = &r.json.as_ref().unwrap()["message"];
    assert_eq!(message["token"], t.as_str());
    assert!(message.get("notification").is_none(), "data-only");
    assert_eq!(message["android"]["priority"], "high");
    let ttl: u64 = message["android"]["ttl"]
        .as_str()
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse().ok())
        .expect("ttl in seconds");
    assert!(
        (1..=30).contains(&ttl),
        "ttl {ttl} comes from the 30 s deadline"
    );
    let data = message["data"].as_object().unwrap();
    assert!(
        data.values().all(Value::is_string),
        "FCM data is strings only"
    );
    assert_eq!(data["kind"], "call");
    assert_eq!(data["caller_number"], "1000");
    assert_eq!(data["caller_name"], "Alice");
    assert_eq!(data["call_uuid"], "6f1c1b3a-54d4-4b1c-9a4e-8c6e2a9f3b11");
    assert_eq!(data["call_id"], "a84b4c76e66710@pbx");
    assert_eq!(data["endpoint"], "bob");
}

#[tokio::test]
async fn fcm_access_token_is_fetched_once_reused_then_refreshed_before_expiry() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    assert_eq!(
        mocks.fcm.token_requests(),
        0,
        "no token before the first push"
    );

    for n in 0..4 {
        sent(
            &client
                .push(fcm_push(PushKind::Call, &format!("tok-{n}")))
                .await,
        );
    }
    assert_eq!(mocks.fcm.token_requests(), 1);
    let sends: Vec<String> = mocks
        .fcm
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("messages:send"))
        .map(auth)
        .collect();
    assert_eq!(sends.len(), 4);
    assert!(sends.iter().all(|a| *a == sends[0]));

    // Nearly an hour later (tokens last 3599 s): replaced ahead of expiry, not after a 401,
    // and in the background: this push still carries the old, valid token.
    sidecar.advance(Duration::from_secs(3500));
    mocks.fcm.advance_clock(Duration::from_secs(3500));
    let attempts = sent(&client.push(fcm_push(PushKind::Call, "tok-late")).await);
    assert_eq!(attempts, 1);
    assert_eq!(auth(&last_send(&mocks)), sends[0]);
    sidecar
        .wait_for_metric(r#"res_push_credential_refreshes_total{provider="fcm",app="android"} 2"#)
        .await;
    sent(&client.push(fcm_push(PushKind::Call, "tok-later")).await);
    assert_eq!(mocks.fcm.token_requests(), 2);
    let last = last_send(&mocks);
    assert_eq!(last.status, 200);
    assert_ne!(auth(&last), sends[0]);
}

fn last_send(mocks: &Mocks) -> RecordedRequest {
    mocks
        .fcm
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("messages:send"))
        .expect("a send")
}

/// How long the mock token endpoint takes in the slow-endpoint tests.
const SLOW_TOKEN_ENDPOINT: Duration = Duration::from_secs(2);
/// What a push may take at most while a refresh runs: it must not wait for it.
const UNDELAYED: Duration = Duration::from_millis(500);

#[tokio::test]
async fn fcm_pushes_keep_the_cached_token_while_a_slow_refresh_runs() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    sent(&client.push(fcm_push(PushKind::Call, "tok-0")).await);
    let first = auth(&last_send(&mocks));

    mocks.fcm.script_token_endpoint(vec![Behavior::delay(
        SLOW_TOKEN_ENDPOINT.as_millis() as u64,
        Behavior::Success,
    )]);
    // Close to the hour: the token (3599 s) is due for replacement, and valid for 99 seconds
    // more. Those are the seconds pushes used to spend waiting for the new one.
    sidecar.advance(Duration::from_secs(3500));
    mocks.fcm.advance_clock(Duration::from_secs(3500));
    for n in 1..=5 {
        let started = Instant::now();
        let attempts = sent(
            &client
                .push(fcm_push(PushKind::Call, &format!("tok-{n}")))
                .await,
        );
        let took = started.elapsed();
        assert_eq!(attempts, 1);
        assert!(
            took < UNDELAYED,
            "push {n} took {took:?} while the token endpoint takes {SLOW_TOKEN_ENDPOINT:?}"
        );
        assert_eq!(
            auth(&last_send(&mocks)),
            first,
            "push {n} used the cached token"
        );
    }
    // The refresh's request may still be on its way to the mock.
    let waiting = Instant::now();
    while mocks.fcm.token_requests() < 2 && waiting.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        mocks.fcm.token_requests(),
        2,
        "one refresh for all the pushes, started by the first"
    );

    // The push that started the refresh is long done; the refresh was not cancelled with it,
    // and its token serves the next push without another request.
    sidecar
        .wait_for_metric(r#"res_push_credential_refreshes_total{provider="fcm",app="android"} 2"#)
        .await;
    sent(&client.push(fcm_push(PushKind::Call, "tok-6")).await);
    assert_ne!(auth(&last_send(&mocks)), first);
    assert_eq!(mocks.fcm.token_requests(), 2);
}

#[tokio::test]
async fn fcm_pushes_wait_for_a_new_token_once_the_cached_one_expired() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    sent(&client.push(fcm_push(PushKind::Call, "tok-0")).await);
    let first = auth(&last_send(&mocks));

    mocks.fcm.script_token_endpoint(vec![Behavior::delay(
        SLOW_TOKEN_ENDPOINT.as_millis() as u64,
        Behavior::Success,
    )]);
    // An hour on: the cached token is dead, nothing can be sent without a new one.
    sidecar.advance(Duration::from_secs(3600));
    mocks.fcm.advance_clock(Duration::from_secs(3600));

    // A push with half a second to live starts the fetch and gives up at its deadline...
    let started = Instant::now();
    let outcome = client.run(500, fcm_push(PushKind::Call, "tok-hasty")).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                class: FailureClass::Provider,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(mocks.fcm.token_requests(), 2);

    // ...and the fetch goes on: pushes with time to spare wait for that same one.
    let started = Instant::now();
    let ids = [
        client
            .submit(DEADLINE_MS, fcm_push(PushKind::Call, "tok-a"))
            .await,
        client
            .submit(DEADLINE_MS, fcm_push(PushKind::Call, "tok-b"))
            .await,
        client
            .submit(DEADLINE_MS, fcm_push(PushKind::Call, "tok-c"))
            .await,
    ];
    for id in ids {
        assert_eq!(sent(&client.outcome(id).await), 1);
    }
    let waited = started.elapsed();
    assert!(
        waited >= SLOW_TOKEN_ENDPOINT / 2,
        "the pushes waited {waited:?} for the token, which took {SLOW_TOKEN_ENDPOINT:?}"
    );
    assert_eq!(
        mocks.fcm.token_requests(),
        2,
        "the abandoned fetch served them all"
    );
    let sends: Vec<String> = mocks
        .fcm
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("messages:send") && r.status == 200)
        .map(auth)
        .collect();
    assert_eq!(sends.len(), 4, "nothing went out with the dead token");
    assert!(sends[1..].iter().all(|a| *a != first && *a == sends[1]));
}

#[tokio::test]
async fn fcm_short_expires_in_does_not_mean_a_token_request_per_push() {
    let mocks = Mocks::start().await;
    mocks.fcm.set_access_token_lifetime(Duration::from_secs(5));
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    for n in 0..10 {
        sent(
            &client
                .push(fcm_push(PushKind::Call, &format!("tok-{n}")))
                .await,
        );
    }
    assert_eq!(mocks.fcm.token_requests(), 1);
    // Past its real 5 s the token is still sent (the sidecar's floor is a minute): FCM refuses
    // it, and it is replaced, once per token, not a configuration error.
    for round in 0..2 {
        sidecar.advance(Duration::from_secs(10));
        mocks.fcm.advance_clock(Duration::from_secs(10));
        let attempts = sent(
            &client
                .push(fcm_push(PushKind::Call, &format!("late-{round}")))
                .await,
        );
        assert_eq!(attempts, 2, "round {round}");
    }
    assert_eq!(mocks.fcm.token_requests(), 3);
}

#[tokio::test]
async fn fcm_assertion_iat_is_backdated_for_clock_skew() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    sent(&client.push(fcm_push(PushKind::Call, "tok-0")).await);
    let request = mocks
        .fcm
        .requests()
        .into_iter()
        .find(|r| r.path == "/token")
        .expect("a token request");
    let assertion = request.jwt.expect("the assertion");
    let (iat, exp) = (
        assertion.claim_secs("iat").unwrap(),
        assertion.claim_secs("exp").unwrap(),
    );
    // Ten seconds back (one more for the second boundary), and still at most an hour long.
    assert!(
        iat + 9 <= before && iat + 12 >= before,
        "iat {iat}, now {before}"
    );
    assert_eq!(exp - iat, 3600);
}

#[tokio::test]
async fn fcm_revoked_access_token_is_replaced_once() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    sent(&client.push(fcm_push(PushKind::Call, "tok-a")).await);
    mocks.fcm.revoke_access_tokens();
    let attempts = sent(&client.push(fcm_push(PushKind::Call, "tok-b")).await);
    assert_eq!(attempts, 2);
    assert_eq!(mocks.fcm.token_requests(), 2);
}

// ---------------------------------------------------------------------------------------------
// Errors by class

#[tokio::test]
async fn apns_unregistered_410_is_an_invalid_token() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let t = token(40);
    mocks.apns.script(&t, vec![Behavior::Unregistered]);
    let outcome = client.push(apns_push(PushKind::Call, &t, None)).await;
    assert_eq!(
        outcome,
        Outcome::InvalidToken {
            reason: "Unregistered".into()
        }
    );
    assert_eq!(mocks.apns.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn apns_bad_device_token_is_an_invalid_token() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let t = token(41);
    // A development token pushed to production: APNs calls it a bad device token.
    mocks.apns.register_device(&t, MockEnv::Sandbox, BUNDLE);
    let outcome = client
        .push(apns_push(PushKind::Call, &t, Some(Environment::Production)))
        .await;
    assert_eq!(
        outcome,
        Outcome::InvalidToken {
            reason: "BadDeviceToken".into()
        }
    );
}

#[tokio::test]
async fn fcm_unregistered_is_an_invalid_token() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    mocks
        .fcm
        .script("dead-token", vec![Behavior::fcm_error("UNREGISTERED")]);
    let outcome = client.push(fcm_push(PushKind::Call, "dead-token")).await;
    assert!(
        matches!(&outcome, Outcome::InvalidToken { reason } if reason.starts_with("UNREGISTERED")),
        "{outcome:?}"
    );
    mocks
        .fcm
        .script("bad-token", vec![Behavior::fcm_error("INVALID_ARGUMENT")]);
    let outcome = client.push(fcm_push(PushKind::Call, "bad-token")).await;
    assert!(
        matches!(&outcome, Outcome::InvalidToken { reason } if reason.contains("registration token")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn throttled_push_honours_retry_after_then_is_sent_on_the_second_attempt() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let t = token(42);
    mocks.apns.script(
        &t,
        vec![Behavior::error_retry_after(429, "TooManyRequests", 1)],
    );
    let attempts = sent(&client.push(apns_push(PushKind::Call, &t, None)).await);
    assert_eq!(attempts, 2);
    let requests = mocks.apns.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 429);
    assert_eq!(requests[1].status, 200);
    // Retry-After is a floor: the second attempt did not come before it.
    assert!(
        requests[1].real_received_at_ms >= requests[0].real_received_at_ms + 1000,
        "retried after {} ms",
        requests[1].real_received_at_ms - requests[0].real_received_at_ms
    );
}

#[tokio::test]
async fn fcm_unavailable_is_retried() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    mocks.fcm.script(
        "busy",
        vec![
            Behavior::fcm_error("UNAVAILABLE"),
            Behavior::fcm_error("QUOTA_EXCEEDED"),
        ],
    );
    assert_eq!(
        sent(&client.push(fcm_push(PushKind::Call, "busy")).await),
        3
    );
}

#[tokio::test]
async fn unavailable_until_the_deadline_fails_as_provider_and_nothing_is_sent_after_it() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let t = token(43);
    mocks.apns.script(
        &t,
        (0..200)
            .map(|_| Behavior::error(503, "ServiceUnavailable"))
            .collect(),
    );
    let deadline = Duration::from_millis(1500);
    let submitted = tokio::time::Instant::now();
    let outcome = client
        .run(
            deadline.as_millis() as u64,
            apns_push(PushKind::Call, &t, None),
        )
        .await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            class: FailureClass::Provider,
            reason: "ServiceUnavailable".into()
        }
    );
    let tried = mocks.apns.requests().len();
    assert!(tried >= 2, "retried before giving up ({tried} attempts)");
    // Wait until well past the deadline: no attempt was left pending.
    tokio::time::sleep_until(submitted + deadline + Duration::from_millis(500)).await;
    assert_eq!(mocks.apns.requests().len(), tried);
}

#[tokio::test]
async fn sender_id_mismatch_is_a_config_error_logged_once_and_counted_each_time() {
    let (logs, _log) = capture_logs();

    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    for n in 0..3 {
        let t = format!("foreign-{n}");
        mocks.fcm.set_token_owner(&t, "some-other-project");
        let outcome = client.push(fcm_push(PushKind::Call, &t)).await;
        assert!(
            matches!(&outcome, Outcome::Failed { class: FailureClass::Config, reason } if reason.starts_with("SENDER_ID_MISMATCH")),
            "{outcome:?}"
        );
    }
    let sends = mocks
        .fcm
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("messages:send"))
        .count();
    assert_eq!(sends, 3, "not retried");
    let logged = logs
        .text()
        .lines()
        .filter(|l| l.contains("SENDER_ID_MISMATCH"))
        .count();
    assert_eq!(logged, 1, "logged once:\n{}", logs.text());
    let text = sidecar.metrics().await;
    assert!(
        text.contains(
            r#"res_push_config_errors_total{app="android",reason="SENDER_ID_MISMATCH"} 3"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_and_payload_reasons_are_kept_verbatim() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let t = token(44);
    mocks.apns.script(
        &t,
        vec![
            Behavior::error(400, "SomethingAppleAddedIn2030"),
            Behavior::error(413, "PayloadTooLarge"),
        ],
    );
    assert_eq!(
        client.push(apns_push(PushKind::Call, &t, None)).await,
        Outcome::Failed {
            class: FailureClass::Other,
            reason: "SomethingAppleAddedIn2030".into()
        }
    );
    assert_eq!(
        client.push(apns_push(PushKind::Call, &t, None)).await,
        Outcome::Failed {
            class: FailureClass::Payload,
            reason: "PayloadTooLarge".into()
        }
    );
    let text = sidecar.metrics().await;
    assert!(text.contains(r#"res_push_pushes_total{provider="apns",app="ios",result="failed_other",reason="SomethingAppleAddedIn2030"} 1"#), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Connections

#[tokio::test]
async fn goaway_closes_the_connection_and_the_next_push_still_succeeds() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    // The prewarm's production and sandbox connections.
    wait_until("prewarmed", || mocks.apns.connections() == 2).await;
    let t = token(50);
    mocks.apns.script(&t, vec![Behavior::GoAway]);
    sent(&client.push(apns_push(PushKind::Call, &t, None)).await);
    sent(&client.push(apns_push(PushKind::Call, &t, None)).await);
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(51), None))
            .await,
    );
    let ok: Vec<RecordedRequest> = mocks
        .apns
        .requests()
        .into_iter()
        .filter(|r| r.status == 200)
        .collect();
    assert_eq!(ok.len(), 3);
    assert_ne!(
        ok[0].connection_id, ok[1].connection_id,
        "a new connection after GOAWAY"
    );
    assert_eq!(
        ok[1].connection_id, ok[2].connection_id,
        "which is kept in turn"
    );
    assert_eq!(mocks.apns.connections(), 3);
}

#[tokio::test]
async fn apns_app_is_prewarmed_on_configure_and_its_first_push_reuses_the_connection() {
    let (logs, _log) = capture_logs();
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    // Before any push: both environments' connections are open (the app has no
    // `environment`, so it may serve either), the token is signed, and no request was sent.
    wait_until("prewarm connections", || mocks.apns.connections() == 2).await;
    sidecar
        .wait_for_metric(r#"res_push_credential_refreshes_total{provider="apns",app="ios"} 1"#)
        .await;
    wait_until("prewarm log", || logs.text().contains("prewarm")).await;
    assert!(
        mocks.apns.requests().is_empty(),
        "{:?}",
        mocks.apns.requests()
    );
    let line = logs.text();
    let line = line.lines().find(|l| l.contains("prewarm")).unwrap();
    assert!(
        line.contains("INFO") && line.contains("production and sandbox connections open"),
        "{line}"
    );

    let production = token(53);
    let sandbox = token(54);
    sent(
        &client
            .push(apns_push(PushKind::Call, &production, None))
            .await,
    );
    sent(
        &client
            .push(apns_push(
                PushKind::Call,
                &sandbox,
                Some(Environment::Sandbox),
            ))
            .await,
    );
    let requests = mocks.apns.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        mocks.apns.connections(),
        2,
        "no connection opened by the pushes"
    );
    assert_ne!(
        requests[0].connection_id, requests[1].connection_id,
        "one prewarmed connection per environment"
    );
    assert!(requests.iter().all(|r| r.connection_id <= 2));
    assert_eq!(auth(&requests[0]), auth(&requests[1]));
    let text = sidecar.metrics().await;
    assert!(
        text.contains(r#"res_push_credential_refreshes_total{provider="apns",app="ios"} 1"#),
        "the pushes minted nothing: {text}"
    );
}

#[tokio::test]
async fn apns_app_of_one_environment_prewarms_that_one_only() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let mut app = mocks.ios_app(&[]);
    app.environment = Some(Environment::Sandbox);
    client.configure_ok(vec![app]).await;
    wait_until("prewarm connection", || mocks.apns.connections() == 1).await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(55), None))
            .await,
    );
    let requests = mocks.apns.requests();
    assert_eq!(requests[0].environment, Some(MockEnv::Sandbox));
    assert_eq!(requests[0].connection_id, 1);
    assert_eq!(mocks.apns.connections(), 1);
}

#[tokio::test]
async fn fcm_app_is_prewarmed_on_configure_token_fetched_and_connection_open() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.android_app(&[])]).await;
    // The token endpoint's connection and the sends' connection.
    wait_until("prewarm", || {
        mocks.fcm.token_requests() == 1 && mocks.fcm.connections() == 2
    })
    .await;
    let before = mocks.fcm.requests();
    assert_eq!(before.len(), 1, "only the token request: {before:?}");
    assert_eq!(before[0].endpoint, Endpoint::OAuthToken);

    let t = "prewarmed-device";
    sent(&client.push(fcm_push(PushKind::Call, t)).await);
    let requests = mocks.fcm.requests();
    let send = requests_for(&requests, t);
    assert_eq!(send.len(), 1);
    assert_eq!(mocks.fcm.token_requests(), 1, "the push minted nothing");
    assert_eq!(mocks.fcm.connections(), 2, "and opened no connection");
    assert_ne!(
        send[0].connection_id, before[0].connection_id,
        "the send went on the prewarmed connection, not the token endpoint's"
    );
    sent(&client.push(fcm_push(PushKind::Call, "second-device")).await);
    let requests = mocks.fcm.requests();
    let second = requests_for(&requests, "second-device");
    assert_eq!(second[0].connection_id, send[0].connection_id);
}

#[tokio::test]
async fn unchanged_app_kept_across_a_reload_is_not_prewarmed_again() {
    let (logs, _log) = capture_logs();
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client
        .configure_ok(vec![mocks.ios_app(&[]), mocks.android_app(&[])])
        .await;
    wait_until("prewarm", || {
        mocks.apns.connections() == 2 && mocks.fcm.connections() == 2
    })
    .await;
    wait_until("both logged", || {
        logs.text().matches("prewarmed app").count() == 2
    })
    .await;
    client
        .configure_ok(vec![mocks.ios_app(&[]), mocks.android_app(&[])])
        .await;
    // A module that reconnects gets the same apps too.
    drop(client);
    let mut client = sidecar.client().await;
    client
        .configure_ok(vec![mocks.ios_app(&[]), mocks.android_app(&[])])
        .await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(56), None))
            .await,
    );
    sent(&client.push(fcm_push(PushKind::Call, "kept-device")).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(logs.text().matches("prewarm").count(), 2, "{}", logs.text());
    assert_eq!(mocks.apns.connections(), 2);
    assert_eq!(mocks.fcm.connections(), 2);
    assert_eq!(mocks.fcm.token_requests(), 1);

    // A changed app is a new client, prewarmed in turn.
    client
        .configure_ok(vec![mocks.ios_app(&[("jwt_refresh_minutes", "40")])])
        .await;
    wait_until("changed app prewarmed", || mocks.apns.connections() == 4).await;
    wait_until("logged", || {
        logs.text().matches("prewarmed app ios").count() == 2
    })
    .await;
}

#[tokio::test]
async fn failed_prewarm_is_a_warning_and_the_push_still_connects_lazily() {
    let (logs, _log) = capture_logs();
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    // Nothing listens there yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("https://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut app = mocks.ios_app(&[("apns_sandbox_url", &dead)]);
    app.environment = Some(Environment::Sandbox);
    let (apps, errors) = client.configure(vec![app]).await;
    assert_eq!((apps, errors), (vec!["ios".to_owned()], vec![]));
    wait_until("warning", || {
        logs.text().contains("could not prewarm app ios")
    })
    .await;
    let line = logs.text();
    let line = line
        .lines()
        .find(|l| l.contains("prewarm"))
        .unwrap()
        .to_owned();
    assert!(line.contains("WARN") && line.contains("sandbox"), "{line}");
    // The app is configured all the same; its pushes connect when they come.
    let outcome = client
        .run(1500, apns_push(PushKind::Call, &token(57), None))
        .await;
    assert!(
        matches!(&outcome, Outcome::Failed { class: FailureClass::Provider, reason } if reason.contains("connect")),
        "{outcome:?}"
    );
    // Good URLs prewarm as usual afterwards.
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    wait_until("prewarmed", || logs.text().contains("prewarmed app ios")).await;
}

#[tokio::test]
async fn connection_dropped_mid_request_is_retried() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let t = token(52);
    mocks.apns.script(&t, vec![Behavior::Disconnect]);
    assert_eq!(
        sent(&client.push(apns_push(PushKind::Call, &t, None)).await),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Apps, templates, matching

#[tokio::test]
async fn custom_templates_are_applied() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let apns_template = mocks.write(
        "pushkit-call.json",
        r#"{"aps": {}, "ntype": "{{kind}}", "nfrom": "{{caller}}", "ncallid": "{{call_id}}", "ttl": {{ttl}}}"#,
    );
    let fcm_template = mocks.write(
        "fcm-call.json",
        r#"{"message": {"data": {"ntype": "{{kind}}", "nfrom": "{{caller_name}}"}, "android": {"priority": "high"}}}"#,
    );
    client
        .configure_ok(vec![
            mocks.ios_app(&[("template_call", &apns_template)]),
            mocks.android_app(&[("template_call", &fcm_template)]),
        ])
        .await;
    let mut data = call_data();
    data.caller_name = Some("Zoë \"Z\" O'Brien".into());
    let mut push = apns_push(PushKind::Call, &token(60), None);
    if let Job::Push(req) = &mut push {
        req.data = data.clone();
    }
    sent(&client.push(push).await);
    let body = mocks.apns.requests()[0].json.clone().unwrap();
    assert_eq!(body["ntype"], "call");
    assert_eq!(body["nfrom"], "Zoë \"Z\" O'Brien (1000)");
    assert_eq!(body["ncallid"], "a84b4c76e66710@pbx");
    assert!(body["ttl"].as_u64().is_some_and(|t| t <= 15));
    assert!(
        body.get("caller_number").is_none(),
        "the template replaces the default"
    );

    let mut push = fcm_push(PushKind::Call, "tpl-token");
    if let Job::Push(req) = &mut push {
        req.data = data;
    }
    sent(&client.push(push).await);
    let send = mocks
        .fcm
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("messages:send"))
        .unwrap();
    assert_eq!(
        send.json.unwrap()["message"],
        json!({
            "token": "tpl-token",
            "data": {"ntype": "call", "nfrom": "Zoë \"Z\" O'Brien"},
            "android": {"priority": "high"}
        })
    );
    // Kinds without a template keep the default payload.
    sent(
        &client
            .push(apns_push(PushKind::Missed, &token(61), None))
            .await,
    );
    let missed = mocks.apns.requests()[1].json.clone().unwrap();
    assert_eq!(missed["aps"]["alert"]["title"], "Missed call");
}

#[tokio::test]
async fn invalid_template_is_reported_naming_the_file_and_the_app_stays_out() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let broken = mocks.write("broken-call.json", r#"{"aps": {}, "who": {{caller}}}"#);
    let unknown = mocks.write("unknown-cancel.json", r#"{"aps": {}, "x": "{{callerid}}"}"#);
    let (apps, errors) = client
        .configure(vec![
            mocks.ios_app(&[("template_call", &broken)]),
            mocks.android_app(&[("template_cancel", &unknown)]),
        ])
        .await;
    assert!(apps.is_empty(), "{apps:?}");
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("app 'ios': template_call ")
            && errors[0].contains("broken-call.json")
            && errors[0].contains("not valid JSON"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("app 'android': template_cancel ")
            && errors[1].contains("unknown-cancel.json")
            && errors[1].contains("unknown placeholder {{callerid}}"),
        "{}",
        errors[1]
    );
    let outcome = client
        .push(apns_push(PushKind::Call, &token(62), None))
        .await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                class: FailureClass::NoApp,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(mocks.apns.requests().is_empty());
}

#[tokio::test]
async fn configuration_errors_name_app_option_and_problem() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let mut no_key = mocks.ios_app(&[]);
    no_key
        .options
        .insert("key_file".into(), "/nonexistent/AuthKey_X.p8".into());
    let mut bad_account = mocks.android_app(&[]);
    let junk = mocks.write("junk.json", "{\"type\": \"nope\"}");
    bad_account
        .options
        .insert("service_account_file".into(), junk.clone());
    let (apps, errors) = client
        .configure(vec![
            no_key,
            bad_account,
            mocks.ios_app(&[("jwt_refresh_minutes", "61")]),
        ])
        .await;
    assert!(apps.is_empty());
    assert!(
        errors[0].contains("app 'ios': key_file /nonexistent/AuthKey_X.p8: cannot read"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("app 'android': service_account_file")
            && errors[1].contains("junk.json"),
        "{errors:#?}"
    );
    assert!(errors[2].contains("defined twice"), "{errors:#?}");
}

#[tokio::test]
async fn unmatched_target_is_no_app_and_nothing_is_sent() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    let outcome = client
        .push(Job::Push(PushRequest {
            target: PushTarget {
                provider: Provider::Apns,
                app_id: "OTHERTEAM1.com.other.app.voip".into(),
                token: token(70),
                environment: None,
            },
            kind: PushKind::Call,
            data: call_data(),
        }))
        .await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            class: FailureClass::NoApp,
            reason: "no apns app matches app id \"OTHERTEAM1.com.other.app.voip\"".into()
        }
    );
    // Right app id, wrong provider.
    let outcome = client.push(fcm_push(PushKind::Call, "x")).await;
    assert!(matches!(
        outcome,
        Outcome::Failed {
            class: FailureClass::NoApp,
            ..
        }
    ));
    assert!(mocks.apns.requests().is_empty());
}

#[tokio::test]
async fn reload_keeps_unchanged_apps_and_in_flight_pushes() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(80), None))
            .await,
    );

    // Reload with the iOS app unchanged and an FCM app added: same JWT, same connection.
    client
        .configure_ok(vec![mocks.ios_app(&[]), mocks.android_app(&[])])
        .await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(81), None))
            .await,
    );
    let requests = mocks.apns.requests();
    assert_eq!(auth(&requests[1]), auth(&requests[0]));
    assert_eq!(requests[1].connection_id, requests[0].connection_id);

    // A push in flight when the app is changed still completes, and does not hold up the
    // reload: the Configure is answered while the push is still out.
    let slow = token(82);
    mocks
        .apns
        .script(&slow, vec![Behavior::delay(3000, Behavior::Success)]);
    let id = client
        .submit(DEADLINE_MS, apns_push(PushKind::Call, &slow, None))
        .await;
    sidecar.wait_for_metric("res_push_pushes_inflight 1").await;
    let reload = client
        .submit(
            DEADLINE_MS,
            Job::Configure {
                apps: vec![mocks.ios_app(&[("jwt_refresh_minutes", "40")])],
            },
        )
        .await;
    match client.recv().await {
        ServerFrame::Outcome { id: got, outcome } => {
            assert_eq!(got, reload, "the reload is answered first");
            assert!(
                matches!(&outcome, Outcome::Configured { apps, errors } if apps == &["ios"] && errors.is_empty()),
                "{outcome:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sent(&client.outcome(id).await), 1);
    // The changed app is a new client: new connection.
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(83), None))
            .await,
    );
    let requests = mocks.apns.requests();
    let last = requests.last().unwrap();
    assert_ne!(last.connection_id, requests[0].connection_id);
}

#[tokio::test]
async fn push_pipelined_right_after_configure_sees_the_new_apps() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    // No waiting between the two frames, as the module sends them after a handshake.
    let configure = client
        .submit(
            DEADLINE_MS,
            Job::Configure {
                apps: vec![mocks.ios_app(&[]), mocks.android_app(&[])],
            },
        )
        .await;
    let push = client
        .submit(DEADLINE_MS, apns_push(PushKind::Call, &token(86), None))
        .await;
    assert_eq!(sent(&client.outcome(push).await), 1);
    assert!(matches!(
        client.outcome(configure).await,
        Outcome::Configured { .. }
    ));
}

#[tokio::test]
async fn another_connection_with_the_same_apps_shares_their_clients() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut first = sidecar.client().await;
    first.configure_ok(vec![mocks.ios_app(&[])]).await;
    sent(
        &first
            .push(apns_push(PushKind::Call, &token(84), None))
            .await,
    );
    drop(first);
    // The module reconnects (e.g. after a sidecar-side restart of the link).
    let mut second = sidecar.client().await;
    second.configure_ok(vec![mocks.ios_app(&[])]).await;
    sent(
        &second
            .push(apns_push(PushKind::Call, &token(85), None))
            .await,
    );
    let requests = mocks.apns.requests();
    assert_eq!(
        auth(&requests[0]),
        auth(&requests[1]),
        "no new JWT on reconnect"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency and deadlines

#[tokio::test]
async fn inflight_limit_queues_pushes_and_one_still_queued_at_its_deadline_is_never_sent() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start_with(|c| c.max_inflight = 1).await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;

    let slow = token(90);
    mocks
        .apns
        .script(&slow, vec![Behavior::delay(1500, Behavior::Success)]);
    let a = client
        .submit(DEADLINE_MS, apns_push(PushKind::Call, &slow, None))
        .await;
    sidecar.wait_for_metric("res_push_pushes_inflight 1").await;

    // Queued behind the slow push with a deadline it cannot make: dropped, never sent.
    let doomed = token(91);
    let b = client
        .submit(300, apns_push(PushKind::Call, &doomed, None))
        .await;
    // Queued with time to spare: sent once the slot frees.
    let patient = token(92);
    let c = client
        .submit(DEADLINE_MS, apns_push(PushKind::Call, &patient, None))
        .await;
    assert_eq!(client.outcome(b).await, Outcome::Expired);
    sidecar.wait_for_metric("res_push_pushes_queued 1").await;
    assert_eq!(sent(&client.outcome(a).await), 1);
    assert_eq!(sent(&client.outcome(c).await), 1);

    let requests = mocks.apns.requests();
    assert!(
        requests_for(&requests, &doomed).is_empty(),
        "expired push was sent"
    );
    assert_eq!(requests.len(), 2);
    let text = sidecar.metrics().await;
    assert!(
        text.contains("res_push_pushes_expired_in_queue_total 1"),
        "{text}"
    );
    assert!(text.contains("res_push_pushes_inflight 0"), "{text}");
    assert!(text.contains("res_push_pushes_queued 0"), "{text}");
}

#[tokio::test]
async fn app_max_concurrency_limits_that_app_only() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client
        .configure_ok(vec![
            mocks.ios_app(&[("max_concurrency", "1")]),
            mocks.android_app(&[]),
        ])
        .await;
    let slow = token(93);
    mocks
        .apns
        .script(&slow, vec![Behavior::delay(1000, Behavior::Success)]);
    let a = client
        .submit(DEADLINE_MS, apns_push(PushKind::Call, &slow, None))
        .await;
    sidecar.wait_for_metric("res_push_pushes_inflight 1").await;
    let b = client
        .submit(DEADLINE_MS, apns_push(PushKind::Call, &token(94), None))
        .await;
    sidecar.wait_for_metric("res_push_pushes_queued 1").await;
    // Another app is not held up by the iOS app's limit.
    sent(&client.push(fcm_push(PushKind::Call, "free")).await);
    sent(&client.outcome(a).await);
    sent(&client.outcome(b).await);
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test]
async fn metrics_endpoint_reports_results_latency_and_state() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    client.configure_ok(vec![mocks.ios_app(&[])]).await;
    sent(
        &client
            .push(apns_push(PushKind::Call, &token(100), None))
            .await,
    );
    let dead = token(101);
    mocks.apns.script(&dead, vec![Behavior::Unregistered]);
    client.push(apns_push(PushKind::Call, &dead, None)).await;

    let text = sidecar.metrics().await;
    for line in [
        r#"res_push_pushes_total{provider="apns",app="ios",result="sent",reason=""} 1"#,
        r#"res_push_pushes_total{provider="apns",app="ios",result="invalid_token",reason="Unregistered"} 1"#,
        r#"res_push_provider_request_duration_seconds_count{provider="apns",app="ios"} 2"#,
        r#"res_push_provider_connection_up{provider="apns",app="ios",endpoint="production"} 1"#,
        "res_push_module_connections 1",
        "res_push_pushes_inflight 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(text.contains("# TYPE res_push_provider_request_duration_seconds histogram"));
    let (status, _) = sidecar.http_get("/other").await;
    assert!(status.contains("404"), "{status}");
}

// ---------------------------------------------------------------------------------------------
// Certificate-based APNs credentials

#[tokio::test]
async fn certificate_credentials_load_from_pem_and_p12() {
    let mocks = Mocks::start().await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let issued = rcgen::generate_simple_self_signed(vec!["com.example.phone".to_owned()])
        .expect("self-signed certificate");
    let cert_pem = issued.cert.pem();
    let key_pem = issued.signing_key.serialize_pem();
    let combined = mocks.write("apns-cert.pem", &format!("{cert_pem}{key_pem}"));
    let cert_only = mocks.write("apns-cert-only.pem", &cert_pem);
    let key_only = mocks.write("apns-key.pem", &key_pem);

    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "apns",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            p12_keystore::LocalKeyId(vec![1, 2, 3, 4]),
            p12_keystore::PrivateKey::from_der(&issued.signing_key.serialize_der()).unwrap(),
            [p12_keystore::Certificate::from_der(issued.cert.der()).unwrap()],
        )),
    );
    let p12 = store.writer("s3cret").write().expect("p12");
    let p12_path = mocks.dir.path().join("apns.p12");
    std::fs::write(&p12_path, p12).unwrap();
    let p12_path = p12_path.display().to_string();

    let cert_app = |name: &str, pairs: &[(&str, &str)]| AppConfig {
        name: name.into(),
        provider: Provider::Apns,
        app_ids: vec![BUNDLE.into()],
        environment: None,
        options: opts(pairs),
    };
    let (apps, errors) = client
        .configure(vec![
            cert_app("pem", &[("cert_file", &combined)]),
            cert_app(
                "pem-split",
                &[("cert_file", &cert_only), ("key_file", &key_only)],
            ),
            cert_app(
                "p12",
                &[("cert_file", &p12_path), ("cert_password", "s3cret")],
            ),
            cert_app(
                "p12-wrong",
                &[("cert_file", &p12_path), ("cert_password", "nope")],
            ),
            cert_app("pem-nokey", &[("cert_file", &cert_only)]),
        ])
        .await;
    assert_eq!(apps, ["pem", "pem-split", "p12"]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("app 'p12-wrong': cert_file ") && errors[0].contains("cert_password"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].starts_with("app 'pem-nokey': cert_file ") && errors[1].contains("key_file"),
        "{}",
        errors[1]
    );
}

/// Certificate auth end to end: the mock asks for and verifies the client certificate, the
/// sidecar presents the one from `cert_file`, and requests carry no provider token.
#[tokio::test]
async fn certificate_auth_presents_the_client_certificate_and_sends_no_provider_token() {
    let mocks = Mocks::start_with(
        ApnsOptions {
            client_cert_auth: true,
            ..ApnsOptions::default()
        },
        FcmOptions::default(),
    )
    .await;
    let sidecar = Sidecar::start().await;
    let mut client = sidecar.client().await;
    let issued = mocks
        .apns
        .issue_client_cert(BUNDLE)
        .expect("client certificate");
    let combined = mocks.write("apns-push-cert.pem", &issued.combined_pem());

    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "apns",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            p12_keystore::LocalKeyId(vec![1, 2, 3, 4]),
            p12_keystore::PrivateKey::from_der(&issued.key_der).unwrap(),
            [p12_keystore::Certificate::from_der(&issued.cert_der).unwrap()],
        )),
    );
    let p12 = store.writer("s3cret").write().expect("p12");
    let p12_path = mocks.dir.path().join("apns-push-cert.p12");
    std::fs::write(&p12_path, p12).unwrap();
    let p12_path = p12_path.display().to_string();

    let cert_app = |name: &str, cert: &[(&str, &str)]| {
        let mut options = opts(&[
            ("ca_file", &mocks.ca_file()),
            ("apns_url", &mocks.apns.production_url()),
            ("apns_sandbox_url", &mocks.apns.sandbox_url()),
        ]);
        options.extend(opts(cert));
        AppConfig {
            name: name.into(),
            provider: Provider::Apns,
            app_ids: vec![BUNDLE.into()],
            environment: None,
            options,
        }
    };

    for (i, app) in [
        cert_app("pem", &[("cert_file", &combined)]),
        cert_app(
            "p12",
            &[("cert_file", &p12_path), ("cert_password", "s3cret")],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let name = app.name.clone();
        client.configure_ok(vec![app]).await;
        let t = token(0x40 + i as u8);
        let outcome = client.push(apns_push(PushKind::Call, &t, None)).await;
        assert_eq!(sent(&outcome), 1, "{name}");

        let requests = requests_for(&mocks.apns.requests(), &t);
        assert_eq!(requests.len(), 1, "{name}: {requests:#?}");
        let r = &requests[0];
        assert_eq!(r.status, 200, "{name}: {:?}", r.reason);
        assert_eq!(r.client_cert_uid.as_deref(), Some(BUNDLE), "{name}");
        assert_eq!(r.header("apns-push-type"), Some("voip"), "{name}");
        assert_eq!(
            r.header("apns-topic"),
            Some("com.example.phone.voip"),
            "{name}"
        );
        assert_eq!(r.header("authorization"), None, "{name}");
        assert!(r.jwt.is_none(), "{name}");
    }
}
