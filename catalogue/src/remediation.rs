//! Remediation templates: text with `{name}` placeholders filled in for the case at hand.

/// Fills each `{name}` placeholder of `template` with the matching value from `vars`.
///
/// A placeholder with no value stays as written, so a missing fact shows up in the text
/// instead of silently producing a wrong command. `{{` and `}}` stand for literal braces,
/// which PowerShell script blocks need.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find(['{', '}']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{')
            && let Some(end) = after.find('}')
            && is_name(&after[..end])
        {
            let name = &after[..end];
            match vars.iter().find(|(k, _)| *k == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&tail[..end + 2]),
            }
            rest = &after[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn fills_known_placeholders_and_keeps_unknown_ones() {
        let text = render(
            "Allow {host}:{port} for {who}",
            &[
                ("host", "passwordreset.microsoftonline.com"),
                ("port", "443"),
            ],
        );
        assert_eq!(
            text,
            "Allow passwordreset.microsoftonline.com:443 for {who}"
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        let text = render(
            "Get-ADSyncConnector | ? {{ $_.Type -eq '{kind}' }}",
            &[("kind", "AD")],
        );
        assert_eq!(text, "Get-ADSyncConnector | ? { $_.Type -eq 'AD' }");
    }

    #[test]
    fn stray_braces_survive() {
        assert_eq!(render("a { b } c", &[]), "a { b } c");
    }
}
