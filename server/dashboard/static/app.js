// The operator console: polls /api/snapshot, redraws the tables when its revision changes, and hands
// /api/charts' Plotly figures to plotly.js. Data goes into the page as text, never as markup.
"use strict";

const POLL_MS = 2000;
let revision = null;

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell); else td.textContent = cell ?? "–";
    tr.append(td);
  }
  return tr;
}

const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(100 * x)}%`);
const num = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const eps = (x) => (x === null || x === undefined ? "∞ (no DP)" : num(x));

function notice(text, isError = false) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.classList.toggle("error", isError);
}

async function act(path, body, question) {
  if (!window.confirm(question)) return;
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json", "X-Tidings-Action": "1" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.ok) notice(`Done: ${answer.action} ${JSON.stringify(answer.result)}`);
  else notice(`Refused: ${answer.error || answer.detail || response.statusText}`, true);
  await refresh(true);
}

function button(label, key, onClick) {
  const b = el("button", label, { type: "button", "data-key": key });
  b.addEventListener("click", onClick);
  return b;
}

function renderGlance(doc) {
  const list = document.getElementById("glance");
  const rollout = doc.rollout;
  const devices = doc.devices.devices;
  const online = devices.filter((d) => d.status === "online").length;
  const items = [
    ["rounds", doc.rounds.length],
    ["ε spent / budget", `${eps(doc.privacy.epsilon)} / ${doc.privacy.budget}`],
    ["on every device", rollout.promoted === null ? "none yet" : `v${rollout.promoted}`],
    ["canary", rollout.canary === null ? "none" : `v${rollout.canary} on ${pct(rollout.canary_fraction)}`],
    ["devices online", doc.devices.reachable ? `${online} of ${devices.length}` : "SuperLink not reachable"],
    ["rollout signature", rollout.signature],
  ];
  list.replaceChildren(...items.map(([term, value]) => {
    const box = el("div");
    const dd = el("dd", value);
    if (/INVALID/.test(String(value)) || (term.startsWith("ε") && doc.privacy.over_budget)) dd.className = "bad";
    box.append(el("dt", term), dd);
    return box;
  }));
}

function renderRounds(doc) {
  const body = document.querySelector("#rounds tbody");
  body.replaceChildren(...doc.rounds.map((r) => {
    const gate = r.gate ? (r.gate.passed ? "passed" : `REJECTED: ${r.gate.reasons.join("; ")}`) : "not run";
    const tr = row([r.round, r.clients, r.failures, r.rejected, num(r.train_loss, 3), eps(r.epsilon),
      `${(r.upload_bytes_per_client / 1e3).toFixed(1)} kB`, r.seconds, `v${r.adapter_version}`, gate]);
    if (r.gate && !r.gate.passed) tr.lastChild.className = "bad";
    return tr;
  }));
}

function renderRollout(doc) {
  const box = document.getElementById("rollout");
  const rollout = doc.rollout;
  const parts = [el("span", rollout.canary === null
    ? `No canary: v${rollout.promoted ?? "–"} goes to every device.`
    : `Canary v${rollout.canary} goes to ${pct(rollout.canary_fraction)} of devices; the rest stay on v${rollout.promoted}.`)];
  if (rollout.canary !== null) {
    parts.push(button(`Promote v${rollout.canary} to every device`, "promote", () =>
      act("/api/promote", {}, `Promote canary v${rollout.canary} to every device now?`)));
    parts.push(button(`Roll back canary v${rollout.canary}`, "withdraw", () =>
      act("/api/rollback", { to: null }, `Roll back canary v${rollout.canary}? Its devices return to v${rollout.promoted}.`)));
  }
  box.replaceChildren(...parts);
}

function renderVersions(doc) {
  const body = document.querySelector("#versions tbody");
  body.replaceChildren(...doc.versions.slice().reverse().map((v) => {
    const candidate = v.gate && v.gate.candidate;
    const health = v.health
      ? `${v.health.summaries} summaries, ${pct(v.health.summaries_accepted)} accepted; ${v.health.replies} replies, ${pct(v.health.replies_as_drafted)} as drafted`
      : "–";
    let status = v.role;
    if (v.rolled_back_to !== null) status += ` (copy of v${v.rolled_back_to})`;
    if (v.withdrawn_because) status += `: ${v.withdrawn_because.join("; ")}`;
    if (v.role === "rejected" && v.gate) status += `: ${v.gate.reasons.join("; ")}`;
    const action = v.can_roll_back_to
      ? button(`Roll back to v${v.version}`, `rollback-${v.version}`, () =>
        act("/api/rollback", { to: v.version }, `Publish v${v.version} again, for every device?`))
      : "";
    const tr = row([`v${v.version}`, v.round, v.created, status, pct(v.device_share),
      candidate ? num(candidate.rouge_l) : "–", candidate ? pct(candidate.faithful_rate) : "–",
      candidate ? pct(candidate.complete_rate) : "–", health, v.signature, v.files, action]);
    for (const [index, bad] of [[3, v.role === "rejected" || v.role === "withdrawn"], [9, v.signature !== "valid"],
      [10, v.files !== "intact"]]) {
      if (bad) tr.children[index].className = "bad";
    }
    return tr;
  }));
}

function renderDevices(doc) {
  const note = document.getElementById("devices-note");
  note.textContent = doc.serving
    ? `SuperLink ${doc.serving.superlink}, registry ${doc.serving.registry}. Which version each device runs is not known here by design: versions show the share assigned and the counts devices report.`
    : "Nothing is served from this state directory: `tidings federation serve` shows and admits devices.";
  const body = document.querySelector("#devices tbody");
  if (!doc.devices.devices.length) {
    const none = el("td", "No device admitted yet (`tidings federation admit DEVICE.pub`).", { colspan: "6" });
    body.replaceChildren(el("tr"));
    body.firstChild.append(none);
    return;
  }
  body.replaceChildren(...doc.devices.devices.map((d) => {
    const action = d.revoked || !doc.serving ? "" : button(`Revoke ${d.node_id}`, `revoke-${d.node_id}`, () =>
      act("/api/revoke", { node_id: d.node_id }, `Revoke SuperNode ${d.node_id}? Its key can no longer join a round.`));
    const status = d.revoked ? `revoked ${d.revoked}` : d.status ?? (doc.devices.reachable ? "never seen" : "–");
    return row([d.node_id, d.key_sha256 ? `${d.key_sha256.slice(0, 16)}…` : "–", d.admitted, status, d.last_seen,
      action]);
  }));
}

function renderActions(doc) {
  const list = document.getElementById("actions");
  const items = doc.actions.map((a) => el("li", `${a.at}: ${a.action} ${JSON.stringify(a.arguments)} → ${a.refused ? `refused: ${a.refused}` : JSON.stringify(a.result)}`));
  list.replaceChildren(...(items.length ? items : [el("li", "Nothing yet.")]));
}

async function drawCharts() {
  const response = await fetch("/api/charts");
  if (!response.ok) return;
  const charts = await response.json();
  for (const [id, figure] of Object.entries(charts)) {
    await Plotly.react(id, figure.data, figure.layout, { responsive: true, displaylogo: false });
  }
}

async function refresh(force = false) {
  let doc;
  try {
    const response = await fetch("/api/snapshot");
    doc = await response.json();
    if (!response.ok) throw new Error(doc.error || response.statusText);
  } catch (error) {
    notice(`Cannot read the operator's state: ${error.message}`, true);
    return;
  }
  if (doc.revision === revision && !force) return;
  revision = doc.revision;
  const focused = document.activeElement && document.activeElement.dataset.key;
  document.getElementById("where").textContent =
    `State ${doc.state_dir} · ${doc.serving ? `serving ${doc.serving.superlink}` : "not serving"} · updated ${new Date().toLocaleTimeString()}`;
  renderGlance(doc);
  renderRounds(doc);
  renderRollout(doc);
  renderVersions(doc);
  renderDevices(doc);
  renderActions(doc);
  document.body.dataset.revision = revision;
  if (focused) document.querySelector(`[data-key="${focused}"]`)?.focus();
  await drawCharts();
  document.body.dataset.charted = doc.revision;
}

refresh();
setInterval(refresh, POLL_MS);
