//! One exchange with the authorization server: the client credentials grant with a signed JWT
//! assertion (RFC 7523 section 2.2, as SMART Backend Services profiles it), and RFC 7009
//! revocation authenticated the same way.

use std::{fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use fhirwall_policy::TokenBroker;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::keys::{Algorithm, KeyError, SigningKey};
use crate::outbound::{Client, OutboundError};

const FORM: &str = "application/x-www-form-urlencoded";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The assertion's lifetime: SMART asks for no more than five minutes; one is plenty.
const ASSERTION_LIFETIME: i64 = 60;
/// The longest token lifetime taken at its word; longer ones are refreshed as if they lasted
/// this long, so a revocation that the server misses still ends with the next refresh.
const MAX_LIFETIME: Duration = Duration::from_hours(1);

/// An access token and what the server said about it. Never logged or recorded: its `Debug`
/// leaves the token out.
pub struct Issued {
    pub access_token: String,
    pub lifetime: Duration,
    pub expires: Timestamp,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// The `jti` of the assertion it was issued for (what the audit record names).
    pub jti: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("lifetime", &self.lifetime)
            .field("expires", &self.expires)
            .field("scope", &self.scope)
            .field("jti", &self.jti)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("no signing key")]
    Key(#[from] KeyError),
    #[error("signing the client assertion failed")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error("the authorization server is unreachable")]
    Unreachable(#[from] OutboundError),
    #[error("the authorization server refused: HTTP {status} {error}")]
    Refused { status: u16, error: String },
    #[error("the authorization server's answer is not usable: {0}")]
    BadAnswer(&'static str),
    #[error("the system's random source failed")]
    Random,
}

impl GrantError {
    /// The `result` label of `fhirwall_broker_token_fetches_total`.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::Key(_) | Self::Sign(_) | Self::Random => "no_key",
            Self::Unreachable(_) => "unreachable",
            Self::Refused { .. } => "refused",
            Self::BadAnswer(_) => "bad_answer",
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    jti: &'a str,
}

/// RFC 6749 section 5.1 (and 5.2 for `error`).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<u64>,
    scope: Option<String>,
    error: Option<String>,
}

/// Asks for a token with `scope` (space-separated), signing with `key`.
pub async fn request_token(
    client: &mut Client,
    broker: &TokenBroker,
    scope: &str,
    key: &SigningKey,
    now: Timestamp,
) -> Result<Issued, GrantError> {
    let jti = random_id()?;
    let assertion = assertion(broker, key, &jti, now)?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", scope)
        .append_pair("client_assertion_type", ASSERTION_TYPE)
        .append_pair("client_assertion", &assertion)
        .finish();
    let accept = [("Accept", "application/json")];
    let response = client.send(FORM, &accept, Bytes::from(form)).await?;
    let answer: Option<TokenAnswer> = serde_json::from_slice(&response.body).ok();
    if response.status != 200 {
        let error = answer
            .and_then(|a| a.error)
            .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_default();
        return Err(GrantError::Refused {
            status: response.status,
            error,
        });
    }
    let answer = answer.ok_or(GrantError::BadAnswer("not a JSON token response"))?;
    issued(answer, scope, jti, now)
}

/// Checks a token response: a bearer token of header-safe characters, a lifetime, and no scope
/// beyond what was asked for.
fn issued(
    answer: TokenAnswer,
    requested: &str,
    jti: String,
    now: Timestamp,
) -> Result<Issued, GrantError> {
    let token = answer
        .access_token
        .ok_or(GrantError::BadAnswer("no access_token"))?;
    // b64token of RFC 6750 section 2.1: nothing that could end or split a header line.
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if token.is_empty() || token.len() > 8192 || !token.bytes().all(b64token) {
        return Err(GrantError::BadAnswer(
            "the access_token is not a bearer token",
        ));
    }
    if !answer
        .token_type
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(GrantError::BadAnswer("token_type is not Bearer"));
    }
    let seconds = answer
        .expires_in
        .filter(|s| *s > 0)
        .ok_or(GrantError::BadAnswer("no expires_in"))?;
    let lifetime = Duration::from_secs(seconds).min(MAX_LIFETIME);
    let scope = answer.scope.unwrap_or_else(|| requested.to_owned());
    let asked: Vec<&str> = requested.split_ascii_whitespace().collect();
    if !scope.split_ascii_whitespace().all(|s| asked.contains(&s)) {
        return Err(GrantError::BadAnswer(
            "the granted scope is broader than requested",
        ));
    }
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(
            i64::try_from(seconds).unwrap_or(i64::MAX),
        ))
        .unwrap_or(Timestamp::MAX);
    Ok(Issued {
        access_token: token,
        lifetime,
        expires,
        scope,
        jti,
    })
}

/// Revokes `token` at the broker's revocation endpoint (RFC 7009 section 2.1).
pub async fn revoke_token(
    client: &mut Client,
    broker: &TokenBroker,
    token: &str,
    key: &SigningKey,
    now: Timestamp,
) -> Result<(), GrantError> {
    let assertion = assertion(broker, key, &random_id()?, now)?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .append_pair("token_type_hint", "access_token")
        .append_pair("client_assertion_type", ASSERTION_TYPE)
        .append_pair("client_assertion", &assertion)
        .finish();
    let response = client.send(FORM, &[], Bytes::from(form)).await?;
    if response.status == 200 {
        Ok(())
    } else {
        Err(GrantError::Refused {
            status: response.status,
            error: String::new(),
        })
    }
}

/// The signed client assertion: issuer and subject the client id, a unique `jti`, a short `exp`.
fn assertion(
    broker: &TokenBroker,
    key: &SigningKey,
    jti: &str,
    now: Timestamp,
) -> Result<String, GrantError> {
    let mut header = jsonwebtoken::Header::new(match key.algorithm {
        Algorithm::Es384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::Rs384 => jsonwebtoken::Algorithm::RS384,
    });
    header.kid = Some(key.kid.clone());
    let iat = now.as_second();
    let claims = Claims {
        iss: &broker.client_id,
        sub: &broker.client_id,
        aud: broker.audience(),
        exp: iat + ASSERTION_LIFETIME,
        iat,
        jti,
    };
    jsonwebtoken::encode(&header, &claims, &key.key).map_err(GrantError::Sign)
}

/// 128 random bits, base64url: the assertion's `jti`, which the server refuses to see twice.
fn random_id() -> Result<String, GrantError> {
    let bytes: [u8; 16] = ring::rand::generate(&ring::rand::SystemRandom::new())
        .map_err(|_| GrantError::Random)?
        .expose();
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn answer(json: &str) -> TokenAnswer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn token_answers_are_checked_before_use() {
        let now = Timestamp::from_second(1_000).unwrap();
        let asked = "system/Observation.rs system/Patient.s";
        let ok = issued(
            answer(r#"{"access_token":"abc.DEF-_~+/=","token_type":"Bearer","expires_in":30,"scope":"system/Patient.s"}"#),
            asked,
            "j".into(),
            now,
        )
        .unwrap();
        assert_eq!(ok.lifetime, Duration::from_secs(30));
        assert_eq!(ok.expires.as_second(), 1_030);
        assert_eq!(ok.scope, "system/Patient.s");
        assert!(
            !format!("{ok:?}").contains("abc"),
            "Debug leaves the token out"
        );
        let refused = [
            r#"{"token_type":"Bearer","expires_in":30}"#,
            r#"{"access_token":"a\r\nX-Evil: 1","token_type":"Bearer","expires_in":30}"#,
            r#"{"access_token":"a b","token_type":"Bearer","expires_in":30}"#,
            r#"{"access_token":"abc","token_type":"mac","expires_in":30}"#,
            r#"{"access_token":"abc","token_type":"bearer"}"#,
            r#"{"access_token":"abc","token_type":"bearer","expires_in":0}"#,
            r#"{"access_token":"abc","token_type":"bearer","expires_in":30,"scope":"system/*.cruds"}"#,
        ];
        for json in refused {
            assert!(
                matches!(
                    issued(answer(json), asked, "j".into(), now),
                    Err(GrantError::BadAnswer(_))
                ),
                "{json}"
            );
        }
        let long = issued(
            answer(r#"{"access_token":"abc","token_type":"bearer","expires_in":86400}"#),
            asked,
            "j".into(),
            now,
        )
        .unwrap();
        assert_eq!(long.lifetime, MAX_LIFETIME);
        assert_eq!(long.scope, asked, "an absent scope is the one requested");
    }

    #[test]
    fn assertions_are_signed_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::keys::KeyStore::new(dir.path());
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let stored = store.generate("lab", now).unwrap();
        let key = store.signing_key("lab", now).unwrap();
        let broker: TokenBroker = serde_json::from_value(serde_json::json!({
            "token_endpoint": "https://auth.example/token",
            "client_id": "lab-client",
        }))
        .unwrap();
        let a = assertion(&broker, &key, &random_id().unwrap(), now).unwrap();
        let b = assertion(&broker, &key, &random_id().unwrap(), now).unwrap();
        assert_ne!(a, b);
        // Verified with the public JWK, as the authorization server does.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(stored.public).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES384);
        validation.set_audience(&["https://auth.example/token"]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(&a, &decoding, &validation).unwrap();
        assert_eq!(data.header.kid.as_deref(), Some(stored.kid.as_str()));
        let c = data.claims;
        assert_eq!(
            (c["iss"].as_str(), c["sub"].as_str()),
            (Some("lab-client"), Some("lab-client"))
        );
        assert_eq!(
            c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
            ASSERTION_LIFETIME
        );
        assert_eq!(c["jti"].as_str().unwrap().len(), 22);
    }
}
