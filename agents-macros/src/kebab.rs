//! Cloudflare's `camelCaseToKebabCase`, which turns a class name into its route segment.

/// An all-uppercase name is lowercased (`MY_AGENT` → `my-agent`); otherwise every capital
/// becomes `-` plus its lowercase, one leading `-` is dropped, `_` becomes `-` and one
/// trailing `-` is dropped (`ChatRoom` → `chat-room`, `AIAssistant` → `a-i-assistant`).
pub(crate) fn camel_case_to_kebab_case(name: &str) -> String {
    let has_letters = name.chars().any(char::is_alphabetic);
    if has_letters && !name.chars().any(char::is_lowercase) {
        return name.to_lowercase().replace('_', "-");
    }
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    let out = out.strip_prefix('-').unwrap_or(&out).replace('_', "-");
    out.strip_suffix('-').map(str::to_owned).unwrap_or(out)
}

#[cfg(test)]
mod tests {
    use super::camel_case_to_kebab_case as kebab;

    #[test]
    fn matches_cloudflares_camel_case_to_kebab_case() {
        for (name, expected) in [
            ("MyAgent", "my-agent"),
            ("MY_AGENT", "my-agent"),
            ("my_agent", "my-agent"),
            ("Counter", "counter"),
            ("my-agent", "my-agent"),
            ("TestOAuthAgent", "test-o-auth-agent"),
            ("AIAssistant", "a-i-assistant"),
            ("ChatRoom", "chat-room"),
            ("ChatRoom2", "chat-room2"),
            ("My__Agent", "my---agent"),
        ] {
            assert_eq!(kebab(name), expected, "{name}");
        }
    }
}
