//! Just enough JWS (RFC 7515) for the two token kinds the mocks check: APNs provider tokens
//! (ES256) and Google service-account assertions (RS256, RFC 7523).
//!
//! The mocks verify with `ring` directly instead of a JWT library so that every rejection is
//! a decision made here, with the reason the real service would give, rather than a library's
//! notion of validity (leeways, required claims) that APNs and Google do not share.
//!
//! The `sign_*` and `*_token` helpers build valid (or deliberately broken) tokens for tests;
//! the client under test is expected to have its own implementation.

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{
    GeneralPurpose, GeneralPurposeConfig, URL_SAFE, URL_SAFE_NO_PAD,
};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair, UnparsedPublicKey};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_rustls::rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject};

/// A JWT split into its parts, header and claims parsed, signature not yet checked.
#[derive(Debug, Clone, Serialize)]
pub struct DecodedJwt {
    /// The JOSE header (`alg`, `kid`, `typ`).
    pub header: Value,
    /// The claims set.
    pub claims: Value,
    #[serde(skip)]
    signing_input: String,
    #[serde(skip)]
    signature: Vec<u8>,
}

impl DecodedJwt {
    /// The header's `alg`.
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric-date claim (`iat`, `exp`) in whole seconds; fractional values are truncated,
    /// negative or non-numeric ones are absent.
    pub fn claim_secs(&self, name: &str) -> Option<u64> {
        let v = self.claims.get(name)?;
        v.as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    }

    /// Checks an ES256 signature (raw `r||s`, as JWS mandates) against an uncompressed
    /// P-256 public point.
    pub fn verify_es256(&self, public_key: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }

    /// Checks an RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature against a DER
    /// `RSAPublicKey`.
    pub fn verify_rs256(&self, public_key: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }
}

/// base64url that takes segments with or without `=` padding.
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Splits a compact JWS and parses its header and claims; segments must be unpadded
/// base64url, as RFC 7515 §2 requires.
pub fn decode(token: &str) -> anyhow::Result<DecodedJwt> {
    decode_with(token, &URL_SAFE_NO_PAD)
}

/// Like [`decode`], also taking `=`-padded segments. Google's token endpoint accepts them, and
/// clients rely on it: yup-oauth2 pads its assertions. The signature still covers the
/// segments exactly as sent.
pub fn decode_allowing_padding(token: &str) -> anyhow::Result<DecodedJwt> {
    decode_with(token, &URL_SAFE_ANY_PADDING)
}

fn decode_with(token: &str, base64url: &GeneralPurpose) -> anyhow::Result<DecodedJwt> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("not a compact JWS (three dot-separated parts)");
    };
    let header: Value =
        serde_json::from_slice(&base64url.decode(h).context("header")?).context("header JSON")?;
    let claims: Value =
        serde_json::from_slice(&base64url.decode(c).context("claims")?).context("claims JSON")?;
    if !header.is_object() || !claims.is_object() {
        bail!("header and claims must be JSON objects");
    }
    let signature = base64url.decode(s).context("signature")?;
    Ok(DecodedJwt {
        header,
        claims,
        signing_input: format!("{h}.{c}"),
        signature,
    })
}

fn signing_input(
    header: &Value,
    claims: &Value,
    base64url: &GeneralPurpose,
) -> anyhow::Result<String> {
    Ok(format!(
        "{}.{}",
        base64url.encode(serde_json::to_vec(header)?),
        base64url.encode(serde_json::to_vec(claims)?)
    ))
}

fn pkcs8_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let key = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow!("PKCS#8 PEM private key: {e:?}"))?;
    Ok(key.secret_pkcs8_der().to_vec())
}

/// Signs `header`/`claims` with ES256 using a PKCS#8 PEM P-256 key (an Apple `.p8` file).
pub fn sign_es256(p8_pem: &str, header: &Value, claims: &Value) -> anyhow::Result<String> {
    let rng = SystemRandom::new();
    let key = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8_der(p8_pem)?,
        &rng,
    )
    .map_err(|e| anyhow!("P-256 key: {e}"))?;
    let input = signing_input(header, claims, &URL_SAFE_NO_PAD)?;
    let sig = key
        .sign(&rng, input.as_bytes())
        .map_err(|e| anyhow!("ES256 signing: {e}"))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

/// Signs `header`/`claims` with RS256 using a PKCS#8 PEM RSA key (a service account's
/// `private_key`).
pub fn sign_rs256(pkcs8_pem: &str, header: &Value, claims: &Value) -> anyhow::Result<String> {
    sign_rs256_with(pkcs8_pem, header, claims, &URL_SAFE_NO_PAD)
}

/// Like [`sign_rs256`] with `=`-padded segments, as yup-oauth2 builds its assertions.
pub fn sign_rs256_padded(
    pkcs8_pem: &str,
    header: &Value,
    claims: &Value,
) -> anyhow::Result<String> {
    sign_rs256_with(pkcs8_pem, header, claims, &URL_SAFE)
}

fn sign_rs256_with(
    pkcs8_pem: &str,
    header: &Value,
    claims: &Value,
    base64url: &GeneralPurpose,
) -> anyhow::Result<String> {
    let key =
        RsaKeyPair::from_pkcs8(&pkcs8_der(pkcs8_pem)?).map_err(|e| anyhow!("RSA key: {e}"))?;
    let input = signing_input(header, claims, base64url)?;
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|e| anyhow!("RS256 signing: {e}"))?;
    Ok(format!("{input}.{}", base64url.encode(sig)))
}

/// An APNs provider token as Apple specifies it: header `{"alg":"ES256","kid"}`, claims
/// `{"iss": team id, "iat"}`.
pub fn apns_provider_token(
    p8_pem: &str,
    key_id: &str,
    team_id: &str,
    iat: u64,
) -> anyhow::Result<String> {
    sign_es256(
        p8_pem,
        &json!({"alg": "ES256", "kid": key_id}),
        &json!({"iss": team_id, "iat": iat}),
    )
}

/// A service-account assertion for the OAuth2 JWT-bearer grant (RFC 7523) as Google's
/// client libraries build it from a service-account JSON: `iss` = `client_email`,
/// `aud` = `token_uri`, `scope` = FCM's scope, one hour of validity from `iat`.
pub fn google_assertion(service_account: &Value, iat: u64) -> anyhow::Result<String> {
    let (header, claims, key) = google_assertion_parts(service_account, iat)?;
    sign_rs256(key, &header, &claims)
}

/// [`google_assertion`] with `=`-padded segments, as yup-oauth2 sends it.
pub fn google_assertion_padded(service_account: &Value, iat: u64) -> anyhow::Result<String> {
    let (header, claims, key) = google_assertion_parts(service_account, iat)?;
    sign_rs256_padded(key, &header, &claims)
}

fn google_assertion_parts(
    service_account: &Value,
    iat: u64,
) -> anyhow::Result<(Value, Value, &str)> {
    let field = |name: &str| {
        service_account
            .get(name)
            .and_then(Value::as_str)
            .with_context(|| format!("service account JSON lacks {name}"))
    };
    Ok((
        json!({"alg": "RS256", "typ": "JWT", "kid": field("private_key_id")?}),
        json!({
            "iss": field("client_email")?,
            "aud": field("token_uri")?,
            "scope": crate::oauth::FCM_SCOPE,
            "iat": iat,
            "exp": iat + 3600,
        }),
        field("private_key")?,
    ))
}

/// The uncompressed public point of a PKCS#8 PEM P-256 key.
pub(crate) fn p256_public_key(p8_pem: &str) -> anyhow::Result<Vec<u8>> {
    let key = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8_der(p8_pem)?,
        &SystemRandom::new(),
    )
    .map_err(|e| anyhow!("P-256 key: {e}"))?;
    Ok(ring::signature::KeyPair::public_key(&key).as_ref().to_vec())
}

/// The DER `RSAPublicKey` of a PKCS#8 PEM RSA key.
pub(crate) fn rsa_public_key(pkcs8_pem: &str) -> anyhow::Result<Vec<u8>> {
    let key =
        RsaKeyPair::from_pkcs8(&pkcs8_der(pkcs8_pem)?).map_err(|e| anyhow!("RSA key: {e}"))?;
    Ok(ring::signature::KeyPair::public_key(&key).as_ref().to_vec())
}

/// `n` random bytes as lowercase hex (access tokens, ids).
pub(crate) fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    // The OS RNG failing is not something a test mock can recover from.
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random number generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4 UUID in canonical lowercase form (APNs `apns-id`).
pub(crate) fn random_uuid() -> String {
    let mut h = random_hex(16).into_bytes();
    h[12] = b'4';
    // Variant bits 10xx: the 17th hex digit is one of 8, 9, a, b.
    h[16] = b"89ab"[usize::from(h[16] % 4)];
    let s = String::from_utf8(h).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_round_trip_and_tamper() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = key.serialize_pem();
        let token = apns_provider_token(&pem, "KEY1234567", "TEAM123456", 1_700_000_000).unwrap();
        let d = decode(&token).unwrap();
        assert_eq!(d.alg(), Some("ES256"));
        assert_eq!(d.kid(), Some("KEY1234567"));
        assert_eq!(d.claim_secs("iat"), Some(1_700_000_000));
        let pk = p256_public_key(&pem).unwrap();
        assert!(d.verify_es256(&pk));
        let other = p256_public_key(&rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap();
        assert!(!d.verify_es256(&other));
    }

    #[test]
    fn uuid_is_canonical_v4() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }

    #[test]
    fn padded_segments_are_taken_only_where_allowed() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = key.serialize_pem();
        // Claims whose JSON length is not a multiple of 3, so padding shows.
        let claims = json!({"iss": "TEAM123456", "iat": 1_700_000_000, "x": "ab"});
        let unpadded = sign_es256(&pem, &json!({"alg": "ES256"}), &claims).unwrap();
        let (h, rest) = unpadded.split_once('.').unwrap();
        let (c, s) = rest.split_once('.').unwrap();
        let pad = |seg: &str| format!("{seg}{}", "=".repeat((4 - seg.len() % 4) % 4));
        let padded = format!("{}.{}.{}", pad(h), pad(c), pad(s));
        assert!(padded.contains('='), "{padded}");
        assert!(decode(&padded).is_err(), "strict decoding refuses padding");
        let d = decode_allowing_padding(&padded).unwrap();
        assert_eq!(d.claim_secs("iat"), Some(1_700_000_000));
        assert_eq!(d.signing_input, format!("{}.{}", pad(h), pad(c)));
        assert!(decode_allowing_padding(&unpadded).is_ok());
        assert!(decode_allowing_padding("!!.??.x").is_err());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode("a.b").is_err());
        assert!(decode("a.b.c.d").is_err());
        assert!(decode("!!.??.x").is_err());
    }
}
