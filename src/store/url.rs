//! Store URLs: `file://`, `s3://`, `gs://` and `az://`, parsed and checked without opening
//! anything, so that the configuration can check them when it is read.

use super::layout;
use crate::db::conninfo::redact as redact_url;

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Local { root: std::path::PathBuf },
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
}

impl StoreUrl {
    pub fn parse(s: &str) -> std::result::Result<StoreUrl, String> {
        let shown = redact_url(s);
        // Checked before parsing, which would resolve the dot segments away.
        if let Some((_, rest)) = s.split_once("://")
            && rest.split('/').any(|seg| seg == ".." || seg == ".") {
                return Err(format!("\"{shown}\" has a . or .. segment"));
            }
        let url = url::Url::parse(s).map_err(|e| format!("\"{shown}\" is not a URL ({e})"))?;
        let bucket = || -> std::result::Result<String, String> {
            match url.host_str() {
                Some(b) if !b.is_empty() => Ok(b.to_string()),
                _ => Err(format!("\"{shown}\" names no bucket; write {}://bucket[/prefix]", url.scheme())),
            }
        };
        let prefix = || -> std::result::Result<String, String> {
            // The URL keeps the prefix percent-encoded; keys use it as written.
            let p = percent_encoding::percent_decode_str(url.path().trim_matches('/'))
                .decode_utf8()
                .map_err(|_| format!("prefix of \"{shown}\" is not UTF-8"))?
                .into_owned();
            if !p.is_empty() {
                layout::check_segments(&p).map_err(|e| format!("prefix of \"{shown}\": {e}"))?;
            }
            Ok(p)
        };
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(format!("\"{shown}\" has a host; write file:///absolute/path"));
                }
                let root = url.to_file_path().map_err(|_| format!("\"{shown}\" is not a file:///absolute/path"))?;
                Ok(StoreUrl::Local { root })
            }
            "s3" | "s3a" => Ok(StoreUrl::S3 { bucket: bucket()?, prefix: prefix()? }),
            "gs" => Ok(StoreUrl::Gcs { bucket: bucket()?, prefix: prefix()? }),
            "az" | "azure" | "abfs" | "abfss" => Ok(StoreUrl::Azure { container: bucket()?, prefix: prefix()? }),
            other => Err(format!("scheme \"{other}\" is not one of file://, s3://, gs://, az://")),
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
