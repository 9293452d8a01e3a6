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

    # A watch with no resourceVersion: initial ADDED events, then live ones. A marker
    # ConfigMap made first tells when the watch has begun: its initial ADDED event comes
    # before anything made after it, so py-cm's create and patch are both live events.
    marker = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-watch-marker"))
    core.create_namespaced_config_map("default", marker)
    seen = []
    started = threading.Event()
    done = threading.Event()

    def watcher() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, namespace="default", timeout_seconds=20):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "py-watch-marker":
                started.set()
            if ("DELETED", "py-cm") in seen:
                w.stop()
        started.set()
        done.set()

    t = threading.Thread(target=watcher)
    t.start()
    assert started.wait(20), "the watch never sent its initial events"

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

    custom_resources()

    core.delete_namespaced_config_map("py-cm", "default")
    core.delete_namespaced_config_map("py-watch-marker", "default")
    done.wait(25)
    t.join(5)
    types = [e for e in seen if e[1] == "py-cm"]
    assert types[:1] == [("ADDED", "py-cm")] and ("MODIFIED", "py-cm") in types and ("DELETED", "py-cm") in types, seen
    print("python client: ok")


def custom_resources() -> None:
    """A CustomResourceDefinition made with the typed client, its objects through
    CustomObjectsApi: create, list, merge patch, scale, delete."""
    ext = client.ApiextensionsV1Api()
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "size": {"type": "integer"}, "replicas": {"type": "integer"}}}}}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "pywidgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "PyWidget", "plural": "pywidgets"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
                               "subresources": {"scale": {"specReplicasPath": ".spec.replicas",
                                                          "statusReplicasPath": ".status.replicas"}}}]},
    }
    ext.create_custom_resource_definition(crd)
    objs = client.CustomObjectsApi()
    body = {"apiVersion": "example.com/v1", "kind": "PyWidget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    for _ in range(100):
        try:
            objs.create_namespaced_custom_object("example.com", "v1", "default", "pywidgets", body)
            break
        except client.ApiException as e:
            if e.status != 404:
                raise
            threading.Event().wait(0.05)
    items = objs.list_namespaced_custom_object("example.com", "v1", "default", "pywidgets")["items"]
    assert [i["metadata"]["name"] for i in items] == ["w"], items
    got = objs.patch_namespaced_custom_object("example.com", "v1", "default", "pywidgets", "w", {"spec": {"size": 5}})
    assert got["spec"]["size"] == 5, got
    scale = objs.patch_namespaced_custom_object_scale("example.com", "v1", "default", "pywidgets", "w",
                                                     {"spec": {"replicas": 3}})
    assert scale["spec"]["replicas"] == 3, scale
    objs.delete_namespaced_custom_object("example.com", "v1", "default", "pywidgets", "w")
    ext.delete_custom_resource_definition("pywidgets.example.com")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"python client: mismatch: {e}", file=sys.stderr)
        sys.exit(1)
