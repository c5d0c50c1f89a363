//! Tokens of a live GitLab database, checked the way GitLab checks them. Both need the
//! installation's `db_key_base` (from `/etc/gitlab/gitlab-secrets.json` on the Linux package,
//! `config/secrets.yml` on a source install, the `<release>-rails-secret` secret with the Helm
//! chart; see [`super::gitlab_secrets`]):
//!
//! - a personal (or project/group access) token's `personal_access_tokens.token_digest` is the
//!   Base64 SHA-256 of the token followed by the first 32 characters of `db_key_base`
//!   (`Gitlab::CryptoHelper.sha256`); valid unless revoked, until 00:00 UTC of its `expires_at`
//!   date; a blocked user's token, or one without the `api` scope (`read_api` for a download),
//!   is refused with 403 as GitLab does;
//! - a job token's `p_ci_builds.token_encrypted` is the token encrypted with AES-256-GCM under the
//!   first 32 bytes of `db_key_base`: `"|" + Base64(ciphertext ‖ tag) + nonce` with the nonce the
//!   first 12 hex digits of the token's SHA-256, or, in the older form still in use,
//!   `Base64(ciphertext ‖ tag)` with the key's first 12 bytes as nonce. GCM with a fixed nonce is
//!   deterministic, so both forms of the presented token are computed and looked up; nothing is
//!   decrypted. The job stands for the user who started it (`p_ci_builds.user_id`), in its own
//!   project only, while it is running or canceling.
//!
//! - a JWT job token (`glcbt-` and a signed JWT, since GitLab 17.10) is checked with GitLab's
//!   signing key ([`super::gitlab_jwt`]) and names its job; the job must be running, as above.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use super::gitlab_jwt::{JobTokenKey, is_jwt};
use crate::error::Result;

/// What checking GitLab's tokens needs: the installation's `db_key_base`, reduced to the two
/// values derived from it.
#[derive(Clone)]
pub struct GitlabAuth {
    /// `db_key_base[0..32]`: the salt of token digests.
    salt: String,
    /// The first 32 bytes of `db_key_base`, padded with '0': the AES key.
    key32: [u8; 32],
    /// The key of JWT job tokens, once loaded ([`GitlabAuth::load_job_token_key`]).
    jwt: Option<JobTokenKey>,
}

/// Never shows the key.
impl std::fmt::Debug for GitlabAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GitlabAuth(…)")
    }
}

const PAT: &str = "
SELECT t.user_id, u.admin, u.state = 'active' AS active, t.scopes FROM personal_access_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_digest = $1 AND t.revoked IS NOT TRUE
  AND (t.expires_at IS NULL OR t.expires_at > (now() AT TIME ZONE 'UTC')::date)";

const JOB: &str = "
SELECT b.id, b.project_id, b.status, b.user_id FROM p_ci_builds b
WHERE b.token_encrypted = ANY($1) AND b.erased_at IS NULL";

const JOB_BY_ID: &str = "
SELECT b.id, b.project_id, b.status, b.user_id FROM p_ci_builds b WHERE b.id = $1 AND b.erased_at IS NULL";

/// An administrator has every role; others the highest of their authorisations in the project.
const LEVEL: &str = "
SELECT CASE WHEN u.admin THEN 50
            ELSE COALESCE((SELECT max(a.access_level) FROM project_authorizations a WHERE a.user_id = u.id AND a.project_id = $2), 0)
       END::smallint AS level
FROM users u WHERE u.id = $1";

/// A valid personal access token's user, and whether the request may go on with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenUser {
    pub id: i64,
    pub admin: bool,
    /// The user is active (not blocked, deactivated, banned): GitLab answers 403 otherwise.
    pub active: bool,
    /// The token's scopes allow the request (`api`, or `read_api` for a read): 403 otherwise.
    pub scope_allows: bool,
}

impl GitlabAuth {
    /// From `db_key_base` as GitLab's secrets hold it.
    pub fn new(db_key_base: &str) -> GitlabAuth {
        let salt: String = db_key_base.chars().take(32).collect();
        let mut key32 = [b'0'; 32];
        let bytes = db_key_base.as_bytes();
        let n = bytes.len().min(32);
        key32[..n].copy_from_slice(&bytes[..n]);
        GitlabAuth { salt, key32, jwt: None }
    }

    /// Load GitLab's JWT job token key; without it (an older GitLab, another `db_key_base`) JWT
    /// job tokens are refused, and the log says why.
    pub async fn load_job_token_key(mut self, client: &tokio_postgres::Client) -> GitlabAuth {
        let cipher = Aes256Gcm::new_from_slice(&self.key32).expect("a 32-byte key");
        let decrypt = |iv: &[u8], sealed: &[u8]| {
            (iv.len() == 12).then(|| cipher.decrypt(Nonce::from_slice(iv), sealed).ok()).flatten()
        };
        match JobTokenKey::load(client, decrypt).await {
            Ok(key) => self.jwt = Some(key),
            Err(why) => tracing::warn!("JWT job tokens will be refused: {why}"),
        }
        self
    }

    /// `personal_access_tokens.token_digest` of a token.
    pub fn token_digest(&self, token: &str) -> String {
        STANDARD.encode(Sha256::digest(format!("{token}{}", self.salt).as_bytes()))
    }

    /// The two forms `p_ci_builds.token_encrypted` of a job token can take.
    pub fn token_encrypted(&self, token: &str) -> [String; 2] {
        let cipher = Aes256Gcm::new_from_slice(&self.key32).expect("a 32-byte key");
        let seal = |nonce: &[u8]| {
            // Encryption with a 12-byte nonce and a 32-byte key cannot fail.
            let sealed = cipher.encrypt(Nonce::from_slice(nonce), token.as_bytes()).unwrap_or_default();
            STANDARD.encode(sealed)
        };
        let nonce = hex::encode(Sha256::digest(token.as_bytes()))[..12].to_owned();
        [format!("|{}{nonce}", seal(nonce.as_bytes())), seal(&self.key32[..12])]
    }

    /// The user of a personal access token that is valid (known, not revoked, not expired); for
    /// a request that writes when `write`.
    pub async fn personal(&self, client: &tokio_postgres::Client, token: &str, write: bool) -> Result<Option<TokenUser>> {
        let Some(r) = client.query_opt(PAT, &[&self.token_digest(token)]).await? else {
            return Ok(None);
        };
        let scopes: Option<String> = r.get("scopes");
        Ok(Some(TokenUser {
            id: r.get("user_id"),
            admin: r.get::<_, Option<bool>>("admin").unwrap_or(false),
            active: r.get::<_, Option<bool>>("active").unwrap_or(false),
            scope_allows: scope_allows(scopes.as_deref().unwrap_or(""), write),
        }))
    }

    /// The job a job token belongs to (whatever its status): by its signature for a JWT, by
    /// `token_encrypted` otherwise.
    pub async fn job(&self, client: &tokio_postgres::Client, token: &str) -> Result<Option<tokio_postgres::Row>> {
        if is_jwt(token) {
            let Some(id) = self.jwt.as_ref().and_then(|k| k.job_id(token)) else { return Ok(None) };
            return Ok(client.query_opt(JOB_BY_ID, &[&id]).await?);
        }
        let candidates = self.token_encrypted(token);
        Ok(client.query_opt(JOB, &[&candidates.as_slice()]).await?)
    }

    /// A user's access level in a project: 50 for an administrator.
    pub async fn level(client: &tokio_postgres::Client, user_id: i64, project_id: i64) -> Result<i16> {
        Ok(client.query_opt(LEVEL, &[&user_id, &project_id]).await?.map_or(0, |r| r.get("level")))
    }
}

/// Whether a token's scopes (GitLab stores them as a YAML list: `"---\n- api\n"`) allow a request.
fn scope_allows(scopes: &str, write: bool) -> bool {
    scopes
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"').trim_start_matches(':'))
        .any(|s| s == "api" || (!write && s == "read_api"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "4d1c9a0e3b5f7a2c6e8d0b1f3a5c7e9d2b4f6a8c0e1d3b5f7a9c2e4d6b8f0a1c3e5d7b9f1a2c4e6d8b0f3a5c7e9d1b3f5a7c9e0d2b4f6a8c1e3d5b7f9a0c2e4d";

    #[test]
    fn the_digest_is_base64_sha256_of_token_and_salt() {
        let g = GitlabAuth::new(KEY);
        let expected = STANDARD.encode(Sha256::digest(format!("glpat-abc{}", &KEY[..32]).as_bytes()));
        assert_eq!(g.token_digest("glpat-abc"), expected);
        assert_eq!(g.token_digest("glpat-abc").len(), 44);
    }

    #[test]
    fn encrypted_job_tokens_take_both_forms_and_round_trip() {
        let g = GitlabAuth::new(KEY);
        let [current, legacy] = g.token_encrypted("glcbt-64_abcdefghijklmnopqrst");
        assert!(current.starts_with('|'));
        let nonce = &current[current.len() - 12..];
        let sealed = STANDARD.decode(&current[1..current.len() - 12]).unwrap();
        let cipher = Aes256Gcm::new_from_slice(&KEY.as_bytes()[..32]).unwrap();
        assert_eq!(cipher.decrypt(Nonce::from_slice(nonce.as_bytes()), sealed.as_slice()).unwrap(), b"glcbt-64_abcdefghijklmnopqrst");
        let sealed = STANDARD.decode(&legacy).unwrap();
        assert_eq!(cipher.decrypt(Nonce::from_slice(&KEY.as_bytes()[..12]), sealed.as_slice()).unwrap(), b"glcbt-64_abcdefghijklmnopqrst");
    }

    #[test]
    fn a_short_key_is_padded_with_zeros() {
        let g = GitlabAuth::new("abc");
        assert_eq!(&g.key32[..4], b"abc0");
        assert_eq!(g.salt, "abc");
    }

    #[test]
    fn scopes_are_read_from_gitlabs_yaml_list() {
        assert!(scope_allows("---\n- api\n", true));
        assert!(scope_allows("---\n- read_api\n", false));
        assert!(!scope_allows("---\n- read_api\n", true));
        assert!(!scope_allows("---\n- read_repository\n", false));
        assert!(!scope_allows("--- []\n", false));
    }
}
