// The wasmorch dashboard: plain DOM, no framework. Every request is an ordinary API request
// with the signed-in bearer token; lists are kept live by watches (list, then watch from its
// resourceVersion; on a 410 or a dropped stream, list again).
import * as l from "./logic.js";

const TOKEN_KEY = "wasmorch.token";
const $ = (sel) => document.querySelector(sel);

// ---- the token ----

function takeTokenFromLink() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + "#/overview");
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

// ---- the API ----

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body, type = "application/json" } = {}) {
  const r = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token()}`, Accept: "application/json", ...(body ? { "Content-Type": type } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!r.ok) {
    let message = `${r.status} ${r.statusText}`;
    try {
      const s = await r.json();
      if (s.message) message = s.message;
    } catch { /* not a Status */ }
    if (r.status === 401) signOut("The token was not accepted.");
    throw new ApiError(r.status, message);
  }
  return r.status === 204 ? null : r.json();
}

/** A list kept live: `items` (key → object), `onChange` called after each change. */
class Live {
  constructor(path, onChange) {
    this.path = path;
    this.items = new Map();
    this.onChange = onChange;
    this.error = null;
    this.stopped = false;
    this.controller = null;
    this.run();
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
  }

  list() {
    return [...this.items.values()];
  }

  async run() {
    while (!this.stopped) {
      try {
        const list = await api(this.path);
        this.items = new Map(list.items.map((o) => [l.keyOf(o), o]));
        this.error = null;
        this.onChange();
        await this.watch(list.metadata.resourceVersion);
      } catch (e) {
        if (this.stopped) return;
        this.error = e;
        this.onChange();
        if (e.status === 403) {
          // Not allowed: no use asking again soon.
          await new Promise((r) => setTimeout(r, 30000));
        }
      }
      if (!this.stopped) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async watch(rv) {
    this.controller = new AbortController();
    const sep = this.path.includes("?") ? "&" : "?";
    const r = await fetch(`${this.path}${sep}watch=true&allowWatchBookmarks=true&resourceVersion=${rv}`, {
      headers: { Authorization: `Bearer ${token()}` },
      signal: this.controller.signal,
    });
    if (!r.ok) throw new ApiError(r.status, r.statusText);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const ev = JSON.parse(line);
        if (ev.type === "BOOKMARK") continue;
        if (l.applyEvent(this.items, ev) === null) return; // 410: list again
        this.onChange();
      }
    }
  }
}

// ---- state ----

const live = {};
let scheduled = false;

function changed() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

const NS_KEY = "wasmorch.namespace";
const namespace = () => sessionStorage.getItem(NS_KEY) ?? "";

/** What the page follows: [key, API base, plural, namespaced]. */
const FOLLOWED = [
  ["nodes", "/api/v1", "nodes", false],
  ["namespaces", "/api/v1", "namespaces", false],
  ["pods", "/api/v1", "pods", true],
  ["deployments", "/apis/apps/v1", "deployments", true],
  ["replicasets", "/apis/apps/v1", "replicasets", true],
  ["daemonsets", "/apis/apps/v1", "daemonsets", true],
  ["jobs", "/apis/batch/v1", "jobs", true],
  ["cronjobs", "/apis/batch/v1", "cronjobs", true],
  ["services", "/api/v1", "services", true],
  ["endpointslices", "/apis/discovery.k8s.io/v1", "endpointslices", true],
  ["events", "/api/v1", "events", true],
];

function follow() {
  for (const [k, base, plural, namespaced] of FOLLOWED) {
    live[k]?.stop();
    live[k] = new Live(l.listPath(base, plural, namespaced ? namespace() : ""), changed);
  }
}

// Usage: the metrics API has no watch; it is sampled at its own resolution (15 s by default).
const usage = { nodes: new Map(), pods: new Map(), timer: null };

async function sample() {
  let every = 15000;
  try {
    const nodes = await api("/apis/metrics.k8s.io/v1beta1/nodes");
    // Sampled as often as the cluster measures (the metrics' window).
    const w = parseFloat(nodes.items[0]?.window ?? "");
    if (w > 0) every = Math.max(1000, w * 1000);
    for (const m of nodes.items) {
      const u = { cpu: l.quantity(m.usage?.cpu), memory: l.quantity(m.usage?.memory) };
      const prev = usage.nodes.get(m.metadata.name) ?? {};
      usage.nodes.set(m.metadata.name, { cpu: l.pushSample(prev.cpu, u.cpu), memory: l.pushSample(prev.memory, u.memory) });
    }
  } catch { /* not allowed, or not yet measured */ }
  try {
    const pods = await api(l.listPath("/apis/metrics.k8s.io/v1beta1", "pods", namespace()));
    for (const m of pods.items) {
      const u = l.podUsage(m);
      const key = l.keyOf(m);
      const prev = usage.pods.get(key) ?? {};
      usage.pods.set(key, { cpu: l.pushSample(prev.cpu, u.cpu), memory: l.pushSample(prev.memory, u.memory) });
    }
  } catch { /* not allowed, or not yet measured */ }
  changed();
  clearTimeout(usage.timer);
  if (token()) usage.timer = setTimeout(sample, every);
}

function startSampling() {
  clearTimeout(usage.timer);
  sample();
}

/** A small line chart of a usage series, labelled with its last value. */
function spark(series, label, format) {
  if (!series?.length) return h("span", { class: "muted" }, "–");
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 80 18");
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${label}: ${format(series[series.length - 1])}`);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", l.sparkPath(series, 80, 18));
  svg.append(path);
  return h("span", { class: "usage" }, svg, " ", format(series[series.length - 1]));
}

const cores = (v) => `${(v * 1000).toFixed(0)}m`;

const items = (k) => live[k]?.list() ?? [];

// ---- DOM helpers ----

/** An element: h("td", {class: "x"}, "text", child…). */
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function table(caption, headers, rows, empty = "None.") {
  if (!rows.length) return h("section", {}, h("h2", {}, caption), h("p", { class: "empty" }, empty));
  return h(
    "section",
    {},
    h("h2", {}, caption),
    h("div", { class: "scroll" },
      h("table", {},
        h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
        h("tbody", {}, rows.map((r) => h("tr", { "data-key": r.key }, r.cells.map((c) => h("td", {}, c))))))),
  );
}

function badge(text, good) {
  return h("span", { class: `badge ${good ? "good" : "bad"}` }, text);
}

function toast(message, bad = true) {
  const t = $("#toast");
  t.textContent = message;
  t.className = bad ? "show bad" : "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.className = ""), 6000);
}

/** Run an action after the user confirms it; its error (a Status) is shown. */
async function act(question, fn, done) {
  if (!confirm(question)) return;
  try {
    await fn();
    toast(done, false);
  } catch (e) {
    toast(`Refused: ${e.message}`);
  }
}

function errors(...kinds) {
  const errs = kinds.map((k) => live[k]?.error).filter(Boolean);
  return errs.length ? h("p", { class: "error", role: "alert" }, errs.map((e) => e.message).join("; ")) : null;
}

// ---- actions ----

const merge = "application/merge-patch+json";

const scale = (d, n) => act(
  `Scale deployment ${d.metadata.name} to ${n}?`,
  () => api(`/apis/apps/v1/namespaces/${d.metadata.namespace}/deployments/${d.metadata.name}/scale`,
    { method: "PATCH", type: merge, body: { spec: { replicas: n } } }),
  `deployment ${d.metadata.name} scaled to ${n}`,
);

const restart = (d) => act(
  `Restart the rollout of deployment ${d.metadata.name}?`,
  () => api(`/apis/apps/v1/namespaces/${d.metadata.namespace}/deployments/${d.metadata.name}`, {
    method: "PATCH", type: merge,
    body: { spec: { template: { metadata: { annotations: { "kubectl.kubernetes.io/restartedAt": new Date().toISOString() } } } } },
  }),
  `deployment ${d.metadata.name} restarting`,
);

/** Roll back to the previous revision: the ReplicaSet with the next-highest revision. */
const rollback = (d) => act(
  `Roll deployment ${d.metadata.name} back to its previous revision?`,
  async () => {
    const rev = (o) => Number(o.metadata?.annotations?.["deployment.kubernetes.io/revision"] ?? 0);
    const mine = items("replicasets").filter((r) => r.metadata.namespace === d.metadata.namespace
      && (r.metadata.ownerReferences ?? []).some((o) => o.kind === "Deployment" && o.name === d.metadata.name));
    const current = rev(d);
    const previous = mine.filter((r) => rev(r) < current).sort((a, b) => rev(b) - rev(a))[0];
    if (!previous) throw new Error("there is no previous revision");
    const template = structuredClone(previous.spec.template);
    delete template.metadata?.labels?.["pod-template-hash"];
    // The whole template replaced, as `kubectl rollout undo` does (a merge would keep what
    // the newer revision added).
    await api(`/apis/apps/v1/namespaces/${d.metadata.namespace}/deployments/${d.metadata.name}`,
      { method: "PATCH", type: "application/json-patch+json", body: [{ op: "replace", path: "/spec/template", value: template }] });
  },
  `deployment ${d.metadata.name} rolled back`,
);

const deletePod = (p) => act(
  `Delete pod ${p.metadata.namespace}/${p.metadata.name}?`,
  () => api(`/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, { method: "DELETE" }),
  `pod ${p.metadata.name} deleted`,
);

const cordon = (n, on) => act(
  `${on ? "Cordon" : "Uncordon"} node ${n.metadata.name}?`,
  () => api(`/api/v1/nodes/${n.metadata.name}`, { method: "PATCH", type: merge, body: { spec: { unschedulable: on } } }),
  `node ${n.metadata.name} ${on ? "cordoned" : "uncordoned"}`,
);

const drain = (n) => act(
  `Drain node ${n.metadata.name}: cordon it and evict its pods?`,
  async () => {
    await api(`/api/v1/nodes/${n.metadata.name}`, { method: "PATCH", type: merge, body: { spec: { unschedulable: true } } });
    const pods = items("pods").filter((p) => p.spec?.nodeName === n.metadata.name
      && !(p.metadata.ownerReferences ?? []).some((o) => o.kind === "DaemonSet"));
    for (const p of pods) {
      await api(`/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}/eviction`, {
        method: "POST",
        body: { apiVersion: "policy/v1", kind: "Eviction", metadata: { name: p.metadata.name, namespace: p.metadata.namespace } },
      });
    }
  },
  `node ${n.metadata.name} drained`,
);

// ---- views ----

function overview() {
  const pods = items("pods");
  const nodes = l.byName(items("nodes")).map((n) => l.nodeSummary(n, pods));
  const raw = new Map(items("nodes").map((n) => [n.metadata.name, n]));
  const pct = (u) => (u.capacity ? `${Math.round((100 * u.requested) / u.capacity)}%` : "–");
  const counts = [["Deployments", "deployments", "Deployment"], ["DaemonSets", "daemonsets", "DaemonSet"],
    ["Jobs", "jobs", "Job"], ["CronJobs", "cronjobs", "CronJob"], ["Pods", "pods", "Pod"]].map(([label, k, kind]) => {
    const c = l.health(kind, items(k));
    return h("li", { class: "count" }, h("strong", {}, label), ` ${c.healthy} healthy`, c.unhealthy ? h("span", { class: "bad" }, `, ${c.unhealthy} not`) : "");
  });
  return [
    errors("nodes", "pods"),
    h("section", {}, h("h2", {}, "Workloads"), h("ul", { class: "counts", "aria-label": "Workload health" }, counts)),
    table("Nodes", ["Name", "Status", "Address", "Pod CIDR", "Pods", "CPU requested", "Memory requested", "CPU used", "Memory used", "Actions"],
      nodes.map((n) => ({
        key: n.name,
        cells: [
          n.name,
          h("span", {}, badge(n.ready ? "Ready" : "NotReady", n.ready), n.schedulable ? "" : badge("SchedulingDisabled", false)),
          n.address, n.podCIDR, n.pods,
          `${Number(n.cpu.requested.toFixed(2))} / ${Number(n.cpu.capacity.toFixed(2))} cores (${pct(n.cpu)})`,
          `${l.bytes(n.memory.requested)} / ${l.bytes(n.memory.capacity)} (${pct(n.memory)})`,
          spark(usage.nodes.get(n.name)?.cpu, `CPU used by ${n.name}`, cores),
          spark(usage.nodes.get(n.name)?.memory, `Memory used by ${n.name}`, l.bytes),
          h("span", { class: "actions" },
            n.schedulable
              ? h("button", { onclick: () => cordon(raw.get(n.name), true), "aria-label": `Cordon ${n.name}` }, "Cordon")
              : h("button", { onclick: () => cordon(raw.get(n.name), false), "aria-label": `Uncordon ${n.name}` }, "Uncordon"),
            h("button", { onclick: () => drain(raw.get(n.name)), "aria-label": `Drain ${n.name}` }, "Drain")),
        ],
      })), live.nodes?.error ? "Not shown (see above)." : "No nodes have joined yet."),
  ];
}

function podRows(pods) {
  return l.byName(pods).map((p) => ({
    key: l.keyOf(p),
    cells: [
      p.metadata.namespace,
      h("a", { href: `#/logs/${p.metadata.namespace}/${p.metadata.name}` }, p.metadata.name),
      badge(l.podStatus(p), ["Running", "Completed", "Succeeded"].includes(l.podStatus(p))),
      l.restarts(p),
      p.spec?.nodeName ?? "",
      p.status?.podIP ?? "",
      l.age(p.metadata.creationTimestamp),
      spark(usage.pods.get(l.keyOf(p))?.cpu, `CPU used by ${p.metadata.name}`, cores),
      spark(usage.pods.get(l.keyOf(p))?.memory, `Memory used by ${p.metadata.name}`, l.bytes),
      h("span", { class: "reason" }, l.lastFailure(p)),
      h("button", { onclick: () => deletePod(p), "aria-label": `Delete pod ${p.metadata.name}` }, "Delete"),
    ],
  }));
}

const POD_HEADERS = ["Namespace", "Name", "Status", "Restarts", "Node", "IP", "Age", "CPU", "Memory", "Last failure", "Actions"];

function workloads() {
  const pods = items("pods");
  const rs = items("replicasets");
  const out = [errors("deployments", "daemonsets", "jobs", "cronjobs")];
  out.push(table("Deployments", ["Namespace", "Name", "Ready", "Up to date", "State", "Replicas", "Actions"],
    l.byName(items("deployments")).map((d) => {
      const s = l.deploymentState(d);
      const id = `replicas-${d.metadata.namespace}-${d.metadata.name}`;
      const input = persistent(id, () => h("input", { type: "number", min: "0", "aria-label": `Replicas of ${d.metadata.name}`, class: "replicas", id }));
      // Shows the desired count, unless someone is typing another.
      if (document.activeElement !== input) input.value = String(s.desired);
      return {
        key: l.keyOf(d),
        cells: [
          d.metadata.namespace, d.metadata.name, `${s.ready}/${s.desired}`, s.updated,
          badge(s.state, s.state === "Available" || s.state === "Scaled to zero"),
          h("span", { class: "actions" }, input,
            h("button", { onclick: () => scale(d, Number(input.value)), "aria-label": `Scale ${d.metadata.name}` }, "Scale")),
          h("span", { class: "actions" },
            h("button", { onclick: () => restart(d), "aria-label": `Restart ${d.metadata.name}` }, "Restart"),
            h("button", { onclick: () => rollback(d), "aria-label": `Roll back ${d.metadata.name}` }, "Roll back")),
        ],
      };
    })));
  for (const d of l.byName(items("deployments"))) {
    const mine = pods.filter((p) => l.ownedBy(p, rs, d));
    if (mine.length) out.push(table(`Pods of deployment ${d.metadata.name}`, POD_HEADERS, podRows(mine)));
  }
  out.push(table("DaemonSets", ["Namespace", "Name", "Desired", "Ready"], l.byName(items("daemonsets")).map((o) => ({
    key: l.keyOf(o), cells: [o.metadata.namespace, o.metadata.name, o.status?.desiredNumberScheduled ?? 0, o.status?.numberReady ?? 0],
  }))));
  for (const ds of l.byName(items("daemonsets"))) {
    const mine = pods.filter((p) => l.ownedDirectly(p, "DaemonSet", ds));
    if (mine.length) out.push(table(`Pods of daemonset ${ds.metadata.name}`, POD_HEADERS, podRows(mine)));
  }
  out.push(table("Jobs", ["Namespace", "Name", "Succeeded", "Failed", "Age"], l.byName(items("jobs")).map((o) => ({
    key: l.keyOf(o), cells: [o.metadata.namespace, o.metadata.name, o.status?.succeeded ?? 0, o.status?.failed ?? 0, l.age(o.metadata.creationTimestamp)],
  }))));
  for (const job of l.byName(items("jobs"))) {
    const mine = pods.filter((p) => l.ownedDirectly(p, "Job", job));
    if (mine.length) out.push(table(`Pods of job ${job.metadata.name}`, POD_HEADERS, podRows(mine)));
  }
  out.push(table("CronJobs", ["Namespace", "Name", "Schedule", "Suspended", "Last run"], l.byName(items("cronjobs")).map((o) => ({
    key: l.keyOf(o), cells: [o.metadata.namespace, o.metadata.name, o.spec?.schedule ?? "", o.spec?.suspend ? "yes" : "no", l.age(o.status?.lastScheduleTime)],
  }))));
  return out;
}

function podsView() {
  return [errors("pods"), table("Pods", POD_HEADERS, podRows(items("pods")))];
}

function servicesView() {
  const slices = items("endpointslices");
  return [errors("services"), table("Services", ["Namespace", "Name", "Type", "Cluster IP", "Ports", "Endpoints"],
    l.byName(items("services")).map((s) => {
      const eps = slices.filter((e) => e.metadata.namespace === s.metadata.namespace && e.metadata.labels?.["kubernetes.io/service-name"] === s.metadata.name)
        .flatMap((e) => (e.endpoints ?? []).filter((x) => x.conditions?.ready !== false).flatMap((x) => x.addresses));
      return {
        key: l.keyOf(s),
        cells: [s.metadata.namespace, s.metadata.name, s.spec?.type ?? "ClusterIP", s.spec?.clusterIP ?? "",
          (s.spec?.ports ?? []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol ?? "TCP"}`).join(", "),
          eps.length ? eps.join(", ") : h("span", { class: "bad" }, "none ready")],
      };
    }))];
}

let eventFilter = "";

// Inputs live across renders (one element each), so typing is never cut by a live update.
const inputs = new Map();

function persistent(id, make) {
  if (!inputs.has(id)) inputs.set(id, make());
  return inputs.get(id);
}

// The events view is one element kept across renders: only its results are replaced, so the
// filter being typed in is never moved or re-created.
let eventsPane = null;

function eventsView() {
  if (!eventsPane) {
    const input = h("input", { type: "search", placeholder: "Filter: words in reason, object or message", "aria-label": "Filter events", id: "event-filter" });
    input.addEventListener("input", () => {
      eventFilter = input.value;
      changed();
    });
    const problems = h("div");
    const results = h("div");
    eventsPane = { element: h("div", {}, problems, h("label", { class: "filter" }, "Filter ", input), results), problems, results };
  }
  const rows = l.events(items("events"), eventFilter).slice(0, 300).map((e) => ({
    key: l.keyOf(e),
    cells: [l.age(l.eventTime(e)), badge(e.type ?? "", e.type !== "Warning"), e.reason ?? "",
      `${e.involvedObject?.kind ?? ""}/${e.involvedObject?.name ?? ""}`, e.metadata?.namespace ?? "", e.message ?? ""],
  }));
  eventsPane.problems.replaceChildren(...[errors("events")].filter(Boolean));
  eventsPane.results.replaceChildren(table("Events (newest first)", ["Last seen", "Type", "Reason", "Object", "Namespace", "Message"], rows));
  return [eventsPane.element];
}

// The logs view streams outside the render loop: its element is kept across renders.
let logs = null;

function logsView(ns, name) {
  const key = `${ns}/${name}`;
  if (!logs || logs.key !== key) {
    logs?.controller.abort();
    const pre = h("pre", { class: "logs", "aria-label": `Logs of ${name}`, tabindex: "0" });
    const previous = h("input", { type: "checkbox", id: "previous" });
    const pod = live.pods?.items.get(key);
    const containers = (pod?.spec?.containers ?? []).map((c) => c.name);
    const select = h("select", { "aria-label": "Container" }, containers.map((c) => h("option", { value: c }, c)));
    logs = { key, pre, controller: new AbortController(), element: null };
    const start = () => streamLogs(ns, name, select.value, previous.checked);
    previous.addEventListener("change", start);
    select.addEventListener("change", start);
    logs.element = h("section", {}, h("h2", {}, `Logs of pod ${name}`),
      h("div", { class: "controls" }, containers.length > 1 ? select : "", h("label", {}, previous, " Previous run")), pre);
    start();
  }
  return [logs.element];
}

async function streamLogs(ns, name, container, previous) {
  logs.controller.abort();
  logs.controller = new AbortController();
  const pre = logs.pre;
  pre.textContent = "";
  const q = new URLSearchParams({ tailLines: "1000" });
  if (container) q.set("container", container);
  if (previous) q.set("previous", "true");
  else q.set("follow", "true");
  try {
    const r = await fetch(`/api/v1/namespaces/${ns}/pods/${name}/log?${q}`, {
      headers: { Authorization: `Bearer ${token()}` }, signal: logs.controller.signal,
    });
    if (!r.ok) {
      let m = `${r.status}`;
      try { m = (await r.json()).message ?? m; } catch { /* not a Status */ }
      pre.textContent = m;
      pre.classList.add("error");
      return;
    }
    pre.classList.remove("error");
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(decoder.decode(value, { stream: true }));
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (e.name !== "AbortError") pre.append(`\n[${e.message}]`);
  }
}

// ---- routing and sign-in ----

let rendered = null;

function namespacesView() {
  const pods = items("pods");
  return [errors("namespaces"), table("Namespaces", ["Name", "Status", "Pods", "Age"],
    l.byName(items("namespaces")).map((n) => ({
      key: n.metadata.name,
      cells: [n.metadata.name, badge(n.status?.phase ?? "Active", (n.status?.phase ?? "Active") === "Active"),
        pods.filter((p) => p.metadata.namespace === n.metadata.name).length, l.age(n.metadata.creationTimestamp)],
    })))];
}

const VIEWS = { overview, namespaces: namespacesView, workloads, pods: podsView, services: servicesView, events: eventsView };

function render() {
  const main = $("#main");
  // While a value is being typed in a table (a replica count), the view waits: it renders
  // again when the input loses the focus.
  const a = document.activeElement;
  if (a?.classList?.contains("replicas") && main.contains(a) && location.hash === rendered) {
    a.addEventListener("blur", changed, { once: true });
    return;
  }
  rendered = location.hash;
  if (!token()) return signInView(main);
  const [, view, ...rest] = (location.hash || "#/overview").split("/");
  for (const a of document.querySelectorAll("nav a")) {
    a.setAttribute("aria-current", a.getAttribute("href") === `#/${view}` ? "page" : "false");
  }
  let nodes;
  if (view === "logs" && rest.length === 2) nodes = logsView(rest[0], rest[1]);
  else {
    if (logs) {
      logs.controller.abort();
      logs = null;
    }
    nodes = (VIEWS[view] ?? overview)();
  }
  const next = nodes.flat().filter(Boolean);
  // A view kept whole across renders (events, logs) is left in place.
  if (next.length === main.children.length && next.every((n, i) => n === main.children[i])) return;
  main.replaceChildren(...next);
}

function signInView(main) {
  $("header nav").hidden = true;
  $("#signout").hidden = true;
  $("#namespace-picker").hidden = true;
  const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true, "aria-label": "Bearer token" });
  const form = h("form", { class: "signin", "aria-label": "Sign in" },
    h("h2", {}, "Sign in"),
    h("p", {}, "A bearer token: the admin token, or `kubectl create token ACCOUNT`. `wasmorch dashboard` opens a signed-in link."),
    h("label", { for: "token" }, "Token"), input, h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    await start();
  });
  main.replaceChildren(form);
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(usage.timer);
  inputs.clear();
  eventsPane = null;
  eventFilter = "";
  usage.nodes.clear();
  usage.pods.clear();
  $("#namespace-picker").hidden = true;
  for (const k of Object.keys(live)) {
    live[k].stop();
    delete live[k];
  }
  if (why) toast(why);
  render();
}

async function start() {
  if (!token()) return render();
  // Discovery is open to every authenticated identity: a 401 here means a bad token.
  try {
    await api("/api");
  } catch (e) {
    if (e.status === 401) return;
  }
  $("header nav").hidden = false;
  $("#signout").hidden = false;
  $("#namespace-picker").hidden = false;
  $("#namespace").value = namespace();
  if (!Object.keys(live).length) follow();
  startSampling();
  render();
}

takeTokenFromLink();
window.addEventListener("hashchange", () => {
  takeTokenFromLink();
  render();
});
$("#signout").addEventListener("click", () => signOut());
// One namespace (for an identity that may read only some), or all: lists follow it.
$("#namespace-picker").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(NS_KEY, $("#namespace").value.trim());
  follow();
  usage.pods.clear();
  startSampling();
  render();
});
start();
