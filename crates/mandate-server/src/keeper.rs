//! The secret keeper: opens the master key, unwraps (or creates) the data
//! key, and seals/opens secret values and webhook signing secrets. Values
//! are bound to their name and version (a webhook's secret to its id) as
//! associated data, so a ciphertext copied to another row or an older
//! version's row does not open.

use crate::config::Config;
use anyhow::{Context, bail};
use mandate_core::{SecretName, WebhookId};
use mandate_store::{SealedValue, Store};
use mandate_token::seal::SealKey;
use secrecy::ExposeSecret;
use std::path::Path;
use zeroize::Zeroizing;

/// Longest value accepted: API keys and service-account JSON fit easily.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

pub struct Keeper {
    data_key_id: i64,
    data_key: SealKey,
}

fn aad(name: &SecretName, version: u32) -> Vec<u8> {
    format!("mandate-secret-v1:{name}:{version}").into_bytes()
}

/// A webhook's signing secret is bound to its endpoint the same way.
fn webhook_aad(id: &WebhookId) -> Vec<u8> {
    format!("mandate-webhook-v1:{id}").into_bytes()
}

/// The master key from `MANDATE_MASTER_KEY`, `master_key_file`, or (dev
/// only) a generated file in the data dir. `None` means secrets are off.
pub fn master_key(cfg: &Config) -> anyhow::Result<Option<SealKey>> {
    if let Some(text) = &cfg.master_key {
        return Ok(Some(
            SealKey::from_base64(text.expose_secret()).context("MANDATE_MASTER_KEY")?,
        ));
    }
    if let Some(path) = &cfg.master_key_file {
        return read_key_file(path).map(Some);
    }
    if cfg.generate_master_key {
        let path = cfg.data_dir.join("master.key");
        if !path.exists() {
            let key = SealKey::generate();
            write_key_file(&path, key.to_base64().as_bytes())?;
            tracing::warn!(
                path = %path.display(),
                "DEV MODE: generated a master key next to the data it protects; \
                 anyone who can read the data dir can read every secret. \
                 Never do this in production: set master_key_file or MANDATE_MASTER_KEY."
            );
        }
        return read_key_file(&path).map(Some);
    }
    Ok(None)
}

fn read_key_file(path: &Path) -> anyhow::Result<SealKey> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading master key file {}", path.display()))?,
    );
    SealKey::from_base64(&text).with_context(|| format!("master key file {}", path.display()))
}

fn write_key_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

impl Keeper {
    /// Unwrap the stored data key, creating it on first use. A master key
    /// that does not open the stored data key stops the server.
    pub async fn open(store: &dyn Store, master: &SealKey, now: i64) -> anyhow::Result<Keeper> {
        let fresh = SealKey::generate();
        let (id, wrapped) = store.data_key(master.wrap(&fresh), now).await?;
        let data_key = match master.unwrap_key(&wrapped) {
            Ok(k) => k,
            Err(e) => bail!("cannot open stored secrets: {e}"),
        };
        Ok(Keeper {
            data_key_id: id,
            data_key,
        })
    }

    pub fn seal(&self, name: &SecretName, version: u32, value: &[u8]) -> SealedValue {
        self.seal_bound(&aad(name, version), value)
    }

    /// The value, or an error that says the stored row is not what it claims.
    pub fn open_value(
        &self,
        name: &SecretName,
        version: u32,
        sealed: &SealedValue,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        self.open_bound(&aad(name, version), sealed)
            .map_err(|e| format!("secret `{name}` version {version}: {e}"))
    }

    pub fn seal_webhook(&self, id: &WebhookId, secret: &[u8]) -> SealedValue {
        self.seal_bound(&webhook_aad(id), secret)
    }

    pub fn open_webhook(
        &self,
        id: &WebhookId,
        sealed: &SealedValue,
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        self.open_bound(&webhook_aad(id), sealed)
            .map_err(|e| format!("signing secret of webhook `{id}`: {e}"))
    }

    fn seal_bound(&self, aad: &[u8], value: &[u8]) -> SealedValue {
        SealedValue {
            data_key: self.data_key_id,
            bytes: self.data_key.seal(aad, value),
        }
    }

    fn open_bound(&self, aad: &[u8], sealed: &SealedValue) -> Result<Zeroizing<Vec<u8>>, String> {
        if sealed.data_key != self.data_key_id {
            return Err(format!(
                "sealed under data key {} which this server does not hold",
                sealed.data_key
            ));
        }
        self.data_key
            .open(aad, &sealed.bytes)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_key_is_generated_once_with_owner_only_mode() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().into(),
            generate_master_key: true,
            ..Config::default()
        };
        let a = master_key(&cfg).unwrap().unwrap();
        let b = master_key(&cfg).unwrap().unwrap();
        assert_eq!(*a.to_base64(), *b.to_base64(), "reused on restart");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let off = Config {
            data_dir: dir.path().into(),
            ..Config::default()
        };
        assert!(master_key(&off).unwrap().is_none());
    }
}
