//! Builds the protobuf schema table (`$OUT_DIR/k8s_proto.rs`) that `wasmorch_api::protobuf`
//! converts with.
//!
//! The message definitions come from the `k8s-pb` crate (Kubernetes' generated.proto files,
//! built by prost): its generated source names every message, field, tag and wire type. The
//! JSON names of the fields come from `k8s-openapi` (its deserializers name each JSON key),
//! because prost's snake_case field names lose the capitals of `clusterIP` or `podCIDRs`. Both
//! crates are found through `cargo metadata`; nothing is fetched or copied.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug)]
struct Field {
    tag: u32,
    /// The Rust (snake_case) name, `r#` removed.
    name: String,
    /// `string`, `bytes`, `int32`, `int64`, `bool`, `double`, `message`, or `map:KEY,VALUE`.
    ty: String,
    repeated: bool,
    /// For messages (and map values that are messages): the full dotted name.
    message: Option<String>,
    /// The upstream description (doc comment without its `+marker` lines).
    doc: String,
    /// The `+marker` lines (`patchMergeKey=name`, `listType=map`, …), `;`-separated.
    markers: String,
}

/// Modules whose descriptions are kept (for `/openapi/v3` and `kubectl explain`): the
/// groups wasmorch serves. Others keep their markers only, to keep the binary small.
const DOC_MODULES: &[&str] = &[
    "api.core.v1",
    "api.apps.v1",
    "api.batch.v1",
    "api.coordination.v1",
    "api.storage.v1",
    "api.discovery.v1",
    "api.policy.v1",
    "api.networking.v1",
    "api.autoscaling.v1",
    "api.autoscaling.v2",
    "api.rbac.v1",
    "apimachinery.pkg.apis.meta.v1",
    "apimachinery.pkg.api.resource",
    "apimachinery.pkg.util.intstr",
    "apimachinery.pkg.runtime",
];

/// prost writes bare URLs as `<https://…>` (Markdown); the upstream text has them plain.
fn unbracket_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<http") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('>') {
            Some(j) => {
                out.push_str(&after[..j]);
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// (description, markers) of doc-comment lines. As the upstream OpenAPI writes them: lines
/// of a paragraph joined with spaces, paragraphs apart, nothing after a `---` line.
fn split_doc(lines: &[String], keep: bool) -> (String, String) {
    let mut paragraphs: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut markers = Vec::new();
    let mut ended = false;
    for l in lines {
        let l = l.trim();
        if let Some(m) = l.strip_prefix('+') {
            markers.push(m.trim().to_string());
            continue;
        }
        if !keep || ended {
            continue;
        }
        if l == "---" || l.starts_with("TODO") {
            ended = true;
        } else if l.is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(l);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    (unbracket_urls(&paragraphs.join("\n\n")), markers.join(";"))
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (pb, openapi) = sources();
    let mut messages: BTreeMap<String, Vec<Field>> = BTreeMap::new();
    let mut docs: HashMap<String, String> = HashMap::new();
    let mut kinds: Vec<(String, String, String)> = Vec::new();
    for file in rust_files(&pb.join("src")) {
        let rel = file.strip_prefix(pb.join("src")).unwrap_or(&file);
        let module: Vec<String> = rel
            .parent()
            .map(|p| p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if module.is_empty() {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        parse_pb_module(&module, &text, &mut messages, &mut docs, &mut kinds);
    }
    let json_names = openapi_names(&openapi);

    let mut inlined_into: HashMap<&str, &str> = HashMap::new();
    for (name, fields) in &messages {
        let (module, ty) = name.rsplit_once('.').unwrap_or(("", name));
        if let Some(names) = json_names.get(&(module.to_string(), snake(ty))) {
            for f in fields {
                if embeds(names, f, &messages)
                    && let Some(m) = &f.message
                {
                    inlined_into.insert(m.as_str(), name.as_str());
                }
            }
        }
    }
    let index: HashMap<&str, usize> = messages.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect();
    let mut out = String::new();
    out.push_str("// Generated by control/api/build.rs from k8s-pb and k8s-openapi. Do not edit.\n");
    out.push_str("pub static MESSAGES: &[Message] = &[\n");
    let mut guessed = 0usize;
    let mut guesses = String::new();
    for (name, fields) in &messages {
        let (module, ty) = name.rsplit_once('.').unwrap_or(("", name));
        let names = json_names.get(&(module.to_string(), snake(ty))).or_else(|| {
            // A message Go embeds (`json:",inline"`) may not exist in k8s-openapi on its own
            // (EphemeralContainerCommon): its fields carry the names of its embedder's.
            inlined_into.get(name.as_str()).and_then(|parent| {
                let (m, t) = parent.rsplit_once('.').unwrap_or(("", parent));
                json_names.get(&(m.to_string(), snake(t)))
            })
        });
        let doc = docs.get(name.as_str()).map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "    Message {{ name: {name:?}, doc: {doc:?}, fields: &[");
        for f in fields {
            let json = match names.and_then(|m| lookup(m, &f.name)) {
                Some(j) => j.to_string(),
                // A message field the JSON form does not name, in a type it does, whose own
                // fields the type does name: Go embeds it, and its fields are the parent's.
                None if names.is_some_and(|m| embeds(m, f, &messages)) => String::new(),
                None => {
                    guessed += 1;
                    guesses.push_str(&format!("{name}.{}\n", f.name));
                    lower_camel(&f.name)
                }
            };
            let msg = |m: &Option<String>| {
                m.as_deref().and_then(|m| index.get(m)).map(|i| i.to_string()).unwrap_or_else(|| "usize::MAX".into())
            };
            let ty = match f.ty.as_str() {
                "string" => "Ty::String".to_string(),
                "bytes" => "Ty::Bytes".to_string(),
                "int32" => "Ty::Int32".to_string(),
                "int64" => "Ty::Int64".to_string(),
                "bool" => "Ty::Bool".to_string(),
                "double" => "Ty::Double".to_string(),
                "message" => format!("Ty::Message({})", msg(&f.message)),
                "map:string,string" => "Ty::Map(MapValue::String)".to_string(),
                "map:string,bytes" => "Ty::Map(MapValue::Bytes)".to_string(),
                "map:string,message" => format!("Ty::Map(MapValue::Message({}))", msg(&f.message)),
                other => panic!("k8s-pb field {name}.{} has a type this table does not know: {other}", f.name),
            };
            let _ = writeln!(
                out,
                "        Field {{ tag: {}, json: {json:?}, ty: {ty}, repeated: {}, doc: {:?}, markers: {:?} }},",
                f.tag, f.repeated, f.doc, f.markers
            );
        }
        out.push_str("    ] },\n");
    }
    out.push_str("];\n\n/// (apiVersion, kind, index into MESSAGES) of every top-level kind.\n");
    out.push_str("pub static KINDS: &[(&str, &str, usize)] = &[\n");
    kinds.sort();
    kinds.dedup();
    for (api_version, kind, message) in &kinds {
        if let Some(i) = index.get(message.as_str()) {
            let _ = writeln!(out, "    ({api_version:?}, {kind:?}, {i}),");
            let list = format!("{message}List");
            if let Some(l) = index.get(list.as_str()) {
                let _ = writeln!(out, "    ({api_version:?}, \"{kind}List\", {l}),");
            }
        }
    }
    out.push_str("];\n");
    let _ = writeln!(out, "/// Fields whose JSON name was guessed (no k8s-openapi deserializer names it).");
    let _ = writeln!(out, "pub const GUESSED_NAMES: usize = {guessed};");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("k8s_proto.rs");
    std::fs::write(&dest, out).expect("writing k8s_proto.rs");
    let _ = std::fs::write(dest.with_file_name("guessed_json_names.txt"), guesses);
}

/// The source directories of `k8s-pb` and of `k8s-openapi` (the version this crate uses).
fn sources() -> (PathBuf, PathBuf) {
    if let (Ok(a), Ok(b)) = (std::env::var("WASMORCH_K8S_PB_DIR"), std::env::var("WASMORCH_K8S_OPENAPI_DIR")) {
        return (PathBuf::from(a), PathBuf::from(b));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let target = std::env::var("TARGET").expect("TARGET");
    let metadata = |offline: bool| {
        let mut c = std::process::Command::new(&cargo);
        c.args(["metadata", "--format-version", "1", "--manifest-path"]).arg(&manifest);
        // Only this target's packages.
        c.args(["--filter-platform", &target]);
        if offline {
            c.arg("--offline");
        }
        c.output().expect("running cargo metadata")
    };
    // Offline first: the build has downloaded the packages it compiles. But metadata reads
    // the whole workspace, dev-dependencies included, which a first `cargo build` or
    // `cargo run` has not downloaded: then once more, letting cargo fetch them (it honours
    // `net.offline` and CARGO_NET_OFFLINE from the user's configuration).
    let mut out = metadata(true);
    if !out.status.success() {
        out = metadata(false);
    }
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata output");
    let find = |name: &str, version: &str| -> PathBuf {
        meta.get("packages")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .filter(|p| p.get("name").and_then(|n| n.as_str()) == Some(name))
            .filter(|p| p.get("version").and_then(|v| v.as_str()).is_some_and(|v| v.starts_with(version)))
            .find_map(|p| p.get("manifest_path").and_then(|m| m.as_str()))
            .map(|m| Path::new(m).parent().unwrap_or(Path::new(".")).to_path_buf())
            .unwrap_or_else(|| panic!("cargo metadata does not list {name} {version}"))
    };
    (find("k8s-pb", "0.9"), find("k8s-openapi", "0.29"))
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Reads prost-build's output: `pub struct X {`, `#[prost(…, tag = "N")]`, `pub name: Type,`
/// (a type may wrap over several lines), and `impl crate::Resource for X { … }`.
fn parse_pb_module(
    module: &[String],
    text: &str,
    messages: &mut BTreeMap<String, Vec<Field>>,
    docs: &mut HashMap<String, String>,
    kinds: &mut Vec<(String, String, String)>,
) {
    let dotted = module.join(".");
    let keep = DOC_MODULES.contains(&dotted.as_str());
    let mut current: Option<(String, Vec<Field>)> = None;
    let mut attr: Option<String> = None;
    let mut doc_lines: Vec<String> = Vec::new();
    let mut field_doc: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    let mut resource: Option<(String, Option<String>, Option<String>)> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(p) = pending.as_mut() {
            p.push_str(t);
            if balanced(p) && t.ends_with(',') {
                let decl = pending.take().unwrap_or_default();
                if let (Some((_, fields)), Some(a)) = (current.as_mut(), attr.take()) {
                    let mut f = field(module, &a, &decl);
                    (f.doc, f.markers) = split_doc(&std::mem::take(&mut field_doc), keep);
                    fields.push(f);
                }
            }
            continue;
        }
        if let Some(d) = t.strip_prefix("///") {
            doc_lines.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            continue;
        }
        if line.starts_with("pub struct ") && t.ends_with("{}") {
            let name = t.trim_start_matches("pub struct ").trim_end_matches("{}").trim().to_string();
            docs.insert(format!("{dotted}.{name}"), split_doc(&std::mem::take(&mut doc_lines), keep).0);
            messages.insert(format!("{dotted}.{name}"), Vec::new());
            continue;
        }
        if line.starts_with("pub struct ") && t.ends_with('{') {
            let name = t.trim_start_matches("pub struct ").trim_end_matches('{').trim().to_string();
            docs.insert(format!("{dotted}.{name}"), split_doc(&std::mem::take(&mut doc_lines), keep).0);
            current = Some((name, Vec::new()));
            continue;
        }
        if line == "}" {
            if let Some((name, fields)) = current.take() {
                messages.insert(format!("{dotted}.{name}"), fields);
            }
            if let Some((ty, Some(v), Some(k))) = resource.take() {
                kinds.push((v, k, format!("{dotted}.{ty}")));
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix("impl crate::Resource for ") {
            resource = Some((rest.trim_end_matches('{').trim().to_string(), None, None));
            continue;
        }
        if let Some((_, v, k)) = resource.as_mut() {
            if let Some(s) = t.strip_prefix("const API_VERSION: &'static str = ") {
                *v = Some(s.trim_end_matches(';').trim_matches('"').to_string());
            } else if let Some(s) = t.strip_prefix("const KIND: &'static str = ") {
                *k = Some(s.trim_end_matches(';').trim_matches('"').to_string());
            }
            continue;
        }
        if current.is_some() {
            if t.starts_with("#[prost(") {
                attr = Some(t.to_string());
                field_doc = std::mem::take(&mut doc_lines);
            } else if t.starts_with("pub ") && attr.is_some() {
                if balanced(t) && t.ends_with(',') {
                    if let (Some((_, fields)), Some(a)) = (current.as_mut(), attr.take()) {
                        let mut f = field(module, &a, t);
                        (f.doc, f.markers) = split_doc(&std::mem::take(&mut field_doc), keep);
                        fields.push(f);
                    }
                } else {
                    pending = Some(t.to_string());
                }
            }
        }
    }
}

/// The JSON name of Rust field `name`. k8s-pb and k8s-openapi split some acronyms
/// differently (`target_ww_ns`, `target_wwns`), so compare without underscores second.
fn lookup<'a>(names: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    if let Some(j) = names.get(name) {
        return Some(j);
    }
    let squash = |s: &str| s.replace('_', "");
    let want = squash(name);
    names.iter().find(|(k, _)| squash(k) == want).map(|(_, j)| j.as_str())
}

/// Whether `f` is a Go embedded struct (`json:",inline"`) of the type whose JSON names are
/// `names`: a single message the JSON does not name, whose own fields the JSON does name.
fn embeds(names: &HashMap<String, String>, f: &Field, messages: &BTreeMap<String, Vec<Field>>) -> bool {
    if f.ty != "message" || f.repeated || lookup(names, &f.name).is_some() {
        return false;
    }
    let Some(child) = f.message.as_ref().and_then(|m| messages.get(m)) else { return false };
    !child.is_empty() && child.iter().all(|c| lookup(names, &c.name).is_some())
}

fn balanced(s: &str) -> bool {
    s.matches('<').count() == s.matches('>').count()
}

fn field(module: &[String], attr: &str, decl: &str) -> Field {
    let inner = attr.trim_start_matches("#[prost(").trim_end_matches(")]");
    let tag = inner
        .split("tag = \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no tag in {attr}"));
    let repeated = inner.contains("repeated");
    let first = inner.split(',').next().unwrap_or("").trim();
    let (name, ty_text) = decl.trim_start_matches("pub ").split_once(':').unwrap_or(("", ""));
    let name = name.trim().trim_start_matches("r#").to_string();
    let ty_text: String = ty_text.chars().filter(|c| !c.is_whitespace()).collect();
    let (ty, message) = if first.starts_with("btree_map") || first.starts_with("map") {
        let kv = inner.split('"').nth(1).unwrap_or("").replace(' ', "");
        let message = kv.ends_with(",message").then(|| resolve(module, &map_value(&ty_text)));
        (format!("map:{kv}"), message)
    } else if first.starts_with("bytes") {
        ("bytes".to_string(), None)
    } else if first == "message" {
        ("message".to_string(), Some(resolve(module, &unwrap_type(&ty_text))))
    } else {
        (first.to_string(), None)
    };
    Field { tag, name, ty, repeated, message, doc: String::new(), markers: String::new() }
}

/// `::core::option::Option<::prost::alloc::boxed::Box<X>>` → `X`.
fn unwrap_type(t: &str) -> String {
    let mut t = t.trim_end_matches(',').to_string();
    for wrapper in ["::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"] {
        while let Some(rest) = t.strip_prefix(wrapper) {
            t = rest.strip_suffix('>').unwrap_or(rest).to_string();
        }
    }
    t
}

/// The value type of `::std::collections::BTreeMap<K,V>`.
fn map_value(t: &str) -> String {
    let t = t.trim_end_matches(',');
    let inner = t.split_once('<').map(|(_, r)| r).unwrap_or("");
    let inner = inner.strip_suffix('>').unwrap_or(inner);
    let v = inner.split_once(',').map(|(_, v)| v).unwrap_or("");
    v.trim_end_matches(',').to_string()
}

/// A Rust type path relative to `module` (with `super::`) → the dotted message name.
fn resolve(module: &[String], path: &str) -> String {
    let mut base: Vec<String> = module.to_vec();
    let mut parts = path.split("::").filter(|s| !s.is_empty()).peekable();
    if parts.peek() == Some(&"crate") {
        base.clear();
        parts.next();
    }
    let mut rest = Vec::new();
    for p in parts {
        if p == "super" {
            base.pop();
        } else {
            rest.push(p.to_string());
        }
    }
    base.extend(rest);
    base.join(".")
}

/// `(module, type_snake)` → (Rust field name → JSON name), from k8s-openapi's deserializers
/// (`"clusterIP" => Field::Key_cluster_ip,`).
fn openapi_names(root: &Path) -> HashMap<(String, String), HashMap<String, String>> {
    let src = root.join("src").join("v1_37");
    let mut out: HashMap<(String, String), HashMap<String, String>> = HashMap::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).unwrap_or(&file);
        let module = rel
            .parent()
            .map(|p| p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("."))
            .unwrap_or_default();
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut names = HashMap::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some((json, rest)) = t.split_once("\" => Field::Key_")
                && let Some(json) = json.strip_prefix('"')
            {
                names.insert(rest.trim_end_matches(',').trim_end_matches('_').to_string(), json.to_string());
            }
        }
        if !names.is_empty() {
            out.insert((module, stem), names);
        }
    }
    out
}

/// `PodIp` → `pod_ip`, `CSIDriver` → `csi_driver` (as k8s-openapi names its files).
fn snake(s: &str) -> String {
    let c: Vec<char> = s.chars().collect();
    let mut out = String::new();
    for i in 0..c.len() {
        let boundary = i > 0
            && c[i].is_ascii_uppercase()
            && (c[i - 1].is_ascii_lowercase()
                || c[i - 1].is_ascii_digit()
                || (c[i - 1].is_ascii_uppercase() && c.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())));
        if boundary {
            out.push('_');
        }
        out.push(c[i].to_ascii_lowercase());
    }
    out
}

fn lower_camel(s: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in s.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.push(c.to_ascii_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}
