//! Secrets read from files: API keys, a database URL. One reader, so every
//! secret file is decoded, checked and warned about the same way: a leading
//! UTF-8 byte-order mark is dropped, a single secret loses one trailing line
//! break, an empty one is refused by name, and a file others can read gets
//! a warning.

use std::path::Path;

use crate::ConfigError;

/// The text of a secret file, without a UTF-8 byte-order mark an editor put
/// first, having warned if other users can read it. `flag` names the option
/// that named the file, for the error.
///
/// # Errors
///
/// The file cannot be read or is not UTF-8; the message names the flag and
/// the file, never its contents.
pub(crate) fn read_file(path: &Path, flag: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError(format!("{flag} {}: {err}", path.display())))?;
    warn_if_others_can_read(path, flag);
    Ok(without_byte_order_mark(&text).to_owned())
}

/// A file holding one secret (a database URL): its text without one
/// trailing line break, as `echo` and editors leave it.
///
/// # Errors
///
/// As [`read_file`], and a file with nothing in it is refused by name.
pub(crate) fn read_single(path: &Path, flag: &str) -> Result<String, ConfigError> {
    let text = read_file(path, flag)?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        return Err(ConfigError(format!(
            "{flag} {}: the file is empty",
            path.display()
        )));
    }
    Ok(text.to_owned())
}

/// Windows editors save UTF-8 with a byte-order mark; left in, it would be
/// the first character of the secret, which then never matches. Only the
/// first is a mark: a second one is content.
pub(crate) fn without_byte_order_mark(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// A secret file that group or others can read hands the secret to every
/// local account in that group, or every account: worth a warning, not a
/// refusal (a secret mounted by an orchestrator may come with a wider mode).
fn warn_if_others_can_read(path: &Path, flag: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    file = %path.display(),
                    mode = %format!("{mode:03o}"),
                    "the secret file of {flag} can be read by other users; make it readable by \
                     this user only (chmod 600)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, flag);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Result<String, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, text).unwrap();
        read_single(&path, "--flag")
    }

    #[test]
    fn one_trailing_line_break_and_a_leading_byte_order_mark_are_not_part_of_the_secret() {
        assert_eq!(single("postgres://a\n").unwrap(), "postgres://a");
        assert_eq!(single("postgres://a\r\n").unwrap(), "postgres://a");
        assert_eq!(single("\u{feff}postgres://a").unwrap(), "postgres://a");
        // Only one: anything more is the secret's own text.
        assert_eq!(single("postgres://a\n\n").unwrap(), "postgres://a\n");
        assert_eq!(single("\u{feff}\u{feff}x").unwrap(), "\u{feff}x");
        assert_eq!(single(" x ").unwrap(), " x ");
    }

    #[test]
    fn an_empty_file_is_refused_by_name() {
        for text in ["", "\n", "\r\n", "\u{feff}", "\u{feff}\n"] {
            let err = single(text).unwrap_err().to_string();
            assert!(
                err.starts_with("--flag ") && err.ends_with("secret: the file is empty"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn an_unreadable_file_is_refused_by_name_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let err = read_single(&path, "--flag").unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--flag {}: ", path.display())),
            "{err}"
        );
        std::fs::write(&path, b"postgres://u:\xff\xfepw@h/db").unwrap();
        let err = read_single(&path, "--flag").unwrap_err().to_string();
        assert!(!err.contains("pw@h"), "{err}");
    }
}
