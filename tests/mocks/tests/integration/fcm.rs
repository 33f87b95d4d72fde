//! Mock FCM (OAuth2 token endpoint + HTTP v1 send) through a real HTTP/2 client.

use std::time::Duration;

use reqwest::Client;
use res_push_mocks::{Behavior, Endpoint, FcmOptions, MockFcm, jwt};
use serde_json::{Value, json};

use crate::common::{client, status_json};

const DEVICE: &str = "fTq1-device:APA91bH_test_token-0123456789";

async fn mock() -> MockFcm {
    MockFcm::start(FcmOptions::default())
        .await
        .expect("mock FCM")
}

/// The OAuth2 JWT-bearer exchange, as a client does it.
async fn exchange(c: &Client, token_uri: &str, assertion: &str) -> (u16, Value) {
    let r = c
        .post(token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion),
        ])
        .send()
        .await
        .expect("token request");
    status_json(r).await
}

async fn access_token(m: &MockFcm, c: &Client) -> String {
    let (status, body) = exchange(c, &m.token_uri(), &m.assertion()).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn send(c: &Client, url: &str, bearer: &str, body: &Value) -> (u16, Value) {
    let r = c
        .post(url)
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await
        .expect("send");
    status_json(r).await
}

fn call_push(token: &str) -> Value {
    json!({"message": {
        "token": token,
        "data": {"type": "call", "call-id": "abc", "caller": "100"},
        "android": {"priority": "high", "ttl": "30s"},
    }})
}

#[tokio::test]
async fn service_account_token_flow_then_send() {
    let m = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let path = m.write_service_account(dir.path());
    assert_eq!(path.file_name().unwrap(), "fcm-service-account.json");
    let sa: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for field in [
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "auth_uri",
        "token_uri",
        "auth_provider_x509_cert_url",
        "client_x509_cert_url",
    ] {
        assert!(sa[field].is_string(), "service account JSON has {field}");
    }
    assert_eq!(sa["type"], "service_account");
    assert_eq!(sa["project_id"], "res-push-test");
    assert_eq!(sa["token_uri"], m.token_uri());
    assert!(
        sa["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    // Everything below comes from the written file only, as the sidecar would do it.
    let c = client(&m.ca_pem());
    let assertion = jwt::google_assertion(&sa, m.clock().unix_secs()).unwrap();
    let (status, body) = exchange(&c, sa["token_uri"].as_str().unwrap(), &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("ya29."));
    assert_eq!((m.token_requests(), m.tokens_issued()), (1, 1));

    let url = format!(
        "{}/v1/projects/{}/messages:send",
        m.url(),
        sa["project_id"].as_str().unwrap()
    );
    assert_eq!(url, m.send_url());
    let (status, body) = send(&c, &url, token, &call_push(DEVICE)).await;
    assert_eq!(status, 200, "{body}");
    let name = body["name"].as_str().unwrap();
    assert!(
        name.starts_with("projects/res-push-test/messages/"),
        "{name}"
    );
    // Cached token reused: no second token request.
    assert_eq!(send(&c, &url, token, &call_push(DEVICE)).await.0, 200);
    assert_eq!(m.token_requests(), 1);

    let reqs = m.requests();
    assert_eq!(reqs.len(), 3);
    let tok = &reqs[0];
    assert_eq!(tok.endpoint, Endpoint::OAuthToken);
    let claims = &tok.jwt.as_ref().expect("assertion recorded").claims;
    assert_eq!(claims["iss"], sa["client_email"]);
    assert_eq!(claims["aud"], sa["token_uri"]);
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(tok.jwt.as_ref().unwrap().header["alg"], "RS256");
    let s = &reqs[1];
    assert_eq!(s.endpoint, Endpoint::FcmSend);
    assert_eq!(s.http_version, "HTTP/2.0");
    assert_eq!(s.device_token.as_deref(), Some(DEVICE));
    assert_eq!(
        s.json.as_ref().unwrap()["message"]["data"]["call-id"],
        "abc"
    );
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(s.status, 200);
}

#[tokio::test]
async fn token_endpoint_rejects_bad_assertions_like_google() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let sa = m.service_account_json();
    let key = sa["private_key"].as_str().unwrap();
    let now = m.clock().unix_secs();
    let claims = |f: &dyn Fn(&mut Value)| {
        let mut v = json!({
            "iss": sa["client_email"], "aud": m.token_uri(),
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "iat": now, "exp": now + 3600,
        });
        f(&mut v);
        jwt::sign_rs256(key, &json!({"alg": "RS256", "typ": "JWT"}), &v).unwrap()
    };
    // Change the signature's first character: every bit of it is signature data, whereas
    // the last one also carries padding bits that must stay zero.
    let good = m.assertion();
    let sig_at = good.rfind('.').unwrap() + 1;
    let flipped = if &good[sig_at..=sig_at] == "A" {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{flipped}{}", &good[..sig_at], &good[sig_at + 1..]);

    let cases = [
        (
            "tampered signature",
            tampered,
            "invalid_grant",
            "Invalid JWT Signature.",
        ),
        (
            "unknown account",
            claims(&|v| v["iss"] = json!("someone@else.iam.gserviceaccount.com")),
            "invalid_grant",
            "Invalid grant: account not found",
        ),
        (
            "wrong audience",
            claims(&|v| v["aud"] = json!("https://example.invalid/token")),
            "invalid_grant",
            "",
        ),
        (
            "lifetime over an hour",
            claims(&|v| v["exp"] = json!(now + 7200)),
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        ),
        (
            "expired",
            claims(&|v| {
                v["iat"] = json!(now - 7200);
                v["exp"] = json!(now - 3600);
            }),
            "invalid_grant",
            "",
        ),
        (
            "no scope",
            claims(&|v| {
                v.as_object_mut().unwrap().remove("scope");
            }),
            "invalid_scope",
            "Empty or missing scope not allowed.",
        ),
    ];
    for (what, assertion, error, description) in cases {
        let (status, body) = exchange(&c, &m.token_uri(), &assertion).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], error, "{what}: {body}");
        assert!(body["error_description"].is_string(), "{what}");
        if !description.is_empty() {
            assert_eq!(body["error_description"], description, "{what}");
        }
    }
    let r = c
        .post(m.token_uri())
        .form(&[("grant_type", "client_credentials"), ("assertion", "x")])
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    assert_eq!((m.token_requests(), m.tokens_issued()), (7, 0));
    let recorded: Vec<_> = m
        .requests()
        .iter()
        .map(|r| r.reason.clone().unwrap())
        .collect();
    assert_eq!(recorded[0], "invalid_grant");
}

#[tokio::test]
async fn padded_assertion_is_accepted_as_google_does() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let sa = m.service_account_json();
    let padded = jwt::google_assertion_padded(&sa, m.clock().unix_secs()).unwrap();
    assert!(
        padded.split('.').any(|segment| segment.ends_with('=')),
        "the test needs a padded segment: {padded}"
    );
    // reqwest's form encoding sends `=` as %3D, as yup-oauth2's form serializer does.
    let (status, body) = exchange(&c, &m.token_uri(), &padded).await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(&c, &m.send_url(), &token, &call_push(DEVICE)).await.0,
        200
    );
    // Padding is no licence to tamper: the signature covers the segments as sent.
    let (h, rest) = padded.split_once('.').unwrap();
    let other_claims = jwt::google_assertion_padded(&sa, m.clock().unix_secs() - 5).unwrap();
    let forged = format!(
        "{h}.{}.{}",
        other_claims.split('.').nth(1).unwrap(),
        rest.split_once('.').unwrap().1
    );
    let (status, body) = exchange(&c, &m.token_uri(), &forged).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
}

#[tokio::test]
async fn token_endpoint_follows_its_script() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    m.script_token_endpoint(vec![
        Behavior::delay(300, Behavior::Success),
        Behavior::error(503, "temporarily_unavailable"),
    ]);
    let started = std::time::Instant::now();
    let (token_uri, assertion) = (m.token_uri(), m.assertion());
    let slow = exchange(&c, &token_uri, &assertion);
    let (answer, arrived) = tokio::join!(slow, async {
        // Counted on arrival, while the answer is held.
        while m.token_requests() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (m.token_requests(), m.tokens_issued(), started.elapsed())
    });
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((arrived.0, arrived.1), (1, 0), "issued when answered");
    assert!(arrived.2 < Duration::from_millis(300));
    let (status, body) = exchange(&c, &m.token_uri(), &m.assertion()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    // Script used up: back to normal.
    assert_eq!(exchange(&c, &m.token_uri(), &m.assertion()).await.0, 200);
    assert_eq!((m.token_requests(), m.tokens_issued()), (3, 2));
}

#[tokio::test]
async fn expired_or_missing_access_tokens_are_401() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let token = access_token(&m, &c).await;
    assert_eq!(
        send(&c, &m.send_url(), &token, &call_push(DEVICE)).await.0,
        200
    );

    m.advance_clock(Duration::from_secs(3600));
    let (status, body) = send(&c, &m.send_url(), &token, &call_push(DEVICE)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(
        body["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(
        body["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_EXPIRED"
    );

    // A fresh assertion at the shifted "now" gets a new token that works.
    let fresh = access_token(&m, &c).await;
    assert_ne!(fresh, token);
    assert_eq!(
        send(&c, &m.send_url(), &fresh, &call_push(DEVICE)).await.0,
        200
    );
    assert_eq!(m.token_requests(), 2);

    let (status, body) = send(&c, &m.send_url(), "ya29.never-issued", &call_push(DEVICE)).await;
    assert_eq!(
        (status, body["error"]["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let r = c
        .post(m.send_url())
        .json(&call_push(DEVICE))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["details"][0]["reason"], "CREDENTIALS_MISSING");

    // A configurable lifetime, reported in expires_in.
    m.set_access_token_lifetime(Duration::from_secs(5));
    let (_, body) = exchange(&c, &m.token_uri(), &m.assertion()).await;
    assert_eq!(body["expires_in"], 5);
}

#[tokio::test]
async fn each_error_code_has_googles_shape() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let token = access_token(&m, &c).await;
    let cases = [
        ("UNREGISTERED", 404, "NOT_FOUND"),
        ("INVALID_ARGUMENT", 400, "INVALID_ARGUMENT"),
        ("QUOTA_EXCEEDED", 429, "RESOURCE_EXHAUSTED"),
        ("UNAVAILABLE", 503, "UNAVAILABLE"),
        ("INTERNAL", 500, "INTERNAL"),
        ("SENDER_ID_MISMATCH", 403, "PERMISSION_DENIED"),
        ("THIRD_PARTY_AUTH_ERROR", 401, "UNAUTHENTICATED"),
    ];
    for (code, status, rpc) in cases {
        let behaviour = if code == "QUOTA_EXCEEDED" {
            Behavior::error_retry_after(429, code, 60)
        } else {
            Behavior::fcm_error(code)
        };
        m.script(DEVICE, vec![behaviour]);
        let r = c
            .post(m.send_url())
            .bearer_auth(&token)
            .json(&call_push(DEVICE))
            .send()
            .await
            .unwrap();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (got, body) = status_json(r).await;
        assert_eq!(got, status, "{code}");
        let e = &body["error"];
        assert_eq!(e["code"], status, "{code}");
        assert_eq!(e["status"], rpc, "{code}");
        assert!(
            e["message"].as_str().is_some_and(|s| !s.is_empty()),
            "{code}"
        );
        assert_eq!(
            e["details"],
            json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]),
            "{code}"
        );
        assert_eq!(retry_after.is_some(), code == "QUOTA_EXCEEDED", "{code}");
        let rec = m.requests().pop().unwrap();
        assert_eq!((rec.status, rec.reason.as_deref()), (status, Some(code)));
    }
    assert_eq!(
        m.wait_for_request(
            |r| r.reason.as_deref() == Some("QUOTA_EXCEEDED"),
            Duration::ZERO
        )
        .await
        .and_then(|r| r.response_header("retry-after").map(str::to_owned))
        .as_deref(),
        Some("60")
    );
    m.script(DEVICE, vec![Behavior::Unregistered]);
    let (status, body) = send(&c, &m.send_url(), &token, &call_push(DEVICE)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["message"], "Requested entity was not found.");
    assert_eq!(body["error"]["details"][0]["errorCode"], "UNREGISTERED");
    assert_eq!(
        send(&c, &m.send_url(), &token, &call_push(DEVICE)).await.0,
        200,
        "script used up"
    );
}

#[tokio::test]
async fn send_validation_matches_google() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let token = access_token(&m, &c).await;
    let url = m.send_url();

    // Non-string data value: google.rpc.BadRequest naming the entry by position.
    let body = json!({"message": {"token": DEVICE, "data": {"a": "x", "b": 12}}});
    let (status, e) = send(&c, &url, &token, &body).await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(
        e["error"]["message"],
        "Invalid value at 'message.data[1].value' (TYPE_STRING), 12"
    );
    assert_eq!(
        e["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(
        e["error"]["details"][0]["fieldViolations"][0]["field"],
        "message.data[1].value"
    );

    let fcm_invalid = |e: &Value| {
        e["error"]["details"][0]["errorCode"] == "INVALID_ARGUMENT" && e["error"]["code"] == 400
    };
    let too_big = json!({"message": {"token": DEVICE, "data": {"blob": "x".repeat(4100)}}});
    let (status, e) = send(&c, &url, &token, &too_big).await;
    assert_eq!(status, 400);
    assert!(fcm_invalid(&e), "{e}");
    assert_eq!(e["error"]["message"], "Android message is too big");
    let just_fits = json!({"message": {"token": DEVICE, "data": {"blob": "x".repeat(4092)}}});
    assert_eq!(
        send(&c, &url, &token, &just_fits).await.0,
        200,
        "4 + 4092 bytes is the limit"
    );

    let (status, e) = send(&c, &url, &token, &call_push("bad token with spaces")).await;
    assert_eq!(status, 400);
    assert!(fcm_invalid(&e));
    assert_eq!(
        e["error"]["message"],
        "The registration token is not a valid FCM registration token"
    );

    let cases = [
        (
            "bad ttl",
            json!({"message": {"token": DEVICE, "android": {"ttl": "30"}}}),
        ),
        (
            "bad priority",
            json!({"message": {"token": DEVICE, "android": {"priority": "urgent"}}}),
        ),
        (
            "unknown message field",
            json!({"message": {"token": DEVICE, "tokens": [DEVICE]}}),
        ),
        (
            "unknown top-level field",
            json!({"message": {"token": DEVICE}, "dry_run": true}),
        ),
        ("no target", json!({"message": {"data": {"a": "b"}}})),
        (
            "two targets",
            json!({"message": {"token": DEVICE, "topic": "news"}}),
        ),
        (
            "reserved data key",
            json!({"message": {"token": DEVICE, "data": {"from": "x"}}}),
        ),
        (
            "android data not strings",
            json!({"message": {"token": DEVICE, "android": {"data": {"n": 1}}}}),
        ),
        (
            "collapse key not a string",
            json!({"message": {"token": DEVICE, "android": {"collapse_key": 5}}}),
        ),
        (
            "unknown android field",
            json!({"message": {"token": DEVICE, "android": {"collapse_id": "mwi-1"}}}),
        ),
    ];
    for (what, body) in cases {
        let (status, e) = send(&c, &url, &token, &body).await;
        assert_eq!(status, 400, "{what}: {e}");
        assert_eq!(e["error"]["status"], "INVALID_ARGUMENT", "{what}");
        assert!(e["error"]["details"][0]["@type"].is_string(), "{what}");
    }

    // A collapse key (voicemail pushes: one per mailbox) is a plain AndroidConfig string.
    let collapsed = json!({"message": {"token": DEVICE, "data": {"kind": "voicemail"},
        "android": {"priority": "high", "collapse_key": "mwi-1000@default"}}});
    assert_eq!(send(&c, &url, &token, &collapsed).await.0, 200);

    // Another project: the service account has no permission there.
    let other = format!("{}/v1/projects/someone-else/messages:send", m.url());
    let (status, e) = send(&c, &other, &token, &call_push(DEVICE)).await;
    assert_eq!(
        (status, e["error"]["status"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );

    // A token registered by another sender.
    m.set_token_owner("foreign-token", "another-project");
    let (status, e) = send(&c, &url, &token, &call_push("foreign-token")).await;
    assert_eq!(status, 403);
    assert_eq!(e["error"]["details"][0]["errorCode"], "SENDER_ID_MISMATCH");

    // validate_only is a dry run: fake name, scripts untouched.
    m.script(DEVICE, vec![Behavior::fcm_error("UNAVAILABLE")]);
    let mut dry = call_push(DEVICE);
    dry["validate_only"] = json!(true);
    let (status, e) = send(&c, &url, &token, &dry).await;
    assert_eq!(
        (status, e["name"].as_str()),
        (200, Some("projects/res-push-test/messages/fake_message_id"))
    );
    assert_eq!(send(&c, &url, &token, &call_push(DEVICE)).await.0, 503);
}

#[tokio::test]
async fn tokens_without_the_fcm_scope_are_refused_at_send() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let sa = m.service_account_json();
    let now = m.clock().unix_secs();
    let assertion = jwt::sign_rs256(
        sa["private_key"].as_str().unwrap(),
        &json!({"alg": "RS256", "typ": "JWT"}),
        &json!({"iss": sa["client_email"], "aud": m.token_uri(),
                "scope": "https://www.googleapis.com/auth/userinfo.email",
                "iat": now, "exp": now + 3600}),
    )
    .unwrap();
    let (status, body) = exchange(&c, &m.token_uri(), &assertion).await;
    assert_eq!(status, 200, "Google issues tokens for any scope");
    let token = body["access_token"].as_str().unwrap();
    let (status, e) = send(&c, &m.send_url(), token, &call_push(DEVICE)).await;
    assert_eq!(status, 403);
    assert_eq!(
        e["error"]["details"][0]["reason"],
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    );
}

#[tokio::test]
async fn go_away_forces_a_new_connection_and_http1_works() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let token = access_token(&m, &c).await;
    m.script(DEVICE, vec![Behavior::GoAway]);
    assert_eq!(
        send(&c, &m.send_url(), &token, &call_push(DEVICE)).await.0,
        200
    );
    assert_eq!(m.connections(), 1);
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ok = send(&c, &m.send_url(), &token, &call_push(DEVICE)).await.0 == 200;
        if m.connections() == 2 {
            break;
        }
    }
    assert!(ok);
    assert_eq!(m.connections(), 2);

    // Google's front ends also speak HTTP/1.1, and so does the mock.
    let h1 = crate::common::builder(&m.ca_pem())
        .http1_only()
        .build()
        .unwrap();
    let (status, _) = exchange(&h1, &m.token_uri(), &m.assertion()).await;
    assert_eq!(status, 200);
    let last = m.requests().pop().unwrap();
    assert_eq!(last.http_version, "HTTP/1.1");
    assert_eq!(last.endpoint, Endpoint::OAuthToken);
}
