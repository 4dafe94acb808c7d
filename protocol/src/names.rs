//! The grammar of VM and device names, and how a name is shown to a person.
//!
//! A name (a VM's `-name`, a device's id) is what ringcastd files a console under and what
//! clients ask for, so both sides agree on one grammar ([`check_name`]):
//!
//! - 1 to [`MAX_NAME_LEN`] bytes of UTF-8;
//! - no `/` (it separates the VM from the device in `vm/device`);
//! - no control character (C0 including NUL, tab, newline and carriage return; DEL; C1),
//!   and none of the invisible characters that reorder or hide text (bidirectional
//!   overrides and isolates, zero-width characters, the byte order mark);
//! - not `.` or `..`.
//!
//! Spaces and any other printable character (`prod db`, `büro-1`) are allowed. A VM UUID
//! ([`check_uuid`]) is the canonical 36-character form QEMU prints (`-uuid`).
//!
//! Names that came from elsewhere (an older ringcastd, another server) may break the
//! grammar, so everything printed goes through [`escape`]: it cannot move the cursor,
//! change colours or the terminal title, or make one line look like two.

use std::borrow::Cow;

/// Longest VM or device name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Why a name breaks the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong(usize),
    /// The name contains `/`.
    Slash,
    /// The name contains a control or invisible character (the first one found).
    Unprintable(char),
    /// The name is `.` or `..`.
    Dots,
    /// A UUID that is not in the canonical form.
    NotUuid,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "is empty"),
            NameError::TooLong(n) => write!(f, "is {n} bytes long; at most {MAX_NAME_LEN}"),
            NameError::Slash => write!(f, "contains '/'"),
            NameError::Unprintable(c) => write!(
                f,
                "contains the control or invisible character U+{:04X}",
                u32::from(*c)
            ),
            NameError::Dots => write!(f, "is '.' or '..'"),
            NameError::NotUuid => write!(
                f,
                "is not a UUID of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// Whether `c` must never reach a terminal as it is: control characters and the invisible
/// characters that reorder or hide text.
pub fn is_unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}'   // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidirectional embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, isolates
            | '\u{FEFF}'              // byte order mark / zero-width no-break space
        )
}

/// Checks a VM or device name against the grammar (see the module's documentation).
pub fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(c) = name.chars().find(|&c| is_unprintable(c)) {
        return Err(NameError::Unprintable(c));
    }
    if name.contains('/') {
        return Err(NameError::Slash);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

/// Checks a VM UUID: 36 characters, hex digits with `-` at positions 8, 13, 18 and 23.
pub fn check_uuid(uuid: &str) -> Result<(), NameError> {
    let ok = uuid.len() == 36
        && uuid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        Err(NameError::NotUuid)
    }
}

/// `text` as it may be shown to a person: `\` doubled and every unprintable character
/// written as `\u{…}` (`\u{1b}` for ESC, `\u{7}` for BEL, `\n`, `\r` and `\t` as such), so
/// the same text always prints the same and different texts never print alike.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unprintable(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] line by line: newlines stay (multi-line messages keep their shape), every
/// other unprintable character is escaped. For messages that may carry text from another
/// machine (a server's error message).
pub fn escape_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| escape(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_names_with_spaces_and_non_ascii_letters_are_valid() {
        for n in ["vm1", "prod db", "prod_db-4b77ecbe", "büro-1", "a.b", "x"] {
            assert_eq!(check_name(n), Ok(()), "{n:?}");
        }
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
    }

    #[test]
    fn names_that_could_drive_a_terminal_or_a_path_are_refused() {
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(
            check_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(NameError::TooLong(MAX_NAME_LEN + 1))
        );
        assert_eq!(check_name("a/b"), Err(NameError::Slash));
        assert_eq!(check_name(".."), Err(NameError::Dots));
        assert_eq!(check_name("."), Err(NameError::Dots));
        for (n, c) in [
            ("vm\u{1b}]0;x\u{7}", '\u{1b}'),
            ("a\0b", '\0'),
            ("a\nb", '\n'),
            ("tty\r", '\r'),
            ("a\tb", '\t'),
            ("a\u{7f}", '\u{7f}'),
            ("a\u{9b}31m", '\u{9b}'),
            ("abc\u{202e}exe.txt", '\u{202e}'),
            ("a\u{200b}b", '\u{200b}'),
            ("\u{feff}a", '\u{feff}'),
        ] {
            assert_eq!(check_name(n), Err(NameError::Unprintable(c)), "{n:?}");
        }
        let msg = check_name("vm\u{1b}[31m").unwrap_err().to_string();
        assert_eq!(msg, "contains the control or invisible character U+001B");
    }

    #[test]
    fn uuids_are_canonical() {
        assert_eq!(check_uuid("5c1b2a9e-0c3f-4a1e-9b7d-2f6e8a4c1d3b"), Ok(()));
        assert_eq!(check_uuid("5C1B2A9E-0C3F-4A1E-9B7D-2F6E8A4C1D3B"), Ok(()));
        for u in [
            "",
            "5c1b2a9e0c3f4a1e9b7d2f6e8a4c1d3b",
            "5c1b2a9e-0c3f-4a1e-9b7d-2f6e8a4c1d3",
            "5c1b2a9e-0c3f-4a1e-9b7d-2f6e8a4c1d3g",
            "5c1b2a9e-0c3f-4a1e-9b7d/2f6e8a4c1d3b",
        ] {
            assert_eq!(check_uuid(u), Err(NameError::NotUuid), "{u:?}");
        }
    }

    #[test]
    fn escaped_text_has_no_unprintable_character_and_stays_distinct() {
        let hostile = "vm\u{1b}]0;owned\u{7}\u{1b}[31m\r\n\u{202e}";
        let e = escape(hostile);
        assert!(!e.chars().any(is_unprintable), "{e}");
        assert_eq!(e, "vm\\u{1b}]0;owned\\u{7}\\u{1b}[31m\\r\\n\\u{202e}");
        assert_eq!(escape("prod db"), "prod db");
        assert!(matches!(escape("prod db"), Cow::Borrowed(_)));
        // A backslash is doubled, so text that looks escaped stays distinct from the real thing.
        assert_ne!(escape("a\\u{7}"), escape("a\u{7}"));
        assert_eq!(escape("a\\u{7}"), "a\\\\u{7}");
        assert_eq!(
            escape_lines("line one\nvm\u{1b}[2J\r\n"),
            "line one\nvm\\u{1b}[2J\\r\n"
        );
    }
}
