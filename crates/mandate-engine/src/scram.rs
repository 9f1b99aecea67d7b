//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677) in the form PostgreSQL
//! stores them. The engine sends `CREATE ROLE … PASSWORD '<verifier>'`,
//! which the server keeps as given: the login's password itself never
//! reaches PostgreSQL, so it is not in the server's log (`log_statement`,
//! `log_min_duration_statement`), `pg_stat_activity` or statement
//! statistics, and the server does not spend its CPU deriving the key.

use aws_lc_rs::{digest, hmac, pbkdf2};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::num::NonZeroU32;
use zeroize::Zeroizing;

/// PostgreSQL's default and RFC 7677's minimum. The passwords are 256
/// random bits, so the count protects nothing a guess could reach; it is
/// kept so the verifier is what the server would have made.
pub const ITERATIONS: u32 = 4096;

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` for
/// `password` (ASCII: SASLprep leaves it unchanged) with `salt`.
pub fn verifier(password: &str, salt: &[u8; 16]) -> String {
    let mut salted = Zeroizing::new([0u8; 32]);
    let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        salted.as_mut(),
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, salted.as_ref());
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let server_key = hmac::sign(&key, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key.as_ref()),
        STANDARD.encode(server_key.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently (Python's hashlib and hmac) for "pencil"
    /// and the salt 00 01 … 0f.
    #[test]
    fn known_answer() {
        let salt: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            verifier("pencil", &salt),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$zHCdol2044/ZyWzPLi7oxApCkamKw9Z+E4U/QApd/5Y=:dd5peBOitVnLNFu7VmwP+HiDaaw4OUCv396eVCWhYiE="
        );
    }

    #[test]
    fn the_password_is_not_in_its_verifier() {
        let v = verifier("not-in-the-output", &[7; 16]);
        assert!(!v.contains("not-in-the-output"));
        assert_ne!(v, verifier("not-in-the-output", &[8; 16]), "salted");
    }
}
