//! Quoting user text in messages: control and text-reordering characters are found, named and
//! escaped, never copied raw (they are how log and terminal injection is attempted).

/// Cuts `s` to at most `max` characters for quoting in a message, with control and
/// text-reordering characters written as escapes so a message never carries them raw.
pub(super) fn shorten(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if is_forbidden_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Control characters (newline, NUL, ESC, ...) and the invisible characters that break or
/// reorder displayed text.
pub(super) fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Names a character in a message without printing it raw (it may be a terminal escape).
pub(super) fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        '\t' => "a tab (\\t)".to_string(),
        '\n' => "a newline (\\n)".to_string(),
        '\r' => "a carriage return (\\r)".to_string(),
        '\0' => "a NUL byte (\\0)".to_string(),
        '\u{1b}' => "an escape character (ESC, \\u001b)".to_string(),
        c => format!("the character U+{:04X}", c as u32),
    }
}

/// The first character (1-based position) a value may not contain: control characters
/// (newlines, NUL, ESC, ...) and the invisible characters that reorder or break displayed text,
/// which is how YAML, log and terminal injection is attempted.
pub(super) fn forbidden_char(text: &str) -> Option<(usize, char)> {
    text.chars()
        .enumerate()
        .find_map(|(i, c)| is_forbidden_char(c).then_some((i + 1, c)))
}
