//! How deeply a YAML text nests, measured before a parser sees it. The YAML loader reads a
//! whole document before serde's recursion limit applies, and takes time quadratic in the
//! depth: a file of a hundred thousand `[` kept it busy for most of a minute.
//!
//! The measure is a close upper bound, not a parser: flow collections (`[`, `{`) outside
//! quoted scalars and comments, block collections by indentation and `- ` entries, and the
//! content of block scalars (`|`, `>`) skipped. Rule files nest a few levels; the limit is far
//! above any of them.

/// The deepest nesting a rules or parameter file may have.
pub const MAX_DEPTH: usize = 64;

/// Where (line and column, from 1) `text` first nests deeper than `limit`, if it does.
pub fn too_deep(text: &str, limit: usize) -> Option<(usize, usize)> {
    // Columns of the block collections open at the start of the line.
    let mut blocks: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // A quoted scalar still open at the end of a line (`'` or `"`).
    let mut quote: Option<char> = None;
    // While in a block scalar: the column its content must be indented beyond.
    let mut block_scalar: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = &line[indent..];
        if let Some(parent) = block_scalar {
            if content.trim().is_empty() || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        let in_block = quote.is_none() && flow == 0;
        if in_block {
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if indent == 0 && (content.starts_with("---") || content.starts_with("...")) {
                blocks.clear();
                continue;
            }
            while blocks.last().is_some_and(|&c| c >= indent) {
                blocks.pop();
            }
            blocks.push(indent);
            // `- - a`: each entry indicator opens a collection at the column after it.
            let mut rest = content;
            let mut column = indent;
            while let Some(after) = rest
                .strip_prefix('-')
                .filter(|a| a.is_empty() || a.starts_with(' '))
            {
                let spaces = after.len() - after.trim_start_matches(' ').len();
                column += 1 + spaces;
                rest = &after[spaces..];
                blocks.push(column);
            }
            if blocks.len() > limit {
                return Some((n + 1, indent + 1));
            }
        }
        // The last character outside quotes and spaces: what a quote or bracket follows.
        let mut prev: Option<char> = None;
        let mut code_end = content.len();
        let mut chars = content.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match quote {
                Some('\'') => {
                    if c == '\'' {
                        if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                            chars.next();
                        } else {
                            quote = None;
                            prev = Some(c);
                        }
                    }
                    continue;
                }
                Some(_) => {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        quote = None;
                        prev = Some(c);
                    }
                    continue;
                }
                None => {}
            }
            // A scalar or collection starts here (inside a flow collection, brackets always
            // are indicators; in block context only where a value starts).
            let starts = matches!(prev, None | Some(':' | '-' | '?' | ',' | '[' | '{'));
            match c {
                ' ' | '\t' => continue,
                '#' if i == 0 || content[..i].ends_with([' ', '\t']) => {
                    code_end = i;
                    break;
                }
                '\'' | '"' if starts => quote = Some(c),
                '[' | '{' if flow > 0 || starts => {
                    flow += 1;
                    if blocks.len() + flow > limit {
                        return Some((n + 1, indent + content[..i].chars().count() + 1));
                    }
                }
                ']' | '}' if flow > 0 => flow -= 1,
                _ => {}
            }
            prev = Some(c);
        }
        if quote.is_none() && flow == 0 {
            block_scalar = block_scalar_parent(&content[..code_end], indent);
        }
    }
    None
}

/// If `code` (a line without its comment, starting at column `indent`) ends in a block scalar
/// indicator (`|`, `>-`, `|+2`…), the column its content must be indented beyond: the key's
/// for `key: |`, the entry's for `- |`.
fn block_scalar_parent(code: &str, indent: usize) -> Option<usize> {
    let code = code.trim_end();
    let (before, last) = code.rsplit_once(' ').unwrap_or(("", code));
    let indicator = last.len() <= 3
        && last.starts_with(['|', '>'])
        && last[1..]
            .chars()
            .all(|c| matches!(c, '-' | '+' | '1'..='9'));
    if !indicator {
        return None;
    }
    let before = before.trim_end();
    if before.ends_with('-') {
        return Some(indent + before.len() - 1);
    }
    // The key's column: after any `- ` entry indicators.
    let key = before.trim_start_matches(['-', ' ']);
    Some(indent + before.len() - key.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(text: &str) -> usize {
        (1..=200)
            .find(|&limit| too_deep(text, limit).is_none())
            .unwrap()
    }

    #[test]
    fn flow_and_block_nesting_add_up() {
        assert_eq!(depth("a: 1\n"), 1);
        assert_eq!(depth("a: [1, [2, {b: 3}]]\n"), 4);
        assert_eq!(depth("a:\n  b:\n    c: 1\n"), 3);
        assert_eq!(depth("a:\n  - b: 1\n    c: [1]\n"), 4);
        // An entry's content counts as a level even when it is a scalar: an upper bound.
        assert_eq!(depth("- - - a\n"), 4);
        // Flow collections may span lines.
        assert_eq!(depth("a: [1,\n  [2,\n   [3]]]\n"), 4);
    }

    #[test]
    fn brackets_in_scalars_comments_and_block_scalars_do_not_count() {
        assert_eq!(
            depth("a: \"[[[[\"\nb: '{{ x }}'\nc: it's [not] a list\n"),
            1
        );
        assert_eq!(depth("a: 1 # [[[[\nb: 'it''s [['\n"), 1);
        assert_eq!(
            depth("script: |\n  let x = [[[[1]]]];\n    #{a: [[[2]]]}\nnext: [1]\n"),
            2
        );
        assert_eq!(depth("- |\n  [[[[\n- >-\n  {{{{\n"), 2);
        assert_eq!(depth("a:\n  - key: |\n      [[[[\n    other: 1\n"), 3);
        assert_eq!(depth("a: \"two\n  lines [[[\"\n"), 1);
    }

    #[test]
    fn the_place_is_the_first_level_too_many() {
        let text = format!("a: {}1{}\n", "[".repeat(100), "]".repeat(100));
        assert_eq!(too_deep(&text, 64), Some((1, 3 + 64)));
        let block: String = (0..100)
            .map(|i| format!("{}a:\n", "  ".repeat(i)))
            .collect();
        assert_eq!(too_deep(&block, 64), Some((65, 129)));
    }

    #[test]
    fn the_catalogue_is_far_below_the_limit() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules");
        for sub in ["", "/parameters", "/tests"] {
            for e in std::fs::read_dir(format!("{dir}{sub}")).unwrap() {
                let path = e.unwrap().path();
                if path.extension().is_some_and(|x| x == "yaml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(depth(&text) <= 12, "{}: {}", path.display(), depth(&text));
                }
            }
        }
    }
}
