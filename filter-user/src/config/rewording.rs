//! The TOML reader's messages, reworded for an operator: a value of the wrong type, an unknown
//! key or an unknown choice is named by its dotted key (found from where the reader stopped)
//! and described in TOML's words ("a whole number", "a table"), where the reader speaks of Rust
//! types (`expected i64`, `expected struct RawRefusals`). Syntax errors keep the reader's own
//! message, which already says what it expected.

use super::schema;

/// The dotted key whose value or name starts at byte `at` of `text`: the table header in
/// force, then the keys written since (dotted keys, inline tables and arrays, over several
/// lines), then the key written at `at` itself when `at` is at a key rather than a value.
pub fn key_at(text: &str, at: usize) -> Option<Located> {
    let at = floor_char_boundary(text, at.min(text.len()));
    let line_start = text[..at].rfind('\n').map_or(0, |newline| newline + 1);
    // A table header names the table itself.
    if text[line_start..].trim_start().starts_with('[') {
        let end = text[at..]
            .find(['.', ']', '\n'])
            .map_or(text.len(), |end| at + end);
        let header = text[line_start..end].trim_start().trim_start_matches('[');
        let path = split_key(header);
        return (!path.is_empty()).then(|| Located {
            key: path.join("."),
            in_array: false,
        });
    }
    let scan = Scan::of(&text[..at]);
    let in_array = matches!(scan.open.last(), Some(Open::Array(_)));
    let mut path = scan.header;
    path.extend(scan.open.into_iter().filter_map(|open| match open {
        Open::Table(key) | Open::Array(key) => key,
    }));
    match scan.pending {
        Some(key) => path.extend(key),
        None => path.extend(key_written_at(&text[at..])),
    }
    (!path.is_empty()).then(|| Located {
        key: path.join("."),
        in_array,
    })
}

/// Where the reader stopped.
#[derive(Debug, PartialEq, Eq)]
pub struct Located {
    /// The dotted key.
    pub key: String,
    /// Whether the reader stopped at an entry of the key's array rather than at its value.
    pub in_array: bool,
}

/// The reader's `message` about the value or key at `key`, reworded to follow the key; `None`
/// to keep it as is.
pub fn reword(message: &str, at: Option<&Located>) -> Option<String> {
    let key = at.map(|at| at.key.as_str());
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ")?;
        let (is, must) = if at.is_some_and(|at| at.in_array) {
            ("holds", "each entry must be")
        } else {
            ("is", "it must be")
        };
        return Some(format!(
            "{is} {}; {must} {}",
            given(got),
            wanted(expected, key)
        ));
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (_, expected) = rest.split_once(", expected ")?;
        return Some(format!(
            "not a key moat knows; the keys here are {}",
            choices(expected)
        ));
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let (variant, expected) = rest.split_once(", expected ")?;
        return Some(format!(
            "{} is not a choice here; it must be one of {}",
            quoted(variant),
            choices(expected)
        ));
    }
    None
}

/// What the reader found, in TOML's words: `string "x"` → `the string "x"`, `` integer `5` ``
/// → `the number 5`.
fn given(got: &str) -> String {
    let literal = |prefix: &str| {
        got.strip_prefix(prefix)
            .map(|value| value.trim_matches('`').to_string())
    };
    if let Some(value) = got.strip_prefix("string ") {
        format!("the string {value}")
    } else if let Some(value) = literal("integer ").or_else(|| literal("floating point ")) {
        format!("the number {value}")
    } else if let Some(value) = literal("boolean ") {
        value
    } else if got == "sequence" {
        "an array".to_string()
    } else if got == "map" {
        "a table".to_string()
    } else {
        got.to_string()
    }
}

/// What the key takes, in TOML's words; a table is shown with the keys it takes.
fn wanted(expected: &str, key: Option<&str>) -> String {
    match expected {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" | "usize" => "a whole number".to_string(),
        "a boolean" => "true or false".to_string(),
        "a string" => "a quoted string".to_string(),
        "a sequence" => "an array, e.g. [1, 2]".to_string(),
        table if table.starts_with("struct ") || table == "a map" => match key {
            Some(key) => {
                let inner = keys_under(key);
                if inner.is_empty() {
                    format!("a table, [{key}]")
                } else {
                    format!("a table, [{key}] with {}", inner.join(", "))
                }
            }
            None => "a table".to_string(),
        },
        other => other.to_string(),
    }
}

/// The keys directly under the table `table`, in the schema's order.
fn keys_under(table: &str) -> Vec<String> {
    let prefix = format!("{table}.");
    let mut inner: Vec<String> = Vec::new();
    for key in schema::keys() {
        if let Some(rest) = key.name.strip_prefix(&prefix) {
            let first = rest.split('.').next().unwrap_or(rest).to_string();
            if !inner.contains(&first) {
                inner.push(first);
            }
        }
    }
    inner
}

/// `` `a`, `b` ``, `` `a` or `b` `` or `` one of `a`, `b` `` as `"a", "b"`.
fn choices(expected: &str) -> String {
    let list = expected.strip_prefix("one of ").unwrap_or(expected);
    list.split(", ")
        .flat_map(|part| part.split(" or "))
        .map(quoted)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `` `a` `` as `"a"`.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.trim_matches('`'))
}

/// A dotted key as written (`a.b`, `"a" . b`) split into its parts.
fn split_key(written: &str) -> Vec<String> {
    written
        .split('.')
        .map(|part| part.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|part| !part.is_empty())
        .collect()
}

/// The bare or quoted key written at the start of `rest`, if any.
fn key_written_at(rest: &str) -> Vec<String> {
    let end = rest.find(['=', '\n', ',', '}']).unwrap_or(rest.len());
    let written = &rest[..end];
    if rest[end..].starts_with('=') {
        split_key(written)
    } else {
        Vec::new()
    }
}

/// The largest char boundary at or below `at`.
fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// What the text says up to a point: the table header in force, the inline tables and arrays
/// still open (with the keys they are the values of), and the key whose value is being written.
struct Scan {
    header: Vec<String>,
    open: Vec<Open>,
    pending: Option<Vec<String>>,
}

/// An inline table or array still open, with the key it is the value of.
enum Open {
    Table(Option<String>),
    Array(Option<String>),
}

impl Scan {
    fn of(before: &str) -> Scan {
        let mut scan = Scan {
            header: Vec::new(),
            open: Vec::new(),
            pending: None,
        };
        let mut key = String::new();
        let mut expecting_key = true;
        let mut chars = before.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '[' if expecting_key && scan.open.is_empty() && key.trim().is_empty() => {
                    let header: String = chars.by_ref().take_while(|&c| c != '\n').collect();
                    let inner = header.trim_start_matches('[');
                    scan.header = split_key(&inner[..inner.find(']').unwrap_or(inner.len())]);
                    scan.pending = None;
                    key.clear();
                }
                '\n' if scan.open.is_empty() => {
                    scan.pending = None;
                    key.clear();
                    expecting_key = true;
                }
                '#' => while chars.next_if(|&c| c != '\n').is_some() {},
                '"' | '\'' => {
                    let mut quoted = String::new();
                    for inner in chars.by_ref() {
                        if inner == c {
                            break;
                        }
                        quoted.push(inner);
                    }
                    if expecting_key {
                        key.push_str(&quoted);
                    }
                }
                '=' if expecting_key => {
                    scan.pending = Some(split_key(&key));
                    key.clear();
                    expecting_key = false;
                }
                '{' => {
                    let key = scan.pending.take().map(|keys| keys.join("."));
                    scan.open.push(Open::Table(key));
                    expecting_key = true;
                }
                '[' => {
                    let key = scan.pending.take().map(|keys| keys.join("."));
                    scan.open.push(Open::Array(key));
                }
                '}' | ']' => {
                    scan.pending = match scan.open.pop() {
                        Some(Open::Table(key) | Open::Array(key)) => key.map(|key| vec![key]),
                        None => None,
                    };
                }
                ',' if matches!(scan.open.last(), Some(Open::Table(_))) => {
                    scan.pending = None;
                    key.clear();
                    expecting_key = true;
                }
                _ if expecting_key => key.push(c),
                _ => {}
            }
        }
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(text: &str, marker: &str) -> Option<String> {
        key_at(text, text.find(marker).unwrap()).map(|at| at.key)
    }

    fn at(key: &str) -> Option<Located> {
        Some(Located {
            key: key.to_string(),
            in_array: false,
        })
    }

    #[test]
    fn keys_are_found_from_headers_dotted_keys_and_inline_tables() {
        assert_eq!(
            key_of("[limits.source.syn]\npps = \"x\"\n", "\"x\""),
            Some("limits.source.syn.pps".into())
        );
        assert_eq!(key_of("refusals = 5\n", "5"), Some("refusals".into()));
        assert_eq!(
            key_of("[limits]\nsource.syn.pps = true\n", "true"),
            Some("limits.source.syn.pps".into())
        );
        assert_eq!(
            key_of(
                "[limits.source]\nsyn = { burst = 3, pps = \"x\" }\n",
                "\"x\""
            ),
            Some("limits.source.syn.pps".into())
        );
        assert_eq!(
            key_of("[ports]\ntcp = [80, \"x\"]\n", "\"x\""),
            Some("ports.tcp".into())
        );
        assert_eq!(
            key_of("[limits.source.syn]\npsp = 3\n", "psp"),
            Some("limits.source.syn.psp".into())
        );
        assert_eq!(key_of("# [x]\nmode = 1\n", "1"), Some("mode".into()));
        assert_eq!(
            key_of("[ports]\ntcp = [\n  80, # web\n  \"x\",\n]\n", "\"x\""),
            Some("ports.tcp".into())
        );
        assert_eq!(
            key_of("[ports]\ntcp = [80]\n[limits.sorce]\n", "sorce"),
            Some("limits.sorce".into())
        );
        assert_eq!(
            key_of("[ports]\ntcp = [80]\n\n[bans] # x\nbase = 1\n", "1\n"),
            Some("bans.base".into())
        );
    }

    #[test]
    fn type_errors_name_toml_types() {
        assert_eq!(
            reword(
                "invalid type: string \"fast\", expected i64",
                at("refusals.pps").as_ref()
            )
            .unwrap(),
            "is the string \"fast\"; it must be a whole number"
        );
        assert_eq!(
            reword(
                "invalid type: integer `5`, expected struct RawRefusals",
                at("refusals").as_ref()
            )
            .unwrap(),
            "is the number 5; it must be a table, [refusals] with pps, burst"
        );
        assert_eq!(
            reword(
                "invalid type: integer `1`, expected a boolean",
                at("dry_run").as_ref()
            )
            .unwrap(),
            "is the number 1; it must be true or false"
        );
        assert_eq!(
            reword(
                "unknown variant `fast`, expected one of `auto`, `native`, `skb`",
                at("mode").as_ref()
            )
            .unwrap(),
            "\"fast\" is not a choice here; it must be one of \"auto\", \"native\", \"skb\""
        );
        assert_eq!(
            reword(
                "invalid type: string \"x\", expected i64",
                key_at("[ports]\ntcp = [80, \"x\"]", 19).as_ref()
            )
            .unwrap(),
            "holds the string \"x\"; each entry must be a whole number"
        );
        assert_eq!(
            reword(
                "unknown field `sorce`, expected `source` or `aggregate`",
                at("limits.sorce").as_ref()
            )
            .unwrap(),
            "not a key moat knows; the keys here are \"source\", \"aggregate\""
        );
        assert_eq!(reword("invalid string", None), None);
    }
}
