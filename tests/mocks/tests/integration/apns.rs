//! Mock APNs through a real HTTP/2 client.

use std::time::{Duration, Instant};

use reqwest::Client;
use reqwest::header::{HeaderMap, HeaderValue};
use res_push_mocks::{ApnsOptions, Behavior, Endpoint, Environment, MockApns, jwt};
use serde_json::{Value, json};

use crate::common::{client, status_json};

const TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const BUNDLE: &str = "com.example.phone";

async fn mock() -> MockApns {
    MockApns::start(ApnsOptions::default())
        .await
        .expect("mock APNs")
}

/// A VoIP push as the sidecar sends it; `tweak` edits headers before sending.
async fn push(
    c: &Client,
    base: &str,
    device: &str,
    jwt: &str,
    body: &str,
    tweak: impl FnOnce(&mut HeaderMap),
) -> reqwest::Response {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("bearer {jwt}")).unwrap(),
    );
    h.insert(
        "apns-topic",
        HeaderValue::from_static("com.example.phone.voip"),
    );
    h.insert("apns-push-type", HeaderValue::from_static("voip"));
    h.insert("apns-priority", HeaderValue::from_static("10"));
    h.insert("apns-expiration", HeaderValue::from_static("0"));
    tweak(&mut h);
    c.post(format!("{base}/3/device/{device}"))
        .headers(h)
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

const VOIP_BODY: &str = r#"{"aps":{},"call-id":"abc","caller":"100"}"#;

#[tokio::test]
async fn success_echoes_or_generates_apns_id_and_is_recorded() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let jwt = m.provider_token();

    let id = "123e4567-e89b-12d3-a456-426614174000";
    let r = push(&c, &m.sandbox_url(), TOKEN, &jwt, VOIP_BODY, |h| {
        h.insert("apns-id", HeaderValue::from_static(id));
    })
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.headers()["apns-id"], id);
    assert!(
        r.headers().contains_key("apns-unique-id"),
        "sandbox adds apns-unique-id"
    );
    assert_eq!(r.text().await.unwrap(), "", "success has an empty body");

    let r = push(&c, &m.production_url(), TOKEN, &jwt, VOIP_BODY, |_| {}).await;
    assert_eq!(r.status(), 200);
    let generated = r.headers()["apns-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 36);
    assert_ne!(generated, id);
    assert!(
        !r.headers().contains_key("apns-unique-id"),
        "production has no apns-unique-id"
    );

    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    let first = &reqs[0];
    assert_eq!(first.environment, Some(Environment::Sandbox));
    assert_eq!(reqs[1].environment, Some(Environment::Production));
    assert_eq!(first.endpoint, Endpoint::ApnsPush);
    assert_eq!(first.http_version, "HTTP/2.0");
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, format!("/3/device/{TOKEN}"));
    assert_eq!(first.device_token.as_deref(), Some(TOKEN));
    assert_eq!(first.header("apns-push-type"), Some("voip"));
    assert_eq!(first.header("apns-topic"), Some("com.example.phone.voip"));
    assert_eq!(first.json.as_ref().unwrap()["call-id"], "abc");
    assert_eq!(first.body, VOIP_BODY.as_bytes());
    let decoded = first.jwt.as_ref().expect("decoded provider token");
    assert_eq!(decoded.header["alg"], "ES256");
    assert_eq!(decoded.header["kid"], "KEY1234567");
    assert_eq!(decoded.claims["iss"], "TEAM123456");
    assert_eq!((first.status, first.reason.as_deref()), (200, None));
    assert_eq!(first.response_header("apns-id"), Some(id));
    assert!(first.received_at_ms > 0 && first.seq == 1 && reqs[1].seq == 2);
}

#[tokio::test]
async fn validation_errors_match_apples_reasons() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let jwt = m.provider_token();
    let base = m.sandbox_url();
    let big_alert = format!(r#"{{"aps":{{"alert":"{}"}}}}"#, "x".repeat(4100));
    let big_voip = format!(r#"{{"aps":{{}},"x":"{}"}}"#, "x".repeat(5200));
    let voip_4500 = format!(r#"{{"aps":{{}},"x":"{}"}}"#, "x".repeat(4500));

    type Tweak = Box<dyn FnOnce(&mut HeaderMap)>;
    let set = |name: &'static str, value: &'static str| -> Tweak {
        Box::new(move |h: &mut HeaderMap| {
            h.insert(name, HeaderValue::from_static(value));
        })
    };
    let remove = |name: &'static str| -> Tweak {
        Box::new(move |h: &mut HeaderMap| {
            h.remove(name);
        })
    };
    let cases: Vec<(&str, &str, String, Tweak, u16, &str)> = vec![
        (
            "missing topic",
            TOKEN,
            VOIP_BODY.into(),
            remove("apns-topic"),
            400,
            "MissingTopic",
        ),
        (
            "unknown push type",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-push-type", "call"),
            400,
            "InvalidPushType",
        ),
        (
            "missing push type",
            TOKEN,
            VOIP_BODY.into(),
            remove("apns-push-type"),
            400,
            "InvalidPushType",
        ),
        (
            "priority 7",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-priority", "7"),
            400,
            "BadPriority",
        ),
        (
            "expiration not a number",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-expiration", "soon"),
            400,
            "BadExpirationDate",
        ),
        (
            "apns-id not a UUID",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-id", "not-a-uuid"),
            400,
            "BadMessageId",
        ),
        (
            "collapse id over 64 bytes",
            TOKEN,
            VOIP_BODY.into(),
            set(
                "apns-collapse-id",
                "0123456789012345678901234567890123456789012345678901234567890123456789",
            ),
            400,
            "BadCollapseId",
        ),
        (
            "token not hex",
            "not-hex-token",
            VOIP_BODY.into(),
            Box::new(|_| {}),
            400,
            "BadDeviceToken",
        ),
        (
            "voip push to the bundle topic",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-topic", BUNDLE),
            400,
            "DeviceTokenNotForTopic",
        ),
        (
            "alert push to the .voip topic",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-push-type", "alert"),
            400,
            "DeviceTokenNotForTopic",
        ),
        (
            "another team's bundle",
            TOKEN,
            VOIP_BODY.into(),
            set("apns-topic", "org.other.app.voip"),
            400,
            "TopicDisallowed",
        ),
        (
            "empty body",
            TOKEN,
            String::new(),
            Box::new(|_| {}),
            400,
            "PayloadEmpty",
        ),
        (
            "body not JSON",
            TOKEN,
            "hello".into(),
            Box::new(|_| {}),
            400,
            "BadPayload",
        ),
        (
            "alert over 4096 bytes",
            TOKEN,
            big_alert,
            Box::new(|h: &mut HeaderMap| {
                h.insert("apns-topic", HeaderValue::from_static(BUNDLE));
                h.insert("apns-push-type", HeaderValue::from_static("alert"));
            }),
            413,
            "PayloadTooLarge",
        ),
        (
            "voip over 5120 bytes",
            TOKEN,
            big_voip,
            Box::new(|_| {}),
            413,
            "PayloadTooLarge",
        ),
        (
            "missing authorization",
            TOKEN,
            VOIP_BODY.into(),
            remove("authorization"),
            403,
            "MissingProviderToken",
        ),
        (
            "duplicate apns-topic",
            TOKEN,
            VOIP_BODY.into(),
            Box::new(|h: &mut HeaderMap| {
                h.append(
                    "apns-topic",
                    HeaderValue::from_static("com.example.phone.voip"),
                );
            }),
            400,
            "DuplicateHeaders",
        ),
        (
            "voip between 4 and 5 KB is fine",
            TOKEN,
            voip_4500,
            Box::new(|_| {}),
            200,
            "",
        ),
    ];
    for (what, device, body, tweak, status, reason) in cases {
        let r = push(&c, &base, device, &jwt, &body, tweak).await;
        assert!(
            r.headers().contains_key("apns-id"),
            "{what}: apns-id on every answer"
        );
        let (got, json) = status_json(r).await;
        assert_eq!(got, status, "{what}: {json}");
        if status != 200 {
            assert_eq!(json, json!({"reason": reason}), "{what}");
        }
    }

    let r = c
        .get(format!("{base}/3/device/{TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_json(r).await,
        (405, json!({"reason": "MethodNotAllowed"}))
    );
    let r = c
        .post(format!("{base}/4/device/{TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(r).await, (404, json!({"reason": "BadPath"})));
    let r = c.post(format!("{base}/3/device/")).send().await.unwrap();
    assert_eq!(
        status_json(r).await,
        (400, json!({"reason": "MissingDeviceToken"}))
    );

    let last = m.requests().pop().unwrap();
    assert_eq!(
        (last.status, last.reason.as_deref()),
        (400, Some("MissingDeviceToken"))
    );
}

#[tokio::test]
async fn http1_only_clients_are_refused() {
    let m = mock().await;
    let c = crate::common::builder(&m.ca_pem())
        .http1_only()
        .build()
        .unwrap();
    let err = c
        .post(format!("{}/3/device/{TOKEN}", m.sandbox_url()))
        .body(VOIP_BODY)
        .send()
        .await
        .expect_err("APNs offers h2 only");
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    assert!(m.requests().is_empty());
    assert_eq!(
        m.connections(),
        0,
        "the TLS handshake itself fails (no common ALPN)"
    );
}

#[tokio::test]
async fn bad_provider_tokens_are_invalid() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let now = m.clock().unix_secs();
    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let p8 = m.signing_key_pem();
    let tokens = [
        (
            "signed by another key",
            jwt::apns_provider_token(&other_key, "KEY1234567", "TEAM123456", now).unwrap(),
        ),
        (
            "wrong kid",
            jwt::apns_provider_token(&p8, "KEY0000000", "TEAM123456", now).unwrap(),
        ),
        (
            "wrong team",
            jwt::apns_provider_token(&p8, "KEY1234567", "TEAM000000", now).unwrap(),
        ),
        (
            "no iat",
            jwt::sign_es256(
                &p8,
                &json!({"alg":"ES256","kid":"KEY1234567"}),
                &json!({"iss":"TEAM123456"}),
            )
            .unwrap(),
        ),
        (
            "iat an hour ahead",
            jwt::apns_provider_token(&p8, "KEY1234567", "TEAM123456", now + 3600).unwrap(),
        ),
        ("not a JWT", "garbage".to_owned()),
    ];
    for (what, t) in tokens {
        // A fresh connection each time so the token-update rule cannot interfere.
        let c = client(&m.ca_pem());
        let (status, body) =
            status_json(push(&c, &m.sandbox_url(), TOKEN, &t, VOIP_BODY, |_| {}).await).await;
        assert_eq!(
            (status, body),
            (403, json!({"reason": "InvalidProviderToken"})),
            "{what}"
        );
    }
    // Sanity: the mock's own key still works.
    let r = push(
        &c,
        &m.sandbox_url(),
        TOKEN,
        &m.provider_token(),
        VOIP_BODY,
        |_| {},
    )
    .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn token_older_than_an_hour_is_expired() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let old = m.provider_token();
    assert_eq!(
        push(&c, &m.sandbox_url(), TOKEN, &old, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );

    m.advance_clock(Duration::from_secs(61 * 60));
    let (status, body) =
        status_json(push(&c, &m.sandbox_url(), TOKEN, &old, VOIP_BODY, |_| {}).await).await;
    assert_eq!(
        (status, body),
        (403, json!({"reason": "ExpiredProviderToken"}))
    );

    // A token issued at the (shifted) "now" is accepted on the same connection: more than 20
    // minutes passed since the previous one was issued.
    let fresh = m.provider_token();
    assert_eq!(
        push(&c, &m.sandbox_url(), TOKEN, &fresh, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    let reqs = m.requests();
    assert_eq!(reqs[1].reason.as_deref(), Some("ExpiredProviderToken"));
    assert_eq!(reqs[1].connection_id, reqs[2].connection_id);
}

#[tokio::test]
async fn token_changes_within_20_minutes_are_too_many_updates() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let first = m.provider_token();
    assert_eq!(
        push(&c, &m.sandbox_url(), TOKEN, &first, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );

    m.advance_clock(Duration::from_secs(5 * 60));
    let second = m.provider_token();
    let (status, body) =
        status_json(push(&c, &m.sandbox_url(), TOKEN, &second, VOIP_BODY, |_| {}).await).await;
    assert_eq!(
        (status, body),
        (429, json!({"reason": "TooManyProviderTokenUpdates"}))
    );

    // Regenerating per request (same iat, fresh ECDSA signature) is the classic bug.
    let again = m.provider_token_at(m.clock().unix_secs() - 5 * 60);
    assert_ne!(again, first);
    let (status, _) =
        status_json(push(&c, &m.sandbox_url(), TOKEN, &again, VOIP_BODY, |_| {}).await).await;
    assert_eq!(status, 429);

    // The token in use keeps working, and the rule is per connection.
    assert_eq!(
        push(&c, &m.sandbox_url(), TOKEN, &first, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    let other_conn = client(&m.ca_pem());
    assert_eq!(
        push(
            &other_conn,
            &m.sandbox_url(),
            TOKEN,
            &second,
            VOIP_BODY,
            |_| {}
        )
        .await
        .status(),
        200
    );

    // 21 minutes after the first token, a refresh on the first connection is fine.
    m.advance_clock(Duration::from_secs(16 * 60));
    let third = m.provider_token();
    assert_eq!(
        push(&c, &m.sandbox_url(), TOKEN, &third, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    let conns: std::collections::HashSet<u64> =
        m.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(conns.len(), 2);
}

#[tokio::test]
async fn unregistered_410_carries_the_mock_clock_timestamp() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    m.advance_clock(Duration::from_secs(86_400));
    m.script(
        TOKEN,
        vec![Behavior::Unregistered, Behavior::error(410, "Unregistered")],
    );
    let jwt = m.provider_token();
    for _ in 0..2 {
        let before = m.clock().unix_millis();
        let (status, body) =
            status_json(push(&c, &m.production_url(), TOKEN, &jwt, VOIP_BODY, |_| {}).await).await;
        assert_eq!(status, 410);
        assert_eq!(body["reason"], "Unregistered");
        let ts = body["timestamp"].as_u64().expect("numeric timestamp in ms");
        assert!(
            ts >= before && ts <= m.clock().unix_millis(),
            "{ts} vs {before}"
        );
        let real_now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(
            ts > real_now_ms + 86_000_000,
            "timestamp follows the shifted clock"
        );
    }
    assert_eq!(
        push(&c, &m.production_url(), TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn scripts_are_consumed_in_order_then_success() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let other = "00ff00ff00ff00ff";
    m.script(
        TOKEN,
        vec![
            Behavior::error_retry_after(503, "ServiceUnavailable", 7),
            Behavior::error(429, "TooManyRequests"),
            Behavior::delay(300, Behavior::Success),
        ],
    );
    let jwt = m.provider_token();
    let base = m.production_url();

    let r = push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {}).await;
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        status_json(r).await,
        (503, json!({"reason": "ServiceUnavailable"}))
    );
    // Another token is not affected by TOKEN's script.
    assert_eq!(
        push(&c, &base, other, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    let r = push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {}).await;
    assert_eq!(
        status_json(r).await,
        (429, json!({"reason": "TooManyRequests"}))
    );
    let t = Instant::now();
    assert_eq!(
        push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "Delay held the answer"
    );
    assert_eq!(
        push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );

    // A request failing validation does not consume a script.
    m.script(TOKEN, vec![Behavior::error(500, "InternalServerError")]);
    let r = push(&c, &base, TOKEN, &jwt, VOIP_BODY, |h| {
        h.insert("apns-priority", HeaderValue::from_static("3"));
    })
    .await;
    assert_eq!(
        status_json(r).await,
        (400, json!({"reason": "BadPriority"}))
    );
    let r = push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {}).await;
    assert_eq!(
        status_json(r).await,
        (500, json!({"reason": "InternalServerError"}))
    );

    let scripted: Vec<Option<Behavior>> = m
        .requests()
        .into_iter()
        .filter(|r| r.device_token.as_deref() == Some(TOKEN))
        .map(|r| r.scripted)
        .collect();
    assert_eq!(
        scripted[0],
        Some(Behavior::error_retry_after(503, "ServiceUnavailable", 7))
    );
    assert_eq!(scripted[3], None, "after the script: the default");
}

#[tokio::test]
async fn go_away_forces_a_new_connection() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let jwt = m.provider_token();
    let base = m.sandbox_url();
    assert_eq!(
        push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    assert_eq!(
        push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    assert_eq!(m.connections(), 1, "requests share one HTTP/2 connection");

    m.script(TOKEN, vec![Behavior::GoAway]);
    assert_eq!(
        push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200,
        "GoAway answers first"
    );
    // The client may need a moment to process the GOAWAY frame.
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {}).await;
        status = r.status().as_u16();
        if m.connections() == 2 {
            break;
        }
    }
    assert_eq!(status, 200);
    assert_eq!(m.connections(), 2, "the client had to reconnect");
    let reqs = m.requests();
    assert_eq!(reqs[2].scripted, Some(Behavior::GoAway));
    assert_eq!(reqs[0].connection_id, reqs[2].connection_id);
    assert_ne!(reqs.last().unwrap().connection_id, reqs[2].connection_id);
}

#[tokio::test]
async fn disconnect_drops_the_connection_without_an_answer() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    m.script(TOKEN, vec![Behavior::Disconnect]);
    let err = c
        .post(format!("{}/3/device/{TOKEN}", m.sandbox_url()))
        .header("authorization", format!("bearer {}", m.provider_token()))
        .header("apns-topic", "com.example.phone.voip")
        .header("apns-push-type", "voip")
        .body(VOIP_BODY)
        .send()
        .await
        .expect_err("no answer");
    assert!(!err.is_timeout(), "closed, not hung: {err:?}");
    assert_eq!(m.requests()[0].reason.as_deref(), Some("disconnect"));
    assert_eq!(
        push(
            &c,
            &m.sandbox_url(),
            TOKEN,
            &m.provider_token(),
            VOIP_BODY,
            |_| {}
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn environments_registered_tokens_and_scoped_keys() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let jwt = m.provider_token();
    m.register_device(TOKEN, Environment::Sandbox, BUNDLE);
    assert_eq!(
        push(&c, &m.sandbox_url(), TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    let (s, b) =
        status_json(push(&c, &m.production_url(), TOKEN, &jwt, VOIP_BODY, |_| {}).await).await;
    assert_eq!(
        (s, b),
        (400, json!({"reason": "BadDeviceToken"})),
        "sandbox token in production"
    );
    m.register_device(TOKEN, Environment::Sandbox, "com.example.other");
    let (s, b) =
        status_json(push(&c, &m.sandbox_url(), TOKEN, &jwt, VOIP_BODY, |_| {}).await).await;
    assert_eq!((s, b), (400, json!({"reason": "DeviceTokenNotForTopic"})));

    let scoped = MockApns::start(ApnsOptions {
        key_environment: Some(Environment::Production),
        bundle_ids: vec![BUNDLE.into(), "com.example.second".into()],
        ..ApnsOptions::default()
    })
    .await
    .unwrap();
    let c = client(&scoped.ca_pem());
    let jwt = scoped.provider_token();
    assert_eq!(
        push(&c, &scoped.production_url(), TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    let r = push(&c, &scoped.production_url(), TOKEN, &jwt, VOIP_BODY, |h| {
        h.insert(
            "apns-topic",
            HeaderValue::from_static("com.example.second.voip"),
        );
    })
    .await;
    assert_eq!(
        r.status(),
        200,
        "every configured bundle id is a valid topic base"
    );
    let (s, b) =
        status_json(push(&c, &scoped.sandbox_url(), TOKEN, &jwt, VOIP_BODY, |_| {}).await).await;
    assert_eq!(
        (s, b),
        (403, json!({"reason": "BadEnvironmentKeyIdInToken"}))
    );
    let envs: Vec<_> = scoped.requests().iter().map(|r| r.environment).collect();
    assert_eq!(
        envs,
        [
            Some(Environment::Production),
            Some(Environment::Production),
            Some(Environment::Sandbox)
        ]
    );
}

#[tokio::test]
async fn wait_for_request_sees_past_and_future_requests() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let jwt = m.provider_token();
    assert!(
        m.wait_for_request(|_| true, Duration::from_millis(100))
            .await
            .is_none(),
        "times out when nothing comes"
    );
    let base = m.sandbox_url();
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        push(&c, &base, "beef", &jwt, VOIP_BODY, |_| {})
            .await
            .status()
    });
    let got = m
        .wait_for_request(
            |r| r.device_token.as_deref() == Some("beef"),
            Duration::from_secs(5),
        )
        .await
        .expect("the delayed request");
    assert_eq!(got.status, 200);
    assert_eq!(task.await.unwrap(), 200);
    // Already recorded: found at once.
    let t = Instant::now();
    assert!(
        m.wait_for_request(|r| r.status == 200, Duration::from_secs(5))
            .await
            .is_some()
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    m.clear();
    assert!(m.requests().is_empty());
}

#[tokio::test]
async fn written_credentials_are_what_apple_delivers() {
    let m = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = m.write_credentials(dir.path()).unwrap();
    assert_eq!(creds.key_path.file_name().unwrap(), "AuthKey_KEY1234567.p8");
    let p8 = std::fs::read_to_string(&creds.key_path).unwrap();
    assert!(
        p8.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8 PEM like Apple's .p8"
    );
    let ca = std::fs::read_to_string(&creds.ca_path).unwrap();
    assert_eq!(ca, m.ca_pem());
    assert_eq!(
        (creds.key_id.as_str(), creds.team_id.as_str()),
        ("KEY1234567", "TEAM123456")
    );

    // A client using only the written files gets through.
    let token = jwt::apns_provider_token(&p8, &creds.key_id, &creds.team_id, m.clock().unix_secs())
        .unwrap();
    let c = client(&ca);
    let r = push(&c, &creds.production_url, TOKEN, &token, VOIP_BODY, |_| {}).await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::to_value(&m.requests()[0]).unwrap();
    assert_eq!(v["service"], "apns");
    assert_eq!(v["environment"], "production");
}

#[tokio::test]
async fn dropping_the_mock_stops_serving() {
    let m = mock().await;
    let c = client(&m.ca_pem());
    let jwt = m.provider_token();
    let base = m.sandbox_url();
    assert_eq!(
        push(&c, &base, TOKEN, &jwt, VOIP_BODY, |_| {})
            .await
            .status(),
        200
    );
    drop(m);
    // Give the listener and connection tasks a moment to see the shutdown signal.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = c
        .post(format!("{base}/3/device/{TOKEN}"))
        .body(VOIP_BODY)
        .send()
        .await
        .expect_err("the mock is gone");
    assert!(!err.is_timeout(), "{err:?}");
}

/// A client presenting `cert` (certificate then key, PEM) and trusting `ca_pem`.
fn cert_client(ca_pem: &str, cert: &res_push_mocks::ClientCert) -> Client {
    let identity = reqwest::Identity::from_pem(cert.combined_pem().as_bytes()).expect("identity");
    crate::common::builder(ca_pem)
        .identity(identity)
        .build()
        .expect("building the client")
}

fn no_auth(h: &mut HeaderMap) {
    h.remove("authorization");
}

#[tokio::test]
async fn certificate_auth_accepts_the_certificates_bundle_and_records_its_uid() {
    let m = MockApns::start(ApnsOptions {
        client_cert_auth: true,
        client_cert_environment: Some(Environment::Production),
        ..ApnsOptions::default()
    })
    .await
    .unwrap();
    let cert = m.issue_client_cert(BUNDLE).unwrap();
    assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let c = cert_client(&m.ca_pem(), &cert);

    // No provider token: the certificate authenticates, its UID names the bundle.
    let r = push(&c, &m.production_url(), TOKEN, "", VOIP_BODY, no_auth).await;
    assert_eq!(status_json(r).await, (200, Value::Null));
    let rec = m.requests().pop().unwrap();
    assert_eq!(rec.client_cert_uid.as_deref(), Some(BUNDLE));
    assert_eq!(rec.header("authorization"), None);
    assert!(rec.jwt.is_none());
    assert_eq!(rec.header("apns-topic"), Some("com.example.phone.voip"));

    // Without apns-topic the certificate's subject is the topic.
    let r = push(&c, &m.production_url(), TOKEN, "", r#"{"aps":{}}"#, |h| {
        no_auth(h);
        h.remove("apns-topic");
        h.insert("apns-push-type", HeaderValue::from_static("alert"));
    })
    .await;
    assert_eq!(r.status(), 200);

    // Another app's topic is not this certificate's to push to.
    let r = push(&c, &m.production_url(), TOKEN, "", VOIP_BODY, |h| {
        no_auth(h);
        h.insert(
            "apns-topic",
            HeaderValue::from_static("com.example.other.voip"),
        );
    })
    .await;
    assert_eq!(
        status_json(r).await,
        (400, json!({"reason": "TopicDisallowed"}))
    );
    let other = cert_client(
        &m.ca_pem(),
        &m.issue_client_cert("com.example.other").unwrap(),
    );
    let r = push(&other, &m.production_url(), TOKEN, "", VOIP_BODY, no_auth).await;
    assert_eq!(
        status_json(r).await,
        (400, json!({"reason": "TopicDisallowed"}))
    );
    assert_eq!(
        m.requests().pop().unwrap().client_cert_uid.as_deref(),
        Some("com.example.other")
    );

    // A production-only certificate on the sandbox host.
    let r = push(&c, &m.sandbox_url(), TOKEN, "", VOIP_BODY, no_auth).await;
    assert_eq!(
        status_json(r).await,
        (403, json!({"reason": "BadCertificateEnvironment"}))
    );

    // Token clients keep working on the same listeners; no certificate and no token is 403.
    let plain = client(&m.ca_pem());
    let jwt = m.provider_token();
    let r = push(&plain, &m.production_url(), TOKEN, &jwt, VOIP_BODY, |_| {}).await;
    assert_eq!(r.status(), 200);
    assert_eq!(m.requests().pop().unwrap().client_cert_uid, None);
    let r = push(&plain, &m.production_url(), TOKEN, "", VOIP_BODY, no_auth).await;
    assert_eq!(
        status_json(r).await,
        (403, json!({"reason": "MissingProviderToken"}))
    );

    // A certificate from another CA fails the TLS handshake: nothing reaches the handler.
    let before = m.requests().len();
    let foreign = res_push_mocks::TestCa::new()
        .unwrap()
        .issue_apns_client_cert(BUNDLE)
        .unwrap();
    let c = cert_client(&m.ca_pem(), &foreign);
    let err = c
        .post(format!("{}/3/device/{TOKEN}", m.production_url()))
        .header("apns-topic", "com.example.phone.voip")
        .header("apns-push-type", "voip")
        .body(VOIP_BODY)
        .send()
        .await;
    assert!(err.is_err(), "{err:?}");
    assert_eq!(m.requests().len(), before);
}

#[tokio::test]
async fn without_certificate_auth_a_client_certificate_is_not_asked_for() {
    let m = mock().await;
    let c = cert_client(&m.ca_pem(), &m.issue_client_cert(BUNDLE).unwrap());
    let r = push(&c, &m.production_url(), TOKEN, "", VOIP_BODY, no_auth).await;
    assert_eq!(
        status_json(r).await,
        (403, json!({"reason": "MissingProviderToken"}))
    );
    assert_eq!(m.requests().pop().unwrap().client_cert_uid, None);
}
