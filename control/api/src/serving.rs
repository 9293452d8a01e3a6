//! How a node serves a pod's HTTP containers, as the pod's annotations set it. One reading
//! for the API server, which refuses a bad value at create and update (a Status naming the
//! annotation), and for the node, which serves by it.

use serde_json::Value;
use std::time::Duration;

/// Requests each HTTP container serves at once (default: its memory limit over the measured
/// footprint of one instance).
pub const MAX_CONCURRENCY_ANNOTATION: &str = "wasmorch.io/max-concurrency";
/// Requests that may wait beyond the concurrency limit (default 10 × it).
pub const MAX_QUEUE_ANNOTATION: &str = "wasmorch.io/max-queue";
/// How long a request may take until its response head is sent, queue and instance start
/// included (default: the node's, 30 s): `500ms`, `5s`, `2m`.
pub const REQUEST_TIMEOUT_ANNOTATION: &str = "wasmorch.io/request-timeout";
/// The longest request timeout a pod may set.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// A pod's serving settings; `None` where it sets none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Serving {
    pub max_concurrency: Option<u32>,
    pub max_queue: Option<u32>,
    pub request_timeout: Option<Duration>,
}

/// A bad setting: the annotation, its value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting {
    pub annotation: &'static str,
    pub value: String,
    pub why: String,
}

/// The settings of `annotations` (a pod's `metadata.annotations`), and what is wrong with
/// those that cannot be used (left unset). Pure.
pub fn serving(annotations: Option<&Value>) -> (Serving, Vec<BadSetting>) {
    let mut bad = Vec::new();
    let count = |min: u32| {
        move |v: &str| match v.parse::<u32>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!("must be a whole number of at least {min}")),
        }
    };
    let timeout = |v: &str| match crate::object::parse_duration(v) {
        Ok(d) if d.is_zero() => Err("must be longer than 0".to_string()),
        Ok(d) if d > MAX_REQUEST_TIMEOUT => Err(format!("must be at most {}s", MAX_REQUEST_TIMEOUT.as_secs())),
        other => other,
    };
    let s = Serving {
        max_concurrency: read(annotations, MAX_CONCURRENCY_ANNOTATION, count(1), &mut bad),
        max_queue: read(annotations, MAX_QUEUE_ANNOTATION, count(0), &mut bad),
        request_timeout: read(annotations, REQUEST_TIMEOUT_ANNOTATION, timeout, &mut bad),
    };
    (s, bad)
}

/// The value of `annotation` as `parse` reads it; a value it refuses is added to `bad`.
fn read<T>(
    annotations: Option<&Value>,
    annotation: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
    bad: &mut Vec<BadSetting>,
) -> Option<T> {
    let value = annotations?.get(annotation)?.as_str()?;
    parse(value.trim()).map_err(|why| bad.push(BadSetting { annotation, value: value.to_string(), why })).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_read_and_bad_ones_named_and_left_unset() {
        let (s, bad) = serving(Some(&json!({
            "wasmorch.io/max-concurrency": " 4 ",
            "wasmorch.io/max-queue": "0",
            "wasmorch.io/request-timeout": "1m30s",
            "other": "x",
        })));
        assert_eq!(
            s,
            Serving { max_concurrency: Some(4), max_queue: Some(0), request_timeout: Some(Duration::from_secs(90)) }
        );
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(serving(None), (Serving::default(), vec![]));
        assert_eq!(
            serving(Some(&json!({"wasmorch.io/request-timeout": "250ms"}))).0.request_timeout,
            Some(Duration::from_millis(250))
        );
        for (k, v, why) in [
            (MAX_CONCURRENCY_ANNOTATION, "0", "at least 1"),
            (MAX_CONCURRENCY_ANNOTATION, "-2", "whole number"),
            (MAX_QUEUE_ANNOTATION, "lots", "whole number"),
            (REQUEST_TIMEOUT_ANNOTATION, "0s", "longer than 0"),
            (REQUEST_TIMEOUT_ANNOTATION, "2h", "at most 3600s"),
            (REQUEST_TIMEOUT_ANNOTATION, "5 parsecs", "invalid duration"),
        ] {
            let (s, bad) = serving(Some(&json!({ k: v })));
            assert_eq!(s, Serving::default(), "{k}: {v}");
            assert_eq!(bad.len(), 1, "{k}: {v}");
            assert_eq!((bad[0].annotation, bad[0].value.as_str()), (k, v));
            assert!(bad[0].why.contains(why), "{k}: {v}: {}", bad[0].why);
        }
    }
}
