//! APNs provider tokens: ES256 JWTs signed with the team's `.p8` key.
//!
//! Apple wants the same token reused for 20 to 60 minutes: signing one per request gets
//! `TooManyProviderTokenUpdates`, keeping one past an hour gets `ExpiredProviderToken`. So a
//! token is cached ([`CredentialCache`]) and replaced only once it is older than the configured
//! age, or once when APNs calls it expired (our clock may be behind Apple's). Signing takes
//! microseconds, so it is not done ahead: the push that finds the token due waits for it.

use std::{sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use serde_json::json;

use crate::{
    clock::Clock,
    credential::{CredentialCache, Mint, Minted, Owner, Policy, Refresh},
};

/// APNs refuses new provider tokens more often than this on one connection.
const MIN_UPDATE_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// The cached provider token of one APNs key.
pub(crate) type ProviderToken = CredentialCache<Signer>;

/// Signs provider tokens with one APNs key.
#[derive(Debug)]
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    /// Age after which a token is replaced.
    max_age: Duration,
    clock: Clock,
    rng: SystemRandom,
}

impl Signer {
    /// A signer for the PKCS#8 DER `key` (a `.p8` file's contents, decoded).
    pub(crate) fn new(
        pkcs8: &[u8],
        key_id: &str,
        team_id: &str,
        max_age: Duration,
        clock: Clock,
    ) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|e| format!("not a P-256 EC private key as APNs .p8 keys are: {e}"))?;
        Ok(Self {
            key,
            key_id: key_id.to_owned(),
            team_id: team_id.to_owned(),
            max_age,
            clock,
            rng,
        })
    }

    /// The cache handing out this signer's tokens.
    pub(crate) fn into_cache(self, owner: Owner) -> ProviderToken {
        let clock = self.clock.clone();
        let policy = Policy {
            refresh: Refresh::AtExpiry,
            min_replace_age: MIN_UPDATE_INTERVAL,
        };
        CredentialCache::new(self, policy, clock, owner)
    }

    fn sign(&self) -> Result<String, String> {
        // `iat` is wall time, as Apple reads it; the token's age is kept on the monotonic clock.
        let iat = self.clock.unix_seconds();
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let claims = json!({"iss": self.team_id, "iat": iat});
        let mut token = String::new();
        URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims.to_string(), &mut token);
        let signature = self
            .key
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| "signing the provider token failed".to_owned())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

impl Mint for Signer {
    type Error = String;

    async fn mint(&self) -> Result<Minted, String> {
        let jwt = self.sign()?;
        Ok(Minted {
            header: Arc::from(format!("bearer {jwt}")),
            lifetime: self.max_age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{clock::ManualClock, metrics::Metrics};
    use res_push_proto::Provider;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};
    use std::time::SystemTime;

    fn signer(max_age_min: u64) -> (ProviderToken, Arc<ManualClock>, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let public =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap()
                .public_key()
                .as_ref()
                .to_vec();
        let clock = ManualClock::new();
        let t = Signer::new(
            pkcs8.as_ref(),
            "KEY1234567",
            "TEAM123456",
            Duration::from_secs(max_age_min * 60),
            Clock::from(Arc::clone(&clock)),
        )
        .unwrap()
        .into_cache(Owner {
            provider: Provider::Apns,
            app: "ios".into(),
            metrics: Arc::new(Metrics::new()),
        });
        (t, clock, public)
    }

    fn parts(header: &str) -> (serde_json::Value, serde_json::Value, Vec<u8>, String) {
        let jwt = header.strip_prefix("bearer ").unwrap();
        let mut it = jwt.split('.');
        let (h, c, s) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let de = |p: &str| URL_SAFE_NO_PAD.decode(p).unwrap();
        (
            serde_json::from_slice(&de(h)).unwrap(),
            serde_json::from_slice(&de(c)).unwrap(),
            de(s),
            format!("{h}.{c}"),
        )
    }

    fn iat(header: &str) -> u64 {
        parts(header).1["iat"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn token_is_a_verifiable_es256_jwt_with_kid_iss_iat() {
        let (t, _clock, public) = signer(50);
        let b = t.bearer().await.unwrap();
        let (header, claims, sig, signed) = parts(&b.header);
        assert_eq!(header, json!({"alg": "ES256", "kid": "KEY1234567"}));
        assert_eq!(claims["iss"], "TEAM123456");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(claims["iat"].as_u64().unwrap().abs_diff(now) < 60);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public)
            .verify(signed.as_bytes(), &sig)
            .expect("signature verifies");
    }

    #[tokio::test]
    async fn token_is_reused_until_the_refresh_age_then_replaced_by_the_push_that_finds_it_due() {
        let (t, clock, _) = signer(50);
        let first = t.bearer().await.unwrap();
        clock.advance(Duration::from_secs(49 * 60));
        assert_eq!(t.bearer().await.unwrap().header, first.header);
        clock.advance(Duration::from_secs(60));
        let next = t.bearer().await.unwrap();
        assert_ne!(next.header, first.header);
        assert_eq!(next.generation, first.generation + 1);
    }

    #[tokio::test]
    async fn token_age_is_monotonic_whatever_the_wall_clock_does() {
        let (t, clock, _) = signer(50);
        let first = t.bearer().await.unwrap();
        // NTP steps the wall clock two hours ahead: by age the token is still fresh, and
        // signing a new one now would only get TooManyProviderTokenUpdates.
        clock.step_wall_forward(Duration::from_secs(2 * 3600));
        assert_eq!(t.bearer().await.unwrap().header, first.header);
        // Then three hours back, and 51 minutes really pass: the token is past its age, though
        // the wall clock says it was signed in the future.
        clock.step_wall_back(Duration::from_secs(3 * 3600));
        clock.advance(Duration::from_secs(51 * 60));
        let next = t.bearer().await.unwrap();
        assert_ne!(next.header, first.header);
        // `iat` is still the wall clock, which is what Apple compares it with.
        assert!(iat(&next.header) < iat(&first.header));
    }

    #[tokio::test]
    async fn expired_by_apns_forces_one_refresh_only() {
        let (t, clock, _) = signer(50);
        let first = t.bearer().await.unwrap();
        // Too young to be really expired: replacing it would be throttled.
        assert!(!t.expire(first.generation));
        clock.advance(Duration::from_secs(30 * 60));
        assert!(t.expire(first.generation));
        let second = t.bearer().await.unwrap();
        assert_ne!(second.header, first.header);
        // The fresh token refused as well, even later: the clocks disagree, stop signing.
        clock.advance(Duration::from_secs(25 * 60));
        assert!(!t.expire(second.generation));
        assert_eq!(t.bearer().await.unwrap().header, second.header);
    }

    #[test]
    fn garbage_key_is_refused() {
        let err =
            Signer::new(b"nope", "K", "T", Duration::from_secs(60), Clock::system()).unwrap_err();
        assert!(err.contains("P-256"), "{err}");
    }
}
