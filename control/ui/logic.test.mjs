// Unit tests of the dashboard's derivations: `node --test control/ui/logic.test.mjs`.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as l from "./logic.js";

test("quantities and ages read as kubectl writes them", () => {
  assert.equal(l.quantity("250m"), 0.25);
  assert.equal(l.quantity("2"), 2);
  assert.equal(l.quantity("16Mi"), 16 * 1024 * 1024);
  assert.equal(l.quantity("1G"), 1e9);
  assert.equal(l.quantity("junk"), 0);
  assert.equal(l.bytes(1536 * 1024 * 1024), "1.5Gi");
  const now = Date.parse("2026-12-05T12:00:00Z");
  assert.equal(l.age("2026-12-05T11:59:15Z", now), "45s");
  assert.equal(l.age("2026-12-05T11:57:00Z", now), "3m");
  assert.equal(l.age("2026-12-05T07:00:00Z", now), "5h");
  assert.equal(l.age("2026-12-01T12:00:00Z", now), "4d");
});

test("pod status, restarts and the last failure", () => {
  const running = { status: { phase: "Running", containerStatuses: [{ restartCount: 2, state: { running: {} },
    lastState: { terminated: { reason: "Error", exitCode: 1, message: "trap" } } }] } };
  assert.equal(l.podStatus(running), "Running");
  assert.equal(l.restarts(running), 2);
  assert.equal(l.lastFailure(running), "Error (exit 1): trap");
  const pulling = { status: { phase: "Pending", containerStatuses: [{ state: { waiting: { reason: "ErrImagePull", message: "not found" } } }] } };
  assert.equal(l.podStatus(pulling), "ErrImagePull");
  assert.equal(l.lastFailure(pulling), "ErrImagePull: not found");
  const creating = { status: { phase: "Pending", containerStatuses: [{ state: { waiting: { reason: "ContainerCreating" } } }] } };
  assert.equal(l.lastFailure(creating), "");
  const unscheduled = { status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/1 nodes" }] } };
  assert.equal(l.lastFailure(unscheduled), "Unschedulable: 0/1 nodes");
  assert.equal(l.podStatus({ metadata: { deletionTimestamp: "x" }, status: { phase: "Running" } }), "Terminating");
  assert.equal(l.podStatus({ status: { phase: "Succeeded", containerStatuses: [{ state: { terminated: { reason: "Completed" } } }] } }), "Completed");
});

test("nodes: readiness, address and what their pods request", () => {
  const node = { metadata: { name: "n1" }, spec: { podCIDR: "10.42.0.0/24" },
    status: { allocatable: { cpu: "2", memory: "4Gi" }, addresses: [{ type: "InternalIP", address: "10.0.0.5" }],
      conditions: [{ type: "Ready", status: "True" }] } };
  const pod = (node, cpu, phase = "Running") => ({ spec: { nodeName: node, containers: [{ resources: { requests: { cpu, memory: "64Mi" } } }] }, status: { phase } });
  const s = l.nodeSummary(node, [pod("n1", "250m"), pod("n1", "500m"), pod("n2", "1"), pod("n1", "1", "Succeeded")]);
  assert.deepEqual([s.ready, s.schedulable, s.address, s.podCIDR, s.pods], [true, true, "10.0.0.5", "10.42.0.0/24", 2]);
  assert.equal(s.cpu.requested, 0.75);
  assert.equal(s.cpu.capacity, 2);
  assert.equal(s.memory.requested, 128 * 1024 * 1024);
  assert.equal(l.nodeReady({ status: { conditions: [{ type: "Ready", status: "Unknown" }] } }), false);
});

test("deployments: rollout state and health counts", () => {
  const d = (replicas, status) => ({ spec: { replicas }, status });
  assert.equal(l.deploymentState(d(2, { replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2 })).state, "Available");
  assert.equal(l.deploymentState(d(3, { replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2 })).state, "Progressing");
  assert.equal(l.deploymentState(d(0, {})).state, "Scaled to zero");
  assert.equal(l.deploymentState(d(1, { conditions: [{ type: "Progressing", reason: "ProgressDeadlineExceeded" }] })).state, "Failed");
  const h = l.health("Deployment", [d(1, { replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1 }), d(1, {})]);
  assert.deepEqual(h, { healthy: 1, unhealthy: 1 });
});

test("events newest first, filtered by any words", () => {
  const e = (reason, t, name) => ({ type: "Normal", reason, lastTimestamp: t, involvedObject: { kind: "Pod", name }, message: "m" });
  const list = [e("Pulled", "2026-01-01T00:00:01Z", "a"), e("Started", "2026-01-01T00:00:03Z", "b"), e("Killing", "2026-01-01T00:00:02Z", "a")];
  assert.deepEqual(l.events(list).map((x) => x.reason), ["Started", "Killing", "Pulled"]);
  assert.deepEqual(l.events(list, "pod/a").map((x) => x.reason), ["Killing", "Pulled"]);
  assert.deepEqual(l.events(list, "KILLING pod/a").map((x) => x.reason), ["Killing"]);
});

test("watch events update the map; ERROR asks for a new list", () => {
  const m = new Map();
  const o = (name, rv) => ({ metadata: { namespace: "d", name, resourceVersion: rv } });
  assert.equal(l.applyEvent(m, { type: "ADDED", object: o("a", "5") }), "5");
  assert.equal(l.applyEvent(m, { type: "MODIFIED", object: o("a", "6") }), "6");
  assert.equal(m.get("d/a").metadata.resourceVersion, "6");
  l.applyEvent(m, { type: "DELETED", object: o("a", "7") });
  assert.equal(m.size, 0);
  assert.equal(l.applyEvent(m, { type: "ERROR", object: { code: 410 } }), null);
  assert.deepEqual(l.byName([o("b"), { metadata: { namespace: "a", name: "z" } }]).map(l.keyOf), ["a/z", "d/b"]);
});

test("usage series: bounded, scaled, summed", () => {
  let series = [];
  for (let i = 0; i < 50; i++) series = l.pushSample(series, i, 40);
  assert.equal(series.length, 40);
  assert.equal(series[0], 10);
  assert.equal(l.sparkPath([0, 1], 100, 20, 1), "M0.0 20.0 L100.0 0.0");
  assert.equal(l.sparkPath([], 100, 20), "");
  assert.equal(l.sparkPath([2], 100, 20), "M0.0 0.0 L100.0 0.0");
  const u = l.podUsage({ containers: [{ usage: { cpu: "250m", memory: "1Mi" } }, { usage: { cpu: "5m", memory: "1Mi" } }] });
  assert.equal(u.cpu, 0.255);
  assert.equal(u.memory, 2 * 1024 * 1024);
  assert.equal(l.listPath("/api/v1", "pods", ""), "/api/v1/pods");
  assert.equal(l.listPath("/apis/apps/v1", "deployments", "team"), "/apis/apps/v1/namespaces/team/deployments");
});

test("pods of a DaemonSet or a Job", () => {
  const ds = { metadata: { namespace: "n", name: "agent" } };
  const pod = (ns, kind, name) => ({ metadata: { namespace: ns, ownerReferences: [{ kind, name }] } });
  assert.equal(l.ownedDirectly(pod("n", "DaemonSet", "agent"), "DaemonSet", ds), true);
  assert.equal(l.ownedDirectly(pod("m", "DaemonSet", "agent"), "DaemonSet", ds), false);
  assert.equal(l.ownedDirectly(pod("n", "Job", "agent"), "DaemonSet", ds), false);
});
