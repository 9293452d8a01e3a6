//! JSON → protobuf: one walk of the field table, ill-typed values refused with their path.

use super::*;

pub(super) fn encode_message(
    m: &Message,
    v: &Value,
    out: &mut Vec<u8>,
    path: &str,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{}: nested more than {MAX_DEPTH} levels deep", display(path)));
    }
    if let Some(s) = special(m) {
        return encode_special(s, v, out, path);
    }
    let obj = v.as_object().ok_or_else(|| mismatch(path, "object", v))?;
    for f in m.fields {
        if f.json.is_empty() {
            // Embedded: the child's fields are this object's.
            if let Ty::Message(i) = f.ty
                && let Some(child) = table::MESSAGES.get(i)
            {
                let mut buf = Vec::new();
                encode_message(child, v, &mut buf, path, depth + 1)?;
                put_bytes(out, f.tag, &buf);
            }
            continue;
        }
        let Some(val) = obj.get(f.json).filter(|v| !v.is_null()) else { continue };
        let fpath = join(path, f.json);
        if let Ty::Map(mv) = f.ty {
            let map = val.as_object().ok_or_else(|| mismatch(&fpath, "object", val))?;
            for (k, item) in map {
                let mut entry = Vec::new();
                put_bytes(&mut entry, 1, k.as_bytes());
                let ty = match mv {
                    MapValue::String => Ty::String,
                    MapValue::Bytes => Ty::Bytes,
                    MapValue::Message(i) => Ty::Message(i),
                };
                put_value(ty, 2, item, &mut entry, &format!("{fpath}[{k}]"), depth)?;
                put_bytes(out, f.tag, &entry);
            }
        } else if f.repeated {
            let list = val.as_array().ok_or_else(|| mismatch(&fpath, "array", val))?;
            for (i, item) in list.iter().enumerate() {
                put_value(f.ty, f.tag, item, out, &format!("{fpath}[{i}]"), depth)?;
            }
        } else {
            put_value(f.ty, f.tag, val, out, &fpath, depth)?;
        }
    }
    Ok(())
}

fn put_value(ty: Ty, tag: u32, v: &Value, out: &mut Vec<u8>, path: &str, depth: usize) -> Result<(), String> {
    match ty {
        Ty::String => put_bytes(out, tag, v.as_str().ok_or_else(|| mismatch(path, "string", v))?.as_bytes()),
        Ty::Bytes => {
            let s = v.as_str().ok_or_else(|| mismatch(path, "base64 string", v))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("{}: illegal base64 data: {e}", display(path)))?;
            put_bytes(out, tag, &b);
        }
        Ty::Int32 => {
            let n = v.as_i64().ok_or_else(|| mismatch(path, "integer", v))?;
            let n = i32::try_from(n).map_err(|_| format!("{}: {n} does not fit in 32 bits", display(path)))?;
            put_key(out, tag, VARINT);
            put_varint(out, i64::from(n) as u64);
        }
        Ty::Int64 => {
            let n = v.as_i64().ok_or_else(|| mismatch(path, "integer", v))?;
            put_key(out, tag, VARINT);
            put_varint(out, n as u64);
        }
        Ty::Bool => {
            let b = v.as_bool().ok_or_else(|| mismatch(path, "boolean", v))?;
            put_key(out, tag, VARINT);
            put_varint(out, u64::from(b));
        }
        Ty::Double => {
            let f = v.as_f64().ok_or_else(|| mismatch(path, "number", v))?;
            put_key(out, tag, FIXED64);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Ty::Message(i) => {
            let m = table::MESSAGES.get(i).ok_or_else(|| format!("{path}: message type unknown to this build"))?;
            let mut buf = Vec::new();
            encode_message(m, v, &mut buf, path, depth + 1)?;
            put_bytes(out, tag, &buf);
        }
        Ty::Map(_) => return Err(format!("{}: a map inside a list", display(path))),
    }
    Ok(())
}

fn encode_special(s: Special, v: &Value, out: &mut Vec<u8>, path: &str) -> Result<(), String> {
    match s {
        Special::Quantity => {
            let q = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => return Err(mismatch(path, "quantity (string or number)", other)),
            };
            put_bytes(out, 1, q.as_bytes());
        }
        Special::IntOrString => match v {
            Value::String(s) => {
                put_key(out, 1, VARINT);
                put_varint(out, 1);
                put_bytes(out, 3, s.as_bytes());
            }
            Value::Number(_) => {
                let n = v
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| format!("{}: {v} is not a 32-bit integer", display(path)))?;
                put_key(out, 1, VARINT);
                put_varint(out, 0);
                put_key(out, 2, VARINT);
                put_varint(out, i64::from(n) as u64);
            }
            other => return Err(mismatch(path, "integer or string", other)),
        },
        Special::Time | Special::MicroTime => {
            let s = v.as_str().ok_or_else(|| mismatch(path, "RFC 3339 time", v))?;
            let t = chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|e| format!("{}: {s:?} is not an RFC 3339 time: {e}", display(path)))?;
            put_key(out, 1, VARINT);
            put_varint(out, t.timestamp() as u64);
            let nanos = t.timestamp_subsec_nanos();
            if nanos != 0 {
                put_key(out, 2, VARINT);
                put_varint(out, u64::from(nanos));
            }
        }
        Special::Duration => {
            let s = v.as_str().ok_or_else(|| mismatch(path, "duration string", v))?;
            let n = parse_go_duration(s).ok_or_else(|| format!("{}: {s:?} is not a duration", display(path)))?;
            put_key(out, 1, VARINT);
            put_varint(out, n as u64);
        }
        Special::RawJson => put_bytes(out, 1, v.to_string().as_bytes()),
    }
    Ok(())
}
