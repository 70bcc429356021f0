//! Values as error messages show them: never whole (a 100 MB name once went to stderr in
//! full), and never the personal data of a name, an address or contact details, which the
//! field path and the resident id locate well enough.

/// The most characters of one value an error message shows.
pub const MAX_SHOWN: usize = 80;
/// The most characters of a whole message built around values (serde's lists of expected
/// fields fit many times over).
const MAX_MESSAGE: usize = 1000;

/// `s` cut to [`MAX_SHOWN`] characters, with "…" where it was cut.
pub fn cap(s: &str) -> String {
    cut(s, MAX_SHOWN)
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((i, _)) => format!("{}…", &s[..i]),
    }
}

/// `s` quoted as `{:?}` quotes it, cut to [`MAX_SHOWN`] characters.
pub fn quoted(s: &str) -> String {
    format!("{:?}", cap(s))
}

/// Whether a field path (`record.name.kana`, `fields.address`, `contact.email`) is personal
/// data: a name, an address or contact details. Errors about such a field never show its
/// value.
pub fn is_personal(path: &str) -> bool {
    path.split('.')
        .map(|part| part.split('[').next().unwrap_or(part))
        .any(|part| matches!(part, "name" | "address" | "contact" | "email"))
}

/// A message from a parser (serde's `invalid type: string "…", expected …`, `unknown field
/// `…``) with every value it quotes cut, and cut as a whole if it is still long.
pub fn message(msg: &str) -> String {
    cut(&rewrite_quoted(msg, cap), MAX_MESSAGE)
}

/// The message of an error about the personal field `path`: see [`without_values`]; about
/// any other field, as [`message`].
pub fn message_about(path: &str, msg: &str) -> String {
    if is_personal(path) {
        without_values(msg)
    } else {
        message(msg)
    }
}

/// A parser's message with the values it quotes before "expected" (what it found) left out,
/// for errors whose field is personal data or unknown; the rest is cut as [`message`] does.
pub fn without_values(msg: &str) -> String {
    let (found, expected) = msg
        .find(", expected")
        .map_or((msg, ""), |i| msg.split_at(i));
    let hidden = rewrite_quoted(found, |_| "…".to_owned());
    cut(
        &format!("{hidden}{}", rewrite_quoted(expected, cap)),
        MAX_MESSAGE,
    )
}

/// `msg` with the text of every `"…"` (with `\` escapes) and `` `…` `` segment replaced by
/// `f` of it. An unterminated segment runs to the end.
fn rewrite_quoted(msg: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(msg.len().min(MAX_MESSAGE));
    let mut rest = msg;
    while let Some(open) = rest.find(['"', '`']) {
        out.push_str(&rest[..open]);
        let quote = rest[open..].chars().next().unwrap_or('"');
        let body = &rest[open + 1..];
        let mut end = None;
        let mut escaped = false;
        for (i, c) in body.char_indices() {
            if escaped {
                escaped = false;
            } else if c == '\\' && quote == '"' {
                escaped = true;
            } else if c == quote {
                end = Some(i);
                break;
            }
        }
        out.push(quote);
        match end {
            Some(i) => {
                out.push_str(&f(&body[..i]));
                out.push(quote);
                rest = &body[i + 1..];
            }
            None => {
                out.push_str(&f(body));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cut_and_personal_ones_left_out() {
        assert_eq!(cap("abc"), "abc");
        assert_eq!(cap(&"あ".repeat(81)), format!("{}…", "あ".repeat(80)));
        assert_eq!(quoted(&"x".repeat(100)), format!("\"{}…\"", "x".repeat(80)));
        let long = "y".repeat(500);
        let m = message(&format!("invalid type: string \"{long}\", expected a date"));
        assert_eq!(
            m,
            format!(
                "invalid type: string \"{}…\", expected a date",
                "y".repeat(80)
            )
        );
        let m = message(&format!("unknown field `{long}`, expected `id` or `name`"));
        assert_eq!(
            m,
            format!(
                "unknown field `{}…`, expected `id` or `name`",
                "y".repeat(80)
            )
        );
        // Escaped quotes stay inside their value.
        assert_eq!(
            message(r#"string "a\"b", expected x"#),
            r#"string "a\"b", expected x"#
        );
        assert!(
            message(&format!("no quotes {long}{long}{long}"))
                .chars()
                .count()
                <= 1001
        );
        let m = message_about(
            "record.name",
            "invalid type: string \"山田 太郎\", expected an object {…}",
        );
        assert_eq!(m, "invalid type: string \"…\", expected an object {…}");
        let m = message_about(
            "address.text",
            "invalid type: integer `7`, expected a string",
        );
        assert_eq!(m, "invalid type: integer `…`, expected a string");
        assert_eq!(
            message_about("sex", "invalid value: `3`"),
            "invalid value: `3`"
        );
        for personal in [
            "name.kana",
            "record.address",
            "fields.contact.email",
            "name",
        ] {
            assert!(is_personal(personal), "{personal}");
        }
        for other in ["household.relationship", "id", "guardians[0].id", "kind"] {
            assert!(!is_personal(other), "{other}");
        }
    }
}
