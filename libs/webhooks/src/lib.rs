//! Signing outbound HTTP calls per the Standard Webhooks specification
//! (<https://www.standardwebhooks.com>), so receivers verify them with any Standard Webhooks
//! library:
//!
//! - `webhook-id`: the event's stable id (receivers deduplicate on it);
//! - `webhook-timestamp`: Unix seconds (receivers reject stale ones, which stops replays);
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, several
//!   space-separated during a secret rotation.
//!
//! Secrets have the `whsec_<base64>` form. Eddy never stores them in Kafka: a record holds a
//! reference (`derived:v1:<salt>`), and the secret is derived from the installation's secret
//! key (`EDDY_SECRET_KEY`) and that reference whenever it is needed ([`SecretKey::derive`]).

pub mod destination;

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";
const SECRET_PREFIX: &str = "whsec_";

/// The key-derivation purpose of webhook subscriptions' signing secrets (see
/// [`SecretKey::derive`]): the admin service derives a new subscription's secret with it, the
/// sender each delivery's.
pub const SUBSCRIPTION_SECRET_PURPOSE: &str = "webhook";

/// What places an event on its partition of the events topic (and its attempts and dead letter
/// on the same one): `<subscription id>/<ordering key>`, so a conversation's events for one
/// subscription stay in order on one partition while a busy subscription still spreads over
/// all of them.
pub fn event_placement(subscription_id: &str, ordering_key: Option<&str>) -> String {
    format!("{subscription_id}/{}", ordering_key.unwrap_or_default())
}
const REFERENCE_PREFIX: &str = "derived:v1:";

/// Why a secret or a signature is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("a signing secret must look like whsec_<base64>")]
    MalformedSecret,
    #[error("the secret reference {0:?} is not one Eddy made (derived:v1:<salt>)")]
    UnknownReference(String),
    #[error("no random bytes available: {0}")]
    Random(String),
    #[error("the signature does not match")]
    Mismatch,
    #[error("the timestamp is outside the tolerance")]
    Stale,
}

/// A Standard Webhooks signing secret (the key bytes behind `whsec_<base64>`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Self, SigningError> {
        let encoded = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SigningError::MalformedSecret)?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| SigningError::MalformedSecret)?;
        if key.len() < 16 {
            return Err(SigningError::MalformedSecret);
        }
        Ok(SigningSecret(key))
    }

    /// The `whsec_<base64>` text, to hand to the receiver once.
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<base64 signature>` of one message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", STANDARD.encode(self.mac(id, timestamp, body)))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            // HMAC accepts keys of any length.
            .unwrap_or_else(|_| unreachable_hmac());
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }

    /// Verifies a `webhook-signature` header value (any of its signatures may match) and that
    /// `timestamp` is within `tolerance_seconds` of `now`.
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        signatures: &str,
        now: i64,
        tolerance_seconds: i64,
    ) -> Result<(), SigningError> {
        if (now - timestamp).abs() > tolerance_seconds {
            return Err(SigningError::Stale);
        }
        let expected = self.mac(id, timestamp, body);
        let matches = signatures
            .split(' ')
            .filter_map(|signature| signature.strip_prefix("v1,"))
            .filter_map(|encoded| STANDARD.decode(encoded).ok())
            .any(|candidate| {
                candidate.len() == expected.len()
                    && candidate
                        .iter()
                        .zip(&expected)
                        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                        == 0
            });
        if matches {
            Ok(())
        } else {
            Err(SigningError::Mismatch)
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_hmac() -> Hmac<Sha256> {
    panic!("HMAC-SHA256 takes keys of any length")
}

/// The `webhook-signature` header value for a message signed with every secret in `secrets`
/// (the current one and, during a rotation, the previous ones).
pub fn signature_header(
    secrets: &[SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The installation's secret key, from which every endpoint's signing secret is derived.
#[derive(Clone)]
pub struct SecretKey(Vec<u8>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    pub fn new(key: &[u8]) -> Self {
        SecretKey(key.to_vec())
    }

    /// A fresh reference to store in a record (`derived:v1:<random salt>`).
    pub fn new_reference() -> Result<String, SigningError> {
        let mut salt = [0u8; 18];
        getrandom::fill(&mut salt).map_err(|error| SigningError::Random(error.to_string()))?;
        Ok(format!(
            "{REFERENCE_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(salt)
        ))
    }

    /// The signing secret a reference stands for: HMAC-SHA256(key, "<purpose>\0<reference>").
    pub fn derive(&self, purpose: &str, reference: &str) -> Result<SigningSecret, SigningError> {
        if !reference.starts_with(REFERENCE_PREFIX) {
            return Err(SigningError::UnknownReference(reference.to_owned()));
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable_hmac());
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(reference.as_bytes());
        Ok(SigningSecret(mac.finalize().into_bytes().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference implementations.
    #[test]
    fn signs_like_the_reference_implementation() {
        let secret =
            SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let timestamp = 1_614_265_330;
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign(id, timestamp, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let header = signature_header(std::slice::from_ref(&secret), id, timestamp, body);
        assert_eq!(
            secret.verify(id, timestamp, body, &header, timestamp + 10, 300),
            Ok(())
        );
        assert_eq!(
            secret.verify(id, timestamp, b"{}", &header, timestamp, 300),
            Err(SigningError::Mismatch)
        );
        assert_eq!(
            secret.verify(id, timestamp, body, &header, timestamp + 301, 300),
            Err(SigningError::Stale)
        );
    }

    #[test]
    fn derived_secrets_are_stable_per_reference_and_differ_between_references() {
        let key = SecretKey::new(b"installation secret key");
        let reference = SecretKey::new_reference().expect("reference");
        let first = key.derive("source", &reference).expect("derive");
        assert_eq!(first, key.derive("source", &reference).expect("derive"));
        assert_ne!(first, key.derive("webhook", &reference).expect("derive"));
        let other = SecretKey::new_reference().expect("reference");
        assert_ne!(first, key.derive("source", &other).expect("derive"));
        assert_eq!(SigningSecret::parse(&first.expose()), Ok(first));
        assert!(key.derive("source", "plain").is_err());
        assert!(SigningSecret::parse("secret").is_err());
    }
}
