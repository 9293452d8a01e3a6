//! Name and label syntax, as Kubernetes defines it (DNS-1123, qualified names, label values).

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// DNS-1123 label: at most 63 characters, lowercase alphanumerics or '-', alphanumeric at both ends.
pub fn dns1123_label_errors(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')".into()
    })
}

/// DNS-1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns1123_subdomain_errors(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_alnum_lower(c) || c == '-' || c == '.')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
        && !s.contains("..");
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')".into()
    })
}

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A qualified name (label and annotation keys): optional DNS subdomain prefix and '/', then a name.
/// A name that can be one segment of a URL path (Kubernetes' `ValidatePathSegmentName`).
pub fn path_segment_errors(s: &str) -> Option<String> {
    if s == "." || s == ".." {
        return Some(format!("may not be '{s}'"));
    }
    if s.contains('/') || s.contains('%') {
        return Some("may not contain '/' or '%'".into());
    }
    None
}

pub fn qualified_name_errors(k: &str) -> Option<String> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(e) = dns1123_subdomain_errors(p) {
            return Some(format!("prefix part {e}"));
        }
    }
    (!name_part_ok(name)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc'), at most 63 characters".into()
    })
}

/// A label value: empty, or up to 63 characters of the name-part alphabet.
pub fn label_value_errors(v: &str) -> Option<String> {
    (!v.is_empty() && !name_part_ok(v)).then(|| {
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345'), at most 63 characters".into()
    })
}

/// An IANA service name (named ports): at most 15 characters, lowercase alphanumerics and '-', a letter.
pub fn port_name_errors(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    (!ok).then(|| "must be no more than 15 characters, contain only lowercase alphanumerics or '-', contain at least one letter, and not start, end or repeat '-'".into())
}

/// ConfigMap and Secret keys.
pub fn config_key_errors(k: &str) -> Option<String> {
    let ok = !k.is_empty()
        && k.len() <= 253
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && k != "."
        && k != "..";
    (!ok).then(|| "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name')".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_label_errors("web-1").is_none());
        for bad in ["", "Web", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(dns1123_label_errors(bad).is_some(), "{bad}");
        }
        assert!(dns1123_subdomain_errors("a.b-c.d").is_none());
        assert!(dns1123_subdomain_errors("a..b").is_some());
        assert!(qualified_name_errors("app.kubernetes.io/name").is_none());
        assert!(qualified_name_errors("/x").is_some());
        assert!(qualified_name_errors("a b").is_some());
        assert!(label_value_errors("").is_none());
        assert!(label_value_errors("v1.2_3").is_none());
        assert!(label_value_errors("-x").is_some());
        assert!(port_name_errors("http").is_none());
        assert!(port_name_errors("8080").is_some());
        assert!(config_key_errors("app.properties").is_none());
        assert!(config_key_errors("../x").is_some());
    }
}
