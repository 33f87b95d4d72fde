//! `res-push-mock`: runs the mock APNs and FCM servers on free loopback ports for the demo and
//! the real-Asterisk tests, writes what a client needs into a state directory, and serves the
//! admin API (see `res_push_mocks::admin`).
//!
//! Files in `--state-dir`: `ca.pem`, `AuthKey_<kid>.p8`, `apns.json`,
//! `fcm-service-account.json`, `fcm.json`, `admin.json`, and `ready` last, so a script can
//! wait for `ready` and then read the rest. `ready` is removed on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use res_push_mocks::admin::{self, Mocks};
use res_push_mocks::{ApnsOptions, FcmOptions, MockApns, MockFcm, TestCa};

/// Mock APNs + FCM servers for res_push tests.
#[derive(Debug, Parser)]
#[command(name = "res-push-mock", version)]
struct Args {
    /// Directory to write ca.pem, the .p8 key, apns.json, fcm-service-account.json, fcm.json,
    /// admin.json and finally `ready` into (created if missing).
    #[arg(long)]
    state_dir: PathBuf,
    /// Address of the plain-HTTP admin API.
    #[arg(long, default_value = "127.0.0.1:0")]
    admin: SocketAddr,
    /// APNs team id (`iss` of provider tokens).
    #[arg(long, default_value = "TEAM123456")]
    team_id: String,
    /// APNs key id (`kid` of provider tokens).
    #[arg(long, default_value = "KEY1234567")]
    key_id: String,
    /// Bundle id the APNs key may push to (repeatable).
    #[arg(long = "bundle-id", default_value = "com.example.phone")]
    bundle_ids: Vec<String>,
    /// Firebase project id.
    #[arg(long, default_value = "res-push-test")]
    project_id: String,
    /// `expires_in` of FCM access tokens, seconds.
    #[arg(long, default_value_t = 3599)]
    access_token_lifetime: u64,
}

fn write_json(dir: &Path, name: &str, value: &serde_json::Value) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = &args.state_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ready = dir.join("ready");
    // A stale `ready` from an earlier run would let a waiting script read old ports.
    let _ = std::fs::remove_file(&ready);

    let ca = TestCa::new()?;
    let apns = MockApns::start_with_ca(
        ApnsOptions {
            team_id: args.team_id.clone(),
            key_id: args.key_id.clone(),
            bundle_ids: args.bundle_ids.clone(),
            ..ApnsOptions::default()
        },
        &ca,
    )
    .await?;
    let fcm = MockFcm::start_with_ca(
        FcmOptions {
            project_id: args.project_id.clone(),
            access_token_lifetime: Duration::from_secs(args.access_token_lifetime),
            ..FcmOptions::default()
        },
        &ca,
    )
    .await?;

    let creds = apns.write_credentials(dir)?;
    write_json(
        dir,
        "apns.json",
        &json!({
            "sandbox_url": apns.sandbox_url(),
            "production_url": apns.production_url(),
            "key_id": apns.key_id(),
            "team_id": apns.team_id(),
            "bundle_ids": apns.bundle_ids(),
            "key_path": creds.key_path,
            "ca_path": creds.ca_path,
        }),
    )?;
    let sa_path = fcm.try_write_service_account(dir)?;
    write_json(
        dir,
        "fcm.json",
        &json!({
            "url": fcm.url(),
            "project_id": fcm.project_id(),
            "token_uri": fcm.token_uri(),
            "service_account_path": sa_path,
            "ca_path": creds.ca_path,
        }),
    )?;

    let mocks = Mocks {
        apns: Arc::new(apns),
        fcm: Arc::new(fcm),
    };
    let admin_addr = admin::spawn(args.admin, mocks.clone()).await?;
    write_json(
        dir,
        "admin.json",
        &json!({"url": format!("http://{admin_addr}"), "addr": admin_addr.to_string()}),
    )?;
    // Written via rename so a watcher never sees a half-written file.
    let tmp = dir.join(".ready.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, &ready)?;
    eprintln!(
        "res-push-mock: apns sandbox {} production {}, fcm {}, admin http://{admin_addr}",
        mocks.apns.sandbox_url(),
        mocks.apns.production_url(),
        mocks.fcm.url()
    );

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = std::fs::remove_file(&ready);
    eprintln!("res-push-mock: stopping");
    Ok(())
}
