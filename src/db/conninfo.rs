//! Connection strings as text: redaction for messages, the check that a `postgres://` URL means
//! the same to every client, and a tokenizer for libpq's `key=value` form.
//!
//! Redaction works on the raw text and never trusts a URL parser: a password holding `/`, `?`,
//! `#` or `@` is split differently by `url::Url`, tokio-postgres and libpq, and each split would
//! show part of it somewhere. So the rule is positional and errs towards hiding: everything
//! between `://` and the last `@` is credentials (only a plain user name survives), a query
//! parameter's value is shown only when its name is a known non-secret libpq parameter, and
//! whatever cannot be classified is replaced by `REDACTED`.

pub const REDACTED: &str = "REDACTED";

/// Why a database URL or connection string was refused. None of these repeats the string, which
/// may hold a password: a keyword is shown only as [`shown_key`] lets it through, and the
/// tokio-postgres parse error is not kept as a cause, as its "got `x`" would echo the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("scheme {scheme:?} is not postgres:// or postgresql://")]
    Scheme { scheme: String },
    /// See [`check_unambiguous`].
    #[error(
        "the user name or password holds a raw '/', '?', '#' or '@' (or an '@' follows the host), \
         which PostgreSQL clients split in different places: percent-encode them \
         (%2F for /, %3F for ?, %23 for #, %40 for @, %25 for % itself)"
    )]
    Ambiguous,
    /// A `key=value` string the tokenizer stopped on; `key` is already as shown.
    #[error("not a valid connection string: {what} after keyword {key:?}")]
    SyntaxAfter { key: String, what: &'static str },
    #[error("not a valid connection string: {what} (write key=value pairs, or a postgres:// URL)")]
    Syntax { what: &'static str },
    #[error("sslmode \"{0}\" is not one of disable, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("not a valid PostgreSQL URL: {0}")]
    Invalid(ParseProblem),
}

/// What tokio-postgres found wrong in a connection string, in words that never echo the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseProblem {
    /// The parameter's name as [`shown_key`] shows it.
    #[error("unknown parameter {0:?}")]
    UnknownParameter(String),
    #[error("invalid value for parameter {0:?}")]
    InvalidValue(String),
    #[error("a percent-encoded part is not UTF-8")]
    NotUtf8,
    #[error("not a valid connection string")]
    Other,
}

/// libpq parameters whose values are not secret and help an operator read a message.
const SHOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "client_encoding",
    "options",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslnegotiation",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "gssencmode",
    "krbsrvname",
    "replication",
];

/// A string with a `scheme://` prefix, split there; None for libpq `key=value` strings (whose
/// values may contain `://` themselves).
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// Whether `s` is a URL (`scheme://…`) rather than a libpq `key=value` string.
pub fn is_url(s: &str) -> bool {
    split_scheme(s).is_some()
}

/// A key (URL query parameter or libpq keyword) as shown: libpq's keywords are lower-case words,
/// anything else might be a secret typed in the wrong place.
pub fn shown_key(key: &str) -> &str {
    if !key.is_empty() && key.len() <= 40 && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        key
    } else {
        REDACTED
    }
}

fn value_shown(key: &str) -> bool {
    SHOWN.contains(&key.to_ascii_lowercase().as_str())
}

/// A URL or libpq connection string with its password and every value that might be secret
/// replaced by `REDACTED`.
pub fn redact(s: &str) -> String {
    match split_scheme(s) {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_url_rest(rest)),
        None => redact_keyword_value(s),
    }
}

fn redact_url_rest(rest: &str) -> String {
    let (creds, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let mut out = String::new();
    if let Some(creds) = creds {
        // A `?` or `#` before the last `@` means that `@` may sit inside a query value (or a
        // password holds them): nothing after `://` can be told apart from a secret.
        if creds.contains(['?', '#']) {
            return REDACTED.to_string();
        }
        let (user, password) = match creds.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (creds, None),
        };
        // A user name with `/` or `@` in it is really part of a password that was not encoded.
        let plain_user = !user.contains(['/', '@']) && !user.chars().any(char::is_control);
        match (plain_user, password) {
            (true, Some(_)) => out.push_str(&format!("{user}:{REDACTED}@")),
            (true, None) => out.push_str(&format!("{user}@")),
            (false, _) => out.push_str(&format!("{REDACTED}@")),
        }
    }
    let end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (host_path, after) = tail.split_at(end);
    let (authority, path) = host_path.split_at(host_path.find('/').unwrap_or(host_path.len()));
    out.push_str(if authority_is_plain(authority) { authority } else { REDACTED });
    out.push_str(path);
    if let Some(query) = after.strip_prefix('?') {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => {
                    let key = percent_encoding::percent_decode_str(k).decode_utf8_lossy();
                    if value_shown(&key) {
                        format!("{k}={v}")
                    } else {
                        format!("{}={REDACTED}", shown_key(k))
                    }
                }
                None if pair.is_empty() => String::new(),
                None => REDACTED.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    } else if after.starts_with('#') {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// `host[:port]` items separated by commas, IPv6 addresses in brackets, numeric ports. Anything
/// else (say `user:password` with the `@` forgotten) is not shown.
fn authority_is_plain(authority: &str) -> bool {
    let numeric = |p: &str| p.chars().all(|c| c.is_ascii_digit());
    authority.split(',').all(|item| {
        if item.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return false;
        }
        if let Some(v6) = item.strip_prefix('[') {
            return match v6.split_once(']') {
                Some((_, "")) => true,
                Some((_, port)) => port.strip_prefix(':').is_some_and(numeric),
                None => false,
            };
        }
        match item.split_once(':') {
            Some((_, port)) => numeric(port),
            None => true,
        }
    })
}

/// One `key = value` of a libpq connection string, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    pub key: &'a str,
    /// The value as written, quotes and backslashes included.
    pub raw: &'a str,
    /// The value as libpq reads it.
    pub value: String,
}

/// What stopped the tokenizer; `key` is the keyword whose value could not be read, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError<'a> {
    pub key: Option<&'a str>,
    pub what: &'static str,
}

/// libpq's connection string syntax: whitespace-separated `key = value`, spaces allowed around
/// `=`, values bare (up to whitespace) or in single quotes, a backslash escaping the next
/// character in both. Whitespace is Unicode's, as tokio-postgres reads it (libpq's ASCII
/// whitespace is a subset). Returns the parameters read before any error.
pub fn tokenize(s: &str) -> (Vec<Param<'_>>, Option<SyntaxError<'_>>) {
    let mut params = Vec::new();
    let mut it = s.char_indices().peekable();
    let pos = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| it.peek().map_or(s.len(), |(i, _)| *i);
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        if it.peek().is_none() {
            return (params, None);
        }
        let start = pos(&mut it);
        while it.next_if(|(_, c)| !c.is_whitespace() && *c != '=').is_some() {}
        let key = &s[start..pos(&mut it)];
        if key.is_empty() {
            return (params, Some(SyntaxError { key: None, what: "a value without a keyword" }));
        }
        skip_ws(&mut it);
        if it.next_if(|(_, c)| *c == '=').is_none() {
            return (params, Some(SyntaxError { key: None, what: "a word that is not keyword=value" }));
        }
        skip_ws(&mut it);
        let value_start = pos(&mut it);
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next() {
                    None => return (params, Some(SyntaxError { key: Some(key), what: "an unterminated quote" })),
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => {
                        if let Some((_, c)) = it.next() {
                            value.push(c);
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, c)) = it.next() {
                        value.push(c);
                    }
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return (params, Some(SyntaxError { key: Some(key), what: "a keyword without a value" }));
            }
        }
        params.push(Param { key, raw: &s[value_start..pos(&mut it)], value });
    }
}

fn redact_keyword_value(s: &str) -> String {
    let (params, error) = tokenize(s);
    let mut out: Vec<String> = params
        .iter()
        .map(|p| {
            if value_shown(p.key) {
                format!("{}={}", p.key, p.raw)
            } else {
                format!("{}={REDACTED}", shown_key(p.key))
            }
        })
        .collect();
    // Whatever follows a syntax error cannot be classified, so none of it is shown.
    match error {
        Some(SyntaxError { key: Some(key), .. }) => out.push(format!("{}={REDACTED}", shown_key(key))),
        Some(SyntaxError { key: None, .. }) => out.push(REDACTED.to_string()),
        None => {}
    }
    out.join(" ")
}

/// Refuse a `postgres://` URL that clients would split in different places: tokio-postgres
/// takes everything up to the first `@` of the whole string as credentials, libpq and URL
/// parsers stop the authority at the first `/`, `?` or `#`, and [`redact`] hides everything up
/// to the last `@`. A password holding any of `/ ? # @` raw would connect with a wrong password
/// or to a wrong host (and show part of the password as a host or database name). So a URL has
/// at most one `@`, in the authority. The message never repeats the URL.
pub fn check_unambiguous(url: &str) -> Result<(), UrlError> {
    let Some((_, rest)) = split_scheme(url) else { return Ok(()) };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if rest.matches('@').count() > authority.matches('@').count() || authority.matches('@').count() > 1 {
        return Err(UrlError::Ambiguous);
    }
    Ok(())
}

/// A tokio-postgres parse error in words that never echo the input (its "got `x`" would show
/// one character of whatever was there).
pub fn describe_parse_error(e: &tokio_postgres::Error) -> ParseProblem {
    let cause = std::error::Error::source(e).map(|c| c.to_string()).unwrap_or_default();
    if let Some(key) = cause.strip_prefix("unknown option `").and_then(|k| k.strip_suffix('`')) {
        return ParseProblem::UnknownParameter(shown_key(key).into());
    }
    if let Some(key) = cause.strip_prefix("invalid value for option `").and_then(|k| k.strip_suffix('`')) {
        return ParseProblem::InvalidValue(shown_key(key).into());
    }
    if cause.contains("utf-8") || cause.contains("UTF-8") {
        return ParseProblem::NotUtf8;
    }
    ParseProblem::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_user_and_hide_the_password_wherever_it_splits() {
        for (url, shown) in [
            ("postgres://u:hunter2@db:5432/x", "postgres://u:REDACTED@db:5432/x"),
            ("postgres://root:ab/S3cret@host/db", "postgres://root:REDACTED@host/db"),
            ("postgres://root:ab@S3cret@host/db", "postgres://root:REDACTED@host/db"),
            ("postgres://root:ab:S3cret@host/db", "postgres://root:REDACTED@host/db"),
            ("postgres://root:a%40b@h1:5432,h2:5433/db", "postgres://root:REDACTED@h1:5432,h2:5433/db"),
            ("postgres://u@[::1]:5432/db", "postgres://u@[::1]:5432/db"),
            ("postgres://db/x", "postgres://db/x"),
            ("s3://bucket/pre/fix", "s3://bucket/pre/fix"),
            ("file:///var/opt/artifacts", "file:///var/opt/artifacts"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn malformed_urls_hide_everything_that_might_be_a_password() {
        for (url, secret) in [
            ("postgres://root:ab?S3cret@host/db", "S3cret"),
            ("postgres://root:ab#S3cret@host/db", "S3cret"),
            ("postgres://u@h/db?password=ab@S3cret", "S3cret"),
            ("postgres://u:S3cret/db", "S3cret"),
            ("postgres://S3cret/x@host/db", "S3cret"),
            ("postgres://h/db#password=S3cret", "S3cret"),
            ("postgres://h/db?S3cret", "S3cret"),
        ] {
            let shown = redact(url);
            assert!(!shown.contains(secret) && shown.contains(REDACTED), "{url} -> {shown}");
        }
    }

    #[test]
    fn query_values_are_shown_only_for_known_harmless_parameters() {
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=x1&sslpassword=x2&pass%77ord=x3&frob=x4&Odd=x5"),
            "postgres://u@h/db?sslmode=require&password=REDACTED&sslpassword=REDACTED&REDACTED=REDACTED&frob=REDACTED&REDACTED=REDACTED"
        );
        assert_eq!(redact("postgres://u@h/db?application_name=a%20b"), "postgres://u@h/db?application_name=a%20b");
    }

    #[test]
    fn keyword_value_strings_are_tokenized_as_libpq_does() {
        let (p, e) = tokenize(r"host=db password = 'it\'s a b' user=u port= 5432 x=a\ b");
        assert_eq!(e, None);
        let got: Vec<(&str, &str)> = p.iter().map(|p| (p.key, p.value.as_str())).collect();
        assert_eq!(got, [("host", "db"), ("password", "it's a b"), ("user", "u"), ("port", "5432"), ("x", "a b")]);
        for (s, shown) in [
            ("host=db password=hunter2 user=u", "host=db password=REDACTED user=u"),
            ("host=db password='a b' user=u", "host=db password=REDACTED user=u"),
            ("host=db password = x user=u", "host=db password=REDACTED user=u"),
            (r"password='it\'s' dbname=x", "password=REDACTED dbname=x"),
            ("host=db password='a b user=u", "host=db password=REDACTED"),
            ("host=db hunter2 user=u", "host=db REDACTED"),
            ("host=db password=", "host=db password=REDACTED"),
            ("host=db Hunter2=x", "host=db REDACTED=REDACTED"),
            ("host=h password=ab://cd@x", "host=h password=REDACTED"),
        ] {
            assert_eq!(redact(s), shown, "{s}");
        }
    }

    #[test]
    fn ambiguous_urls_are_refused_without_repeating_them() {
        for url in [
            "postgres://root:ab/S3cret@host/db",
            "postgres://root:ab@S3cret@host/db",
            "postgres://root:ab?S3cret@host/db",
            "postgres://root:ab#S3cret@host/db",
            "postgres://host/db?password=ab@S3cret",
            "postgres://root:ab@S3cret/x@host/db",
            "postgres://u@h/db?application_name=a@b",
        ] {
            let e = check_unambiguous(url).unwrap_err().to_string();
            assert!(!e.contains("S3cret") && e.contains("%40"), "{url}: {e}");
        }
        for url in [
            "postgres://root:ab%2FS3%40cr%3Fe%23t@host/db",
            "postgres://u@h/db?application_name=a%40b",
            "postgres://h/db",
            "host=h password=a@b/c",
        ] {
            assert!(check_unambiguous(url).is_ok(), "{url}");
        }
    }
}
