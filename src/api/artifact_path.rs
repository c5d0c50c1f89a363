//! The `*artifact_path` of `GET /projects/:id/jobs/:job_id/artifacts/*artifact_path`: the name
//! of one entry inside a job's artifacts archive, checked and normalized before anything is read.
//!
//! GitLab itself only refuses NUL bytes and invalid UTF-8 (`Gitlab::Ci::Build::Artifacts::Path`)
//! and then looks the name up byte for byte in the archive. housekeep is stricter, because a
//! name that could climb out of a directory has no business reaching code that handles
//! archives: it refuses empty, absolute (`/x`, `\x`, `C:x`) and over-long paths, control
//! characters, and any `..` component, with `\` counted as a separator for that check so that
//! `a\..\b` is refused too. Normalization drops empty and `.` components (`a//./b` is `a/b`) and
//! keeps a trailing `/`, which names a directory; `\` inside a component is otherwise kept as is,
//! since zip names are compared byte for byte. A leaf module.

/// The longest name a zip entry can have (its length is a 16-bit field).
pub const MAX_ARTIFACT_PATH: usize = u16::MAX as usize;

/// Why an artifact path was refused (the HTTP layer answers 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    /// Nothing left once empty and `.` components are dropped.
    #[error("the artifact path is empty")]
    Empty,
    /// Longer than any zip entry name can be.
    #[error("the artifact path is longer than {max} bytes", max = MAX_ARTIFACT_PATH)]
    TooLong,
    /// Contains a NUL byte.
    #[error("the artifact path contains a NUL byte")]
    NulByte,
    /// Contains another control character (newline, DEL, C1 controls, ...).
    #[error("the artifact path contains a control character")]
    ControlCharacter,
    /// Starts with `/` or `\`, or with a drive letter such as `C:`.
    #[error("the artifact path is absolute; it must be relative to the archive's root")]
    Absolute,
    /// Has a `..` component (between `/` or `\` separators).
    #[error("the artifact path has a '..' component")]
    ParentComponent,
}

/// Checks `raw` (already percent-decoded) and returns the entry name to look up in the archive.
///
/// ```
/// use housekeep::api::artifact_path::{validate_artifact_path, InvalidPath};
/// assert_eq!(validate_artifact_path("./public//index.html").unwrap(), "public/index.html");
/// assert_eq!(validate_artifact_path("public/").unwrap(), "public/");
/// assert_eq!(validate_artifact_path("a/../b"), Err(InvalidPath::ParentComponent));
/// assert_eq!(validate_artifact_path("a\\..\\b"), Err(InvalidPath::ParentComponent));
/// assert_eq!(validate_artifact_path("/etc/passwd"), Err(InvalidPath::Absolute));
/// ```
pub fn validate_artifact_path(raw: &str) -> Result<String, InvalidPath> {
    if raw.is_empty() {
        return Err(InvalidPath::Empty);
    }
    if raw.len() > MAX_ARTIFACT_PATH {
        return Err(InvalidPath::TooLong);
    }
    if raw.contains('\0') {
        return Err(InvalidPath::NulByte);
    }
    if raw.chars().any(char::is_control) {
        return Err(InvalidPath::ControlCharacter);
    }
    if raw.starts_with('/') {
        return Err(InvalidPath::Absolute);
    }
    if raw.split(['/', '\\']).any(|component| component == "..") {
        return Err(InvalidPath::ParentComponent);
    }
    let components: Vec<&str> =
        raw.split('/').filter(|component| !component.is_empty() && *component != ".").collect();
    if components.is_empty() {
        return Err(InvalidPath::Empty);
    }
    let mut name = components.join("/");
    // After normalization, so that `./\\x` and `./C:/x` are caught as well.
    if name.starts_with('\\') || has_drive_prefix(&name) {
        return Err(InvalidPath::Absolute);
    }
    if matches!(raw.rsplit('/').next(), Some("" | ".")) {
        name.push('/');
    }
    Ok(name)
}

/// `C:` and the like: a Windows drive, absolute or drive-relative, never a name in an archive.
fn has_drive_prefix(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_and_nested_names_pass_unchanged() {
        for name in ["a.txt", "public/index.html", "a/b/c/d.tar.gz", "x...y/..z/z..", "é/ü.txt"] {
            assert_eq!(validate_artifact_path(name).as_deref(), Ok(name));
        }
    }

    #[test]
    fn empty_and_dot_components_are_dropped_and_a_trailing_slash_kept() {
        assert_eq!(validate_artifact_path("a//b").as_deref(), Ok("a/b"));
        assert_eq!(validate_artifact_path("./a/./b").as_deref(), Ok("a/b"));
        assert_eq!(validate_artifact_path("dir/").as_deref(), Ok("dir/"));
        assert_eq!(validate_artifact_path("dir//").as_deref(), Ok("dir/"));
        assert_eq!(validate_artifact_path("dir/.").as_deref(), Ok("dir/"));
    }

    #[test]
    fn each_refusal_names_what_is_wrong() {
        let cases = [
            ("", InvalidPath::Empty),
            (".", InvalidPath::Empty),
            ("./", InvalidPath::Empty),
            ("a\0b", InvalidPath::NulByte),
            ("a\nb", InvalidPath::ControlCharacter),
            ("a\u{7f}", InvalidPath::ControlCharacter),
            ("/etc/passwd", InvalidPath::Absolute),
            ("\\windows", InvalidPath::Absolute),
            ("C:/x", InvalidPath::Absolute),
            ("c:x", InvalidPath::Absolute),
            ("./\\x", InvalidPath::Absolute),
            (".//C:/x", InvalidPath::Absolute),
            ("..", InvalidPath::ParentComponent),
            ("../x", InvalidPath::ParentComponent),
            ("a/../../x", InvalidPath::ParentComponent),
            ("a/..", InvalidPath::ParentComponent),
            ("a\\..\\b", InvalidPath::ParentComponent),
            ("a/..\\b", InvalidPath::ParentComponent),
        ];
        for (raw, want) in cases {
            assert_eq!(validate_artifact_path(raw), Err(want.clone()), "{raw:?}");
            assert!(!want.to_string().is_empty());
        }
        let long = "a".repeat(MAX_ARTIFACT_PATH + 1);
        assert_eq!(validate_artifact_path(&long), Err(InvalidPath::TooLong));
        assert!(validate_artifact_path(&long[1..]).is_ok());
    }

    /// Components drawn so that `.`, `..`-lookalikes and empty ones are frequent.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), Just(".".to_owned()), "[a-z.]{1,4}", "[^/\\\\\0]{1,3}"]
    }

    fn separator() -> impl Strategy<Value = char> {
        prop_oneof![Just('/'), Just('\\')]
    }

    proptest! {
        #[test]
        fn any_path_with_a_dotdot_component_is_refused(
            before in prop::collection::vec((component(), separator()), 0..5),
            after in prop::collection::vec((separator(), component()), 0..5),
        ) {
            let mut raw = String::new();
            for (c, sep) in &before {
                raw.push_str(c);
                raw.push(*sep);
            }
            raw.push_str("..");
            for (sep, c) in &after {
                raw.push(*sep);
                raw.push_str(c);
            }
            prop_assert!(validate_artifact_path(&raw).is_err(), "{:?} accepted", raw);
        }

        #[test]
        fn accepted_names_are_relative_normalized_and_stable(raw in "[a-z./\\\\]{0,24}") {
            if let Ok(name) = validate_artifact_path(&raw) {
                prop_assert!(!name.starts_with('/'));
                prop_assert!(!name.split(['/', '\\']).any(|c| c == ".."));
                prop_assert!(!name.contains("//"));
                prop_assert!(!name.trim_end_matches('/').split('/').any(|c| c.is_empty() || c == "."));
                prop_assert_eq!(validate_artifact_path(&name), Ok(name.clone()));
            }
        }
    }
}
