//! Admin tokens as issued: the bearer secret (shown once) and the stored
//! form (its hash and rights), for the first-start root token, `mandate
//! dev`, and `POST /v1/admin/tokens`.

use crate::app::{App, now};
use mandate_audit::{EventKind, NewEvent};
use mandate_core::{AdminRight, AdminToken};
use secrecy::SecretString;

/// `mandate dev` on an existing data dir: mint a fresh root token in-process
/// (dev only; a real server never prints a root token twice).
pub async fn dev_admin_token(app: &App) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let (secret, token) =
        new_admin_token(vec![AdminRight::Root], "dev mode root token".into(), None);
    let ev = NewEvent::new(EventKind::AdminTokenCreated, "system")
        .detail(serde_json::json!({"id": token.id, "rights": ["root"], "dev": true}));
    app.store.create_admin_token(token, ev).await?;
    Ok(secret.expose_secret().to_owned())
}

/// A fresh admin token: the bearer secret (returned once) and its stored form.
pub fn new_admin_token(
    rights: Vec<AdminRight>,
    description: String,
    expires_at: Option<i64>,
) -> (SecretString, AdminToken) {
    let secret = format!(
        "mdt_{}",
        mandate_token::b64(&mandate_token::random_bytes::<32>())
    );
    let token = AdminToken {
        id: format!("adm_{}", hex::encode(mandate_token::random_bytes::<8>())),
        hash: mandate_token::sha256_hex(secret.as_bytes()),
        rights,
        description,
        created_at: now(),
        expires_at,
        revoked_at: None,
        agent: None,
    };
    (SecretString::from(secret), token)
}
