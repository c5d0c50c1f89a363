//! Object keys (SPEC §2), relative to a store's prefix.
//!
//! H = hex SHA-256 of the decimal project id, P = `H[0..2]/H[2..4]/H`.
//! - hashed: `P/<YYYY_MM_DD>/<job_id>/<artifact_id>/<file>`
//! - direct upload: `P/@final/U[0..2]/U[2..4]/U[4..]`, U = 64 hex chars
//! - pipeline artifacts: `P/pipelines/<pipeline_id>/artifacts/<id>/…` (never touched)

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

/// `H[0..2]/H[2..4]/H` for a project.
pub fn project_dir(project_id: i64) -> String {
    let h = hex::encode(Sha256::digest(project_id.to_string().as_bytes()));
    format!("{}/{}/{}", &h[0..2], &h[2..4], h)
}

/// The directory of a hashed-layout artifact: `P/<date>/<job_id>/<artifact_id>`.
pub fn hashed_dir(project_id: i64, created_at: DateTime<Utc>, job_id: i64, artifact_id: i64) -> String {
    format!("{}/{}/{job_id}/{artifact_id}", project_dir(project_id), created_at.format("%Y_%m_%d"))
}

/// The key of a hashed-layout artifact file.
pub fn hashed_key(project_id: i64, created_at: DateTime<Utc>, job_id: i64, artifact_id: i64, file: &str) -> String {
    format!("{}/{file}", hashed_dir(project_id, created_at, job_id, artifact_id))
}

/// The `@final` key of a direct upload; `upload` is 64 lowercase hex characters.
pub fn final_key(project_id: i64, upload: &str) -> String {
    debug_assert!(is_hex64(upload));
    format!("{}/@final/{}/{}/{}", project_dir(project_id), &upload[0..2], &upload[2..4], &upload[4..])
}

/// `(store_dir, file)` of a key: its directory and its last segment, as `ci_deleted_objects` holds them.
pub fn split_dir_file(key: &str) -> (&str, &str) {
    match key.rsplit_once('/') {
        Some((d, f)) => (d, f),
        None => ("", key),
    }
}

fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_hex64(s: &str) -> bool {
    is_hex(s, 64)
}

/// What a key is, once parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Hashed { project_hash: String, date: NaiveDate, job_id: i64, artifact_id: i64, file: String },
    Final { project_hash: String, upload: String },
    Pipeline { project_hash: String, pipeline_id: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key has an empty segment (// or a leading or trailing /)")]
    EmptySegment,
    #[error("key has a . or .. segment")]
    DotSegment,
    #[error("key has a control character")]
    Control,
    #[error("key does not follow the artifact layout: {0}")]
    Layout(&'static str),
}

/// Refuse keys that could escape their directory or that no layout produces.
pub fn check_segments(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control);
    }
    for seg in key.split('/') {
        if seg.is_empty() {
            return Err(KeyError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(KeyError::DotSegment);
        }
    }
    Ok(())
}

/// Parse a key relative to the store prefix.
pub fn parse(key: &str) -> Result<Key, KeyError> {
    check_segments(key)?;
    let segs: Vec<&str> = key.split('/').collect();
    if segs.len() < 4 || !is_hex(segs[0], 2) || !is_hex(segs[1], 2) || !is_hex64(segs[2]) {
        return Err(KeyError::Layout("it must start with the project directory H[0..2]/H[2..4]/H"));
    }
    if segs[2][0..2] != *segs[0] || segs[2][2..4] != *segs[1] {
        return Err(KeyError::Layout("the project directory levels disagree"));
    }
    let project_hash = segs[2].to_string();
    match segs[3] {
        "@final" => {
            if segs.len() != 7 || !is_hex(segs[4], 2) || !is_hex(segs[5], 2) || !is_hex(segs[6], 60) {
                return Err(KeyError::Layout("an @final key is P/@final/U[0..2]/U[2..4]/U[4..] with 64 hex characters"));
            }
            Ok(Key::Final { project_hash, upload: format!("{}{}{}", segs[4], segs[5], segs[6]) })
        }
        "pipelines" => {
            let pipeline_id = segs
                .get(4)
                .and_then(|s| s.parse().ok())
                .ok_or(KeyError::Layout("a pipeline artifact key is P/pipelines/<pipeline_id>/…"))?;
            Ok(Key::Pipeline { project_hash, pipeline_id })
        }
        date => {
            let date = NaiveDate::parse_from_str(date, "%Y_%m_%d")
                .map_err(|_| KeyError::Layout("expected @final, pipelines or a YYYY_MM_DD date after the project directory"))?;
            if segs.len() != 7 {
                return Err(KeyError::Layout("a hashed key is P/<date>/<job_id>/<artifact_id>/<file>"));
            }
            let job_id = segs[4].parse().map_err(|_| KeyError::Layout("job id is not a number"))?;
            let artifact_id = segs[5].parse().map_err(|_| KeyError::Layout("artifact id is not a number"))?;
            Ok(Key::Hashed { project_hash, date, job_id, artifact_id, file: segs[6].to_string() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn project_dir_is_the_sha256_of_the_decimal_id() {
        // sha256("1") = 6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b
        assert_eq!(
            project_dir(1),
            "6b/86/6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
        );
    }

    #[test]
    fn hashed_key_round_trips() {
        let t = Utc.with_ymd_and_hms(2026, 3, 4, 23, 59, 0).unwrap();
        let k = hashed_key(42, t, 7, 99, "artifacts.zip");
        assert!(k.ends_with("/2026_03_04/7/99/artifacts.zip"), "{k}");
        match parse(&k).unwrap() {
            Key::Hashed { job_id, artifact_id, file, date, .. } => {
                assert_eq!((job_id, artifact_id, file.as_str()), (7, 99, "artifacts.zip"));
                assert_eq!(date, NaiveDate::from_ymd_opt(2026, 3, 4).unwrap());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn final_key_round_trips() {
        let u = hex::encode(Sha256::digest(b"some uuid"));
        let k = final_key(42, &u);
        let segs: Vec<&str> = k.split('/').collect();
        assert_eq!(segs[3], "@final");
        assert_eq!(segs[6].len(), 60);
        assert_eq!(parse(&k).unwrap(), Key::Final { project_hash: segs[2].to_string(), upload: u });
        let (dir, file) = split_dir_file(&k);
        assert_eq!(format!("{dir}/{file}"), k);
        assert_eq!(file.len(), 60);
    }

    #[test]
    fn pipeline_keys_are_recognised() {
        let k = format!("{}/pipelines/5/artifacts/9/code_coverage.json", project_dir(3));
        assert!(matches!(parse(&k).unwrap(), Key::Pipeline { pipeline_id: 5, .. }));
    }

    #[test]
    fn rejects_dot_dot_and_empty_segments() {
        let good = final_key(1, &"a".repeat(64));
        assert!(parse(&good).is_ok());
        for bad in [
            String::new(),
            format!("/{good}"),
            format!("{good}/"),
            good.replace("/@final/", "//@final/"),
            good.replace("/@final/", "/../"),
            good.replace("/@final/", "/./@final/"),
            format!("{good}\n"),
        ] {
            assert!(parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_segments("a/../b"), Err(KeyError::DotSegment));
        assert_eq!(check_segments("a//b"), Err(KeyError::EmptySegment));
    }

    #[test]
    fn rejects_keys_outside_the_layout() {
        for bad in ["foo/bar", "6b/86/short/@final/aa/bb/cc", &format!("{}/@final/aa/bb/short", project_dir(1))] {
            assert!(matches!(parse(bad), Err(KeyError::Layout(_))), "{bad}");
        }
    }
}
