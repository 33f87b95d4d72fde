//! Protocol-faithful mock APNs and FCM servers for res_push's tests.
//!
//! - [`MockApns`]: Apple's HTTP/2 provider API with token (ES256 JWT) auth and, optionally,
//!   certificate auth (TLS client certificates from the [`TestCa`], bundle id in the subject
//!   `UID`), on two listeners standing in for the sandbox and production hosts.
//! - [`MockFcm`]: FCM HTTP v1 `messages:send` plus the OAuth2 JWT-bearer token endpoint that
//!   the service-account JSON's `token_uri` names.
//!
//! Both serve TLS with a certificate from a [`TestCa`] generated at start, validate requests
//! the way the real services document, answer with the real services' error shapes, record
//! every request ([`RecordedRequest`]), take per-device-token [`Behavior`] scripts, and run on
//! a [`Clock`] that tests can move forward.
//!
//! The `res-push-mock` binary runs both with a plain-HTTP admin API (see [`admin`]) for tests
//! that drive a real Asterisk.

pub mod admin;
pub mod apns;
pub mod clock;
pub mod fcm;
pub mod jwt;
pub mod oauth;
pub mod record;
pub mod script;
mod server;
pub mod tls;

pub use apns::{ApnsCredentials, ApnsOptions, MockApns};
pub use clock::Clock;
pub use fcm::{FcmOptions, MockFcm};
pub use record::{Endpoint, Environment, RecordedRequest, Service};
pub use script::Behavior;
pub use tls::{ClientCert, TestCa};
