//! APNs provider tokens: ES256 JWTs signed with the team's `.p8` key.
//!
//! Apple wants the same token reused for 20 to 60 minutes: signing one per request gets
//! `TooManyProviderTokenUpdates`, keeping one past an hour gets `ExpiredProviderToken`. So a
//! token is cached and replaced only once it is older than the configured age, or once when
//! APNs calls it expired (our clock may be behind Apple's).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair},
};
use serde_json::json;

use crate::clock::Clock;

/// APNs refuses new provider tokens more often than this on one connection.
const MIN_UPDATE_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// A bearer credential to send, and which token it was (to expire exactly that one).
#[derive(Debug, Clone)]
pub(crate) struct Bearer {
    /// The whole `authorization` header value.
    pub(crate) header: Arc<str>,
    /// Increases with every token signed.
    pub(crate) generation: u64,
    /// Whether this call signed it (for the metrics of credential refreshes).
    pub(crate) fresh: bool,
}

#[derive(Debug)]
struct Issued {
    header: Arc<str>,
    issued_at: SystemTime,
    generation: u64,
    /// Signed because APNs said the previous one was expired; if APNs says this one is
    /// expired too, the clocks disagree and signing more would only get us throttled.
    forced: bool,
}

#[derive(Debug, Default)]
struct State {
    current: Option<Issued>,
    generation: u64,
    force_next: bool,
}

/// Signs and caches the provider token of one APNs key.
#[derive(Debug)]
pub(crate) struct ProviderToken {
    key: EcdsaKeyPair,
    key_id: String,
    team_id: String,
    max_age: Duration,
    clock: Clock,
    rng: SystemRandom,
    state: Mutex<State>,
}

impl ProviderToken {
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
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (plain field writes).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token to send now: the cached one while young enough, else a newly signed one.
    pub(crate) fn bearer(&self) -> Result<Bearer, String> {
        let now = self.clock.now();
        let mut state = self.state();
        if let Some(issued) = &state.current {
            // A clock that went backwards counts as age zero rather than as expiry.
            let age = now.duration_since(issued.issued_at).unwrap_or_default();
            if age < self.max_age && !state.force_next {
                return Ok(Bearer {
                    header: Arc::clone(&issued.header),
                    generation: issued.generation,
                    fresh: false,
                });
            }
        }
        let jwt = self.sign(now)?;
        state.generation += 1;
        let issued = Issued {
            header: format!("bearer {jwt}").into(),
            issued_at: now,
            generation: state.generation,
            forced: std::mem::take(&mut state.force_next),
        };
        let bearer = Bearer {
            header: Arc::clone(&issued.header),
            generation: issued.generation,
            fresh: true,
        };
        state.current = Some(issued);
        Ok(bearer)
    }

    /// APNs refused token `generation` as expired. Returns whether a retry with another token
    /// makes sense: yes when a newer one exists or one will be signed; no when the refused one
    /// was itself signed after such a refusal, or is younger than APNs' 20-minute update
    /// interval (a new one would only get `TooManyProviderTokenUpdates`). Either way the clocks
    /// disagree by far more than a refresh can fix, and only an operator can help.
    pub(crate) fn expire(&self, generation: u64) -> bool {
        let now = self.clock.now();
        let mut state = self.state();
        match &state.current {
            Some(issued) if issued.generation == generation => {
                let age = now.duration_since(issued.issued_at).unwrap_or_default();
                if issued.forced || age < MIN_UPDATE_INTERVAL {
                    return false;
                }
                state.current = None;
                state.force_next = true;
                true
            }
            // Someone else already replaced it.
            _ => true,
        }
    }

    fn sign(&self, now: SystemTime) -> Result<String, String> {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, KeyPair, UnparsedPublicKey};

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
        let t = ProviderToken::new(
            pkcs8.as_ref(),
            "KEY1234567",
            "TEAM123456",
            Duration::from_secs(max_age_min * 60),
            Clock::from(Arc::clone(&clock)),
        )
        .unwrap();
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

    #[test]
    fn token_is_a_verifiable_es256_jwt_with_kid_iss_iat() {
        let (t, _clock, public) = signer(50);
        let b = t.bearer().unwrap();
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

    #[test]
    fn token_is_reused_until_the_refresh_age() {
        let (t, clock, _) = signer(50);
        let first = t.bearer().unwrap();
        assert!(first.fresh);
        clock.advance(Duration::from_secs(49 * 60));
        let again = t.bearer().unwrap();
        assert_eq!(again.header, first.header);
        assert!(!again.fresh);
        clock.advance(Duration::from_secs(60));
        let next = t.bearer().unwrap();
        assert_ne!(next.header, first.header);
        assert!(next.fresh);
        assert_eq!(next.generation, first.generation + 1);
    }

    #[test]
    fn expired_by_apns_forces_one_refresh_only() {
        let (t, clock, _) = signer(50);
        let first = t.bearer().unwrap();
        // Too young to be really expired: replacing it would be throttled.
        assert!(!t.expire(first.generation));
        clock.advance(Duration::from_secs(30 * 60));
        assert!(t.expire(first.generation));
        let second = t.bearer().unwrap();
        assert_ne!(second.header, first.header);
        // A late report about the old token changes nothing.
        assert!(t.expire(first.generation));
        assert_eq!(t.bearer().unwrap().header, second.header);
        // The fresh token refused as well, even later: the clocks disagree, stop signing.
        clock.advance(Duration::from_secs(30 * 60));
        assert!(!t.expire(second.generation));
        assert_eq!(t.bearer().unwrap().header, second.header);
        // Normal ageing still replaces it.
        clock.advance(Duration::from_secs(30 * 60));
        assert_ne!(t.bearer().unwrap().header, second.header);
    }

    #[test]
    fn garbage_key_is_refused() {
        let err = ProviderToken::new(b"nope", "K", "T", Duration::from_secs(60), Clock::system())
            .unwrap_err();
        assert!(err.contains("P-256"), "{err}");
    }
}
