//! Text that came from an agent or a store never drives the terminal.
//!
//! An agent's stderr, a store's error body or a field a store listed can
//! hold control characters: `ESC ]0;…BEL` retitles the terminal, `ESC [2J`
//! clears it, a bare `\r` overwrites what was printed. Everything `agentctl`
//! prints goes through [`terminal_safe`] (stdout lines, error reports,
//! supervision events), which shows each control character but newline and
//! tab as a visible escape (`\x1b`, `\r`, `\u{9b}`).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character except `\n` and `\t` escaped.
pub(crate) fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if c == '\r' {
            out.push_str("\\r");
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert_eq!(terminal_safe("plain\n\tline"), "plain\n\tline");
        assert_eq!(
            terminal_safe("\x1b]0;pwned\x07\x1b[2Jx\ry\u{9b}"),
            "\\x1b]0;pwned\\x07\\x1b[2Jx\\ry\\u{9b}"
        );
        assert!(!terminal_safe("\x1b\x7f").contains('\x1b'));
    }
}
