//! What an audit event becomes on the wire, per the Standard Webhooks
//! specification (standardwebhooks.com): a JSON body that stays the same
//! on every retry, a `webhook-id` stable per endpoint and event, and a
//! `v1` HMAC-SHA256 signature over `{id}.{timestamp}.{body}` with the
//! endpoint's secret (`whsec_` + base64 of 32 random bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mandate_audit::Event;
use mandate_core::WebhookId;
use secrecy::SecretString;
use serde_json::{Value, json};
use zeroize::Zeroizing;

const SECRET_PREFIX: &str = "whsec_";

/// An endpoint's signing key. Never logged (`Debug` is redacted), never in
/// an audit event; shown to its creator once as `whsec_…`.
pub struct SigningSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

impl SigningSecret {
    pub fn generate() -> Self {
        SigningSecret(Zeroizing::new(mandate_token::random_bytes::<32>().to_vec()))
    }

    /// The raw key, as stored (sealed) and opened again.
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Self {
        SigningSecret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`, the form the Standard Webhooks libraries take.
    pub fn to_whsec(&self) -> SecretString {
        SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(&*self.0)))
    }

    /// Parse the `whsec_` form (the prefix is optional, as in the
    /// reference libraries).
    #[cfg(test)]
    pub fn from_whsec(s: &SecretString) -> Option<Self> {
        use secrecy::ExposeSecret;
        let s = s.expose_secret();
        let b64 = s.strip_prefix(SECRET_PREFIX).unwrap_or(s);
        STANDARD
            .decode(b64)
            .ok()
            .filter(|b| !b.is_empty())
            .map(|b| SigningSecret(Zeroizing::new(b)))
    }

    /// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.0);
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
        for part in [
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body.as_bytes(),
        ] {
            ctx.update(part);
        }
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// `webhook-id`: the same for every attempt at one event to one endpoint,
/// so a receiver can drop a retry it already took.
pub fn message_id(endpoint: &WebhookId, seq: u64) -> String {
    format!("evt_{seq}_{endpoint}")
}

/// The body: `{"type", "timestamp", "data"}`, `data` the chained event
/// (its `detail` as the JSON object it is; `prev_hash` left out).
pub fn body(event: &Event) -> String {
    let timestamp =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.time_ms) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
    let detail: Value =
        serde_json::from_str(&event.detail).unwrap_or_else(|_| Value::String(event.detail.clone()));
    json!({
        "type": event.kind.as_str(),
        "timestamp": timestamp,
        "data": {
            "seq": event.seq,
            "time_ms": event.time_ms,
            "kind": event.kind.as_str(),
            "actor": event.actor,
            "agent": event.agent,
            "task": event.task,
            "tool": event.tool,
            "jti": event.jti,
            "decision": event.decision,
            "reasons": event.reasons,
            "request_id": event.request_id,
            "detail": detail,
            "hash": event.hash,
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_audit::EventKind;
    use secrecy::ExposeSecret;

    /// The reference libraries' own test vector (standard-webhooks,
    /// `libraries/python/tests/test_webhooks.py::test_sign_function`).
    #[test]
    fn signature_matches_the_standard_webhooks_test_vector() {
        let secret = SigningSecret::from_whsec(&SecretString::from(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ))
        .unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secret_round_trips_through_its_whsec_form_and_never_prints() {
        let s = SigningSecret::generate();
        let text = s.to_whsec();
        assert!(text.expose_secret().starts_with("whsec_"));
        let back = SigningSecret::from_whsec(&text).unwrap();
        assert_eq!(back.bytes(), s.bytes());
        assert_eq!(back.bytes().len(), 32);
        assert_eq!(format!("{s:?}"), "SigningSecret([redacted])");
    }

    #[test]
    fn message_id_is_stable_per_endpoint_and_event() {
        let a = WebhookId::parse("whk_0123456789abcdef0123456789abcdef").unwrap();
        let b = WebhookId::parse("whk_fedcba9876543210fedcba9876543210").unwrap();
        assert_eq!(message_id(&a, 7), message_id(&a, 7));
        assert_ne!(message_id(&a, 7), message_id(&a, 8));
        assert_ne!(message_id(&a, 7), message_id(&b, 7));
    }

    #[test]
    fn body_carries_the_event_with_its_detail_as_an_object() {
        let e = Event {
            seq: 42,
            time_ms: 1_700_000_000_250,
            kind: EventKind::TaskSuspended,
            actor: "admin:adm_1".into(),
            agent: Some("bot".into()),
            task: Some("task_1".into()),
            tool: None,
            jti: None,
            decision: None,
            reasons: vec!["why".into()],
            request_id: Some("req-1".into()),
            detail: r#"{"below":2}"#.into(),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let v: Value = serde_json::from_str(&body(&e)).unwrap();
        assert_eq!(v["type"], "task.suspended");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.25Z");
        assert_eq!(v["data"]["seq"], 42);
        assert_eq!(v["data"]["detail"]["below"], 2);
        assert_eq!(v["data"]["hash"], "h");
        assert!(v["data"].get("prev_hash").is_none());
    }
}
