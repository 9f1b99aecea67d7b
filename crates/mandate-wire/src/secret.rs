//! `GET /v1/proxy/secrets/{tool}` (admin right `proxy`): a tool's current
//! secret value, for the proxy to inject.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A tool's secret as delivered. The value is a [`SecretString`] from the
/// moment it is parsed (the parsed text is zeroed once copied into it);
/// `Debug` never shows it.
#[derive(Serialize, Deserialize)]
pub struct SecretValue {
    pub name: String,
    pub tool: String,
    pub version: u32,
    #[serde(serialize_with = "expose", deserialize_with = "conceal")]
    pub value: SecretString,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("tool", &self.tool)
            .field("version", &self.version)
            .field("value", &format_args!("[redacted]"))
            .finish()
    }
}

/// The broker sends the value: the one place it is written out.
fn expose<S: Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.expose_secret())
}

fn conceal<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    let text = Zeroizing::new(String::deserialize(d)?);
    Ok(SecretString::from(text.as_str()))
}
