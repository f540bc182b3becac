//! Refusals of edits that would cut the operator off: a denylist entry for a whole address
//! family, or a deny or ban covering the SSH client running the command. `--force` skips them.
//! Only the commands an operator types ask; the daemon's own bans never do.

use crate::cidr::Cidr;

/// The address of the SSH client running this command, from `SSH_CONNECTION`.
pub fn ssh_client() -> Option<std::net::IpAddr> {
    std::env::var("SSH_CONNECTION")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Refuses to `verb` ("deny", "ban") the `cidrs` if one is a whole family (`0.0.0.0/0`,
/// `::/0`) or holds the SSH client `client` running the command.
pub fn refuse(verb: &str, cidrs: &[Cidr], client: Option<std::net::IpAddr>) -> anyhow::Result<()> {
    refuse_everything(verb, cidrs)?;
    for cidr in cidrs {
        if let Some(client) = client.filter(|client| cidr.contains(*client)) {
            anyhow::bail!(
                "refusing to {verb} {cidr}: it holds {client}, the SSH client running this \
                 command, which would be locked out; pass --force if you mean it"
            );
        }
    }
    Ok(())
}

/// Refuses to `verb` ("deny", "ban", "allow") the `cidrs` if one is a whole family
/// (`0.0.0.0/0`, `::/0`), which would drop, or with "allow" pass unfiltered, every source of
/// that family.
pub fn refuse_everything(verb: &str, cidrs: &[Cidr]) -> anyhow::Result<()> {
    let what = if verb == "allow" {
        "passes every source of that family unfiltered"
    } else {
        "drops every source of that family"
    };
    match cidrs.iter().find(|cidr| cidr.is_everything()) {
        Some(cidr) => {
            anyhow::bail!("refusing to {verb} {cidr}: it {what}; pass --force if you mean it")
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_everything_and_the_ssh_client() {
        let cidr = |text: &str| -> Cidr { text.parse().expect("valid") };
        let client = Some("198.51.100.7".parse().expect("addr"));
        assert!(refuse("deny", &[cidr("0.0.0.0/0")], None).is_err());
        assert!(refuse("deny", &[cidr("::/0")], None).is_err());
        let error =
            refuse("ban", &[cidr("198.51.100.0/24")], client).expect_err("the client's own prefix");
        assert!(
            error
                .to_string()
                .starts_with("refusing to ban 198.51.100.0/24: it holds 198.51.100.7"),
            "{error}"
        );
        assert!(refuse("deny", &[cidr("203.0.113.0/24")], client).is_ok());
        let error = refuse_everything("allow", &[cidr("::/0")]).expect_err("a whole family");
        assert!(
            error
                .to_string()
                .contains("passes every source of that family unfiltered"),
            "{error}"
        );
        assert!(refuse_everything("allow", &[cidr("198.51.100.0/24")]).is_ok());
    }
}
