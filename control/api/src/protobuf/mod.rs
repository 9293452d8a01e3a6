//! Kubernetes' protobuf wire form (`application/vnd.kubernetes.protobuf`), converted to and from
//! the JSON form the API works in.
//!
//! A body is the 4-byte magic `k8s\0` and a `runtime.Unknown` message: the object's
//! `apiVersion` and `kind`, and the object's own message as bytes. The messages are the upstream
//! definitions (the `k8s-pb` crate), read by `build.rs` into one table of fields: tag, JSON
//! name, wire type. One converter walks that table in each direction; a few messages have a JSON
//! form of their own (quantities, int-or-string, times, durations, embedded raw JSON), and
//! messages Go embeds (`json:",inline"`) put their fields in their parent's object.
//!
//! JSON → protobuf rejects ill-typed values with the field path; protobuf → JSON rejects
//! malformed input the same way. Neither panics, and nesting is bounded.

use base64::Engine;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::OnceLock;

mod decode;
mod encode;

use decode::decode_message;
use encode::encode_message;

mod table {
    #![allow(clippy::all)]
    use super::{Field, MapValue, Message, Ty};
    include!(concat!(env!("OUT_DIR"), "/k8s_proto.rs"));
}

pub use table::GUESSED_NAMES;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
/// The media type of a watch stream: length-prefixed `WatchEvent` envelopes.
pub const WATCH_MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// Every protobuf body starts with these bytes.
pub const MAGIC: &[u8; 4] = b"k8s\0";
/// Deeper nesting is refused (the deepest real object is far shallower).
const MAX_DEPTH: usize = 64;

pub struct Message {
    pub name: &'static str,
    /// The upstream description (served groups only; empty elsewhere).
    pub doc: &'static str,
    pub fields: &'static [Field],
}

pub struct Field {
    pub tag: u32,
    /// Empty for a message Go embeds: its fields belong to the parent's JSON object.
    pub json: &'static str,
    pub ty: Ty,
    pub repeated: bool,
    /// The upstream description (served groups only; empty elsewhere).
    pub doc: &'static str,
    /// The upstream `+markers`, `;`-separated: `patchMergeKey=name;patchStrategy=merge`,
    /// `listType=map;listMapKey=port;listMapKey=protocol`, `optional`.
    pub markers: &'static str,
}

impl Field {
    /// The values of marker `key` (`listMapKey` may repeat).
    pub fn marker<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'static str> + 'a {
        self.markers.split(';').filter_map(move |m| m.strip_prefix(key)?.strip_prefix('='))
    }
}

#[derive(Clone, Copy)]
pub enum Ty {
    String,
    Bytes,
    Int32,
    Int64,
    Bool,
    Double,
    Message(usize),
    Map(MapValue),
}

#[derive(Clone, Copy)]
pub enum MapValue {
    String,
    Bytes,
    Message(usize),
}

/// Messages whose JSON form is not an object of their fields.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    Quantity,
    IntOrString,
    Time,
    MicroTime,
    Duration,
    /// Bytes that hold JSON: `RawExtension`, `FieldsV1`, apiextensions `JSON`.
    RawJson,
}

fn special(m: &Message) -> Option<Special> {
    Some(match m.name {
        "apimachinery.pkg.api.resource.Quantity" => Special::Quantity,
        "apimachinery.pkg.util.intstr.IntOrString" => Special::IntOrString,
        "apimachinery.pkg.apis.meta.v1.Time" => Special::Time,
        "apimachinery.pkg.apis.meta.v1.MicroTime" => Special::MicroTime,
        "apimachinery.pkg.apis.meta.v1.Duration" => Special::Duration,
        "apimachinery.pkg.runtime.RawExtension"
        | "apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSON" => Special::RawJson,
        _ => return None,
    })
}

struct Index {
    kinds: HashMap<(&'static str, &'static str), usize>,
    by_name: HashMap<&'static str, usize>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let by_name = table::MESSAGES.iter().enumerate().map(|(i, m)| (m.name, i)).collect::<HashMap<_, _>>();
        let mut kinds: HashMap<(&'static str, &'static str), usize> =
            table::KINDS.iter().map(|&(v, k, i)| ((v, k), i)).collect();
        // The meta.k8s.io kinds every group version carries.
        for (kind, msg) in [
            ("Status", "apimachinery.pkg.apis.meta.v1.Status"),
            ("DeleteOptions", "apimachinery.pkg.apis.meta.v1.DeleteOptions"),
            ("WatchEvent", "apimachinery.pkg.apis.meta.v1.WatchEvent"),
            ("APIResourceList", "apimachinery.pkg.apis.meta.v1.APIResourceList"),
            ("APIGroupList", "apimachinery.pkg.apis.meta.v1.APIGroupList"),
            ("APIGroup", "apimachinery.pkg.apis.meta.v1.APIGroup"),
            ("APIVersions", "apimachinery.pkg.apis.meta.v1.APIVersions"),
        ] {
            if let Some(&i) = by_name.get(msg) {
                kinds.insert(("v1", kind), i);
                kinds.insert(("meta.k8s.io/v1", kind), i);
            }
        }
        // Subresource kinds, which the generated code does not mark as resources.
        for (api_version, kind, msg) in [
            ("authentication.k8s.io/v1", "TokenRequest", "api.authentication.v1.TokenRequest"),
            ("policy/v1", "Eviction", "api.policy.v1.Eviction"),
            ("autoscaling/v1", "Scale", "api.autoscaling.v1.Scale"),
            ("v1", "Binding", "api.core.v1.Binding"),
        ] {
            if let Some(&i) = by_name.get(msg) {
                kinds.insert((api_version, kind), i);
            }
        }
        Index { kinds, by_name }
    })
}

/// The message of `apiVersion`/`kind` (a kind's `…List` included).
pub fn message_for(api_version: &str, kind: &str) -> Option<&'static Message> {
    let ix = index();
    let i = ix.kinds.get(&(api_version, kind)).or_else(|| {
        // A kind's `…List` travels as the list message; Status and friends under any version.
        let meta = ix.kinds.get(&("meta.k8s.io/v1", kind));
        meta.filter(|_| !api_version.is_empty())
    })?;
    table::MESSAGES.get(*i)
}

/// Whether `apiVersion`/`kind` has a protobuf form.
pub fn has_message(api_version: &str, kind: &str) -> bool {
    message_for(api_version, kind).is_some()
}

/// The message named `name` (e.g. `api.core.v1.Pod`), for tests and tools.
pub fn message_named(name: &str) -> Option<&'static Message> {
    index().by_name.get(name).and_then(|&i| table::MESSAGES.get(i))
}

/// All messages in the table.
pub fn messages() -> &'static [Message] {
    table::MESSAGES
}

/// All (apiVersion, kind) with a message.
pub fn kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    table::KINDS.iter().map(|&(v, k, _)| (v, k))
}

// ---- wire primitives ----

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("truncated field")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn len_delimited(&mut self) -> Result<&'a [u8], String> {
        let n = self.varint()?;
        self.take(usize::try_from(n).map_err(|_| "length out of range")?)
    }
    /// The next key: (tag, wire type).
    fn key(&mut self) -> Result<(u32, u8), String> {
        let k = self.varint()?;
        let tag = u32::try_from(k >> 3).map_err(|_| "field number out of range")?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        Ok((tag, (k & 7) as u8))
    }
    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            VARINT => self.varint().map(|_| ()),
            FIXED64 => self.take(8).map(|_| ()),
            LEN => self.len_delimited().map(|_| ()),
            FIXED32 => self.take(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

// ---- envelope ----

/// A protobuf body → the object as JSON (with `apiVersion` and `kind`).
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let (api_version, kind, raw) = unwrap_envelope(body)?;
    let m = message_for(&api_version, &kind)
        .ok_or_else(|| format!("no protobuf message is known for {kind} in {api_version}"))?;
    let mut obj = match decode_message(m, raw, "", 0)? {
        Some(Value::Object(o)) => o,
        _ => Map::new(),
    };
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(obj))
}

/// The type and raw message of an envelope.
fn unwrap_envelope(body: &[u8]) -> Result<(String, String, &[u8]), String> {
    let rest =
        body.strip_prefix(MAGIC.as_slice()).ok_or("the body does not start with the protobuf magic \"k8s\\0\"")?;
    let (mut api_version, mut kind, mut raw, mut encoding) = (String::new(), String::new(), &[][..], String::new());
    let mut r = Reader::new(rest);
    while !r.done() {
        match r.key()? {
            (1, LEN) => {
                let mut t = Reader::new(r.len_delimited()?);
                while !t.done() {
                    match t.key()? {
                        (1, LEN) => api_version = utf8(t.len_delimited()?, "typeMeta.apiVersion")?,
                        (2, LEN) => kind = utf8(t.len_delimited()?, "typeMeta.kind")?,
                        (_, w) => t.skip(w)?,
                    }
                }
            }
            (2, LEN) => raw = r.len_delimited()?,
            (3, LEN) => encoding = utf8(r.len_delimited()?, "contentEncoding")?,
            (_, w) => r.skip(w)?,
        }
    }
    if !encoding.is_empty() {
        return Err(format!("content encoding {encoding:?} is not supported"));
    }
    if kind.is_empty() {
        return Err("the protobuf envelope names no kind".into());
    }
    Ok((api_version, kind, raw))
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    put_bytes(&mut tm, 1, api_version.as_bytes());
    put_bytes(&mut tm, 2, kind.as_bytes());
    let mut out = Vec::with_capacity(raw.len() + tm.len() + 16);
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, 1, &tm);
    put_bytes(&mut out, 2, raw);
    put_bytes(&mut out, 3, b"");
    put_bytes(&mut out, 4, b"");
    out
}

/// An object (with `apiVersion` and `kind`) → a protobuf body.
pub fn encode(obj: &Value) -> Result<Vec<u8>, String> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let m = message_for(api_version, kind)
        .ok_or_else(|| format!("no protobuf message is known for {kind:?} in {api_version:?}"))?;
    let mut raw = Vec::new();
    encode_message(m, obj, &mut raw, "", 0)?;
    Ok(envelope(api_version, kind, &raw))
}

/// One watch frame: a 4-byte big-endian length, then a `WatchEvent` envelope whose object is
/// the protobuf form of `obj`.
pub fn encode_watch_event(event_type: &str, obj: &Value) -> Result<Vec<u8>, String> {
    let inner = encode(obj)?;
    let mut ext = Vec::new();
    put_bytes(&mut ext, 1, &inner);
    let mut ev = Vec::new();
    put_bytes(&mut ev, 1, event_type.as_bytes());
    put_bytes(&mut ev, 2, &ext);
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
    let env = envelope(api_version, "WatchEvent", &ev);
    let len = u32::try_from(env.len()).map_err(|_| "watch event too large")?;
    let mut out = Vec::with_capacity(env.len() + 4);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&env);
    Ok(out)
}

/// One watch frame (as [`encode_watch_event`] writes it) → (type, object).
pub fn decode_watch_event(frame: &[u8]) -> Result<(String, Value), String> {
    let (_, kind, raw) = unwrap_envelope(frame)?;
    if kind != "WatchEvent" {
        return Err(format!("a watch frame holds {kind}, not WatchEvent"));
    }
    let (mut ty, mut object) = (String::new(), None);
    let mut r = Reader::new(raw);
    while !r.done() {
        match r.key()? {
            (1, LEN) => ty = utf8(r.len_delimited()?, "type")?,
            (2, LEN) => {
                let mut e = Reader::new(r.len_delimited()?);
                while !e.done() {
                    match e.key()? {
                        (1, LEN) => object = Some(decode(e.len_delimited()?)?),
                        (_, w) => e.skip(w)?,
                    }
                }
            }
            (_, w) => r.skip(w)?,
        }
    }
    Ok((ty, object.unwrap_or(Value::Null)))
}

// ---- protobuf → JSON ----

fn utf8(b: &[u8], path: &str) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| format!("{}: invalid UTF-8", display(path)))
}

fn display(path: &str) -> &str {
    if path.is_empty() { "<object>" } else { path }
}

fn join(path: &str, name: &str) -> String {
    match (path.is_empty(), name.is_empty()) {
        (_, true) => path.to_string(),
        (true, false) => name.to_string(),
        (false, false) => format!("{path}.{name}"),
    }
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::String => "string",
        Ty::Bytes => "bytes",
        Ty::Int32 => "int32",
        Ty::Int64 => "int64",
        Ty::Bool => "bool",
        Ty::Double => "double",
        Ty::Message(_) => "message",
        Ty::Map(_) => "map",
    }
}

// ---- JSON → protobuf ----

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn mismatch(path: &str, want: &str, got: &Value) -> String {
    format!("{}: expected {want}, got {}", display(path), json_type(got))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `300ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    let frac = |v: u64, unit: u64| -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.ilog10() as usize;
        let s = format!("{rest:0digits$}");
        format!("{whole}.{}", s.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let (h, rem) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (m, rem) = (rem / 60_000_000_000, rem % 60_000_000_000);
    let secs = frac(rem, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{secs}s"),
        (0, m) => format!("{sign}{m}m{secs}s"),
        (h, m) => format!("{sign}{h}h{m}m{secs}s"),
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units (ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += num * mult;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i64;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_covers_every_served_kind() {
        for r in crate::resources::served() {
            assert!(has_message(&r.api_version(), r.kind), "{} {}", r.api_version(), r.kind);
            assert!(has_message(&r.api_version(), &format!("{}List", r.kind)), "{}List", r.kind);
        }
        assert!(has_message("v1", "Status"));
        // Subresource bodies (`kubectl create token` sends protobuf).
        for (v, k) in
            [("authentication.k8s.io/v1", "TokenRequest"), ("policy/v1", "Eviction"), ("autoscaling/v1", "Scale")]
        {
            assert!(has_message(v, k), "{v} {k}");
        }
        // JSON names come from k8s-openapi, not guessed, for the kinds we serve.
        let pod = message_named("api.core.v1.ServiceSpec").unwrap();
        assert!(pod.fields.iter().any(|f| f.json == "clusterIPs"));
        let nodespec = message_named("api.core.v1.NodeSpec").unwrap();
        assert!(nodespec.fields.iter().any(|f| f.json == "podCIDRs"));
    }

    #[test]
    fn special_forms() {
        let cm = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "creationTimestamp": "2026-01-02T03:04:05Z", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"memory": "32Mi", "cpu": "500m"}},
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"port": "http", "path": "/"}, "periodSeconds": 1},
                "livenessProbe": {"tcpSocket": {"port": 8080}}}],
                "volumes": [{"name": "v", "configMap": {"name": "cfg"}}]}
        });
        let bytes = encode(&cm).unwrap();
        assert!(bytes.starts_with(MAGIC));
        assert_eq!(decode(&bytes).unwrap(), cm);
    }

    #[test]
    fn durations_as_go_writes_them() {
        for (n, s) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (300_000_000, "300ms"),
            (61_000_000_000, "1m1s"),
        ] {
            assert_eq!(go_duration(n), s);
            assert_eq!(parse_go_duration(s), Some(n));
        }
        assert_eq!(parse_go_duration("1x"), None);
    }

    #[test]
    fn hostile_bytes_are_errors() {
        assert!(decode(b"nope").is_err());
        assert!(decode(b"k8s\0\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").is_err());
        let wrong = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}});
        assert_eq!(encode(&wrong).unwrap_err(), "data[a]: expected string, got number");
    }
}
