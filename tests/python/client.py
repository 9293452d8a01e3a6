"""The official Python `kubernetes` client against wasmorch: typed list, create, patch,
delete, and a watch without a resourceVersion. Run by tests/kubectl.rs with KUBECONFIG set;
exits non-zero with a message on the first mismatch."""

import sys
import threading

from kubernetes import client, config, watch


def main() -> None:
    config.load_kube_config()
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    names = [n.metadata.name for n in core.list_namespace().items]
    assert "default" in names and "kube-system" in names, names

    # A watch with no resourceVersion: initial ADDED events, then live ones.
    seen = []
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, namespace="default", timeout_seconds=20):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ("DELETED", "py-cm") in seen:
                w.stop()
        done.set()

    t = threading.Thread(target=watcher)
    t.start()

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"from": "python"}), data={"a": "1"})
    created = core.create_namespaced_config_map("default", cm)
    assert created.metadata.uid, created
    core.patch_namespaced_config_map("py-cm", "default", {"data": {"b": "2"}})
    got = core.read_namespaced_config_map("py-cm", "default")
    assert got.data == {"a": "1", "b": "2"}, got.data
    listed = core.list_namespaced_config_map("default", label_selector="from=python")
    assert [c.metadata.name for c in listed.items] == ["py-cm"], listed.items

    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="file:///none.wasm")]),
            ),
        ),
    )
    apps.create_namespaced_deployment("default", dep)
    scale = apps.patch_namespaced_deployment_scale("py-web", "default", {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2, scale
    apps.delete_namespaced_deployment("py-web", "default")

    core.delete_namespaced_config_map("py-cm", "default")
    done.wait(25)
    t.join(5)
    types = [e for e in seen if e[1] == "py-cm"]
    assert types[:1] == [("ADDED", "py-cm")] and ("MODIFIED", "py-cm") in types and ("DELETED", "py-cm") in types, seen
    print("python client: ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"python client: mismatch: {e}", file=sys.stderr)
        sys.exit(1)
