// What the dashboard derives from API objects: pure functions, no DOM, tested with
// `node --test control/ui/logic.test.mjs`.

/** A Kubernetes quantity as a number: CPU in cores, memory in bytes. */
export function quantity(q) {
  if (q === undefined || q === null || q === "") return 0;
  const s = String(q).trim();
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(s);
  if (!m) return 0;
  const n = parseFloat(m[1]);
  const unit = {
    "": 1, m: 1e-3, u: 1e-6, n: 1e-9, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15,
    Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4, Pi: 1024 ** 5,
  }[m[2]];
  return unit === undefined ? 0 : n * unit;
}

/** Bytes as kubectl-like text (`512Mi`, `1.5Gi`). */
export function bytes(n) {
  const units = ["", "Ki", "Mi", "Gi", "Ti"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${Number.isInteger(n) ? n : n.toFixed(1)}${units[i]}`;
}

/** An age as kubectl prints it: `45s`, `3m`, `5h`, `2d`. */
export function age(ts, now = Date.now()) {
  if (!ts) return "";
  const s = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

/** A pod's STATUS column, as kubectl derives it. */
export function podStatus(pod) {
  if (pod?.metadata?.deletionTimestamp) return "Terminating";
  const st = pod?.status ?? {};
  let reason = st.reason || st.phase || "Pending";
  for (const c of st.containerStatuses ?? []) {
    if (c.state?.waiting?.reason) reason = c.state.waiting.reason;
    else if (c.state?.terminated?.reason && reason !== "Running") reason = c.state.terminated.reason;
  }
  return reason;
}

/** The sum of a pod's container restarts. */
export function restarts(pod) {
  return (pod?.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0);
}

/** Why a pod last failed (or cannot run), or "" when nothing went wrong. */
export function lastFailure(pod) {
  const st = pod?.status ?? {};
  for (const c of st.containerStatuses ?? []) {
    const w = c.state?.waiting;
    if (w?.reason && w.reason !== "ContainerCreating" && w.reason !== "PodInitializing") {
      return w.message ? `${w.reason}: ${w.message}` : w.reason;
    }
  }
  for (const c of st.containerStatuses ?? []) {
    const t = c.lastState?.terminated ?? (c.state?.terminated?.exitCode ? c.state.terminated : null);
    if (t) return `${t.reason ?? "Error"} (exit ${t.exitCode ?? "?"})${t.message ? `: ${t.message}` : ""}`;
  }
  const unscheduled = (st.conditions ?? []).find((c) => c.type === "PodScheduled" && c.status === "False");
  if (unscheduled) return `${unscheduled.reason ?? "Unschedulable"}: ${unscheduled.message ?? ""}`.trim();
  return "";
}

/** Whether a node's Ready condition is True. */
export function nodeReady(node) {
  return (node?.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
}

/** A node's address, capacity and what the pods bound to it request. */
export function nodeSummary(node, pods) {
  const name = node?.metadata?.name;
  const cap = node?.status?.allocatable ?? node?.status?.capacity ?? {};
  const mine = pods.filter((p) => p.spec?.nodeName === name && !["Succeeded", "Failed"].includes(p.status?.phase));
  let cpu = 0;
  let memory = 0;
  for (const p of mine) {
    for (const c of p.spec?.containers ?? []) {
      cpu += quantity(c.resources?.requests?.cpu);
      memory += quantity(c.resources?.requests?.memory);
    }
  }
  const address = (node?.status?.addresses ?? []).find((a) => a.type === "InternalIP")?.address ?? "";
  return {
    name,
    ready: nodeReady(node),
    schedulable: !node?.spec?.unschedulable,
    address,
    podCIDR: node?.spec?.podCIDR ?? "",
    pods: mine.length,
    cpu: { requested: cpu, capacity: quantity(cap.cpu) },
    memory: { requested: memory, capacity: quantity(cap.memory) },
  };
}

/** A Deployment's rollout: desired, up to date, ready, available, and one word for it. */
export function deploymentState(d) {
  const desired = d?.spec?.replicas ?? 1;
  const st = d?.status ?? {};
  const cond = (t) => (st.conditions ?? []).find((c) => c.type === t);
  const ready = st.readyReplicas ?? 0;
  const updated = st.updatedReplicas ?? 0;
  const available = st.availableReplicas ?? 0;
  let state;
  if (cond("Progressing")?.reason === "ProgressDeadlineExceeded") state = "Failed";
  else if (desired === 0) state = "Scaled to zero";
  else if (updated === desired && ready === desired && available === desired && (st.replicas ?? 0) === desired) state = "Available";
  else state = "Progressing";
  return { desired, updated, ready, available, state };
}

/** Healthy and unhealthy counts of workloads of a kind. */
export function health(kind, items) {
  const ok = (o) => {
    const st = o.status ?? {};
    switch (kind) {
      case "Deployment": return deploymentState(o).state === "Available" || deploymentState(o).state === "Scaled to zero";
      case "DaemonSet": return (st.numberReady ?? 0) === (st.desiredNumberScheduled ?? 0);
      case "Job": return !(st.conditions ?? []).some((c) => c.type === "Failed" && c.status === "True");
      case "CronJob": return !o.spec?.suspend;
      case "Pod": return ["Running", "Succeeded", "Completed"].includes(podStatus(o));
      default: return true;
    }
  };
  const healthy = items.filter(ok).length;
  return { healthy, unhealthy: items.length - healthy };
}

/** When an event last happened. */
export function eventTime(e) {
  return e.lastTimestamp || e.eventTime || e.firstTimestamp || e.metadata?.creationTimestamp || "";
}

/** Events newest first; those matching `filter` (any words, in reason, object or message). */
export function events(list, filter = "") {
  const words = filter.toLowerCase().split(/\s+/).filter(Boolean);
  const text = (e) => `${e.type} ${e.reason} ${e.involvedObject?.kind}/${e.involvedObject?.name} ${e.message} ${e.metadata?.namespace}`.toLowerCase();
  return list
    .filter((e) => words.every((w) => text(e).includes(w)))
    .sort((a, b) => (eventTime(a) < eventTime(b) ? 1 : eventTime(a) > eventTime(b) ? -1 : 0));
}

/** Objects by namespace, then name. */
export function byName(list) {
  const key = (o) => `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
  return [...list].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
}

/** The key an object is kept under. */
export function keyOf(o) {
  return `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
}

/**
 * Apply one watch event to `map` (key → object). Returns the resourceVersion to resume
 * from, or null when the watch must start again from a new list (410 Gone).
 */
export function applyEvent(map, ev) {
  const o = ev?.object;
  if (!o) return undefined;
  switch (ev.type) {
    case "ADDED":
    case "MODIFIED":
      map.set(keyOf(o), o);
      break;
    case "DELETED":
      map.delete(keyOf(o));
      break;
    case "ERROR":
      return null;
    default:
      break;
  }
  return o.metadata?.resourceVersion;
}

/** Owner references a pod descends from, e.g. the Deployment of its ReplicaSet. */
export function ownedBy(pod, replicasets, deployment) {
  const rs = (pod.metadata?.ownerReferences ?? []).find((r) => r.kind === "ReplicaSet");
  if (!rs) return false;
  const set = replicasets.find((r) => r.metadata?.name === rs.name && r.metadata?.namespace === pod.metadata?.namespace);
  return (set?.metadata?.ownerReferences ?? []).some((r) => r.kind === "Deployment" && r.name === deployment.metadata?.name)
    && pod.metadata?.namespace === deployment.metadata?.namespace;
}

/** Append a sample to a bounded series (oldest dropped past `max`). */
export function pushSample(series, value, max = 40) {
  const out = [...(series ?? []), value];
  return out.length > max ? out.slice(out.length - max) : out;
}

/** The SVG path ("M x y L …") of a series scaled into width × height (0 at the bottom). */
export function sparkPath(series, width, height, ceiling) {
  if (!series?.length) return "";
  // One sample draws as a level line.
  if (series.length === 1) series = [series[0], series[0]];
  const top = Math.max(ceiling ?? 0, ...series, 1e-9);
  const step = series.length > 1 ? width / (series.length - 1) : 0;
  return series
    .map((v, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)} ${(height - (v / top) * height).toFixed(1)}`)
    .join(" ");
}

/** A PodMetrics' total usage: { cpu (cores), memory (bytes) }. */
export function podUsage(m) {
  return (m?.containers ?? []).reduce(
    (t, c) => ({ cpu: t.cpu + quantity(c.usage?.cpu), memory: t.memory + quantity(c.usage?.memory) }),
    { cpu: 0, memory: 0 },
  );
}

/** The list path of a resource, cluster-wide or in one namespace. */
export function listPath(base, plural, namespace) {
  return namespace ? `${base}/namespaces/${namespace}/${plural}` : `${base}/${plural}`;
}

/** Whether `pod` belongs directly to `owner` (a DaemonSet's or a Job's pods). */
export function ownedDirectly(pod, kind, owner) {
  return pod.metadata?.namespace === owner.metadata?.namespace
    && (pod.metadata?.ownerReferences ?? []).some((r) => r.kind === kind && r.name === owner.metadata?.name);
}
