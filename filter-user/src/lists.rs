//! `moat allow` and `moat deny`: validate every prefix from the arguments and the file, then
//! edit the running filter's pinned tries.

use anyhow::Context as _;

use crate::{
    cidr::{ARGUMENTS, Cidr, parse_lines},
    cli::{ListAction, ListAddArgs},
    control::{ListKind, PinnedList},
    lockout, namespace, preflight,
};

/// Runs one list command.
pub fn run(kind: ListKind, action: &ListAction) -> anyhow::Result<()> {
    match action {
        ListAction::Add(ListAddArgs { edit: args, .. }) | ListAction::Del(args) => {
            preflight::check_iface_name(&args.iface)?;
            namespace::check(&args.iface)?;
            let cidrs = collect(args.file.as_deref(), &args.cidrs)?;
            if let ListAction::Add(ListAddArgs { force: false, .. }) = action {
                match kind {
                    ListKind::Deny => lockout::refuse("deny", &cidrs, lockout::ssh_client())?,
                    _ => lockout::refuse_everything("allow", &cidrs)?,
                }
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
    let mut cidrs = parse_lines(args.iter().map(String::as_str), ARGUMENTS)?;
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
