//! Store URLs: `file://`, `s3://`, `gs://` and `az://`, parsed and checked without opening
//! anything, so that the configuration can check them when it is read.

use super::layout;
use crate::db::conninfo::redact as redact_url;

/// Why a store URL was refused. `shown` is the URL redacted ([`redact_url`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreUrlError {
    /// Checked before parsing, which would resolve the dot segments away.
    #[error("\"{shown}\" has a . or .. segment")]
    DotSegment { shown: String },
    #[error("\"{shown}\" is not a URL ({source})")]
    NotAUrl {
        shown: String,
        #[source]
        source: url::ParseError,
    },
    #[error("\"{shown}\" names no bucket; write {scheme}://bucket[/prefix]")]
    NoBucket { shown: String, scheme: String },
    #[error("prefix of \"{shown}\" is not UTF-8")]
    PrefixNotUtf8 { shown: String },
    #[error("prefix of \"{shown}\": {source}")]
    Prefix {
        shown: String,
        #[source]
        source: layout::KeyError,
    },
    #[error("\"{shown}\" has a host; write file:///absolute/path")]
    FileHost { shown: String },
    #[error("\"{shown}\" is not a file:///absolute/path")]
    NotAbsolute { shown: String },
    #[error("scheme \"{scheme}\" is not one of file://, s3://, gs://, az://")]
    Scheme { scheme: String },
}

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Local { root: std::path::PathBuf },
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
}

impl StoreUrl {
    pub fn parse(s: &str) -> std::result::Result<StoreUrl, StoreUrlError> {
        let shown = redact_url(s);
        // Checked before parsing, which would resolve the dot segments away.
        if let Some((_, rest)) = s.split_once("://")
            && rest.split('/').any(|seg| seg == ".." || seg == ".") {
                return Err(StoreUrlError::DotSegment { shown });
            }
        let url = url::Url::parse(s).map_err(|source| StoreUrlError::NotAUrl {
            shown: shown.clone(),
            source,
        })?;
        let bucket = || -> std::result::Result<String, StoreUrlError> {
            match url.host_str() {
                Some(b) if !b.is_empty() => Ok(b.to_string()),
                _ => Err(StoreUrlError::NoBucket {
                    shown: shown.clone(),
                    scheme: url.scheme().into(),
                }),
            }
        };
        let prefix = || -> std::result::Result<String, StoreUrlError> {
            // The URL keeps the prefix percent-encoded; keys use it as written.
            let p = percent_encoding::percent_decode_str(url.path().trim_matches('/'))
                .decode_utf8()
                .map_err(|_| StoreUrlError::PrefixNotUtf8 {
                    shown: shown.clone(),
                })?
                .into_owned();
            if !p.is_empty() {
                layout::check_segments(&p).map_err(|source| StoreUrlError::Prefix {
                    shown: shown.clone(),
                    source,
                })?;
            }
            Ok(p)
        };
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(StoreUrlError::FileHost { shown });
                }
                let root = url.to_file_path().map_err(|_| StoreUrlError::NotAbsolute {
                    shown: shown.clone(),
                })?;
                Ok(StoreUrl::Local { root })
            }
            "s3" | "s3a" => Ok(StoreUrl::S3 { bucket: bucket()?, prefix: prefix()? }),
            "gs" => Ok(StoreUrl::Gcs { bucket: bucket()?, prefix: prefix()? }),
            "az" | "azure" | "abfs" | "abfss" => Ok(StoreUrl::Azure { container: bucket()?, prefix: prefix()? }),
            other => Err(StoreUrlError::Scheme {
                scheme: other.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(
            StoreUrl::parse("s3://bucket/some/prefix/").unwrap(),
            StoreUrl::S3 { bucket: "bucket".into(), prefix: "some/prefix".into() }
        );
        assert_eq!(
            StoreUrl::parse("s3://b/we,ird \"pré\"fix").unwrap(),
            StoreUrl::S3 { bucket: "b".into(), prefix: "we,ird \"pré\"fix".into() }
        );
        assert_eq!(StoreUrl::parse("gs://b").unwrap(), StoreUrl::Gcs { bucket: "b".into(), prefix: String::new() });
        assert_eq!(
            StoreUrl::parse("az://c/p").unwrap(),
            StoreUrl::Azure { container: "c".into(), prefix: "p".into() }
        );
        assert_eq!(
            StoreUrl::parse("file:///var/opt/artifacts").unwrap(),
            StoreUrl::Local { root: "/var/opt/artifacts".into() }
        );
        for bad in ["ftp://x", "s3://", "s3://b/a/../c", "file://host/x", "not a url", "/var/opt"] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
