//! GitLab's JWT job tokens: `glcbt-` followed by an RS256 JWT whose `sub` is
//! `gid://gitlab/Ci::Build/<id>` (`Ci::JobToken::Jwt`), issued since GitLab 17.10 to the jobs of
//! top-level groups that opt in. The signing key is GitLab's own:
//! `application_settings.encrypted_ci_job_token_signing_key`, a PEM RSA private key encrypted
//! with AES-256-GCM under the first 32 bytes of `db_key_base` (the IV in `…_iv`, the tag the
//! last 16 bytes). housekeep decrypts it once at start, keeps only the public key, and checks a
//! token's signature, `exp` and `nbf` as GitLab does (`iss` and `aud` are not checked there
//! either).

use aws_lc_rs::signature::KeyPair;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs1KeyDer, PrivatePkcs8KeyDer};
use serde::Deserialize;

/// The prefix of GitLab's job tokens.
pub const PREFIX: &str = "glcbt-";
const SUBJECT: &str = "gid://gitlab/Ci::Build/";

const SIGNING_KEY: &str = "
SELECT encrypted_ci_job_token_signing_key AS key, encrypted_ci_job_token_signing_key_iv AS iv
FROM application_settings ORDER BY id DESC LIMIT 1";

/// The public key that checks GitLab's JWT job tokens.
#[derive(Clone)]
pub struct JobTokenKey(DecodingKey);

/// Whether `token` has the shape of a JWT job token (else it is one of the older form).
pub fn is_jwt(token: &str) -> bool {
    token.strip_prefix(PREFIX).is_some_and(|t| t.split('.').count() == 3)
}

impl JobTokenKey {
    /// GitLab's signing key, decrypted with `decrypt` (AES-256-GCM under `db_key_base`, given the
    /// IV and the ciphertext with its tag). Err says why there is none, for the log.
    pub async fn load(
        client: &tokio_postgres::Client,
        decrypt: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>>,
    ) -> Result<JobTokenKey, String> {
        let row = client
            .query_opt(SIGNING_KEY, &[])
            .await
            .map_err(|e| format!("application_settings.encrypted_ci_job_token_signing_key cannot be read: {e}"))?
            .ok_or("application_settings has no row")?;
        let (key, iv): (Option<Vec<u8>>, Option<Vec<u8>>) = (row.get("key"), row.get("iv"));
        let (key, iv) = key.zip(iv).ok_or("GitLab has no job token signing key (GitLab before 17.7?)")?;
        let pem = decrypt(&iv, &key).ok_or("the job token signing key does not decrypt with this db_key_base")?;
        JobTokenKey::from_private_pem(&pem)
    }

    /// From the PEM of an RSA private key (PKCS#1, as GitLab writes it, or PKCS#8).
    pub fn from_private_pem(pem: &[u8]) -> Result<JobTokenKey, String> {
        let pair = match PrivatePkcs1KeyDer::from_pem_slice(pem) {
            Ok(der) => aws_lc_rs::signature::RsaKeyPair::from_der(der.secret_pkcs1_der()),
            Err(_) => {
                let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| "the job token signing key is not an RSA key in PEM")?;
                aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            }
        }
        .map_err(|e| format!("the job token signing key is not a usable RSA key: {e}"))?;
        Ok(JobTokenKey(DecodingKey::from_rsa_der(pair.public_key().as_ref())))
    }

    /// The job a valid JWT job token names; None for a token that is not one, is signed by
    /// another key, has expired or is not valid yet.
    pub fn job_id(&self, token: &str) -> Option<i64> {
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
        }
        let jwt = token.strip_prefix(PREFIX)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(jwt, &self.0, &validation).ok()?;
        data.claims.sub.strip_prefix(SUBJECT)?.parse().ok()
    }
}
