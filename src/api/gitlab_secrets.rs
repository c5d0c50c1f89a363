//! GitLab's `db_key_base`, read from the secrets file an installation already has:
//!
//! - the Linux package: `/etc/gitlab/gitlab-secrets.json`, key `gitlab_rails.db_key_base`;
//! - a source install: `config/secrets.yml`, key `production.db_key_base`;
//! - the Helm chart: secret `<release>-rails-secret`, data key `secrets.yml` (the same YAML),
//!   mounted as a file.
//!
//! The file is named by `gitlab_secrets_file`, or given as systemd credential `gitlab_secrets`.
//! The key is never logged, and errors name the file, never its content.

use std::path::{Path, PathBuf};

use crate::config::credentials::DIRECTORY_ENV;

/// The systemd credential holding GitLab's secrets file.
pub const CREDENTIAL: &str = "gitlab_secrets";

/// Why the secrets file gives no key.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("gitlab_secrets_file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "gitlab_secrets_file {path}: no db_key_base found (expected gitlab-secrets.json with gitlab_rails.db_key_base, \
         or secrets.yml with production: db_key_base:)"
    )]
    NoKey { path: PathBuf },
}

/// The secrets file to read: `configured`, else the systemd credential if there is one.
pub fn locate(configured: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = configured {
        return Some(PathBuf::from(p));
    }
    let dir = std::env::var_os(DIRECTORY_ENV)?;
    let p = Path::new(&dir).join(CREDENTIAL);
    p.exists().then_some(p)
}

/// `db_key_base` from the file at `path` (JSON or YAML, told apart by content).
pub fn db_key_base(path: &Path) -> Result<String, SecretsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretsError::Read { path: path.to_owned(), source })?;
    from_text(&text).ok_or_else(|| SecretsError::NoKey { path: path.to_owned() })
}

fn from_text(text: &str) -> Option<String> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
        return json.pointer("/gitlab_rails/db_key_base")?.as_str().filter(|k| !k.is_empty()).map(str::to_owned);
    }
    from_secrets_yml(text)
}

/// `production: db_key_base:` of a Rails `secrets.yml`: the value under the top-level
/// `production:` block (quotes removed). Only this one key is read, so a YAML parser is not needed.
fn from_secrets_yml(text: &str) -> Option<String> {
    let mut in_production = false;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            in_production = line.trim_end() == "production:";
            continue;
        }
        if in_production && let Some(v) = line.trim().strip_prefix("db_key_base:") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            return (!v.is_empty()).then(|| v.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_linux_packages_json() {
        let json = r#"{"gitlab_workhorse":{"secret_token":"x"},"gitlab_rails":{"secret_key_base":"s","db_key_base":"abc123"}}"#;
        assert_eq!(from_text(json).as_deref(), Some("abc123"));
        assert_eq!(from_text(r#"{"gitlab_rails":{}}"#), None);
    }

    #[test]
    fn reads_production_of_a_secrets_yml() {
        let yml = "---\ndevelopment:\n  db_key_base: dev\n# comment\nproduction:\n  secret_key_base: s\n  db_key_base: \"prodkey\"\n";
        assert_eq!(from_text(yml).as_deref(), Some("prodkey"));
        assert_eq!(from_text("development:\n  db_key_base: dev\n"), None);
    }
}
