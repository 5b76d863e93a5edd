// Ferric dashboard. One page, hash-routed; every figure comes from the coordinator's API with
// the operator's token, live through its server-sent event streams. Text is always set as
// text (never as HTML), so names and error messages cannot become markup.
"use strict";

const TOKEN_KEY = "ferric.token";
const HISTORY_MS = 5 * 60 * 1000;
let me = null; // whoami: {token, role, scope, project}
let pageAbort = null; // cancels the streams and timers of the page on screen

// ---- small DOM helpers -------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const svgNS = "http://www.w3.org/2000/svg";
// Replaces the children of `target` (arrays flattened; null, undefined and false left out).
function fill(target, ...kids) {
  target.replaceChildren(...kids.flat(2).filter((k) => k !== null && k !== undefined && k !== false));
}

function svg(tag, attrs) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function table(headers, rows, empty) {
  if (!rows.length) return el("p", { class: "muted" }, empty || "None.");
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) =>
      el("th", { class: h.endsWith(" ") ? "num" : null }, h.trim())))),
    el("tbody", {}, rows));
}

function card(title, ...body) {
  return el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...body);
}

function banner(text, ok) {
  const b = document.getElementById("banner");
  b.textContent = text || "";
  b.className = ok ? "ok" : "";
  b.hidden = !text;
  if (ok && text) setTimeout(() => { if (b.textContent === text) b.hidden = true; }, 6000);
}

// ---- formatting --------------------------------------------------------------------------

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + u[i];
}

function ago(ms) {
  if (!ms) return "—";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return "in " + duration(-s);
  return duration(s) + " ago";
}

function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function when(ms) {
  return ms ? el("span", { title: new Date(ms).toLocaleString() }, ago(ms)) : "—";
}

const STATE_CLASS = {
  active: "s-ok", available: "s-ok", manageable: "s-idle", enroll: "s-idle",
  succeeded: "s-ok", failed: "s-bad", error: "s-bad", running: "s-busy", pending: "s-idle",
  accepted: "s-busy", on: "s-ok", off: "s-idle", running_guest: "s-ok",
};

function badge(text, id) {
  const t = text || "—";
  let cls = STATE_CLASS[t] || (/-failed$/.test(t) ? "s-bad" : /ing$|^wait/.test(t) ? "s-busy" : "s-idle");
  return el("span", { class: "badge " + cls, id }, t);
}

// ---- the API -----------------------------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 401) { signOut("Your token was refused: sign in again."); throw new Error("unauthorized"); }
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { v = text; }
  if (!r.ok) throw new Error((v && v.detail) || r.status + " " + r.statusText);
  return v;
}

// Reads a server-sent event stream with the token (EventSource cannot send it); reconnects
// until the page changes. `on` maps event names to handlers.
// `from()`, when given, names the query to resume with after a reconnect (so history already
// shown is not sent again).
async function watch(path, on, signal, from) {
  while (!signal.aborted) {
    try {
      const q = from ? from() : "";
      const r = await fetch(path + q, { headers: { Authorization: "Bearer " + token() }, signal });
      if (r.status === 401) { signOut("Your token was refused: sign in again."); return; }
      // Not there, or not this token's to see: retrying would not change that.
      if (r.status === 404 || r.status === 403) {
        const p = await r.json().catch(() => ({}));
        if (on.gone) on.gone(p);
        return;
      }
      if (!r.ok) throw new Error(r.status + " " + r.statusText);
      liveness(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = "message";
          const data = [];
          for (const line of chunk.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (event === "unauthorized") {
            let p = {};
            try { p = JSON.parse(data.join("\n")); } catch (_) { /* the words below */ }
            signOut((p.detail || "Your token no longer stands") + ": sign in again.");
            return;
          }
          if (!data.length || !on[event]) continue;
          try { on[event](JSON.parse(data.join("\n"))); } catch (e) { console.error(event, e); }
          if (event === "gone") return;
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    liveness(false);
    await new Promise((res) => setTimeout(res, 2000));
  }
}

// Runs `f` every `ms` until the page changes (also when it changed already, during an await).
function every(ms, f, signal) {
  if (signal.aborted) return () => {};
  const t = setInterval(f, ms);
  const stop = () => clearInterval(t);
  signal.addEventListener("abort", stop);
  return stop;
}

function liveness(up) {
  const w = document.getElementById("who");
  w.classList.toggle("live", up);
  w.classList.toggle("stale", !up);
  w.title = up ? "live: updates arrive as they happen" : "reconnecting…";
}

function may(role) {
  const order = { reader: 0, member: 1, admin: 2 };
  return me && order[me.role] >= order[role];
}

// An action button: shown only to roles that may, disabled while it runs, its outcome in the
// banner.
function action(label, run, opts) {
  if (!may((opts && opts.role) || "member")) return null;
  const b = el("button", { type: "button", class: "action " + ((opts && opts.cls) || ""), dataset: (opts && opts.data) || {} }, label);
  b.addEventListener("click", async () => {
    if (opts && opts.confirm && !confirm(opts.confirm)) return;
    b.disabled = true;
    try {
      const v = await run();
      banner(((opts && opts.done) || label + ": done") + (v && v.plan ? " (plan " + v.plan + ")" : ""), true);
    } catch (e) {
      banner(label + " failed: " + e.message);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// ---- charts ------------------------------------------------------------------------------

// A line chart of `series` ([{name, color, points: [[ms, value]]}]) over the last five
// minutes; `max` fixes the top (else the largest value). Its point count is kept in
// `data-points`, which grows as samples arrive.
function drawChart(host, series, opts) {
  const W = 600, H = 140, now = Date.now();
  // The last five minutes, or less while there is less: at least one minute.
  const oldest = Math.min(now - 60000, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const from = Math.max(now - HISTORY_MS, oldest);
  const span = now - from;
  const all = series.flatMap((s) => s.points.filter((p) => p[0] >= from));
  let max = opts.max || Math.max(1, ...all.map((p) => p[1])) * 1.1;
  const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", class: "chart", "data-chart": opts.id, "data-points": String(all.length), role: "img", "aria-label": opts.title });
  for (const f of [0.25, 0.5, 0.75]) s.append(svg("line", { x1: 0, x2: W, y1: H * f, y2: H * f, class: "grid-line" }));
  for (const ser of series) {
    const pts = ser.points.filter((p) => p[0] >= from)
      .map((p) => `${(((p[0] - from) / span) * W).toFixed(1)},${(H - (p[1] / max) * H).toFixed(1)}`);
    if (pts.length > 1) s.append(svg("polyline", { points: pts.join(" "), stroke: ser.color }));
    // A lone reading is a dot: a line needs two.
    else if (pts.length === 1) {
      const [x, y] = pts[0].split(",");
      s.append(svg("circle", { cx: x, cy: y, r: 3, fill: ser.color }));
    }
  }
  const last = series.map((ser) => {
    const p = ser.points[ser.points.length - 1];
    return el("span", {}, el("i", { style: null, class: "sw", dataset: { color: ser.color } }), ser.name + ": " + (p ? opts.fmt(p[1]) : "—"));
  });
  fill(host, 
    el("div", { class: "legend" }, el("b", {}, opts.title), ...last, el("span", {}, `top ${opts.fmt(max)} · last ${duration(span / 1000)}`)),
    s);
  // Swatch colours set through the DOM (the policy allows no inline style attributes).
  host.querySelectorAll("i.sw").forEach((i) => { i.style.background = i.dataset.color; });
}

// ---- sign-in -----------------------------------------------------------------------------

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  route(why);
}

async function signIn(t, why) {
  sessionStorage.setItem(TOKEN_KEY, t);
  try {
    me = await api("GET", "/v1/whoami");
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    return loginPage(why || "That token was not accepted: " + e.message);
  }
  route();
}

function loginPage(why) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", placeholder: "ID.SECRET", "aria-label": "API token" });
  const form = el("form", { class: "card login" },
    el("h1", {}, "Sign in to Ferric"),
    el("p", {}, "Paste an API token. Create one with ", el("code", {}, "ferric api-token create --role reader"), " (or member, admin); the token stays in this tab only."),
    why ? el("p", { class: "error", id: "login-error" }, why) : null,
    input,
    el("button", { class: "primary", type: "submit", id: "sign-in" }, "Sign in"));
  form.addEventListener("submit", (e) => { e.preventDefault(); signIn(input.value.trim()); });
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  fill(document.getElementById("view"), form);
  input.focus();
}

// ---- pages -------------------------------------------------------------------------------

function route(why) {
  if (pageAbort) pageAbort.abort();
  pageAbort = new AbortController();
  const signal = pageAbort.signal;
  if (!token()) return loginPage(why);
  if (!me) return signIn(token(), why);
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = `${me.role} · project ${me.project}` + (me.scope ? "" : " (fleet)");
  const parts = location.hash.replace(/^#/, "").split("/").filter(Boolean).map((x) => {
    try { return decodeURIComponent(x); } catch (_) { return x; }
  });
  let page = parts[0] || "fleet";
  if (page === "nodes" && !parts[1]) page = "fleet";
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("current", a.dataset.page === page || (page === "nodes" && a.dataset.page === "fleet")));
  const view = document.getElementById("view");
  fill(view, el("p", { class: "muted" }, "Loading…"));
  const pages = { fleet: fleetPage, nodes: nodePage, guests: guestsPage, images: imagesPage, plans: plansPage, events: eventsPage };
  (pages[page] || fleetPage)(view, parts.slice(1), signal).catch((e) => {
    if (!signal.aborted) fill(view, card("Cannot show this page", el("p", { class: "error" }, e.message)));
  });
}

function failing(p) { return p.state === "failed"; }

async function fleetPage(view, _args, signal) {
  const shell = {
    tiles: el("div", { class: "tiles", id: "tiles" }),
    failures: el("div", { id: "failures" }),
    nodes: el("div", { id: "nodes" }),
    hosts: el("div", { id: "hosts" }),
  };
  fill(view, 
    el("h1", {}, "Fleet"),
    card("At a glance", shell.tiles),
    card("Needs attention", shell.failures),
    card("Nodes", shell.nodes),
    card("Hypervisor hosts", shell.hosts));
  const show = (f) => {
    const by = {};
    for (const n of f.nodes) {
      const k = n.state || (n.connected ? "connected" : "offline");
      by[k] = (by[k] || 0) + 1;
    }
    const power = {};
    for (const n of f.nodes.filter((n) => n.power)) power[n.power] = (power[n.power] || 0) + 1;
    fill(shell.tiles, 
      el("div", { class: "tile" }, el("b", {}, f.nodes.length), "nodes"),
      ...Object.entries(by).sort().map(([k, v]) => el("div", { class: "tile", dataset: { state: k } }, el("b", {}, v), k)),
      ...Object.entries(power).sort().map(([k, v]) => el("div", { class: "tile" }, el("b", {}, v), "power " + k)),
      el("div", { class: "tile" }, el("b", {}, f.hosts.length), "hosts"));
    const trouble = [
      ...f.nodes.filter((n) => /failed|error/.test(n.state || "") || n.flag).map((n) =>
        el("tr", {}, el("td", {}, when(n.last_seen_ms)), el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(n.name) }, n.name)),
          el("td", {}, badge(n.state)), el("td", {}, n.flag || ""))),
      ...f.plans.filter(failing).slice(0, 10).map((p) =>
        el("tr", {}, el("td", {}, when((p.finished_at_us || p.created_at_us) / 1000)), el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(p.node) }, p.node)),
          el("td", {}, badge(p.state)), el("td", {}, el("a", { href: "#/plans/" + p.id }, "plan " + p.id)))),
    ];
    fill(shell.failures, table(["When", "Node", "State", "What"], trouble, "Nothing failed recently."));
    const rows = [...f.nodes].sort((a, b) => a.name.localeCompare(b.name)).map((n) =>
      el("tr", { dataset: { node: n.name } },
        el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(n.name) }, n.name)),
        el("td", {}, n.role),
        el("td", {}, n.state ? badge(n.state) : "—"),
        el("td", {}, n.power ? badge(n.power) : "—"),
        el("td", {}, n.role === "baremetal" ? "via BMC" : n.connected ? badge("connected", null) : badge("offline")),
        el("td", {}, when(n.last_seen_ms)),
        el("td", { class: "error" }, n.flag || "")));
    fill(shell.nodes, table(["Name", "Role", "Provision state", "Power", "Link", "Last seen", ""], rows, "No nodes enrolled yet."));
    const hostRows = f.hosts.map((h) =>
      el("tr", { dataset: { host: h.name } },
        el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(h.name) }, h.name)),
        el("td", {}, h.connected ? badge("connected") : badge("offline")),
        el("td", { class: "num" }, `${h.vcpus_used} / ${h.cpus}`),
        el("td", { class: "num" }, `${bytes(h.mem_used_mib * 1048576)} / ${bytes(h.mem_total_mib * 1048576)}`),
        el("td", { class: "num" }, `${bytes(h.disk_used_bytes)} promised, ${bytes(h.disk_free_bytes)} free`),
        el("td", { class: "num" }, h.guests)));
    fill(shell.hosts, table(["Host", "Link", "vCPUs promised / host ", "Memory promised / host ", "Disk ", "Guests "], hostRows, "No hypervisor hosts."));
  };
  watch("/v1/watch", { fleet: show }, signal);
}

async function nodePage(view, args, signal) {
  const name = args[0];
  const parts = {
    head: el("div", {}),
    life: el("div", { id: "lifecycle" }),
    history: el("div", { id: "history" }),
    actions: el("div", { id: "actions", class: "actions" }),
    cpu: el("div", { class: "chart-box" }),
    mem: el("div", { class: "chart-box" }),
    temp: el("div", { class: "chart-box" }),
    power: el("div", { class: "chart-box" }),
    rate: el("div", { class: "chart-box" }),
    inspection: el("div", { id: "inspection" }),
    bmc: el("div", { id: "bmc" }),
    network: el("div", { id: "network" }),
    portForm: el("div", { id: "port-form" }),
    selRead: el("div", {}),
    sel: el("div", { id: "sel" }),
    plans: el("div", { id: "node-plans" }),
    console: el("div", { id: "console-box" }),
  };
  fill(view, 
    parts.head,
    el("div", { class: "grid" }, card("Lifecycle", parts.life), card("Telemetry", parts.cpu, parts.mem, parts.rate)),
    may("member") ? card("Actions", parts.actions) : null,
    card("State history", parts.history),
    parts.console,
    el("div", { class: "grid" }, card("Hardware (inspection)", parts.inspection), card("BMC", parts.bmc, parts.temp, parts.power, parts.selRead, parts.sel)),
    card("Network of the deployed OS", parts.network, parts.portForm),
    card("Plans", parts.plans));
  let detail = null;
  let actionsShape = null;
  const samples = [];
  const reads = [];
  let images = [];
  try { images = await api("GET", "/v1/images"); } catch (_) { /* shown as none */ }

  // The network a deploy's config drive gives the node's OS: read when the view opens and
  // after each change, not on every refresh.
  const netPath = `/v1/nodes/${encodeURIComponent(name)}/network`;
  let network = null;
  const showNetwork = () => {
    if (!network) { fill(parts.network, el("p", { class: "muted" }, "Bare-metal nodes only.")); return; }
    if (!network.ports.length) {
      fill(parts.network, el("p", { class: "muted" }, "None set: its OS asks DHCP."));
      return;
    }
    const carried = (x) => [...x.addresses, ...(x.vlans || []).map((v) => `vlan ${v.id}` + (v.addresses.length ? ` (${v.addresses.join(" ")})` : ""))].join(" ");
    fill(parts.network,
      table(["Port", "Carries", "MTU"], [
        ...network.ports.map((p) => el("tr", { dataset: { mac: p.mac } }, el("td", {}, p.mac), el("td", {}, p.bond ? `in ${p.bond}` : carried(p)), el("td", { class: "num" }, p.mtu || ""))),
        ...network.bonds.map((b) => el("tr", {}, el("td", {}, `${b.name} (${b.mode})`), el("td", {}, carried(b)), el("td", { class: "num" }, b.mtu || ""))),
      ]),
      el("dl", {},
        el("dt", {}, "Routes"), el("dd", {}, network.routes.map((r) => `${r.to} via ${r.via}`).join(", ") || "—"),
        el("dt", {}, "DNS"), el("dd", {}, [...network.dns.servers, ...network.dns.search.map((d) => `search ${d}`)].join(", ") || "—")));
  };
  const loadNetwork = async () => {
    try { network = await api("GET", netPath); } catch (_) { network = null; }
    showNetwork();
  };
  await loadNetwork();
  // One port set at a time, read-modify-write of the whole document (the CLI's `ferric node
  // port`): its addresses and VLAN replaced, the node's gateway and name server with it.
  const portForm = (macs) => {
    if (!may("member") || !network || parts.portForm.hasChildNodes()) return;
    const mac = el("select", { id: "port-mac" }, macs.map((m) => el("option", { value: m }, m)));
    const address = el("input", { id: "port-address", placeholder: "10.0.0.5/24" });
    const vlan = el("input", { id: "port-vlan", placeholder: "100=10.1.0.5/24" });
    const gateway = el("input", { id: "port-gateway", placeholder: "gateway" });
    const dns = el("input", { id: "port-dns", placeholder: "name server" });
    fill(parts.portForm, el("fieldset", {}, el("legend", {}, "Set a port"), mac, address, vlan, gateway, dns,
      action("set", async () => {
        const next = JSON.parse(JSON.stringify(network));
        const m = mac.value.toLowerCase();
        let p = next.ports.find((x) => x.mac.toLowerCase() === m);
        if (!p) { p = { mac: m, addresses: [], vlans: [] }; next.ports.push(p); }
        p.bond = null;
        p.addresses = address.value.trim() ? address.value.trim().split(/\s+/) : [];
        p.vlans = vlan.value.trim() ? vlan.value.trim().split(/\s+/).map((v) => {
          const [id, cidr] = v.split("=");
          return { id: Number(id), addresses: cidr ? [cidr] : [] };
        }) : [];
        const gw = gateway.value.trim();
        if (gw) {
          const v6 = gw.includes(":");
          next.routes = next.routes.filter((r) => !(r.to === "default" && r.via.includes(":") === v6));
          next.routes.push({ to: "default", via: gw });
        }
        if (dns.value.trim()) next.dns.servers = dns.value.trim().split(/\s+/);
        network = await api("PUT", netPath, next);
        showNetwork();
      }, { data: { port: "set" }, done: "network set" })));
  };

  const charts = () => {
    const cpu = samples.map((r) => [r.received_at_ms, r.sample.cpu_percent]);
    drawChart(parts.cpu, [{ name: "CPU", color: "#2a5db0", points: cpu }], { id: "cpu", title: "CPU %", max: 100, fmt: (v) => v.toFixed(0) + " %" });
    const mem = samples.map((r) => [r.received_at_ms, r.sample.mem_total_bytes ? (100 * r.sample.mem_used_bytes) / r.sample.mem_total_bytes : 0]);
    drawChart(parts.mem, [{ name: "memory", color: "#7b3fa0", points: mem }], { id: "memory", title: "Memory %", max: 100, fmt: (v) => v.toFixed(0) + " %" });
    const rate = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1].sample, b = samples[i].sample;
      if (a.progress && b.progress && a.progress.plan === b.progress.plan && a.progress.step === b.progress.step && b.at_ms > a.at_ms) {
        rate.push([samples[i].received_at_ms, ((b.progress.done - a.progress.done) / ((b.at_ms - a.at_ms) / 1000)) / 1e6]);
      }
    }
    if (!rate.length) rate.push(...rates);
    drawChart(parts.rate, [{ name: "write", color: "#b4451f", points: rate }], { id: "progress", title: "Step progress MB/s", fmt: (v) => v.toFixed(1) + " MB/s" });
    const sensorSeries = (test, color) => {
      const by = {};
      for (const r of reads) for (const s of r.bmc.sensors || []) {
        if (s.value === null || s.value === undefined || !test(s)) continue;
        (by[s.name] = by[s.name] || []).push([r.received_at_ms, s.value]);
      }
      return Object.entries(by).map(([n, points], i) => ({ name: n, color: color[i % color.length], points }));
    };
    const temps = sensorSeries((s) => /temp/i.test(s.kind) || /degrees c/i.test(s.unit), ["#b3261e", "#a66300", "#5d6873"]);
    drawChart(parts.temp, temps, { id: "temperature", title: "Temperatures", fmt: (v) => v.toFixed(0) + " °C" });
    const watts = sensorSeries((s) => /watt/i.test(s.unit) || /power/i.test(s.kind), ["#23803b", "#2a5db0"]);
    drawChart(parts.power, watts, { id: "power", title: "Power", fmt: (v) => v.toFixed(0) + " W" });
  };

  const rates = []; // [ms, MB/s] the coordinator computed from the node's telemetry
  const noteRate = (d) => {
    const pr = d.lifecycle && d.lifecycle.progress;
    if (pr && pr.bytes_per_sec) rates.push([Date.now(), pr.bytes_per_sec / 1e6]);
    while (rates.length && rates[0][0] < Date.now() - HISTORY_MS) rates.shift();
  };
  const showDetail = (d) => {
    detail = d;
    const n = d.node;
    const lc = d.lifecycle;
    fill(parts.head, el("h1", {}, n.name, " ", el("span", { class: "muted" }, n.role), " ",
      lc ? badge(lc.state, "state") : null, " ", n.power ? badge(n.power, "power") : null));
    // Lifecycle: state, step, time in state against the deadline, progress, history.
    if (lc) {
      const now = Date.now();
      const inState = (now - lc.since_ms) / 1000;
      const rows = [
        el("dt", {}, "State"), el("dd", {}, badge(lc.state)),
        el("dt", {}, "Doing"), el("dd", { id: "doing" }, lc.doing || "nothing"),
        el("dt", {}, "In state"), el("dd", {}, duration(inState), lc.deadline_ms ? ` of ${duration((lc.deadline_ms - lc.since_ms) / 1000)} allowed` : ""),
      ];
      if (lc.image) rows.push(el("dt", {}, "Image"), el("dd", {}, lc.image));
      if (lc.error) rows.push(el("dt", {}, "Last error"), el("dd", { class: "error" }, lc.error, " ", lc.error_at_ms ? when(lc.error_at_ms) : ""));
      const out = [el("dl", {}, rows)];
      if (lc.deadline_ms) {
        const f = Math.min(1, (now - lc.since_ms) / Math.max(1, lc.deadline_ms - lc.since_ms));
        const bar = el("div", { class: "bar" + (now > lc.deadline_ms ? " late" : ""), title: "time in this step against its deadline" }, el("span", {}));
        bar.firstChild.style.width = (100 * f).toFixed(1) + "%";
        out.push(bar);
      }
      if (lc.progress) {
        const p = lc.progress;
        const f = p.total ? p.done / p.total : 0;
        const bar = el("div", { class: "bar" }, el("span", {}));
        bar.firstChild.style.width = (100 * f).toFixed(1) + "%";
        out.push(el("div", { id: "progress", dataset: { done: String(p.done), total: String(p.total || "") } },
          el("b", {}, "Progress: "),
          `${bytes(p.done)}${p.total ? " of " + bytes(p.total) + " (" + (100 * f).toFixed(0) + " %)" : ""}`,
          p.bytes_per_sec ? ` · ${(p.bytes_per_sec / 1e6).toFixed(1)} MB/s` : "",
          p.eta_secs !== null && p.eta_secs !== undefined ? ` · ETA ${duration(p.eta_secs)}` : "", bar));
      }
      const hist = [...lc.transitions].reverse().map((t) => el("tr", {},
        el("td", {}, when(t.at_ms)), el("td", {}, t.from, " → ", t.to), el("td", {}, t.step || ""), el("td", {}, t.cause), el("td", { class: "error" }, t.error || "")));
      fill(parts.history, table(["When", "Change", "Step", "Cause", "Error"], hist, "No transitions yet."));
      fill(parts.life, ...out);
    } else {
      fill(parts.history, el("p", { class: "muted" }, "Only bare-metal nodes have a provision state."));
      fill(parts.life, el("dl", {},
        el("dt", {}, "Link"), el("dd", {}, n.connected ? badge("connected") : badge("offline")),
        el("dt", {}, "Enrolled"), el("dd", {}, when(n.enrolled_at_ms)),
        el("dt", {}, "Last seen"), el("dd", {}, when(n.last_seen_ms)),
        el("dt", {}, "Capabilities"), el("dd", {}, (n.capabilities || []).join(", ") || "—")));
    }
    // Actions, for those who may (what was chosen in them survives a refresh).
    const kept = {};
    parts.actions.querySelectorAll("select, input").forEach((i) => { kept[i.id] = i.type === "checkbox" ? i.checked : i.value; });
    const restore = () => parts.actions.querySelectorAll("select, input").forEach((i) => {
      if (!(i.id in kept)) return;
      if (i.type === "checkbox") i.checked = kept[i.id]; else i.value = kept[i.id];
    });
    const shape = `${!!d.bmc}/${!!lc}`;
    if (shape === actionsShape) {
      // Built already: kept as it is, so a menu being used is not closed under the hand.
    } else if (may("member") && d.bmc) {
      const post = (path, body) => api("POST", `/v1/nodes/${encodeURIComponent(n.name)}/${path}`, body);
      const dev = el("select", { id: "bootdev" }, ["pxe", "disk", "bios", "cdrom"].map((v) => el("option", { value: v }, v)));
      const persistent = el("input", { type: "checkbox", id: "bootdev-persistent" });
      const uefi = el("input", { type: "checkbox", id: "bootdev-uefi" });
      const image = el("select", { id: "deploy-image" }, images.map((i) => el("option", { value: i.name }, `${i.name} (${i.format}, ${bytes(i.virtual_size || i.size)})`)));
      const verb = (v, body) => action(v, () => post("provision", Object.assign({ verb: v }, body ? body() : {})), { data: { verb: v }, done: `${v} ${n.name}: asked`, confirm: v === "undeploy" ? `Undeploy ${n.name}? Its disks will be erased.` : null });
      fill(parts.actions, 
        el("fieldset", {}, el("legend", {}, "Power"),
          ["on", "off", "cycle", "reset", "soft"].map((a) => action(a, () => post("power", { action: a }), { data: { power: a }, confirm: a === "on" ? null : `Power ${a} ${n.name}?` }))),
        el("fieldset", {}, el("legend", {}, "Boot device"), dev,
          el("label", {}, persistent, " every boot"), el("label", {}, uefi, " UEFI"),
          action("set", () => post("bootdev", { device: dev.value, persistent: persistent.checked, uefi: uefi.checked }), { data: { bootdev: "set" } })),
        lc ? el("fieldset", {}, el("legend", {}, "Lifecycle"),
          ["manage", "inspect", "provide"].map((v) => verb(v)),
          // The coordinator writes the config drive: the node's name and its network.
          image, verb("deploy", () => ({ image: image.value, instance: {} })),
          verb("undeploy"), verb("abort")) : null);
      restore();
    } else if (may("member")) {
      fill(parts.actions, el("p", { class: "muted" }, "This node is driven through plans (see the CLI's ferric plan apply); it has no BMC here."));
    }
    actionsShape = shape;
    if (d.bmc) {
      const macs = new Set([...(d.bmc.macs || []), ...(network ? network.ports.map((p) => p.mac) : []), ...((d.inspection && d.inspection.inventory && d.inspection.inventory.nics) || []).map((k) => k.mac).filter(Boolean)]);
      portForm([...new Set([...macs].map((m) => m.toLowerCase()))]);
    }
    // Inspection.
    const inv = d.inspection && d.inspection.inventory;
    if (inv) {
      fill(parts.inspection, 
        el("dl", {},
          el("dt", {}, "Inspected"), el("dd", {}, when(d.inspected_at_ms)),
          el("dt", {}, "CPU"), el("dd", {}, `${inv.cpu.count} × ${inv.cpu.model || "?"}`),
          el("dt", {}, "Memory"), el("dd", {}, bytes(inv.memory_bytes)),
          inv.dmi ? [el("dt", {}, "System"), el("dd", {}, [inv.dmi.vendor, inv.dmi.product, inv.dmi.serial].filter(Boolean).join(" · ") || "—")] : null),
        el("h2", {}, "Disks"),
        table(["Name", "Size ", "Model"], inv.disks.map((k) => el("tr", {}, el("td", {}, k.name), el("td", { class: "num" }, bytes(k.size_bytes)), el("td", {}, k.model || "")))),
        el("h2", {}, "NICs"),
        table(["Name", "MAC", "Link"], inv.nics.map((k) => el("tr", {}, el("td", {}, k.name), el("td", {}, k.mac || ""), el("td", {}, k.link_up ? (k.speed_mbps ? k.speed_mbps + " Mb/s" : "up") : "down")))));
    } else {
      fill(parts.inspection, el("p", { class: "muted" }, "Not inspected."));
    }
    // BMC.
    if (d.bmc) {
      const b = d.bmc;
      fill(parts.bmc, 
        el("dl", {},
          el("dt", {}, "Address"), el("dd", {}, b.address),
          el("dt", {}, "Through"), el("dd", {}, el("a", { href: "#/nodes/" + encodeURIComponent(b.via) }, b.via)),
          el("dt", {}, "Boots"), el("dd", { id: "boot-mode" }, `${b.boot_mode} (${b.boot_mode_seen_at_ms ? "seen by inspection" : "as enrolled"})` + (b.boot_mode === "uefi" ? `, network boot by ${b.efi_loader}.efi` : "")),
          el("dt", {}, "Power"), el("dd", {}, `expected ${b.power_expected || "—"}, seen ${b.power_observed || "—"} `, when(b.observed_at_ms)),
          b.last_error ? [el("dt", {}, "Last error"), el("dd", { class: "error" }, b.last_error)] : null),
        el("h2", {}, "Sensors"),
        table(["Sensor", "Kind", "Reading "], (b.sensors || []).map((s) => el("tr", {}, el("td", {}, s.name), el("td", {}, s.kind),
          el("td", { class: "num" }, s.value === null || s.value === undefined ? "—" : `${s.value} ${s.unit}`))), "No sensor readings yet."));
      const readSel = action("Read event log", async () => {
        const a = await api("POST", `/v1/nodes/${encodeURIComponent(n.name)}/sel`, { clear: false });
        fill(parts.sel, el("p", { class: "muted" }, `Reading through ${a.via} (plan ${a.plan})…`));
        for (let i = 0; i < 60 && !signal.aborted; i++) {
          const st = await api("GET", `/v1/plans/${a.plan}`);
          if (st.plan.state === "succeeded" || st.plan.state === "failed") return showSel(st);
          await new Promise((r) => setTimeout(r, 1000));
        }
        return a;
      }, { data: { sel: "read" } });
      if (readSel && !parts.selRead.hasChildNodes()) fill(parts.selRead, readSel);
    } else {
      fill(parts.bmc, el("p", { class: "muted" }, "No BMC enrolled for this node."));
    }
    fill(parts.plans, planTable(d.plans));
  };

  const showSel = (st) => {
    const entries = [];
    let failed = null;
    for (const e of st.events) {
      if (e.kind && e.kind.output && e.kind.output.sel) entries.push(...e.kind.output.sel);
      if (e.kind && e.kind.failed) failed = e.kind.failed.message;
    }
    fill(parts.sel, el("h2", {}, "Event log"), failed ? el("p", { class: "error" }, failed) : null,
      table(["#", "Sensor", "Event", ""], entries.map((x) => el("tr", {}, el("td", {}, x.id), el("td", {}, x.sensor), el("td", {}, x.event), el("td", {}, x.asserted ? "asserted" : "deasserted"))), "The event log is empty."));
  };

  // The serial console, for nodes whose driving agent tails one.
  const consoleLines = [];
  let consoleError = null;
  let consolePre = null;
  const showConsole = () => {
    if (!detail || !detail.bmc || !detail.bmc.console_log) { fill(parts.console); consolePre = null; return; }
    if (!consolePre) {
      consolePre = el("pre", { id: "console", class: "console" });
      fill(parts.console, card("Console", el("p", { class: "muted" }, `${detail.bmc.console_log} on ${detail.bmc.via}`), consolePre));
    }
    const atEnd = consolePre.scrollHeight - consolePre.scrollTop - consolePre.clientHeight < 20;
    consolePre.dataset.lines = String(consoleLines.length);
    consolePre.textContent = consoleLines.map((l) => l.text).join("\n") || "Nothing written yet.";
    if (consoleError) consolePre.textContent += "\n[" + consoleError + "]";
    if (atEnd) consolePre.scrollTop = consolePre.scrollHeight;
  };
  let consoleEpoch = null;
  const onConsole = (t) => {
    // Numbers count from the coordinator's start: after a restart, start over.
    if (t.epoch_ms !== consoleEpoch) { consoleLines.length = 0; consoleEpoch = t.epoch_ms; }
    const last = consoleLines.length ? consoleLines[consoleLines.length - 1].seq : 0;
    for (const l of t.lines || []) if (l.seq > last) consoleLines.push(l);
    while (consoleLines.length > 200) consoleLines.shift();
    consoleError = t.error || null;
    showConsole();
  };

  let redraw = 0;
  const later = () => { if (!redraw) redraw = setTimeout(() => { redraw = 0; charts(); }, 200); };
  // Records come in time order; after a reconnect the stream resumes from the last one seen,
  // and one seen already (same time) is not kept twice.
  const keep = (list, r) => {
    if (list.length && r.received_at_ms <= list[list.length - 1].received_at_ms) return;
    list.push(r);
    while (list.length && list[0].received_at_ms < Date.now() - HISTORY_MS) list.shift();
  };
  const last = (list) => (list.length ? list[list.length - 1].received_at_ms : null);
  const resume = () => {
    const seen = [last(samples), last(reads)].filter((x) => x !== null);
    return seen.length ? `?after_ms=${Math.min(...seen)}` : "";
  };
  charts();
  // Time in state moves on even when nothing arrives.
  every(5000, () => { if (detail) showDetail(detail); }, signal);
  await watch(`/v1/nodes/${encodeURIComponent(name)}/watch`, {
    node: (d) => { noteRate(d); showDetail(d); showConsole(); },
    console: onConsole,
    sample: (r) => { keep(samples, r); later(); },
    bmc: (r) => { keep(reads, r); later(); },
    gone: (p) => fill(view, card("Node " + name, el("p", { class: "error" }, p.detail || "This node is no longer there."))),
  }, signal, resume);
}

function planTable(plans) {
  const rows = [...plans].sort((a, b) => (failing(b) - failing(a)) || (b.created_at_us - a.created_at_us)).map((p) =>
    el("tr", { dataset: { plan: p.id } },
      el("td", {}, el("a", { href: "#/plans/" + p.id }, p.id)),
      el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(p.node) }, p.node)),
      el("td", {}, badge(p.state)),
      el("td", {}, (p.steps || []).map(stepName).join(", ")),
      el("td", {}, when(p.created_at_us / 1000)),
      el("td", {}, p.finished_at_us ? duration((p.finished_at_us - p.created_at_us) / 1e6) : "")));
  return table(["Plan", "Node", "State", "Steps", "Created", "Took"], rows, "No plans.");
}

function stepName(s) {
  const step = s.step || s;
  if (typeof step === "string") return step;
  return Object.keys(step).find((k) => k !== "timeout_secs" && k !== "key") || s.key || "step";
}

async function guestsPage(view, _args, signal) {
  const box = el("div", { id: "guests" });
  fill(view, el("h1", {}, "Guests"), card(null, box));
  const load = async () => {
    const guests = await api("GET", "/v1/guests");
    const g = (n, verb, method) => () => api(method || "POST", `/v1/guests/${encodeURIComponent(n)}${verb ? "/" + verb : ""}`);
    fill(box, table(["Name", "Host", "vCPUs ", "Memory ", "Disk ", "Desired", "Observed", "CPU ", "Drift", ""],
      guests.map((x) => el("tr", { dataset: { guest: x.name } },
        el("td", {}, x.name), el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(x.host) }, x.host)),
        el("td", { class: "num" }, x.vcpus), el("td", { class: "num" }, bytes(x.memory_mib * 1048576)), el("td", { class: "num" }, bytes(x.disk_bytes)),
        el("td", {}, badge(x.desired)), el("td", {}, badge(typeof x.observed === "string" ? x.observed : JSON.stringify(x.observed))),
        el("td", { class: "num" }, x.cpu_percent === null || x.cpu_percent === undefined ? "—" : x.cpu_percent.toFixed(0) + " %"),
        el("td", { class: "error" }, (x.drift || []).join("; ")),
        el("td", { class: "actions" }, action("start", g(x.name, "start")), action("stop", g(x.name, "stop")),
          action("delete", g(x.name, "", "DELETE"), { confirm: `Delete guest ${x.name} and its volume?` })))), "No guests."));
  };
  await load();
  every(3000, () => load().catch(() => {}), signal);
}

async function imagesPage(view) {
  const images = await api("GET", "/v1/images");
  fill(view, el("h1", {}, "Images"), card(null, table(["Name", "Format", "Virtual size ", "Stored ", "SHA-256", "Added", ""],
    images.map((i) => el("tr", { dataset: { image: i.name } },
      el("td", {}, i.name), el("td", {}, i.format + (i.wrapper ? " in " + i.wrapper : "")),
      el("td", { class: "num" }, bytes(i.virtual_size)), el("td", { class: "num" }, bytes(i.size)),
      el("td", {}, el("code", { title: i.sha256 }, i.sha256.slice(0, 16) + "…")), el("td", {}, when(i.created_at_ms)),
      el("td", {}, action("delete", () => api("DELETE", "/v1/images/" + encodeURIComponent(i.name)).then((v) => { route(); return v; }), { confirm: `Delete image ${i.name}?` })))),
    "No images. Upload one with ferric image upload FILE --name NAME.")));
}

async function plansPage(view, args, signal) {
  if (args[0]) return planPage(view, args[0], signal);
  const box = el("div", { id: "plans" });
  fill(view, el("h1", {}, "Plans"), el("p", { class: "muted" }, "Failed plans first, then the newest."), card(null, box));
  watch("/v1/watch", { fleet: (f) => fill(box, planTable(f.plans)) }, signal);
}

function eventText(k) {
  if (typeof k === "string") return k;
  const [kind, v] = Object.entries(k)[0];
  if (kind === "failed") return `failed (${v.kind}): ${v.message}`;
  if (kind === "progress") return `progress ${bytes(v.done)}${v.total ? " of " + bytes(v.total) : ""}`;
  if (kind === "done") return v.changed ? "done (changed)" : "done (unchanged)";
  if (kind === "output") return "output: " + Object.keys(v)[0];
  return kind;
}

async function planPage(view, id, signal) {
  const box = el("div", {});
  fill(view, el("h1", {}, "Plan " + id), box);
  const load = async () => {
    const st = await api("GET", "/v1/plans/" + encodeURIComponent(id));
    const p = st.plan;
    fill(box, 
      card(null, el("dl", {},
        el("dt", {}, "Node"), el("dd", {}, el("a", { href: "#/nodes/" + encodeURIComponent(p.node) }, p.node)),
        el("dt", {}, "State"), el("dd", {}, badge(p.state, "plan-state")),
        el("dt", {}, "Created"), el("dd", {}, when(p.created_at_us / 1000)),
        el("dt", {}, "Finished"), el("dd", {}, p.finished_at_us ? when(p.finished_at_us / 1000) : "—"))),
      card("Steps", table(["#", "Step"], (p.steps || []).map((s, i) => el("tr", {}, el("td", {}, i), el("td", {}, stepName(s)))))),
      card("Events", table(["Seq", "Step", "Event", "Agent time"], st.events.map((e) =>
        el("tr", { class: e.kind && e.kind.failed ? "error" : null }, el("td", {}, e.seq), el("td", {}, e.step), el("td", {}, eventText(e.kind)), el("td", {}, when(e.agent_at_ms)))), "No events yet.")));
    return p.state === "succeeded" || p.state === "failed";
  };
  if (await load()) return;
  const stop = every(1000, () => load().then((end) => end && stop()).catch(() => {}), signal);
}

async function eventsPage(view) {
  const plans = await api("GET", "/v1/plans?limit=15");
  const all = [];
  await Promise.all(plans.map(async (p) => {
    const st = await api("GET", "/v1/plans/" + p.id);
    for (const e of st.events) all.push({ e, p });
  }));
  all.sort((a, b) => b.e.received_at_us - a.e.received_at_us);
  const out = [el("h1", {}, "Events"),
    card("Step events of the 15 newest plans", table(["When", "Node", "Plan", "Step", "Event"], all.slice(0, 200).map(({ e, p }) =>
      el("tr", { class: e.kind && e.kind.failed ? "error" : null }, el("td", {}, when(e.received_at_us / 1000)),
        el("td", {}, el("a", { href: "#/nodes/" + encodeURIComponent(p.node) }, p.node)),
        el("td", {}, el("a", { href: "#/plans/" + p.id }, p.id)), el("td", {}, stepName(p.steps[e.step] || {})), el("td", {}, eventText(e.kind)))), "No events."))];
  if (may("admin")) {
    const audit = await api("GET", "/v1/audit");
    const rows = (audit.entries || audit).slice(0, 100).map((a) => el("tr", {},
      el("td", {}, when(a.at_ms)), el("td", {}, a.token_id || "—"), el("td", {}, a.role || ""), el("td", {}, a.method + " " + a.path),
      el("td", { class: a.status >= 400 ? "error" : null }, a.status), el("td", {}, a.code || "")));
    out.push(card("API audit log (admin)", table(["When", "Token", "Role", "Call", "Status", "Code"], rows, "No calls yet.")));
  }
  fill(view, ...out);
}

// ---- start -------------------------------------------------------------------------------

window.addEventListener("hashchange", () => route());
document.getElementById("logout").addEventListener("click", () => signOut());
route();
