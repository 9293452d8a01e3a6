//! Protobuf on the wire: kubectl's `create` generators and raw protobuf bodies, replies,
//! errors and watch frames.

use super::*;

/// kubectl's typed create commands speak protobuf (request bodies, and protobuf first in
/// Accept): every generator for a kind wasmorch serves, `run`, `expose` and
/// `create job --from=cronjob/…` work, and the objects read back as they were meant.
#[test]
fn kubectl_create_generators_speak_protobuf() {
    if !kubectl_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start_with(dir.path(), &["--node-name", "n1", "--cluster-cidr", &common::cluster_cidr()]);
    let image = "wasmorch.local/hello-http:1.0";
    let creates: &[(&[&str], &str)] = &[
        (&["create", "configmap", "cm", "--from-literal=a=b"], "configmap/cm created"),
        (&["create", "secret", "generic", "sec", "--from-literal=k=v"], "secret/sec created"),
        (
            &[
                "create",
                "secret",
                "docker-registry",
                "reg",
                "--docker-server=r.example",
                "--docker-username=u",
                "--docker-password=p",
            ],
            "secret/reg created",
        ),
        (&["create", "namespace", "made"], "namespace/made created"),
        (
            &["create", "deployment", "hello", &format!("--image={image}"), "--replicas=2", "--port=8080"],
            "deployment.apps/hello created",
        ),
        (&["create", "job", "once", "--image=wasmorch.local/batch-job:1.0"], "job.batch/once created"),
        (
            &["create", "cronjob", "often", "--image=wasmorch.local/batch-job:1.0", "--schedule=*/5 * * * *"],
            "cronjob.batch/often created",
        ),
        (&["create", "job", "from-cron", "--from=cronjob/often"], "job.batch/from-cron created"),
        (
            &["create", "poddisruptionbudget", "pdb", "--selector=app=hello", "--min-available=1"],
            "poddisruptionbudget.policy/pdb created",
        ),
        (&["create", "service", "clusterip", "cip", "--tcp=80:8080"], "service/cip created"),
        (&["create", "service", "nodeport", "np", "--tcp=80:8080"], "service/np created"),
        (
            &["create", "service", "clusterip", "headless", "--clusterip=None", "--tcp=80:8080"],
            "service/headless created",
        ),
        (&["create", "service", "externalname", "ext", "--external-name=example.org"], "service/ext created"),
        (&["run", "solo", &format!("--image={image}"), "--port=8080"], "pod/solo created"),
        (
            &["expose", "deployment", "hello", "--port=80", "--target-port=8080", "--name=exposed"],
            "service/exposed exposed",
        ),
    ];
    for (args, want) in creates {
        let mut verbose = args.to_vec();
        verbose.push("-v=8");
        let o = kubectl(&c, &verbose);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {out}\n{}",
            err.lines().filter(|l| !l.contains("Request Body")).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(out.trim(), *want, "kubectl {args:?}");
        // run and expose send JSON (they go through the dynamic client).
        if !matches!(args[0], "expose" | "run") {
            assert!(
                err.contains("Content-Type: application/vnd.kubernetes.protobuf"),
                "kubectl {args:?} did not send protobuf, so this test proves nothing"
            );
        }
    }

    let get = |args: &[&str]| ok(&c, args);
    assert_eq!(get(&["get", "cm", "cm", "-o", "jsonpath={.data.a}"]), "b");
    assert_eq!(get(&["get", "secret", "sec", "-o", "jsonpath={.data.k}"]), "dg==");
    assert_eq!(get(&["get", "secret", "reg", "-o", "jsonpath={.type}"]), "kubernetes.io/dockerconfigjson");
    assert_eq!(get(&["get", "pdb", "pdb", "-o", "jsonpath={.spec.minAvailable}"]), "1");
    assert_eq!(get(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"]), "None");
    assert_eq!(
        get(&["get", "svc", "ext", "-o", "jsonpath={.spec.type}/{.spec.externalName}"]),
        "ExternalName/example.org"
    );
    let np = get(&["get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    assert!(np.parse::<u16>().is_ok_and(|p| (30000..=32767).contains(&p)), "node port {np:?}");
    assert_eq!(get(&["get", "svc", "cip", "-o", "jsonpath={.spec.ports[0].nodePort}"]), "");
    assert_eq!(get(&["get", "svc", "cip", "-o", "jsonpath={.status}"]), r#"{"loadBalancer":{}}"#);
    assert_eq!(get(&["get", "deploy", "hello", "-o", "jsonpath={.spec.strategy.type}"]), "RollingUpdate");
    assert!(ok(&c, &["rollout", "status", "deployment/hello", "--timeout=60s"]).ends_with("successfully rolled out\n"));

    // kubectl explain reads the served OpenAPI v3 schemas (the upstream descriptions).
    let explained = get(&["explain", "pod.spec.containers"]);
    assert!(explained.contains("FIELD: containers <[]Container>"), "{explained}");
    assert!(explained.contains("List of containers belonging to the pod."), "{explained}");
    assert!(explained.contains("  image\t<string>"), "{explained}");
    let explained = get(&["explain", "deployment.spec.strategy.type"]);
    assert!(
        explained.contains("GROUP:      apps") && explained.contains("Can be \"Recreate\" or \"RollingUpdate\""),
        "{explained}"
    );

    assert!(common::eventually(std::time::Duration::from_secs(30), || {
        get(&["get", "job", "from-cron", "-o", "jsonpath={.status.succeeded}"]) == "1"
            && get(&["get", "pod", "solo", "-o", "jsonpath={.status.phase}"]) == "Running"
    }));
}

/// The API in protobuf, as client-go's typed clients use it: a protobuf create, get and list
/// answered in protobuf when asked first, errors as protobuf `Status`, watch frames; JSON when
/// asked first, or for a Table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_bodies_replies_errors_and_watch_frames() {
    use wasmorch_api::protobuf;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::start(dir.path());
    let client = common::kube_client(&c.kubeconfig()).await;
    let send = |method: &str, path: &str, accept: &str, body: Option<Vec<u8>>| {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", accept)
            .header("content-type", protobuf::MEDIA_TYPE)
            .body(kube::client::Body::from(body.unwrap_or_default()))
            .unwrap();
        let client = client.clone();
        async move {
            let resp = client.send(req).await.unwrap();
            let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
            (resp.status().as_u16(), ct, resp.into_body())
        }
    };
    let pb_first = "application/vnd.kubernetes.protobuf, */*";
    let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "pb", "labels": {"x": "y"}}, "data": {"k": "v"}});
    let (code, ct, body) =
        send("POST", "/api/v1/namespaces/default/configmaps", pb_first, Some(protobuf::encode(&cm).unwrap())).await;
    let created = protobuf::decode(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!((code, ct.as_str()), (201, protobuf::MEDIA_TYPE));
    assert_eq!(created["data"]["k"], "v");
    assert!(created["metadata"]["uid"].is_string() && created["metadata"]["creationTimestamp"].is_string());

    let (code, ct, body) =
        send("GET", "/api/v1/namespaces/default/configmaps?labelSelector=x%3Dy", pb_first, None).await;
    let list = protobuf::decode(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!((code, ct.as_str(), list["kind"].as_str()), (200, protobuf::MEDIA_TYPE, Some("ConfigMapList")));
    assert_eq!(list["items"][0]["metadata"]["name"], "pb");

    let (code, ct, body) = send("GET", "/api/v1/namespaces/default/configmaps/missing", pb_first, None).await;
    let status = protobuf::decode(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!((code, ct.as_str()), (404, protobuf::MEDIA_TYPE));
    assert_eq!(status["message"], "configmaps \"missing\" not found");

    // A body that is not protobuf: 400 naming the problem, nothing stored.
    let (code, _, body) =
        send("POST", "/api/v1/namespaces/default/configmaps", "application/json", Some(b"k8s\0\x0a\xff".to_vec()))
            .await;
    let status: serde_json::Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
    assert_eq!(code, 400, "{status}");
    assert!(status["message"].as_str().unwrap().contains("truncated"), "{status}");

    // JSON first stays JSON.
    let (_, ct, _) = send(
        "GET",
        "/api/v1/namespaces/default/configmaps/pb",
        "application/json, application/vnd.kubernetes.protobuf",
        None,
    )
    .await;
    assert_eq!(ct, "application/json");

    // Watch: length-prefixed WatchEvent frames.
    let (code, ct, body) = send(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&labelSelector=x%3Dy&timeoutSeconds=2",
        pb_first,
        None,
    )
    .await;
    assert_eq!((code, ct.as_str()), (200, protobuf::WATCH_MEDIA_TYPE));
    let bytes = body.collect_bytes().await.unwrap();
    let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let (ty, obj) = protobuf::decode_watch_event(&bytes[4..4 + len]).unwrap();
    assert_eq!((ty.as_str(), obj["metadata"]["name"].as_str()), ("ADDED", Some("pb")));
}
