//! The plain-HTTP admin API of `res-push-mock`, for test scripts that cannot link the library
//! (shell, the Asterisk harness).
//!
//! - `GET /requests`: JSON array of every recorded request of both mocks, oldest first, each
//!   with its `service` (`apns`/`fcm`).
//! - `POST /script`: `{"service":"apns"|"fcm","token":"...","behaviors":[Behavior, ...]}`.
//! - `POST /clear`: forgets recorded requests and scripts of both mocks.
//! - `POST /clock/advance`: `{"seconds": N}` moves both mocks' clock forward.
//! - `GET /stats`: connection and token-endpoint counters.
//! - `GET /health`: `ok`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::record::Service;
use crate::{Behavior, MockApns, MockFcm};

#[derive(Deserialize)]
struct ScriptRequest {
    service: Service,
    token: String,
    behaviors: Vec<Behavior>,
}

#[derive(Deserialize)]
struct AdvanceRequest {
    #[serde(default)]
    seconds: u64,
    #[serde(default)]
    ms: u64,
}

/// Both mocks, as the admin API sees them.
#[derive(Debug, Clone)]
pub struct Mocks {
    /// The APNs mock.
    pub apns: Arc<MockApns>,
    /// The FCM mock.
    pub fcm: Arc<MockFcm>,
}

/// Binds `addr` and serves the admin API in a background task; returns the bound address.
pub async fn spawn(addr: SocketAddr, mocks: Mocks) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let mocks = mocks.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let mocks = mocks.clone();
                    async move { Ok::<_, Infallible>(route(req, &mocks).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn route(req: Request<Incoming>, m: &Mocks) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, 1 << 20).collect().await else {
        return reply(StatusCode::BAD_REQUEST, json!({"error": "unreadable body"}));
    };
    let body = body.to_bytes();
    match (parts.method, parts.uri.path()) {
        (Method::GET, "/health") => reply(StatusCode::OK, json!("ok")),
        (Method::GET, "/requests") => {
            let mut all = m.apns.requests();
            all.extend(m.fcm.requests());
            all.sort_by_key(|r| r.real_received_at_ms);
            reply(StatusCode::OK, json!(all))
        }
        (Method::POST, "/script") => match serde_json::from_slice::<ScriptRequest>(&body) {
            Ok(s) => {
                let n = s.behaviors.len();
                match s.service {
                    Service::Apns => m.apns.script(&s.token, s.behaviors),
                    Service::Fcm => m.fcm.script(&s.token, s.behaviors),
                }
                reply(StatusCode::OK, json!({"queued": n}))
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        (Method::POST, "/clear") => {
            m.apns.clear();
            m.apns.clear_scripts();
            m.fcm.clear();
            m.fcm.clear_scripts();
            reply(StatusCode::OK, json!({"cleared": true}))
        }
        (Method::POST, "/clock/advance") => match serde_json::from_slice::<AdvanceRequest>(&body) {
            Ok(a) => {
                let by = Duration::from_secs(a.seconds) + Duration::from_millis(a.ms);
                m.apns.advance_clock(by);
                // A shared clock must move once, not twice.
                if !m.fcm.clock().same_as(&m.apns.clock()) {
                    m.fcm.advance_clock(by);
                }
                reply(
                    StatusCode::OK,
                    json!({"offset_ms": m.apns.clock().offset().as_millis() as u64}),
                )
            }
            Err(e) => reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        (Method::GET, "/stats") => reply(
            StatusCode::OK,
            json!({
                "apns": {"connections": m.apns.connections(), "requests": m.apns.requests().len()},
                "fcm": {
                    "connections": m.fcm.connections(),
                    "requests": m.fcm.requests().len(),
                    "token_requests": m.fcm.token_requests(),
                    "tokens_issued": m.fcm.tokens_issued(),
                },
            }),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"error": "no such admin endpoint"}),
        ),
    }
}
