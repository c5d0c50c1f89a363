//! housekeep's own API tokens (standalone database): how one is made and how it is stored.
//!
//! A token is a prefix and 32 random characters from a 62-letter alphabet (190 bits), drawn
//! from a cryptographically secure generator seeded by the operating system: `hkpat-…` for a personal access token, `hkjob-…` for
//! a job token. Only its digest is stored: the hex SHA-256 of the whole token. A token that
//! long needs no salt and no slow hash — there is nothing to guess — which is why GitLab digests
//! its tokens the same way.

use rand::Rng;
use sha2::{Digest, Sha256};

/// What a token authenticates as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A user's personal access token (`PRIVATE-TOKEN`).
    Personal,
    /// A job's token (`JOB-TOKEN` or `job_token`).
    Job,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Personal => "hkpat-",
            TokenKind::Job => "hkjob-",
        }
    }
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const RANDOM_CHARS: usize = 32;

/// A new token; shown once, stored only as its [`digest`].
pub fn generate(kind: TokenKind) -> String {
    // ThreadRng: a CSPRNG (ChaCha) seeded from the operating system.
    let mut rng = rand::rng();
    let random: String = (0..RANDOM_CHARS)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}{random}", kind.prefix())
}

/// The stored form of a token: lowercase hex SHA-256 of its bytes.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_long_and_distinct() {
        let a = generate(TokenKind::Personal);
        let b = generate(TokenKind::Personal);
        assert!(a.starts_with("hkpat-") && a.len() == 6 + RANDOM_CHARS, "{a}");
        assert!(generate(TokenKind::Job).starts_with("hkjob-"));
        assert_ne!(a, b);
        assert!(a[6..].bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn the_digest_is_the_hex_sha256() {
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
