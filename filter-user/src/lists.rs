//! `moat allow` and `moat deny`: validate every prefix from the arguments and the file, then
//! edit the running filter's pinned tries.

use anyhow::Context as _;

use crate::{
    cidr::{Cidr, parse_lines},
    cli::ListAction,
    control::{ListKind, PinnedList},
    preflight,
};

/// Runs one list command.
pub fn run(kind: ListKind, action: &ListAction) -> anyhow::Result<()> {
    match action {
        ListAction::Add(args) | ListAction::Del(args) => {
            preflight::check_iface_name(&args.iface)?;
            let cidrs = collect(args.file.as_deref(), &args.cidrs)?;
            if matches!((kind, action), (ListKind::Deny, ListAction::Add(_))) && !args.force {
                refuse_lockout(&cidrs, ssh_client())?;
            }
            let mut list = PinnedList::open(&args.iface, kind)?;
            if matches!(action, ListAction::Add(_)) {
                let outcome = list.add(&cidrs)?;
                println!(
                    "added {} to the {} of {} ({} already present)",
                    outcome.added,
                    kind.name(),
                    args.iface,
                    outcome.present
                );
            } else {
                let deleted = list.delete(&cidrs)?;
                println!(
                    "deleted {deleted} from the {} of {}",
                    kind.name(),
                    args.iface
                );
            }
        }
        ListAction::List(args) => {
            preflight::check_iface_name(&args.iface)?;
            let list = PinnedList::open(&args.iface, kind)?;
            for cidr in list.entries()? {
                println!("{cidr}");
            }
        }
    }
    Ok(())
}

/// The prefixes from the arguments then the file, validated together: a duplicate across them
/// is an error too.
fn collect(file: Option<&std::path::Path>, args: &[String]) -> anyhow::Result<Vec<Cidr>> {
    let mut cidrs = parse_lines(args.iter().map(String::as_str), "arguments")?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read list file {}", path.display()))?;
        let from_file = parse_lines(text.lines(), &path.display().to_string())?;
        let given: std::collections::HashSet<Cidr> = cidrs.iter().copied().collect();
        for cidr in from_file {
            if !given.is_empty() && given.contains(&cidr) {
                anyhow::bail!(
                    "{cidr} is given both as an argument and in {}",
                    path.display()
                );
            }
            cidrs.push(cidr);
        }
    }
    Ok(cidrs)
}

/// The address of the SSH client running this command, from `SSH_CONNECTION`.
fn ssh_client() -> Option<std::net::IpAddr> {
    std::env::var("SSH_CONNECTION")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Refuses a denylist that would cut off everyone (`0.0.0.0/0`, `::/0`) or the SSH client
/// `client` running the command; `--force` skips this check.
fn refuse_lockout(cidrs: &[Cidr], client: Option<std::net::IpAddr>) -> anyhow::Result<()> {
    for cidr in cidrs {
        if cidr.is_everything() {
            anyhow::bail!(
                "refusing to deny {cidr}: it drops every source of that family; pass --force if \
                 you mean it"
            );
        }
        if let Some(client) = client.filter(|client| cidr.contains(*client)) {
            anyhow::bail!(
                "refusing to deny {cidr}: it holds {client}, the SSH client running this \
                 command, which would be locked out; pass --force if you mean it"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_guard_refuses_everything_and_the_ssh_client() {
        let cidr = |text: &str| -> Cidr { text.parse().expect("valid") };
        let client = Some("198.51.100.7".parse().expect("addr"));
        assert!(refuse_lockout(&[cidr("0.0.0.0/0")], None).is_err());
        assert!(refuse_lockout(&[cidr("::/0")], None).is_err());
        let error = refuse_lockout(&[cidr("198.51.100.0/24")], client)
            .expect_err("the client's own prefix");
        assert!(error.to_string().contains("198.51.100.7"), "{error}");
        assert!(refuse_lockout(&[cidr("203.0.113.0/24")], client).is_ok());
    }
}
