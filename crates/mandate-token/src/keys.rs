//! The broker's signing keys.

use crate::seal::SealKey;
use crate::{Jwk, JwkSet, TokenError, VerifyingKey, b64};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

/// Algorithms Mandate signs and verifies with. No HMAC, never `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[serde(rename = "ES256")]
    Es256,
    #[serde(rename = "RS256")]
    Rs256,
}

/// Every JWS `alg` name Mandate accepts, for the metadata's
/// `*_signing_alg_values_supported`: RFC 9864's fully-specified `Ed25519`
/// beside the polymorphic `EdDSA` it deprecates.
pub const ACCEPTED_ALG_NAMES: &[&str] = &["EdDSA", "Ed25519", "ES256", "RS256"];

impl SigningAlg {
    /// The name Mandate signs with. Ed25519 keys sign as `EdDSA`: most
    /// verifiers in the wild do not know RFC 9864's `Ed25519` yet.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::EdDsa => "EdDSA",
            SigningAlg::Es256 => "ES256",
            SigningAlg::Rs256 => "RS256",
        }
    }

    /// Whether a JWS or JWK naming `alg` is this algorithm: `EdDSA` with an
    /// Ed25519 key is RFC 9864's `Ed25519`. Names are case-sensitive.
    pub fn accepts(self, alg: &str) -> bool {
        alg == self.as_str() || (self == SigningAlg::EdDsa && alg == "Ed25519")
    }
}

impl FromStr for SigningAlg {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        match s {
            "EdDSA" | "Ed25519" => Ok(SigningAlg::EdDsa),
            "ES256" => Ok(SigningAlg::Es256),
            "RS256" => Ok(SigningAlg::Rs256),
            other => Err(TokenError::AlgorithmNotAllowed(
                other.chars().take(20).collect(),
            )),
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(rsa::KeyPair),
}

/// A parsed private key, kept parsed so signing does not re-read PKCS#8.
pub struct SigningKey {
    pub kid: String,
    pub alg: SigningAlg,
    pair: Pair,
    public: Jwk,
    verifier: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} {}, [redacted])", self.alg, self.kid)
    }
}

impl SigningKey {
    /// Generate a fresh key; returns it with its PKCS#8 encoding for storage.
    pub fn generate(alg: SigningAlg) -> Result<(Self, Zeroizing<Vec<u8>>), TokenError> {
        let failed = |_| TokenError::BadKey("key generation failed".into());
        let pkcs8 = match alg {
            SigningAlg::EdDsa => Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            SigningAlg::Es256 => EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(failed)?
            .as_ref()
            .to_vec(),
            SigningAlg::Rs256 => rsa::KeyPair::generate(rsa::KeySize::Rsa2048)
                .map_err(failed)?
                .as_der()
                .map_err(failed)?
                .as_ref()
                .to_vec(),
        };
        let pkcs8 = Zeroizing::new(pkcs8);
        Ok((Self::from_pkcs8(alg, &pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(alg: SigningAlg, pkcs8: &[u8]) -> Result<Self, TokenError> {
        let rejected = |e: aws_lc_rs::error::KeyRejected| TokenError::BadKey(e.to_string());
        let (pair, mut public) = match alg {
            SigningAlg::EdDsa => {
                let p = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
                let mut j = Jwk::new("OKP");
                j.crv = Some("Ed25519".into());
                j.x = Some(b64(p.public_key().as_ref()));
                (Pair::Ed(p), j)
            }
            SigningAlg::Es256 => {
                let p =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                        .map_err(rejected)?;
                let point = p.public_key().as_ref();
                let mut j = Jwk::new("EC");
                j.crv = Some("P-256".into());
                j.x = Some(b64(&point[1..33]));
                j.y = Some(b64(&point[33..65]));
                (Pair::Ec(p), j)
            }
            SigningAlg::Rs256 => {
                let p = rsa::KeyPair::from_pkcs8(pkcs8).map_err(rejected)?;
                let mut j = Jwk::new("RSA");
                j.n = Some(b64(p
                    .public_key()
                    .modulus()
                    .big_endian_without_leading_zero()));
                j.e = Some(b64(p
                    .public_key()
                    .exponent()
                    .big_endian_without_leading_zero()));
                (Pair::Rsa(p), j)
            }
        };
        let kid = public.thumbprint()?;
        public.kid = Some(kid.clone());
        public.alg = Some(alg.as_str().into());
        public.use_ = Some("sig".into());
        let verifier = VerifyingKey::from_jwk(&public)?;
        Ok(SigningKey {
            kid,
            alg,
            pair,
            public,
            verifier,
        })
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TokenError> {
        let failed = |_| TokenError::BadKey("signing failed".into());
        match &self.pair {
            Pair::Ed(p) => Ok(p.sign(message).as_ref().to_vec()),
            Pair::Ec(p) => Ok(p
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec()),
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut sig,
                )
                .map_err(failed)?;
                Ok(sig)
            }
        }
    }

    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }

    /// The private key as a PKCS#8 v1 document (RFC 5208; RFC 8410 for
    /// Ed25519), the version every PKCS#8 reader takes. (aws-lc writes
    /// Ed25519 keys as v2, with the public key, which OpenSSL 3.0, Node and
    /// Python's `cryptography` refuse.)
    pub fn to_pkcs8_v1(&self) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let failed = |_| TokenError::BadKey("cannot encode the key as PKCS#8".into());
        let der = match &self.pair {
            Pair::Ed(p) => p.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Pair::Ec(p) => p.to_pkcs8v1().map_err(failed)?.as_ref().to_vec(),
            Pair::Rsa(p) => {
                let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = p.as_der().map_err(failed)?;
                der.as_ref().to_vec()
            }
        };
        Ok(Zeroizing::new(der))
    }

    pub fn verifier(&self) -> &VerifyingKey {
        &self.verifier
    }
}

/// What `ring.json` records about each key. Private bytes live in
/// `<kid>.pk8` (mode 0600), or `<kid>.pk8.sealed` when a master key seals them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyRecord {
    kid: String,
    alg: SigningAlg,
    created_at: i64,
    /// Set when a newer key took over; the key stays published until
    /// `publish_until` (retirement + the longest token lifetime).
    publish_until: Option<i64>,
}

struct Ring {
    records: Vec<KeyRecord>,
    keys: HashMap<String, Arc<SigningKey>>,
    current: Arc<SigningKey>,
}

/// The broker's key set: one current signing key plus retired keys still
/// published for verification. Persisted under a directory, one file per
/// private key with mode 0600.
pub struct KeyRing {
    dir: PathBuf,
    ring: RwLock<Arc<Ring>>,
    /// Seals new private keys at rest (AES-256-GCM) when configured.
    seal: Option<Arc<SealKey>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({})", self.dir.display())
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> TokenError {
    TokenError::Storage(format!("{what} {}: {e}", path.display()))
}

impl KeyRing {
    /// Open the ring in `dir`, creating a first key of `alg` if there is none,
    /// or rotating to `alg` if the current key uses another algorithm.
    /// With `seal`, new keys are written sealed under it; keys written in
    /// clear before it was configured stay readable (rotate to replace them).
    pub fn open(
        dir: &Path,
        alg: SigningAlg,
        max_token_ttl: i64,
        now: i64,
        seal: Option<Arc<SealKey>>,
    ) -> Result<Self, TokenError> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
        restrict_dir(dir)?;
        let index = dir.join("ring.json");
        let records: Vec<KeyRecord> = match std::fs::read(&index) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| TokenError::Storage(format!("{}: {e}", index.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("reading", &index, e)),
        };
        let mut keys = HashMap::new();
        for r in &records {
            let pkcs8 = read_private(dir, &r.kid, seal.as_deref())?;
            let key = SigningKey::from_pkcs8(r.alg, &pkcs8)?;
            if key.kid != r.kid {
                return Err(TokenError::Storage(format!(
                    "{} does not hold key {}",
                    dir.display(),
                    r.kid
                )));
            }
            keys.insert(r.kid.clone(), Arc::new(key));
        }
        let current = records
            .iter()
            .find(|r| r.publish_until.is_none())
            .and_then(|r| keys.get(&r.kid).cloned());
        let mut records = records;
        let current = match current {
            Some(c) => c,
            None => {
                let key = Arc::new(Self::create_key(dir, alg, seal.as_deref())?);
                records.push(KeyRecord {
                    kid: key.kid.clone(),
                    alg,
                    created_at: now,
                    publish_until: None,
                });
                write_index(dir, &records)?;
                keys.insert(key.kid.clone(), key.clone());
                key
            }
        };
        let ring = KeyRing {
            dir: dir.to_owned(),
            ring: RwLock::new(Arc::new(Ring {
                records,
                keys,
                current,
            })),
            seal,
        };
        if ring.current().alg != alg {
            ring.rotate(alg, max_token_ttl, now)?;
        }
        Ok(ring)
    }

    fn create_key(
        dir: &Path,
        alg: SigningAlg,
        seal: Option<&SealKey>,
    ) -> Result<SigningKey, TokenError> {
        let (key, pkcs8) = SigningKey::generate(alg)?;
        match seal {
            Some(s) => write_private(
                &sealed_path(dir, &key.kid),
                &s.seal(&seal_aad(&key.kid), &pkcs8),
            )?,
            None => write_private(&plain_path(dir, &key.kid), &pkcs8)?,
        }
        Ok(key)
    }

    fn snapshot(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn current(&self) -> Arc<SigningKey> {
        self.snapshot().current.clone()
    }

    /// A key by `kid`, if it is still published at `now`: a retired key
    /// stops verifying when its window ends, not at the next rotation.
    pub fn get(&self, kid: &str, now: i64) -> Option<Arc<SigningKey>> {
        let ring = self.snapshot();
        let published = ring
            .records
            .iter()
            .any(|r| r.kid == kid && r.publish_until.is_none_or(|t| t > now));
        if !published {
            return None;
        }
        ring.keys.get(kid).cloned()
    }

    /// Add a new current key; the old one stays published for `max_token_ttl`
    /// seconds so tokens it signed keep verifying until they expire.
    pub fn rotate(
        &self,
        alg: SigningAlg,
        max_token_ttl: i64,
        now: i64,
    ) -> Result<Arc<SigningKey>, TokenError> {
        let key = self.new_key(alg)?;
        self.install(key.clone(), max_token_ttl, now)?;
        Ok(key)
    }

    /// A fresh key on disk, not yet used or published: record it somewhere
    /// durable first, then [`KeyRing::install`] it (or [`KeyRing::discard`]).
    pub fn new_key(&self, alg: SigningAlg) -> Result<Arc<SigningKey>, TokenError> {
        Self::create_key(&self.dir, alg, self.seal.as_deref()).map(Arc::new)
    }

    /// Forget a key from [`KeyRing::new_key`] that was never installed.
    pub fn discard(&self, key: &SigningKey) {
        remove_private(&self.dir, &key.kid);
    }

    /// Make `key` the signing key; the old ones stay published as in [`KeyRing::rotate`].
    pub fn install(
        &self,
        key: Arc<SigningKey>,
        max_token_ttl: i64,
        now: i64,
    ) -> Result<(), TokenError> {
        let alg = key.alg;
        let mut guard = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.clone();
        let mut records: Vec<KeyRecord> = old
            .records
            .iter()
            .cloned()
            .map(|mut r| {
                r.publish_until.get_or_insert(now + max_token_ttl);
                r
            })
            .filter(|r| r.publish_until.is_some_and(|t| t > now))
            .collect();
        records.push(KeyRecord {
            kid: key.kid.clone(),
            alg,
            created_at: now,
            publish_until: None,
        });
        let mut keys: HashMap<_, _> = records
            .iter()
            .filter_map(|r| old.keys.get(&r.kid).map(|k| (r.kid.clone(), k.clone())))
            .collect();
        keys.insert(key.kid.clone(), key.clone());
        write_index(&self.dir, &records)?;
        for gone in old.records.iter().filter(|r| !keys.contains_key(&r.kid)) {
            remove_private(&self.dir, &gone.kid);
        }
        *guard = Arc::new(Ring {
            records,
            keys,
            current: key.clone(),
        });
        tracing::info!(kid = %key.kid, alg = %alg, "signing key rotated");
        Ok(())
    }

    /// When every token `kid` signed will have expired (the end of its
    /// publication window): what a feed entry withdrawing it must cover.
    /// Only a retired key that is still published can be withdrawn.
    pub fn withdrawable(&self, kid: &str, now: i64) -> Result<i64, TokenError> {
        let ring = self.snapshot();
        let r = ring
            .records
            .iter()
            .find(|r| r.kid == kid && r.publish_until.is_none_or(|t| t > now))
            .ok_or_else(|| TokenError::UnknownKey(kid.to_owned()))?;
        r.publish_until
            .ok_or_else(|| TokenError::KeyInUse(kid.to_owned()))
    }

    /// Stop publishing and trusting `kid` at once and delete its private
    /// key (it leaked, say): every token it signed stops verifying. Never
    /// the current key. Returns whether there was such a key.
    pub fn withdraw(&self, kid: &str) -> Result<bool, TokenError> {
        let mut guard = self.ring.write().unwrap_or_else(|p| p.into_inner());
        let old = guard.clone();
        if old.current.kid == kid {
            return Err(TokenError::KeyInUse(kid.to_owned()));
        }
        if !old.records.iter().any(|r| r.kid == kid) {
            return Ok(false);
        }
        let records: Vec<KeyRecord> = old
            .records
            .iter()
            .filter(|r| r.kid != kid)
            .cloned()
            .collect();
        write_index(&self.dir, &records)?;
        remove_private(&self.dir, kid);
        let mut keys = old.keys.clone();
        keys.remove(kid);
        *guard = Arc::new(Ring {
            records,
            keys,
            current: old.current.clone(),
        });
        tracing::warn!(%kid, "signing key withdrawn");
        Ok(true)
    }

    /// The published JWK Set: current key and retired keys still in use.
    pub fn jwks(&self, now: i64) -> JwkSet {
        let ring = self.snapshot();
        JwkSet {
            keys: ring
                .records
                .iter()
                .rev()
                .filter(|r| r.publish_until.is_none_or(|t| t > now))
                .filter_map(|r| ring.keys.get(&r.kid).map(|k| k.public_jwk().clone()))
                .collect(),
        }
    }
}

fn plain_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.pk8"))
}

fn sealed_path(dir: &Path, kid: &str) -> PathBuf {
    dir.join(format!("{kid}.pk8.sealed"))
}

/// Binds a sealed file to its key id: a swapped file does not open.
fn seal_aad(kid: &str) -> Vec<u8> {
    format!("mandate signing key {kid}").into_bytes()
}

fn read_private(
    dir: &Path,
    kid: &str,
    seal: Option<&SealKey>,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let sealed = sealed_path(dir, kid);
    match std::fs::read(&sealed) {
        Ok(bytes) => {
            let seal = seal.ok_or_else(|| {
                TokenError::Storage(format!(
                    "{} is sealed: configure the master key that sealed it",
                    sealed.display()
                ))
            })?;
            seal.open(&seal_aad(kid), &bytes).map_err(|_| {
                TokenError::Storage(format!(
                    "{}: wrong master key (the sealed signing key does not open with it)",
                    sealed.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let plain = plain_path(dir, kid);
            std::fs::read(&plain)
                .map(Zeroizing::new)
                .map_err(|e| io_err("reading", &plain, e))
        }
        Err(e) => Err(io_err("reading", &sealed, e)),
    }
}

fn remove_private(dir: &Path, kid: &str) {
    let _ = std::fs::remove_file(plain_path(dir, kid));
    let _ = std::fs::remove_file(sealed_path(dir, kid));
}

fn write_index(dir: &Path, records: &[KeyRecord]) -> Result<(), TokenError> {
    let tmp = dir.join("ring.json.tmp");
    let bytes =
        serde_json::to_vec_pretty(records).map_err(|e| TokenError::Storage(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| io_err("writing", &tmp, e))?;
    sync_file(&tmp)?;
    let dst = dir.join("ring.json");
    std::fs::rename(&tmp, &dst).map_err(|e| io_err("renaming", &dst, e))?;
    Ok(())
}

fn sync_file(path: &Path) -> Result<(), TokenError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("syncing", path, e))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TokenError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("creating", path, e))?;
    f.write_all(bytes).map_err(|e| io_err("writing", path, e))?;
    f.sync_all().map_err(|e| io_err("syncing", path, e))
}

#[cfg(unix)]
fn restrict_dir(dir: &Path) -> Result<(), TokenError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_err("chmod", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_and_verifies() {
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Rs256] {
            let (k, _) = SigningKey::generate(alg).unwrap();
            let sig = k.sign(b"msg").unwrap();
            k.verifier().verify(b"msg", &sig).unwrap();
            assert!(k.verifier().verify(b"msh", &sig).is_err());
        }
    }

    /// PKCS#8 v1 is what every reader takes: the same key comes back, and
    /// an Ed25519 document is RFC 8410's 48 bytes with version 0 (aws-lc's
    /// own v2 form, which OpenSSL 3.0 refuses, carries the public key too).
    #[test]
    fn keys_export_as_pkcs8_v1_and_read_back() {
        for alg in [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Rs256] {
            let (k, v2) = SigningKey::generate(alg).unwrap();
            let v1 = k.to_pkcs8_v1().unwrap();
            let back = SigningKey::from_pkcs8(alg, &v1).unwrap();
            assert_eq!(back.kid, k.kid, "{alg}");
            // SEQUENCE, then INTEGER version: 0 is v1.
            let version_at = if v1[1] & 0x80 == 0 {
                2
            } else {
                2 + (v1[1] & 0x7f) as usize
            };
            assert_eq!(
                &v1[version_at..version_at + 3],
                &[0x02, 0x01, 0x00],
                "{alg}"
            );
            if alg == SigningAlg::EdDsa {
                assert_eq!(v1.len(), 48);
                assert_ne!(*v1, *v2, "aws-lc generates v2 for Ed25519");
            }
        }
    }

    #[test]
    fn ring_persists_and_private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let a = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 0, None).unwrap();
        let kid = a.current().kid.clone();
        let mode = std::fs::metadata(dir.path().join(format!("{kid}.pk8")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 10, None).unwrap();
        assert_eq!(b.current().kid, kid);
    }

    #[test]
    fn rotated_key_stays_published_until_its_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 0, None).unwrap();
        let old = ring.current().kid.clone();
        ring.rotate(SigningAlg::EdDsa, 900, 100).unwrap();
        assert_ne!(ring.current().kid, old);
        assert!(ring.get(&old, 100).is_some());
        // Past its window the retired key verifies nothing, rotation or not.
        assert!(ring.get(&old, 100 + 900).is_none());
        assert!(ring.get(&ring.current().kid, i64::MAX).is_some());
        assert_eq!(ring.jwks(100).keys.len(), 2);
        // A later rotation after the window drops the oldest key entirely.
        ring.rotate(SigningAlg::EdDsa, 900, 100 + 901).unwrap();
        assert!(ring.get(&old, 100 + 901).is_none());
        assert!(!dir.path().join(format!("{old}.pk8")).exists());
    }

    /// With a master key, private keys are sealed at rest: the file holds no
    /// PKCS#8 in clear, opens only with that master key, and a key written
    /// in clear earlier still loads.
    #[test]
    fn keys_are_sealed_at_rest_under_a_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let plain = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 0, None).unwrap();
        let old = plain.current().kid.clone();
        drop(plain);
        let master = Arc::new(SealKey::generate());
        let ring =
            KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 0, Some(master.clone())).unwrap();
        assert!(
            ring.get(&old, 0).is_some(),
            "a clear key from before still loads"
        );
        let new = ring.rotate(SigningAlg::EdDsa, 900, 10).unwrap().kid.clone();
        drop(ring);
        let sealed = std::fs::read(dir.path().join(format!("{new}.pk8.sealed"))).unwrap();
        assert!(!dir.path().join(format!("{new}.pk8")).exists());
        assert!(SigningKey::from_pkcs8(SigningAlg::EdDsa, &sealed).is_err());
        let opened = master.open(&seal_aad(&new), &sealed).unwrap();
        assert_eq!(
            SigningKey::from_pkcs8(SigningAlg::EdDsa, &opened)
                .unwrap()
                .kid,
            new
        );

        let err = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 20, None).unwrap_err();
        assert!(err.to_string().contains("master key"), "{err}");
        let wrong = Some(Arc::new(SealKey::generate()));
        let err = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 20, wrong).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        let again = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 20, Some(master)).unwrap();
        assert_eq!(again.current().kid, new);
    }

    #[test]
    fn a_withdrawn_key_is_gone_at_once_and_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 1000, None).unwrap();
        let old = ring.current().kid.clone();
        assert!(matches!(
            ring.withdrawable(&old, 1000),
            Err(TokenError::KeyInUse(_))
        ));
        assert!(matches!(ring.withdraw(&old), Err(TokenError::KeyInUse(_))));
        ring.rotate(SigningAlg::EdDsa, 900, 1100).unwrap();
        assert_eq!(ring.withdrawable(&old, 1200).unwrap(), 2000);
        assert!(ring.withdraw(&old).unwrap());
        assert!(ring.get(&old, 1200).is_none());
        assert!(
            ring.jwks(1200)
                .keys
                .iter()
                .all(|k| k.kid.as_deref() != Some(&old))
        );
        assert!(matches!(
            ring.withdrawable(&old, 1200),
            Err(TokenError::UnknownKey(_))
        ));
        assert!(
            !ring.withdraw(&old).unwrap(),
            "a second time: nothing to do"
        );
        assert!(
            !plain_path(dir.path(), &old).exists(),
            "private key deleted"
        );
        // Reopened: still gone, the current key unchanged.
        let current = ring.current().kid.clone();
        drop(ring);
        let ring = KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 1300, None).unwrap();
        assert!(ring.get(&old, 1300).is_none());
        assert_eq!(ring.current().kid, current);
    }

    #[test]
    fn changing_configured_algorithm_rotates() {
        let dir = tempfile::tempdir().unwrap();
        KeyRing::open(dir.path(), SigningAlg::EdDsa, 900, 0, None).unwrap();
        let ring = KeyRing::open(dir.path(), SigningAlg::Es256, 900, 5, None).unwrap();
        assert_eq!(ring.current().alg, SigningAlg::Es256);
        assert_eq!(ring.jwks(100).keys.len(), 2);
    }
}
