//! Prometheus metrics, and the optional endpoint that serves them (`--metrics-listen`).
//!
//! Counters are always kept (they cost a few atomics); the endpoint is off unless asked for,
//! since it listens on TCP and the sidecar otherwise needs no network port at all.

use std::{convert::Infallible, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::{Registry, Unit},
};
use res_push_proto::Provider;
use tokio::net::TcpListener;
use tokio_util::{bytes::Bytes, sync::CancellationToken};
use tracing::{debug, info, warn};

/// The content type of the OpenMetrics text format `prometheus-client` writes.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Provider name as used in labels.
pub(crate) fn provider_label(provider: Provider) -> &'static str {
    match provider {
        Provider::Apns => "apns",
        Provider::Fcm => "fcm",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PushLabels {
    provider: String,
    app: String,
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    provider: String,
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    provider: String,
    app: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    app: String,
    reason: String,
}

fn latency_histogram() -> Histogram {
    // 5 ms .. ~20 s: APNs answers in tens of milliseconds, a stalled connection in seconds.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Every metric the sidecar exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pushes: Family<PushLabels, Counter>,
    request_duration: Family<AppLabels, Histogram, fn() -> Histogram>,
    retries: Family<AppLabels, Counter>,
    credentials: Family<AppLabels, Counter>,
    config_errors: Family<ConfigLabels, Counter>,
    connection_up: Family<EndpointLabels, Gauge>,
    queued: Gauge,
    inflight: Gauge,
    expired_queued: Counter,
    module_connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("res_push");
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register(
            "pushes",
            "Pushes finished, by provider, app, result (sent, invalid_token, failed_<class>, expired) and provider reason",
            pushes.clone(),
        );
        let request_duration: Family<AppLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "provider_request_duration",
            "Time from sending one HTTP request to APNs/FCM to its answer",
            Unit::Seconds,
            request_duration.clone(),
        );
        let retries = Family::<AppLabels, Counter>::default();
        registry.register(
            "push_retries",
            "HTTP attempts repeated after a passing failure (throttling, server error, lost connection)",
            retries.clone(),
        );
        let credentials = Family::<AppLabels, Counter>::default();
        registry.register(
            "credential_refreshes",
            "APNs provider tokens signed and FCM access tokens fetched",
            credentials.clone(),
        );
        let config_errors = Family::<ConfigLabels, Counter>::default();
        registry.register(
            "config_errors",
            "Pushes refused because of the app's configuration (credentials, topic, sender id)",
            config_errors.clone(),
        );
        let connection_up = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "provider_connection_up",
            "1 when the last request to this provider endpoint got an HTTP answer, 0 when it failed to connect",
            connection_up.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "pushes_queued",
            "Pushes waiting for a free sending slot (--max-inflight or the app's max_concurrency)",
            queued.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "pushes_inflight",
            "Pushes holding a sending slot",
            inflight.clone(),
        );
        let expired_queued = Counter::default();
        registry.register(
            "pushes_expired_in_queue",
            "Pushes whose deadline passed while they waited for a sending slot; never sent",
            expired_queued.clone(),
        );
        let module_connections = Gauge::default();
        registry.register(
            "module_connections",
            "Connections from res_push.so currently open",
            module_connections.clone(),
        );
        Self {
            registry,
            pushes,
            request_duration,
            retries,
            credentials,
            config_errors,
            connection_up,
            queued,
            inflight,
            expired_queued,
            module_connections,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    fn app(provider: Provider, app: &str) -> AppLabels {
        AppLabels {
            provider: provider_label(provider).to_owned(),
            app: app.to_owned(),
        }
    }

    pub(crate) fn push_finished(&self, provider: &str, app: &str, result: &str, reason: &str) {
        // Reasons come from providers; bound their length so a chatty one cannot bloat a label.
        let reason: String = reason.chars().take(64).collect();
        self.pushes
            .get_or_create(&PushLabels {
                provider: provider.to_owned(),
                app: app.to_owned(),
                result: result.to_owned(),
                reason,
            })
            .inc();
    }

    pub(crate) fn request_took(&self, provider: Provider, app: &str, took: Duration) {
        self.request_duration
            .get_or_create(&Self::app(provider, app))
            .observe(took.as_secs_f64());
    }

    pub(crate) fn retried(&self, provider: Provider, app: &str) {
        self.retries.get_or_create(&Self::app(provider, app)).inc();
    }

    pub(crate) fn credential_refreshed(&self, provider: Provider, app: &str) {
        self.credentials
            .get_or_create(&Self::app(provider, app))
            .inc();
    }

    pub(crate) fn config_error(&self, app: &str, reason: &str) {
        self.config_errors
            .get_or_create(&ConfigLabels {
                app: app.to_owned(),
                reason: reason.chars().take(64).collect(),
            })
            .inc();
    }

    pub(crate) fn connection_state(&self, provider: Provider, app: &str, endpoint: &str, up: bool) {
        self.connection_up
            .get_or_create(&EndpointLabels {
                provider: provider_label(provider).to_owned(),
                app: app.to_owned(),
                endpoint: endpoint.to_owned(),
            })
            .set(i64::from(up));
    }

    pub(crate) fn queued(&self) -> &Gauge {
        &self.queued
    }

    pub(crate) fn inflight(&self) -> &Gauge {
        &self.inflight
    }

    pub(crate) fn expired_in_queue(&self) {
        self.expired_queued.inc();
    }

    pub(crate) fn module_connections(&self) -> &Gauge {
        &self.module_connections
    }
}

/// Decrements a gauge when dropped, so early returns and cancellation cannot leave it high.
#[derive(Debug)]
pub(crate) struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub(crate) fn inc(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics on /metrics");
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("metrics accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, Arc::clone(&metrics)));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, "metrics connection: {e}");
                    }
                    return;
                }
            }
            let _ = conn.await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if req.uri().path() != "/metrics" {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"try /metrics\n")))
    } else if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET, HEAD")
            .body(Full::new(Bytes::new()))
    } else {
        Response::builder()
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(metrics.render())))
    };
    // The builder only fails on invalid header values, and ours are constants.
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.push_finished("apns", "ios", "sent", "");
        m.push_finished("fcm", "android", "invalid_token", "UNREGISTERED");
        m.request_took(Provider::Apns, "ios", Duration::from_millis(12));
        m.connection_state(Provider::Apns, "ios", "production", true);
        let _q = GaugeGuard::inc(m.queued());
        let text = m.render();
        assert!(
            text.contains(
                r#"res_push_pushes_total{provider="apns",app="ios",result="sent",reason=""} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"res_push_pushes_total{provider="fcm",app="android",result="invalid_token",reason="UNREGISTERED"} 1"#
        ));
        assert!(text.contains(
            r#"res_push_provider_request_duration_seconds_count{provider="apns",app="ios"} 1"#
        ));
        assert!(text.contains(
            r#"res_push_provider_connection_up{provider="apns",app="ios",endpoint="production"} 1"#
        ));
        assert!(text.contains("res_push_pushes_queued 1"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn gauge_guard_undoes_its_increment() {
        let m = Metrics::new();
        {
            let _a = GaugeGuard::inc(m.inflight());
            let _b = GaugeGuard::inc(m.inflight());
            assert_eq!(m.inflight().get(), 2);
        }
        assert_eq!(m.inflight().get(), 0);
    }
}
