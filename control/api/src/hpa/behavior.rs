//! Kubernetes' HPA behavior: stabilization windows and scaling policies over the desired
//! count, with the recommendations and scale events remembered between syncs.

use super::set_default;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::time::Duration;

/// One direction's scaling rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub window: Duration,
    /// `Max`, `Min` or `Disabled`.
    pub select: String,
    /// (`Pods` or `Percent`, value, period).
    pub policies: Vec<(String, i64, Duration)>,
}

impl Rules {
    /// From `spec.behavior.scaleUp`/`scaleDown` (defaults filled in), `default_window` when it
    /// sets none.
    pub fn of(v: Option<&Value>, defaults: Value, default_window: Duration) -> Rules {
        let mut r = v.cloned().filter(Value::is_object).unwrap_or_else(|| json!({}));
        if let Some(d) = defaults.as_object() {
            for (k, dv) in d {
                set_default(&mut r, k, dv.clone());
            }
        }
        let secs = |v: &Value| Duration::from_secs(v.as_i64().unwrap_or(0).max(0) as u64);
        Rules {
            window: r.get("stabilizationWindowSeconds").map_or(default_window, secs),
            select: r["selectPolicy"].as_str().unwrap_or("Max").to_string(),
            policies: r["policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["type"].as_str().unwrap_or("").to_string(),
                        p["value"].as_i64().unwrap_or(0),
                        secs(&p["periodSeconds"]),
                    )
                })
                .collect(),
        }
    }
}

/// A recommendation or a scale event, at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped {
    pub at: DateTime<Utc>,
    pub value: i64,
}

/// What the controller remembers per HPA between syncs (as Kubernetes' controller does, in
/// memory): recent recommendations and scale events.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub recommendations: Vec<Stamped>,
    pub ups: Vec<Stamped>,
    pub downs: Vec<Stamped>,
}

/// The result of normalizing a desired count: the count, and the reasons for the
/// `AbleToScale` and `ScalingLimited` conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i64,
    pub able: (&'static str, &'static str),
    /// (limited, reason, message).
    pub limited: (bool, &'static str, &'static str),
}

fn change_in(period: Duration, events: &[Stamped], now: DateTime<Utc>) -> i64 {
    let cutoff = now - chrono::Duration::from_std(period).unwrap_or_default();
    events.iter().filter(|e| e.at > cutoff).map(|e| e.value).sum()
}

fn up_limit(current: i64, h: &History, r: &Rules, now: DateTime<Utc>) -> i64 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i64::MAX } else { i64::MIN };
    for (ty, value, period) in &r.policies {
        let start = current - change_in(*period, &h.ups, now) + change_in(*period, &h.downs, now);
        let proposed =
            if ty == "Pods" { start + value } else { (start as f64 * (1.0 + *value as f64 / 100.0)).ceil() as i64 };
        result = if min { result.min(proposed) } else { result.max(proposed) };
    }
    result
}

fn down_limit(current: i64, h: &History, r: &Rules, now: DateTime<Utc>) -> i64 {
    if r.select == "Disabled" {
        return current;
    }
    let min = r.select == "Min";
    let mut result = if min { i64::MIN } else { i64::MAX };
    for (ty, value, period) in &r.policies {
        let start = current - change_in(*period, &h.ups, now) + change_in(*period, &h.downs, now);
        let proposed = if ty == "Pods" { start - value } else { (start as f64 * (1.0 - *value as f64 / 100.0)) as i64 };
        result = if min { result.max(proposed) } else { result.min(proposed) };
    }
    result
}

/// Kubernetes' `normalizeDesiredReplicasWithBehaviors`: stabilize the desired count over each
/// direction's window (recording it in `h`), then limit the rate by the policies and keep it
/// within [min, max].
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    h: &mut History,
    current: i64,
    desired: i64,
    min: i64,
    max: i64,
    up: &Rules,
    down: &Rules,
    now: DateTime<Utc>,
) -> Normalized {
    let cut = |w: Duration| now - chrono::Duration::from_std(w).unwrap_or_default();
    let (up_cut, down_cut) = (cut(up.window), cut(down.window));
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, r) in h.recommendations.iter().enumerate() {
        if r.at > up_cut {
            up_rec = up_rec.min(r.value);
        }
        if r.at > down_cut {
            down_rec = down_rec.max(r.value);
        }
        if r.at < up_cut && r.at < down_cut {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    match old {
        Some(i) => h.recommendations[i] = Stamped { at: now, value: desired },
        None => h.recommendations.push(Stamped { at: now, value: desired }),
    }
    // Entries past both windows are replaced one per sync; drop the rest of them.
    h.recommendations.retain(|r| r.at >= up_cut.min(down_cut) || r.at == now);
    let able = if stabilized != desired {
        if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        }
    } else {
        ("ReadyForNewScale", "recommended size matches current size")
    };
    let within = (false, "DesiredWithinRange", "the desired count is within the acceptable range");
    let (replicas, limited) = if stabilized > current {
        let limit = up_limit(current, h, up, now).max(current);
        let (allowed, reason, msg) = if max > limit {
            (limit, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        } else {
            (max, "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        };
        if stabilized > allowed { (allowed, (true, reason, msg)) } else { (stabilized, within) }
    } else if stabilized < current {
        let limit = down_limit(current, h, down, now).min(current);
        let (allowed, reason, msg) = if min < limit {
            (limit, "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        } else {
            (min, "TooFewReplicas", "the desired replica count is less than the minimum replica count")
        };
        if stabilized < allowed { (allowed, (true, reason, msg)) } else { (stabilized, within) }
    } else {
        (stabilized, within)
    };
    Normalized { replicas, able, limited }
}

/// Record a rescale from `from` to `to` in `h`, forgetting events older than the longest
/// policy period.
pub fn record_scale(h: &mut History, from: i64, to: i64, up: &Rules, down: &Rules, now: DateTime<Utc>) {
    let keep = |r: &Rules| r.policies.iter().map(|p| p.2).max().unwrap_or_default();
    let (ku, kd) = (keep(up), keep(down));
    h.ups.retain(|e| now - chrono::Duration::from_std(ku).unwrap_or_default() < e.at);
    h.downs.retain(|e| now - chrono::Duration::from_std(kd).unwrap_or_default() < e.at);
    if to > from {
        h.ups.push(Stamped { at: now, value: to - from });
    } else if to < from {
        h.downs.push(Stamped { at: now, value: from - to });
    }
}
