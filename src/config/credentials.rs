//! The database password from systemd's credentials. A unit with
//! `LoadCredential=database_password:…` gets the file `$CREDENTIALS_DIRECTORY/database_password`;
//! when it is there, its content (one trailing newline removed) is the password of
//! `database_url`, which then names the server and the user but no password. The password is
//! added to the URL percent-encoded (to a `key=value` string quoted), so any character works, and
//! from then on it is redacted like any password of `database_url` (`housekeep config`, errors,
//! logs). A `database_url` that has a password of its own is refused: two passwords, one
//! silently ignored, would be a trap.

use std::path::Path;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::Loaded;
use crate::db::{conninfo, url::parse_url};
use crate::error::{Error, Result};

/// The variable systemd sets to the unit's credentials directory.
pub const DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";
/// The credential holding the database password.
pub const DATABASE_PASSWORD: &str = "database_password";

/// Add the password of credential [`DATABASE_PASSWORD`] in `dir` (the value of
/// [`DIRECTORY_ENV`], if set) to `database_url`.
pub fn apply(mut loaded: Loaded, dir: Option<&Path>) -> Result<Loaded> {
    let Some(dir) = dir else { return Ok(loaded) };
    let path = dir.join(DATABASE_PASSWORD);
    let err = |msg: &str| {
        Error::config(format!(
            "credential {DATABASE_PASSWORD} ({}): {msg}",
            path.display()
        ))
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(loaded),
        Err(e) => return Err(err(&e.to_string())),
    };
    let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text"))?;
    let password = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |p| p.strip_suffix('\r').unwrap_or(p));
    if password.is_empty() {
        return Err(err("is empty"));
    }
    if password.contains('\0') {
        return Err(err(
            "holds a NUL character, which PostgreSQL cannot take in a password",
        ));
    }
    let source = loaded.source_of("database_url");
    let url = loaded.config.database_url.as_deref().ok_or_else(|| {
        err("there is no database_url to use it with; set database_url to the server and user, without a password")
    })?;
    // The configuration checked the URL when it was read.
    let (cfg, _) =
        parse_url(url).map_err(|m| Error::config(format!("database_url (from {source}): {m}")))?;
    if cfg.get_password().is_some() {
        return Err(Error::config(format!(
            "database_url (from {source}) has a password, and credential {DATABASE_PASSWORD} gives one too; keep one"
        )));
    }
    let with_password = with_password(url, password);
    match parse_url(&with_password) {
        Ok((cfg, _)) if cfg.get_password() == Some(password.as_bytes()) => {}
        _ => return Err(err("could not be added to database_url")),
    }
    loaded.config.database_url = Some(with_password);
    Ok(loaded)
}

/// `url` with `password` added: a query parameter of a URL (before any fragment), a quoted
/// keyword of a `key=value` string.
fn with_password(url: &str, password: &str) -> String {
    if conninfo::is_url(url) {
        let (base, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
        let sep = if base.contains('?') { "&" } else { "?" };
        format!(
            "{base}{sep}password={}{fragment}",
            utf8_percent_encode(password, NON_ALPHANUMERIC)
        )
    } else {
        let quoted = password.replace('\\', "\\\\").replace('\'', "\\'");
        format!("{url} password='{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_from;

    fn loaded(url: Option<&str>) -> Loaded {
        let env: Vec<(String, String)> = url
            .iter()
            .map(|u| ("HOUSEKEEP_DATABASE_URL".to_string(), u.to_string()))
            .collect();
        load_from(None, &env, &[]).unwrap()
    }

    fn credential(content: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DATABASE_PASSWORD), content).unwrap();
        dir
    }

    fn password_of(l: &Loaded) -> Vec<u8> {
        let (cfg, _) = parse_url(l.config.database_url.as_deref().unwrap()).unwrap();
        cfg.get_password().unwrap().to_vec()
    }

    #[test]
    fn any_password_reaches_the_server_unchanged_and_is_redacted() {
        for password in ["hunter2", "a/b?c#d@e%f&g=h i'j\\k", "ünïcödé:pass"] {
            for url in [
                "postgres://hk@db:5432/x",
                "postgres://hk@db/x?sslmode=disable",
                "host=db user=hk dbname=x",
            ] {
                let dir = credential(format!("{password}\n").as_bytes());
                let l = apply(loaded(Some(url)), Some(dir.path())).unwrap();
                assert_eq!(password_of(&l), password.as_bytes(), "{url}");
                let shown = l.config.to_redacted_toml();
                assert!(
                    !shown.contains(password) && shown.contains("REDACTED"),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn only_one_trailing_newline_is_removed() {
        let dir = credential(b"pw\r\n");
        assert_eq!(
            password_of(&apply(loaded(Some("postgres://hk@db/x")), Some(dir.path())).unwrap()),
            b"pw"
        );
        let dir = credential(b"pw \n\n");
        assert_eq!(
            password_of(&apply(loaded(Some("postgres://hk@db/x")), Some(dir.path())).unwrap()),
            b"pw \n"
        );
    }

    #[test]
    fn nothing_changes_without_the_credential() {
        let url = "postgres://hk@db/x";
        assert_eq!(
            apply(loaded(Some(url)), None)
                .unwrap()
                .config
                .database_url
                .as_deref(),
            Some(url)
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            apply(loaded(Some(url)), Some(empty.path()))
                .unwrap()
                .config
                .database_url
                .as_deref(),
            Some(url)
        );
    }

    #[test]
    fn conflicts_and_bad_credentials_are_configuration_errors_without_the_secret() {
        let cases: [(&[u8], Option<&str>, &str); 5] = [
            (b"hunter2", Some("postgres://hk:other@db/x"), "keep one"),
            (
                b"hunter2",
                Some("host=db user=hk password=other"),
                "keep one",
            ),
            (b"hunter2", None, "no database_url"),
            (b"\n", Some("postgres://hk@db/x"), "is empty"),
            (b"hunter2\xff", Some("postgres://hk@db/x"), "not UTF-8"),
        ];
        for (content, url, expected) in cases {
            let dir = credential(content);
            let e = apply(loaded(url), Some(dir.path())).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{msg}");
            assert!(msg.contains(expected), "{msg}");
            assert!(!msg.contains("hunter2") && !msg.contains("other"), "{msg}");
        }
    }
}
