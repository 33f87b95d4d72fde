//! The push side of an end-to-end setup: mock APNs and FCM (sharing a test CA), their
//! credentials on disk, and a push.conf whose apps point at them.

use std::path::PathBuf;
use std::time::Duration;

use res_push_mocks::{ApnsOptions, FcmOptions, MockApns, MockFcm, RecordedRequest, TestCa};

use crate::{Asterisk, Options, Sidecar, status_field, wait_for};

/// The mocks and a runtime serving them.
#[derive(Debug)]
pub struct Mocks {
    /// Runs the mocks (they are async).
    pub rt: tokio::runtime::Runtime,
    /// Mock APNs (sandbox and production listeners).
    pub apns: MockApns,
    /// Mock FCM with its OAuth2 token endpoint.
    pub fcm: MockFcm,
    /// Credentials written for the sidecar; removed on drop.
    pub dir: PathBuf,
    /// The test CA both mocks' certificates come from (for clients of their own).
    pub ca: TestCa,
}

impl Drop for Mocks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Mocks {
    /// Starts both mocks.
    pub fn start(name: &str) -> Mocks {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let ca = TestCa::new().expect("test CA");
        let apns = rt
            .block_on(MockApns::start_with_ca(ApnsOptions::default(), &ca))
            .expect("mock APNs");
        let fcm = rt
            .block_on(MockFcm::start_with_ca(FcmOptions::default(), &ca))
            .expect("mock FCM");
        let dir =
            std::env::temp_dir().join(format!("res-push-mocks-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creds dir");
        Mocks {
            rt,
            apns,
            fcm,
            dir,
            ca,
        }
    }

    /// push.conf with `[ios]` (APNs) and `[android]` (FCM) apps pointing at the mocks.
    pub fn push_conf(&self, socket: &str, general: &str) -> String {
        let creds = self.apns.write_credentials(&self.dir).expect("apns creds");
        let sa = self.fcm.write_service_account(&self.dir);
        format!(
            "[general]\nsidecar_socket = {socket}\n{general}\n\n\
             [ios]\ntype = app\nprovider = apns\napp_ids = {bundle}\nkey_file = {key}\nkey_id = {kid}\nteam_id = {team}\n\
             apns_url = {prod}\napns_sandbox_url = {sandbox}\nca_file = {ca}\n\n\
             [android]\ntype = app\nprovider = fcm\napp_ids = {project}\nservice_account_file = {sa}\nfcm_url = {fcm}\nca_file = {ca}\n",
            bundle = self.apns.bundle_ids()[0],
            key = creds.key_path.display(),
            kid = creds.key_id,
            team = creds.team_id,
            prod = self.apns.production_url(),
            sandbox = self.apns.sandbox_url(),
            ca = creds.ca_path.display(),
            project = self.fcm.project_id(),
            sa = sa.display(),
            fcm = self.fcm.url(),
        )
    }

    /// Waits for an APNs request matching `pred`.
    pub fn wait_apns(
        &self,
        timeout: Duration,
        pred: impl Fn(&RecordedRequest) -> bool,
    ) -> Option<RecordedRequest> {
        self.rt.block_on(self.apns.wait_for_request(pred, timeout))
    }
}

/// Asterisk + res_push + sidecar + mocks, apps configured and accepted by the sidecar.
pub fn setup(name: &str, general: &str) -> (Mocks, Asterisk, Sidecar) {
    setup_with(name, general, Options::default())
}

/// [`setup`] with more Asterisk options (extra PJSIP endpoints, transports).
pub fn setup_with(name: &str, general: &str, options: Options) -> (Mocks, Asterisk, Sidecar) {
    let mocks = Mocks::start(name);
    let (a, sidecar) = node(&mocks, name, general, options);
    (mocks, a, sidecar)
}

/// One more Asterisk + res_push + sidecar on existing mocks (several nodes of one deployment
/// push through the same APNs and FCM).
pub fn node(mocks: &Mocks, name: &str, general: &str, options: Options) -> (Asterisk, Sidecar) {
    let a = Asterisk::start(
        name,
        Options {
            push_conf: Some(String::new()),
            ..options
        },
    );
    let socket = format!("{}/run/sidecar.sock", a.dir);
    std::fs::write(a.etc("push.conf"), mocks.push_conf(&socket, general)).expect("push.conf");
    a.cli("module reload res_push");
    let sidecar = Sidecar::start(&a.socket_host_path());
    let ready = wait_for(Duration::from_secs(15), || {
        let s = a.cli("push show status");
        (status_field(&s, "Apps").as_deref() == Some("ios, android")).then_some(())
    });
    assert!(
        ready.is_some(),
        "apps not configured:\n{}\n{}",
        a.cli("push show status"),
        sidecar.log()
    );
    (a, sidecar)
}
