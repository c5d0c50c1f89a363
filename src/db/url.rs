//! Parsing a database URL or libpq connection string, without connecting: the configuration
//! checks `database_url` with it when it is read.

use std::str::FromStr;

use super::conninfo::{self, UrlError};
use super::tls;

/// Parse a PostgreSQL URL or libpq string with its TLS settings ([`tls`]), with an error that
/// never repeats the string (it may hold a password). URLs that clients would split in different
/// places are refused ([`conninfo::check_unambiguous`]).
pub fn parse_url(url: &str) -> std::result::Result<(tokio_postgres::Config, tls::Tls), UrlError> {
    let is_url = conninfo::is_url(url);
    if is_url {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(UrlError::Scheme {
                scheme: scheme.into(),
            });
        }
        conninfo::check_unambiguous(url)?;
    } else if let (_, Some(e)) = conninfo::tokenize(url) {
        return Err(match e.key {
            Some(key) => UrlError::SyntaxAfter {
                key: conninfo::shown_key(key).into(),
                what: e.what,
            },
            None => UrlError::Syntax { what: e.what },
        });
    }
    let (rest, mut tls) = tls::split_url(url)?;
    let mut cfg = tokio_postgres::Config::from_str(&rest)
        .map_err(|e| UrlError::Invalid(conninfo::describe_parse_error(&e)))?;
    if is_url {
        cfg.ssl_mode(tls.mode);
    } else {
        tls.mode = cfg.get_ssl_mode();
    }
    Ok((cfg, tls))
}
