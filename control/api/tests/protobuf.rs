//! The protobuf codec against the upstream types: for every served kind, an object with every
//! field set (to depth 4) survives JSON → protobuf → JSON unchanged, and the bytes decode with
//! `k8s-pb`'s own (prost) types and re-encode to the same object.

use prost::Message as _;
use serde_json::{Map, Value, json};
use wasmorch_api::protobuf::{self, Message, Ty};

fn sample_of(name: &str) -> Option<Value> {
    Some(match name {
        "apimachinery.pkg.api.resource.Quantity" => json!("250m"),
        "apimachinery.pkg.apis.meta.v1.Time" => json!("2026-01-02T03:04:05Z"),
        "apimachinery.pkg.apis.meta.v1.MicroTime" => json!("2026-01-02T03:04:05.123456Z"),
        "apimachinery.pkg.apis.meta.v1.Duration" => json!("1m30s"),
        "apimachinery.pkg.runtime.RawExtension"
        | "apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON" => json!({"k": [1, "v"]}),
        _ => return None,
    })
}

/// Every field of `m` set, nested messages down to `depth`.
fn sample(m: &Message, depth: usize, flip: &mut bool) -> Value {
    if m.name == "apimachinery.pkg.util.intstr.IntOrString" {
        *flip = !*flip;
        return if *flip { json!(8080) } else { json!("http") };
    }
    if let Some(v) = sample_of(m.name) {
        return v;
    }
    let mut obj = Map::new();
    for f in m.fields {
        let value = |ty: Ty, flip: &mut bool| -> Option<Value> {
            Some(match ty {
                Ty::String => json!(format!("s{}", f.tag)),
                Ty::Bytes => json!("AQI="),
                Ty::Int32 => json!(f.tag as i32 + 1),
                Ty::Int64 => json!(i64::from(f.tag) * 1_000_000_007),
                Ty::Bool => json!(true),
                Ty::Double => json!(0.5),
                Ty::Message(i) if depth > 0 => sample(&protobuf::messages()[i], depth - 1, flip),
                Ty::Message(_) => return None,
                Ty::Map(mv) => {
                    let v = match mv {
                        protobuf::MapValue::String => json!("v"),
                        protobuf::MapValue::Bytes => json!("AQI="),
                        protobuf::MapValue::Message(i) if depth > 0 => {
                            sample(&protobuf::messages()[i], depth - 1, flip)
                        }
                        protobuf::MapValue::Message(_) => return None,
                    };
                    json!({"key": v})
                }
            })
        };
        let Some(v) = value(f.ty, flip) else { continue };
        if f.json.is_empty() {
            if let Value::Object(inner) = v {
                obj.extend(inner);
            }
        } else if f.repeated {
            obj.insert(f.json.to_string(), json!([v]));
        } else {
            obj.insert(f.json.to_string(), v);
        }
    }
    Value::Object(obj)
}

/// The upstream type of each served kind: decode, re-encode with prost.
fn reencode(kind: &str, raw: &[u8]) -> Vec<u8> {
    use k8s_pb::api;
    macro_rules! typed {
        ($($k:literal => $t:ty),* $(,)?) => {
            match kind {
                $($k => <$t>::decode(raw).expect(concat!("k8s-pb decodes ", $k)).encode_to_vec(),)*
                other => panic!("no upstream type listed for {other}"),
            }
        };
    }
    typed! {
        "Namespace" => api::core::v1::Namespace,
        "Node" => api::core::v1::Node,
        "Pod" => api::core::v1::Pod,
        "Service" => api::core::v1::Service,
        "Endpoints" => api::core::v1::Endpoints,
        "ConfigMap" => api::core::v1::ConfigMap,
        "Secret" => api::core::v1::Secret,
        "Event" => api::core::v1::Event,
        "PersistentVolumeClaim" => api::core::v1::PersistentVolumeClaim,
        "PersistentVolume" => api::core::v1::PersistentVolume,
        "Deployment" => api::apps::v1::Deployment,
        "ReplicaSet" => api::apps::v1::ReplicaSet,
        "ReplicationController" => api::core::v1::ReplicationController,
        "ResourceQuota" => api::core::v1::ResourceQuota,
        "Ingress" => api::networking::v1::Ingress,
        "IngressClass" => api::networking::v1::IngressClass,
        "LimitRange" => api::core::v1::LimitRange,
        "DaemonSet" => api::apps::v1::DaemonSet,
        "Job" => api::batch::v1::Job,
        "CronJob" => api::batch::v1::CronJob,
        "Lease" => api::coordination::v1::Lease,
        "ServiceAccount" => api::core::v1::ServiceAccount,
        "StorageClass" => api::storage::v1::StorageClass,
        "EndpointSlice" => api::discovery::v1::EndpointSlice,
        "PodDisruptionBudget" => api::policy::v1::PodDisruptionBudget,
        "NetworkPolicy" => api::networking::v1::NetworkPolicy,
        "HorizontalPodAutoscaler" => api::autoscaling::v2::HorizontalPodAutoscaler,
        "Role" => api::rbac::v1::Role,
        "ClusterRole" => api::rbac::v1::ClusterRole,
        "RoleBinding" => api::rbac::v1::RoleBinding,
        "ClusterRoleBinding" => api::rbac::v1::ClusterRoleBinding,
        "PodList" => api::core::v1::PodList,
        "Status" => k8s_pb::apimachinery::pkg::apis::meta::v1::Status,
    }
}

fn wrap(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let u = Unknown {
        type_meta: Some(TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = protobuf::MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn round_trip(api_version: &str, kind: &str) -> usize {
    let m = protobuf::message_for(api_version, kind).unwrap_or_else(|| panic!("no message for {api_version} {kind}"));
    let mut flip = false;
    let mut obj = sample(m, 8, &mut flip);
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    let bytes = protobuf::encode(&obj).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let back = protobuf::decode(&bytes).unwrap_or_else(|e| panic!("{kind}: {e}"));
    assert_eq!(back, obj, "{kind} changed on the way through protobuf");

    // The upstream types read and write the same bytes.
    let u = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&bytes[4..]).expect("envelope");
    let again = reencode(kind, u.raw.as_deref().unwrap_or_default());
    let back = protobuf::decode(&wrap(api_version, kind, again)).unwrap_or_else(|e| panic!("{kind}: {e}"));
    assert_eq!(back, obj, "{kind} differs after k8s-pb's decode and encode");
    bytes.len()
}

#[test]
fn every_served_kind_round_trips_through_the_upstream_types() {
    for r in wasmorch_api::resources::RESOURCES {
        // A definition's schema (JSONSchemaProps) nests itself and raw JSON without end: no
        // finite sample; clients send and read CustomResourceDefinitions as JSON.
        if r.kind_id == wasmorch_api::ResourceKind::CustomResourceDefinition {
            continue;
        }
        let size = round_trip(&r.api_version(), r.kind);
        assert!(size > 200, "{} sample is too small to mean anything ({size} bytes)", r.kind);
    }
    round_trip("v1", "PodList");
}

#[test]
fn status_errors_encode_as_upstream_status() {
    let err = wasmorch_api::ApiError::not_found("apps", "deployments", "web").to_status();
    let bytes = protobuf::encode(&err).unwrap();
    let u = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&bytes[4..]).unwrap();
    let s = k8s_pb::apimachinery::pkg::apis::meta::v1::Status::decode(u.raw.as_deref().unwrap()).unwrap();
    assert_eq!(s.code, Some(404));
    assert_eq!(s.reason.as_deref(), Some("NotFound"));
    assert_eq!(s.details.and_then(|d| d.name).as_deref(), Some("web"));
}

#[test]
fn watch_frames_decode() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7"}});
    let frame = protobuf::encode_watch_event("ADDED", &pod).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let (ty, obj) = protobuf::decode_watch_event(&frame[4..]).unwrap();
    assert_eq!((ty.as_str(), obj), ("ADDED", pod));
}

#[test]
fn go_zero_values_read_as_unset() {
    // What client-go sends for `kubectl create service clusterip x --tcp=80:8080`: the plain
    // (non-pointer) fields at their zero values.
    let typed = k8s_pb::api::core::v1::Service {
        metadata: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("x".into()),
            generate_name: Some(String::new()),
            generation: Some(0),
            ..Default::default()
        }),
        spec: Some(k8s_pb::api::core::v1::ServiceSpec {
            ports: vec![k8s_pb::api::core::v1::ServicePort {
                port: Some(80),
                node_port: Some(0),
                protocol: Some(String::new()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let obj = protobuf::decode(&wrap("v1", "Service", typed.encode_to_vec())).unwrap();
    assert_eq!(
        obj,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"ports": [{"port": 80}]}})
    );
}
