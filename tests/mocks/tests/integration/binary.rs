//! The `res-push-mock` binary: state files, admin API, clean exit on SIGTERM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use res_push_mocks::jwt;
use serde_json::{Value, json};

use crate::common::{client, status_json};

/// Kills the child if a test fails before it stops it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_json(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn binary_writes_state_serves_admin_api_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let child = Command::new(env!("CARGO_BIN_EXE_res-push-mock"))
        .arg("--state-dir")
        .arg(&state)
        .args([
            "--bundle-id",
            "com.example.phone",
            "--bundle-id",
            "com.example.two",
        ])
        .args(["--project-id", "demo-project"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning res-push-mock");
    let mut guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("ready").exists() {
        assert!(Instant::now() < deadline, "no ready file");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let apns = read_json(&state, "apns.json");
    let fcm = read_json(&state, "fcm.json");
    let admin = read_json(&state, "admin.json");
    assert_eq!(apns["key_id"], "KEY1234567");
    assert_eq!(apns["team_id"], "TEAM123456");
    assert_eq!(
        apns["bundle_ids"],
        json!(["com.example.phone", "com.example.two"])
    );
    assert!(
        apns["sandbox_url"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    assert_ne!(apns["sandbox_url"], apns["production_url"]);
    assert_eq!(fcm["project_id"], "demo-project");
    assert_eq!(
        fcm["token_uri"],
        format!("{}/token", fcm["url"].as_str().unwrap())
    );
    let sa = read_json(&state, "fcm-service-account.json");
    assert_eq!(sa["token_uri"], fcm["token_uri"]);
    assert_eq!(sa["project_id"], "demo-project");
    let ca = std::fs::read_to_string(state.join("ca.pem")).unwrap();
    let p8 = std::fs::read_to_string(state.join("AuthKey_KEY1234567.p8")).unwrap();
    let admin_url = admin["url"].as_str().unwrap().to_owned();

    // An APNs push using only the files.
    let c = client(&ca);
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let provider = jwt::apns_provider_token(&p8, "KEY1234567", "TEAM123456", iat).unwrap();
    let push = |device: &'static str| {
        c.post(format!(
            "{}/3/device/{device}",
            apns["production_url"].as_str().unwrap()
        ))
        .header("authorization", format!("bearer {provider}"))
        .header("apns-topic", "com.example.two.voip")
        .header("apns-push-type", "voip")
        .body(r#"{"aps":{}}"#)
        .send()
    };
    assert_eq!(push("abcd").await.unwrap().status(), 200);

    // Admin: script an FCM error, send, see both services in /requests.
    let admin_client = reqwest::Client::new();
    let r = admin_client
        .post(format!("{admin_url}/script"))
        .json(&json!({"service": "fcm", "token": "dev1",
                      "behaviors": [{"type": "error", "status": 503, "reason": "UNAVAILABLE", "retry_after": 9}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(r).await, (200, json!({"queued": 1})));
    let assertion = jwt::google_assertion(&sa, iat).unwrap();
    let r = c
        .post(fcm["token_uri"].as_str().unwrap())
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    let (status, tok) = status_json(r).await;
    assert_eq!(status, 200);
    let send_url = format!(
        "{}/v1/projects/demo-project/messages:send",
        fcm["url"].as_str().unwrap()
    );
    let r = c
        .post(&send_url)
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .json(&json!({"message": {"token": "dev1", "data": {"k": "v"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "9");
    assert_eq!(status_json(r).await.0, 503);

    let r = admin_client
        .get(format!("{admin_url}/requests"))
        .send()
        .await
        .unwrap();
    let (status, all) = status_json(r).await;
    assert_eq!(status, 200);
    let all = all.as_array().unwrap();
    let summary: Vec<(String, u64)> = all
        .iter()
        .map(|r| {
            (
                r["service"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("apns".into(), 200),
            ("fcm".into(), 200),
            ("fcm".into(), 503)
        ],
        "{all:?}"
    );
    assert_eq!(all[0]["environment"], "production");
    assert_eq!(all[0]["device_token"], "abcd");
    assert_eq!(all[2]["json"]["message"]["data"]["k"], "v");
    assert_eq!(all[2]["reason"], "UNAVAILABLE");

    let r = admin_client
        .get(format!("{admin_url}/stats"))
        .send()
        .await
        .unwrap();
    let (_, stats) = status_json(r).await;
    assert_eq!(stats["fcm"]["token_requests"], 1);
    assert_eq!(stats["apns"]["connections"], 1);

    // Advancing the clock over the admin API expires the provider token.
    let r = admin_client
        .post(format!("{admin_url}/clock/advance"))
        .json(&json!({"seconds": 3700}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = push("abcd").await.unwrap();
    assert_eq!(
        status_json(r).await,
        (403, json!({"reason": "ExpiredProviderToken"}))
    );

    let r = admin_client
        .post(format!("{admin_url}/clear"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = admin_client
        .get(format!("{admin_url}/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(r).await, (200, json!([])));
    let r = admin_client
        .post(format!("{admin_url}/script"))
        .json(&json!({"service": "gcm", "token": "x", "behaviors": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown service rejected");

    let pid = guard.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status:?}");
    assert!(!state.join("ready").exists(), "ready removed on exit");
}
