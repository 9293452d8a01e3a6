//! Decoding request bodies and manifest files: JSON, YAML (one or many documents).
//!
//! Limits protect the server: serde_json refuses nesting deeper than 128; serde_yaml_ng
//! refuses nesting deeper than 128 and alias expansion that repeats too much ("billion
//! laughs"), so a hostile document fails fast instead of exhausting memory.

use serde::Deserialize;
use serde_json::Value;

/// Parse one JSON document.
pub fn json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// Parse every document of a YAML stream (JSON is YAML too); empty documents are skipped.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| format!("invalid YAML in document {}: {e}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Parse exactly one YAML document.
pub fn yaml(text: &str) -> Result<Value, String> {
    let mut docs = yaml_documents(text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err("empty YAML document".into()),
        n => Err(format!("expected one YAML document, found {n}")),
    }
}

/// Parse a manifest file or stdin: JSON (an object or a `List`) or multi-document YAML.
/// `List` kinds are flattened into their items.
pub fn manifests(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    let docs = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        match json(trimmed.as_bytes())? {
            Value::Array(a) => a,
            v => vec![v],
        }
    } else {
        yaml_documents(text)?
    };
    let mut out = Vec::new();
    for d in docs {
        let is_list = d.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k.ends_with("List"));
        match d.get("items").and_then(Value::as_array) {
            Some(items) if is_list => out.extend(items.iter().cloned()),
            _ => out.push(d),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml() {
        let docs = yaml_documents("a: 1\n---\n---\nb: [x, y]\n").unwrap();
        assert_eq!(docs, vec![serde_json::json!({"a": 1}), serde_json::json!({"b": ["x", "y"]})]);
    }

    #[test]
    fn lists_are_flattened() {
        let v = manifests(r#"{"kind":"List","apiVersion":"v1","items":[{"kind":"Pod"},{"kind":"Service"}]}"#).unwrap();
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        let mut prev = 'a';
        for c in 'b'..='j' {
            let refs = vec![format!("*{prev}"); 9].join(",");
            s.push_str(&format!("{c}: &{c} [{refs}]\n"));
            prev = c;
        }
        let err = yaml_documents(&s).unwrap_err();
        assert!(err.contains("repetition limit") || err.contains("recursion"), "{err}");
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(yaml_documents(&deep).is_err());
        assert!(json(deep.as_bytes()).is_err());
    }
}
