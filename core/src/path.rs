//! ZooKeeper path rules (`org.apache.zookeeper.common.PathUtils.validatePath`, 3.8).

use std::fmt;

/// Why a path was refused; the message mirrors ZooKeeper's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// The path as given.
    pub path: String,
    /// ZooKeeper's reason text.
    pub reason: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Invalid path string \"{}\" caused by {}",
            self.path, self.reason
        )
    }
}

impl std::error::Error for PathError {}

fn err(path: &str, reason: impl Into<String>) -> PathError {
    PathError {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Whether `c` is refused by ZooKeeper (checked on UTF-16 code units there: every
/// character outside the Basic Multilingual Plane is a surrogate pair and so refused).
fn forbidden_char(c: char) -> bool {
    let c = c as u32;
    (0x01..=0x1f).contains(&c)
        || (0x7f..=0x9f).contains(&c)
        || (0xd800..=0xf8ff).contains(&c)
        || (0xfff0..=0xffff).contains(&c)
        || c > 0xffff
}

/// Validate `path` exactly as ZooKeeper 3.8 does.
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(err(path, "Path length must be > 0"));
    }
    if !path.starts_with('/') {
        return Err(err(path, "Path must start with / character"));
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(err(path, "Path must not end with / character"));
    }
    // ZooKeeper's checks, char by char, with positions counted in chars as its messages do.
    let mut chars = path.chars().enumerate().skip(1).peekable();
    let (mut before_last, mut last) = ('/', '/');
    while let Some((i, c)) = chars.next() {
        let next_is_end = chars.peek().is_none_or(|&(_, next)| next == '/');
        if c == '\0' {
            return Err(err(path, format!("null character not allowed @{i}")));
        } else if c == '/' && last == '/' {
            return Err(err(path, format!("empty node name specified @{i}")));
        } else if c == '.' && last == '.' {
            if before_last == '/' && next_is_end {
                return Err(err(path, format!("relative paths not allowed @{i}")));
            }
        } else if c == '.' {
            if last == '/' && next_is_end {
                return Err(err(path, format!("relative paths not allowed @{i}")));
            }
        } else if forbidden_char(c) {
            return Err(err(path, format!("invalid character @{i}")));
        }
        before_last = last;
        last = c;
    }
    Ok(())
}

/// Validate the path of a create: for sequential nodes ZooKeeper validates `path + "1"`,
/// so a trailing `/` is allowed there (the sequence number becomes the whole name).
pub fn validate_create(path: &str, sequential: bool) -> Result<(), PathError> {
    if sequential {
        validate(&format!("{path}1")).map_err(|e| err(path, e.reason))
    } else {
        validate(path)
    }
}

/// Parent of a valid path; `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    parent_of_prefix(path)
}

/// Parent of the node a create names with `prefix`: its parent, or for the prefix of a
/// sequential create that ends in `/` the path before that `/` (`/a/` → `/a`, `/` → `/`).
/// `None` without a `/`.
pub fn parent_of_prefix(prefix: &str) -> Option<&str> {
    match prefix.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&prefix[..i]),
        None => None,
    }
}

/// Last segment of a valid path (empty for the root).
pub fn name(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Whether `path` is `base` or lies below it (`/a/b` is within `/a`, `/ab` is not).
pub fn is_within(path: &str, base: &str) -> bool {
    base == "/"
        || path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `parent` joined with a child `name`.
pub fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_zookeeper_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a.b",
            "/..a",
            "/a..",
            "/zookeeper",
            "/a/.b/c",
            "/ü",
        ] {
            assert!(validate(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn refuses_what_zookeeper_refuses() {
        for p in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/.",
            "/..",
            "/a/.",
            "/a/../b",
            "/a\0b",
            "/a\u{1}",
            "/\u{7f}",
            "/\u{e000}",
            "/\u{fff5}",
            "/\u{1F600}",
        ] {
            assert!(validate(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn sequential_allows_trailing_slash() {
        assert!(validate_create("/a/", true).is_ok());
        assert!(validate_create("/a/", false).is_err());
        assert!(validate_create("/a//", true).is_err());
    }

    #[test]
    fn parent_and_name() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(name("/a/b"), "b");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_within("/a/b", "/a") && is_within("/a", "/a") && is_within("/x", "/"));
        assert!(!is_within("/ab", "/a"));
    }
}
