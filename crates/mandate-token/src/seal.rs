//! Envelope encryption for stored secrets: each value is sealed with
//! AES-256-GCM under a data key; the data key is stored wrapped (sealed) by
//! the master key, which never touches the database. Every seal binds an
//! AAD naming what it is (secret name and version), so a ciphertext moved
//! to another row or version fails to open.

use crate::{TokenError, random_bytes};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const WRAP_AAD: &[u8] = b"mandate-data-key-v1";

/// An AES-256-GCM key, zeroised on drop. Debug never shows it.
pub struct SealKey {
    key: LessSafeKey,
    /// Kept so the data key can be wrapped; zeroised on drop.
    raw: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    fn from_raw(raw: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, raw.as_ref()).expect("32-byte AES-256 key");
        SealKey {
            key: LessSafeKey::new(unbound),
            raw,
        }
    }

    /// A fresh random key (a new data key, or a dev master key).
    pub fn generate() -> Self {
        Self::from_raw(Zeroizing::new(random_bytes::<KEY_LEN>()))
    }

    /// A master key from its base64 text (standard or url-safe, 32 bytes).
    /// The error never echoes the input.
    pub fn from_base64(text: &str) -> Result<Self, TokenError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .or_else(|_| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes())
                })
                .map_err(|_| TokenError::BadKey("master key is not base64".into()))?,
        );
        let raw: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            TokenError::BadKey(format!(
                "master key must be {KEY_LEN} bytes, got {}",
                bytes.len()
            ))
        })?;
        Ok(Self::from_raw(Zeroizing::new(raw)))
    }

    /// The key as base64 (to write a generated dev master key to its file).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.raw.as_ref()))
    }

    /// `nonce || ciphertext || tag`. Nonces are random: a data key seals far
    /// fewer than the 2^32 values where random 96-bit nonces start to risk reuse.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_bytes::<NONCE_LEN>();
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .expect("AES-GCM seal of an in-memory buffer");
        out.extend_from_slice(&body);
        body.iter_mut().for_each(|b| *b = 0);
        out
    }

    /// Open what [`SealKey::seal`] produced with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(TokenError::Storage("sealed value is truncated".into()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| TokenError::Storage("bad nonce".into()))?;
        let mut buf = Zeroizing::new(body.to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .map_err(|_| {
                TokenError::Storage(
                    "sealed value does not open: wrong key, or the data was altered".into(),
                )
            })?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    /// Wrap a data key under this (master) key for storage.
    pub fn wrap(&self, data_key: &SealKey) -> Vec<u8> {
        self.seal(WRAP_AAD, data_key.raw.as_ref())
    }

    /// Unwrap a stored data key. Fails if this is not the master key it was wrapped with.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<SealKey, TokenError> {
        let raw = self.open(WRAP_AAD, wrapped).map_err(|_| {
            TokenError::BadKey(
                "the stored data key does not open with this master key (wrong master key?)".into(),
            )
        })?;
        let raw: [u8; KEY_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::BadKey("stored data key has the wrong length".into()))?;
        Ok(Self::from_raw(Zeroizing::new(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let k = SealKey::generate();
        let s = k.seal(b"secret:gh:1", b"ghp_value");
        assert_eq!(k.open(b"secret:gh:1", &s).unwrap().as_slice(), b"ghp_value");
        assert!(k.open(b"secret:gh:2", &s).is_err(), "other version");
        assert!(k.open(b"secret:other:1", &s).is_err(), "other row");
        assert!(!s.windows(9).any(|w| w == b"ghp_value"), "ciphertext only");
        let mut tampered = s.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(k.open(b"secret:gh:1", &tampered).is_err());
        assert!(k.open(b"secret:gh:1", &s[..10]).is_err());
        assert_ne!(
            k.seal(b"a", b"x"),
            k.seal(b"a", b"x"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn data_key_wraps_under_master_only() {
        let master = SealKey::generate();
        let data = SealKey::generate();
        let wrapped = master.wrap(&data);
        let back = master.unwrap_key(&wrapped).unwrap();
        let s = data.seal(b"x", b"value");
        assert_eq!(back.open(b"x", &s).unwrap().as_slice(), b"value");
        let err = SealKey::generate().unwrap_key(&wrapped).unwrap_err();
        assert!(err.to_string().contains("wrong master key"));
    }

    #[test]
    fn master_key_text_is_checked_without_echoing_it() {
        let k = SealKey::generate();
        let text = k.to_base64();
        assert!(SealKey::from_base64(&text).is_ok());
        let e = SealKey::from_base64("c2hvcnQ=").unwrap_err().to_string();
        assert!(e.contains("32 bytes") && !e.contains("c2hvcnQ"), "{e}");
        let e = SealKey::from_base64("not base64 !!")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("!!"), "{e}");
        assert_eq!(format!("{k:?}"), "SealKey(..)");
    }
}
