//! Text from the service, made safe to print on an operator's terminal.
//!
//! User agents and labels are stored as clients and hosts sent them, and an
//! error message is whatever the server at `--server` says. Printed raw,
//! such text could act on the terminal instead of showing itself: an
//! escape sequence clears the screen or recolours it, a carriage return
//! overwrites a column, a right-to-left override (U+202E) reorders a cell so
//! `gpj.exe` reads `exe.jpg`, a zero-width space hides a difference between
//! two labels. So every such character is shown as its escape, visibly:
//! `\u{202e}` in tables and messages, `\u202e` in JSON (the same text, once
//! decoded). Everything else, other scripts included, prints as it is.

use std::borrow::Cow;
use std::fmt::Write as _;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

/// Whether `c` acts on the terminal or the layout of text rather than
/// showing a glyph, by its Unicode general category: a control (`Cc`: C0,
/// DEL, C1, escape sequences among them), a format character (`Cf`: the
/// bidi embeddings, overrides, isolates and marks, zero-width spaces and
/// joiners, the byte-order mark, invisible tags), or a line or paragraph
/// separator (`Zl`, `Zp`).
fn acts_on_layout(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// `text` with every character that would act on the terminal written as
/// its Rust-style escape (`\u{1b}`, `\u{202e}`); borrowed when there is none.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_layout) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_layout(c) {
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// JSON text (as serde_json writes it) with the same characters written as
/// JSON escapes (`\u202e`, a surrogate pair beyond the BMP), so the
/// document decodes to exactly the same values. serde_json already escapes
/// C0 controls inside strings, so a C0 character left in its output (a line
/// break of the pretty form) is structure and stays; any other such
/// character can only be inside a string.
pub(crate) fn json_shown(json: String) -> String {
    let escaped = |c: char| acts_on_layout(c) && u32::from(c) > 0x1f;
    if !json.chars().any(escaped) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if escaped(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_acts_on_the_terminal_is_shown_escaped_and_the_rest_as_it_is() {
        assert!(matches!(shown("Firefox/128 ø 日本"), Cow::Borrowed(_)));
        assert_eq!(
            shown("a\u{1b}[2J\r\u{85}\u{202e}b\u{2067}\u{200b}\u{feff}\u{2029}\u{e0041}"),
            r"a\u{1b}[2J\u{d}\u{85}\u{202e}b\u{2067}\u{200b}\u{feff}\u{2029}\u{e0041}"
        );
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_the_characters() {
        let value = serde_json::json!({ "label": "x\u{202e}\u{7f}\u{1b}\u{e0041}y" });
        let printed = json_shown(serde_json::to_string_pretty(&value).unwrap());
        assert!(
            printed.contains(r"x\u202e\u007f\u001b\udb40\udc41y"),
            "{printed}"
        );
        assert!(printed.contains('\n'), "the pretty form's line breaks stay");
        let read: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_eq!(read, value);
    }
}
