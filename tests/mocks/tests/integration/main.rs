//! Integration tests of the mocks through a real HTTP/2 client (reqwest on rustls/ring),
//! trusting only the mocks' test CA.

mod apns;
mod binary;
mod common;
mod fcm;
