//! Errors as one line, for the terminal and the log: anyhow's chain, each cause once.

/// `error` and its causes as one line: each cause after a colon unless the text before already
/// says it (most errors name their OS error in their own message), line breaks inside a message
/// (a TOML parser's) as semicolons.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.split('\n')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn errors_print_as_one_line_without_repeating_a_cause() {
        let os = std::io::Error::from_raw_os_error(2);
        let said = anyhow::Error::new(std::io::Error::other(format!("reading f: {os}")));
        assert_eq!(
            one_line(&said.context("loading")),
            format!("loading: reading f: {os}")
        );
        let repeated = crate::config::ConfigError::Read {
            path: "f.toml".into(),
            source: os,
        };
        let text = one_line(&repeated.into());
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        let broken = anyhow::anyhow!("line 1: invalid table header\nexpected `.`, `]`");
        assert_eq!(
            one_line(&broken),
            "line 1: invalid table header; expected `.`, `]`"
        );
    }
}
