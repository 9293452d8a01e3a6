//! Protobuf → JSON: one walk of the field table, bounded in depth, every error with its path.

use super::*;

/// `None`: the message's JSON form is absent (a zero time, an empty raw extension).
pub(super) fn decode_message(m: &Message, buf: &[u8], path: &str, depth: usize) -> Result<Option<Value>, String> {
    if depth > MAX_DEPTH {
        return Err(format!("{}: nested more than {MAX_DEPTH} levels deep", display(path)));
    }
    if let Some(s) = special(m) {
        return decode_special(s, buf, path, depth);
    }
    let mut obj = Map::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (tag, wire) = r.key()?;
        let Some(f) = m.fields.iter().find(|f| f.tag == tag) else {
            r.skip(wire)?;
            continue;
        };
        let fpath = join(path, f.json);
        if f.repeated {
            let slot = obj.entry(f.json).or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(list) = slot else { return Err(format!("{fpath}: repeated and not repeated")) };
            if wire == LEN && matches!(f.ty, Ty::Int32 | Ty::Int64 | Ty::Bool | Ty::Double) {
                let mut p = Reader::new(r.len_delimited()?);
                while !p.done() {
                    let wire = if matches!(f.ty, Ty::Double) { FIXED64 } else { VARINT };
                    if let Some(v) = scalar(f.ty, wire, &mut p, &fpath, depth)? {
                        list.push(v);
                    }
                }
            } else if let Some(v) = scalar(f.ty, wire, &mut r, &fpath, depth)? {
                list.push(v);
            }
            continue;
        }
        if let Ty::Map(mv) = f.ty {
            if wire != LEN {
                return Err(format!("{fpath}: a map entry must be length-delimited"));
            }
            let (k, v) = map_entry(mv, r.len_delimited()?, &fpath, depth)?;
            let slot = obj.entry(f.json).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = slot {
                map.insert(k, v);
            }
            continue;
        }
        let v = scalar(f.ty, wire, &mut r, &fpath, depth)?;
        match v {
            Some(Value::Object(inner)) if f.json.is_empty() => obj.extend(inner),
            Some(Value::String(s)) if s.is_empty() && matches!(f.ty, Ty::String | Ty::Bytes) => {
                // Go writes empty strings; its JSON omits them.
                obj.remove(f.json);
            }
            Some(Value::Number(n)) if n.as_i64() == Some(0) && omits_zero(m, f) => {
                obj.remove(f.json);
            }
            Some(v) if !f.json.is_empty() => {
                obj.insert(f.json.to_string(), v);
            }
            _ => {}
        }
    }
    Ok(Some(Value::Object(obj)))
}

/// Integers Go writes as plain (not pointer) fields with `omitempty`, whose zero its JSON
/// leaves out and whose zero the API reads as "not set". Pointer fields (`replicas: 0`) keep
/// their zero; the wire cannot tell the two apart, so this list names the plain ones that
/// matter to validation and to what objects read back look like.
fn omits_zero(m: &Message, f: &Field) -> bool {
    matches!(
        (m.name, f.json),
        ("apimachinery.pkg.apis.meta.v1.ObjectMeta", "generation")
            | ("api.core.v1.ServicePort", "nodePort")
            | ("api.core.v1.ServiceSpec", "healthCheckNodePort")
            | ("api.core.v1.ContainerPort", "hostPort")
            | ("api.apps.v1.DeploymentSpec", "minReadySeconds")
            | ("api.apps.v1.ReplicaSetSpec", "minReadySeconds")
            | ("api.apps.v1.DaemonSetSpec", "minReadySeconds")
    )
}

fn scalar(ty: Ty, wire: u8, r: &mut Reader, path: &str, depth: usize) -> Result<Option<Value>, String> {
    let want = match ty {
        Ty::Int32 | Ty::Int64 | Ty::Bool => VARINT,
        Ty::Double => FIXED64,
        _ => LEN,
    };
    if wire != want {
        return Err(format!("{}: wire type {wire} where {} was expected", display(path), ty_name(ty)));
    }
    Ok(match ty {
        Ty::String => Some(Value::String(utf8(r.len_delimited()?, path)?)),
        Ty::Bytes => Some(Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited()?))),
        // int32 travels sign-extended to 64 bits.
        Ty::Int32 => Some(Value::from(r.varint()? as i64 as i32)),
        Ty::Int64 => Some(Value::from(r.varint()? as i64)),
        Ty::Bool => Some(Value::Bool(r.varint()? != 0)),
        Ty::Double => {
            let b = r.take(8)?;
            let v = f64::from_le_bytes(b.try_into().map_err(|_| "truncated double")?);
            Some(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
        }
        Ty::Message(i) => {
            let m = table::MESSAGES.get(i).ok_or_else(|| format!("{path}: message type unknown to this build"))?;
            decode_message(m, r.len_delimited()?, path, depth + 1)?
        }
        Ty::Map(_) => None,
    })
}

fn map_entry(mv: MapValue, buf: &[u8], path: &str, depth: usize) -> Result<(String, Value), String> {
    let mut r = Reader::new(buf);
    let (mut key, mut value) = (String::new(), None);
    while !r.done() {
        match r.key()? {
            (1, LEN) => key = utf8(r.len_delimited()?, path)?,
            (2, wire) => {
                let ty = match mv {
                    MapValue::String => Ty::String,
                    MapValue::Bytes => Ty::Bytes,
                    MapValue::Message(i) => Ty::Message(i),
                };
                value = scalar(ty, wire, &mut r, &format!("{path}[{key}]"), depth)?;
            }
            (_, w) => r.skip(w)?,
        }
    }
    let empty = match mv {
        MapValue::String | MapValue::Bytes => Value::String(String::new()),
        MapValue::Message(_) => Value::Object(Map::new()),
    };
    Ok((key, value.unwrap_or(empty)))
}

fn decode_special(s: Special, buf: &[u8], path: &str, depth: usize) -> Result<Option<Value>, String> {
    let mut r = Reader::new(buf);
    let (mut ints, mut strs, mut bytes) = ([0i64; 3], [const { None::<String> }; 3], None::<&[u8]>);
    while !r.done() {
        let (tag, wire) = r.key()?;
        let slot = (tag as usize).wrapping_sub(1);
        match wire {
            VARINT if slot < 3 => ints[slot] = r.varint()? as i64,
            LEN if slot < 3 && s == Special::RawJson && tag == 1 => bytes = Some(r.len_delimited()?),
            LEN if slot < 3 => strs[slot] = Some(utf8(r.len_delimited()?, path)?),
            w => r.skip(w)?,
        }
    }
    Ok(match s {
        Special::Quantity => Some(Value::String(strs[0].take().unwrap_or_else(|| "0".into()))),
        Special::IntOrString => Some(if ints[0] == 1 {
            Value::String(strs[2].take().unwrap_or_default())
        } else {
            Value::from(ints[1] as i32)
        }),
        Special::Time | Special::MicroTime => {
            let (secs, nanos) = (ints[0], ints[1] as i32);
            if secs == 0 && nanos == 0 {
                return Ok(None);
            }
            let t = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32)
                .ok_or_else(|| format!("{}: time out of range", display(path)))?;
            let fmt = if s == Special::Time { "%Y-%m-%dT%H:%M:%SZ" } else { "%Y-%m-%dT%H:%M:%S%.6fZ" };
            Some(Value::String(t.format(fmt).to_string()))
        }
        Special::Duration => Some(Value::String(go_duration(ints[0]))),
        Special::RawJson => match bytes {
            None | Some([]) => None,
            Some(b) if b.starts_with(MAGIC) && depth < MAX_DEPTH => Some(decode(b)?),
            Some(b) => Some(crate::decode::json(b).map_err(|e| format!("{}: embedded JSON: {e}", display(path)))?),
        },
    })
}
