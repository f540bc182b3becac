//! Running external commands: the one place xtask spawns processes.
//!
//! [`exec`] echoes a command to stderr, runs it with inherited stdio and turns a failure into
//! an error naming the full command line. [`probe`] runs a read-only check quietly. Neither
//! decides what to run.

use std::{
    env,
    ffi::OsStr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Runs `command` with inherited stdio after echoing it to stderr; fails, naming the whole
/// command line, if it cannot start or exits unsuccessfully.
pub fn exec(command: &mut Command) -> Result<()> {
    let line = display(command);
    eprintln!("+ {line}");
    let status = command
        .status()
        .with_context(|| format!("starting `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a read-only check quietly: `Some(stdout)` if `command` exits successfully, `None` if
/// it exits unsuccessfully (the check's "no"), an error only if it cannot be started.
pub fn probe(command: &mut Command) -> Result<Option<String>> {
    let line = display(command);
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("starting `{line}`"))?;
    if !output.status.success() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// `command` as a shell line: the variables it sets, the program and its arguments, each
/// quoted where needed. A `PATH` that extends the inherited one shows as `dir:$PATH`.
pub fn display(command: &Command) -> String {
    let inherited_path = env::var_os("PATH").unwrap_or_default();
    let mut words = Vec::new();
    for (key, value) in command.get_envs() {
        let Some(value) = value else {
            continue;
        };
        let value = if key == "PATH" {
            shorten_path(value, &inherited_path)
        } else {
            quote(value)
        };
        words.push(format!("{}={value}", key.to_string_lossy()));
    }
    words.push(quote(command.get_program()));
    words.extend(command.get_args().map(quote));
    words.join(" ")
}

/// Shows a `PATH` value that ends with the inherited `PATH` as `prefix:$PATH`.
fn shorten_path(value: &OsStr, inherited: &OsStr) -> String {
    let value = value.to_string_lossy();
    let inherited = inherited.to_string_lossy();
    match value.strip_suffix(&*inherited) {
        Some(prefix) if !inherited.is_empty() && prefix.ends_with(':') => {
            format!("{}$PATH", quote(OsStr::new(prefix)))
        }
        _ => quote(OsStr::new(&*value)),
    }
}

/// Single-quotes `word` for a POSIX shell unless it consists only of safe characters.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c));
    if safe {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_words_that_need_it() {
        let mut command = Command::new("dpkg-query");
        command.args(["-W", "-f=${Status}", "it's", ""]);
        assert_eq!(
            display(&command),
            r"dpkg-query -W '-f=${Status}' 'it'\''s' ''"
        );
    }

    #[test]
    fn display_shows_set_variables_before_the_program() {
        let mut command = Command::new("apt-get");
        command
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "procps"]);
        assert_eq!(
            display(&command),
            "DEBIAN_FRONTEND=noninteractive apt-get install -y procps"
        );
    }

    #[test]
    fn shorten_path_keeps_only_the_prepended_directory() {
        assert_eq!(
            shorten_path(
                OsStr::new("/w/target/tools/bin:/usr/bin:/bin"),
                OsStr::new("/usr/bin:/bin")
            ),
            "/w/target/tools/bin:$PATH"
        );
        assert_eq!(
            shorten_path(OsStr::new("/opt/bin"), OsStr::new("/usr/bin")),
            "/opt/bin"
        );
    }

    #[test]
    fn exec_names_the_failing_command() {
        let err = exec(Command::new("false").arg("--flag")).err();
        let message = err.map(|err| format!("{err:#}"));
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.contains("`false --flag` failed")),
            "unexpected error: {message:?}"
        );
    }

    #[test]
    fn probe_reports_failure_as_none() {
        let output = probe(&mut Command::new("false")).ok();
        assert_eq!(output, Some(None));
    }
}
