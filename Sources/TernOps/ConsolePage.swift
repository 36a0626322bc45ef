// swift-format-ignore-file
// The web console (docs/operations.md, "Web console"): one page, its style and script inline,
// nothing fetched from elsewhere. Every two seconds it reads the JSON admin API: the group's
// members and roles, topics and queues, consumer groups with their lag (a group's queues on a
// click), and this node's throughput and commit latency over the last three minutes
// (/api/history), drawn on canvases; a form looks messages up. Elements carry data- attributes
// with the raw figures, which the console test reads back.
let consolePage = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tern console</title>
<style>
  :root { --fg:#1d2330; --muted:#6b7385; --line:#dde1e8; --bg:#f6f7f9; --accent:#2f6fdf; --warn:#c4532c; --ok:#2e8b57; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:baseline; gap:16px; padding:12px 20px; background:#fff; border-bottom:1px solid var(--line); }
  header h1 { font-size:18px; margin:0; }
  .muted { color:var(--muted); }
  main { display:grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap:16px; padding:16px 20px; }
  section { background:#fff; border:1px solid var(--line); border-radius:6px; padding:12px 14px; }
  section h2 { font-size:14px; margin:0 0 8px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
  table { width:100%; border-collapse:collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align:left; padding:4px 6px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--muted); font-weight:500; }
  td.num, th.num { text-align:right; }
  .role-leader { color:var(--ok); font-weight:600; }
  .role-unreachable { color:var(--warn); font-weight:600; }
  .lagging { color:var(--warn); font-weight:600; }
  tr.group { cursor:pointer; }
  tr.group:hover { background:#f0f4fc; }
  canvas { width:100%; height:140px; display:block; }
  .legend { color:var(--muted); font-size:12px; }
  form { display:flex; gap:6px; flex-wrap:wrap; margin-bottom:8px; }
  input { padding:4px 6px; border:1px solid var(--line); border-radius:4px; font:inherit; }
  button { padding:4px 10px; border:1px solid var(--accent); background:var(--accent); color:#fff; border-radius:4px; font:inherit; cursor:pointer; }
  pre { background:var(--bg); padding:8px; overflow:auto; max-height:260px; margin:0; }
  .error { color:var(--warn); }
</style>
</head>
<body>
<header>
  <h1>Tern</h1>
  <span id="node" class="muted"></span>
  <span id="updated" class="muted"></span>
</header>
<main>
  <section><h2>Members</h2>
    <table id="members"><thead><tr><th>node</th><th>role</th><th class="num">term</th><th class="num">commit</th><th class="num">applied</th><th class="num">first</th><th class="num">disk</th></tr></thead><tbody></tbody></table>
    <div id="members-error" class="error"></div>
  </section>
  <section id="broker-groups-section" hidden><h2>Broker groups (from the name servers)</h2>
    <table id="broker-groups"><thead><tr><th>group</th><th>leader</th><th class="num">term</th><th class="num">members</th><th class="num">topics</th><th class="num">registered</th></tr></thead><tbody></tbody></table>
    <div id="broker-groups-error" class="error"></div>
  </section>
  <section><h2>Throughput (this node; last 3 minutes)</h2>
    <canvas id="throughput" width="900" height="280"></canvas>
    <div class="legend"><span style="color:#2f6fdf">&#9632;</span> send requests/s &nbsp; <span style="color:#2e8b57">&#9632;</span> messages delivered/s</div>
  </section>
  <section><h2>Commit latency (this node, as leader; last 3 minutes)</h2>
    <canvas id="latency" width="900" height="280"></canvas>
    <div class="legend"><span style="color:#c4532c">&#9632;</span> mean ms per 2 s (gaps: no commits) &nbsp; <span id="latency-now"></span></div>
  </section>
  <section><h2>Topics</h2>
    <table id="topics"><thead><tr><th>topic</th><th class="num">queues</th><th class="num">messages</th><th>queue offsets (min&ndash;max)</th></tr></thead><tbody></tbody></table>
    <div id="topics-error" class="error"></div>
  </section>
  <section><h2>Consumer groups</h2>
    <table id="groups"><thead><tr><th>group</th><th class="num">members</th><th class="num">lag</th></tr></thead><tbody></tbody></table>
    <div id="groups-error" class="error"></div>
    <div id="group-detail"></div>
  </section>
  <section><h2>Message lookup</h2>
    <form id="lookup">
      <input id="q-id" placeholder="message id" size="22">
      <span class="muted">or</span>
      <input id="q-topic" placeholder="topic" size="12"><input id="q-key" placeholder="key" size="12">
      <button type="submit">Look up</button>
    </form>
    <pre id="lookup-result">&nbsp;</pre>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const bytes = (n) => n >= 1<<30 ? (n/(1<<30)).toFixed(1)+" GiB" : n >= 1<<20 ? (n/(1<<20)).toFixed(1)+" MiB" : n >= 1024 ? (n/1024).toFixed(1)+" KiB" : n+" B";
async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store"});
  const body = await r.json().catch(() => ({error: r.statusText}));
  // The API's errors are {"error": "..."}; the server's own (401, 404) {"error": {"message": "..."}}.
  if (!r.ok) throw new Error((body.error && body.error.message) || body.error || r.statusText);
  return body;
}
async function members() {
  try {
    const c = await getJSON("/api/cluster");
    $("node").textContent = "node " + c.node + " \u00b7 leader " + (c.leader || "none");
    $("members").tBodies[0].innerHTML = c.members.map((m) =>
      `<tr data-node="${esc(m.id)}" data-role="${esc(m.role)}"><td>${esc(m.id)}</td><td class="role-${esc(m.role)}">${esc(m.role)}</td>` +
      `<td class="num">${m.term}</td><td class="num">${m.commitIndex}</td><td class="num">${m.appliedIndex}</td><td class="num">${m.firstIndex}</td><td class="num">${bytes(m.diskBytes)}</td></tr>`).join("");
    $("members-error").textContent = "";
  } catch (e) { $("members-error").textContent = e.message; }
}
// Shown only when the node runs with name servers (many broker groups).
async function brokerGroups() {
  try {
    const b = await getJSON("/api/broker-groups");
    $("broker-groups-section").hidden = b.nameservers.length == 0;
    $("broker-groups").tBodies[0].innerHTML = b.groups.map((g) =>
      `<tr data-broker-group="${esc(g.group)}"><td>${esc(g.group)}</td><td>${esc(g.leader)}</td><td class="num">${g.term}</td>` +
      `<td class="num">${g.members.length}</td><td class="num">${g.topics}</td><td class="num">${(g.ageMillis / 1000).toFixed(1)} s ago</td></tr>`).join("");
    $("broker-groups-error").textContent = "";
  } catch (e) { $("broker-groups-section").hidden = false; $("broker-groups-error").textContent = e.message; }
}
async function topics() {
  try {
    const ts = await getJSON("/api/topics");
    $("topics").tBodies[0].innerHTML = ts.map((t) =>
      `<tr data-topic="${esc(t.name)}" data-messages="${t.messages}"><td>${esc(t.name)}${t.traced ? ' <span class="muted" title="message trace on">traced</span>' : ""}</td><td class="num">${t.queues.length}</td><td class="num">${t.messages}</td>` +
      `<td>${t.queues.slice(0, 8).map((q) => q.minOffset + "\u2013" + q.maxOffset).join(" \u00b7 ")}${t.queues.length > 8 ? " \u2026" : ""}</td></tr>`).join("");
    $("topics-error").textContent = "";
  } catch (e) { $("topics-error").textContent = e.message; }
}
let openGroup = null;
async function groups() {
  try {
    const gs = await getJSON("/api/groups");
    $("groups").tBodies[0].innerHTML = gs.map((g) =>
      `<tr class="group" data-group="${esc(g.group)}" data-lag="${g.lag}"><td>${esc(g.group)}</td><td class="num">${g.members}</td>` +
      `<td class="num ${g.lag > 1000 ? "lagging" : ""}">${g.lag}</td></tr>`).join("");
    for (const row of $("groups").tBodies[0].rows) row.onclick = () => { openGroup = row.dataset.group; detail(); };
    $("groups-error").textContent = "";
    if (openGroup) await detail();
  } catch (e) { $("groups-error").textContent = e.message; }
}
async function detail() {
  try {
    const g = await getJSON("/api/groups/" + encodeURIComponent(openGroup));
    $("group-detail").innerHTML = `<h2 style="margin-top:12px">${esc(g.group)}: lag ${g.lag}</h2>` +
      `<table><thead><tr><th>queue</th><th class="num">committed</th><th class="num">max</th><th class="num">lag</th><th>last consumed (stored)</th></tr></thead><tbody>` +
      g.queues.map((q) => `<tr data-queue="${esc(q.topic)}:${q.queue}" data-lag="${q.lag}"><td>${esc(q.topic)}:${q.queue}</td><td class="num">${q.committed ?? (q.receiveNext != null ? "next " + q.receiveNext : "-")}</td>` +
        `<td class="num">${q.maxOffset}</td><td class="num">${q.lag}</td><td>${q.lastConsumedStored ? new Date(q.lastConsumedStored).toISOString() : "-"}</td></tr>`).join("") +
      `</tbody></table>`;
  } catch (e) { $("group-detail").innerHTML = `<div class="error">${esc(e.message)}</div>`; }
}
$("lookup").onsubmit = async (ev) => {
  ev.preventDefault();
  const id = $("q-id").value.trim(), topic = $("q-topic").value.trim(), key = $("q-key").value.trim();
  const q = id ? "id=" + encodeURIComponent(id) : "topic=" + encodeURIComponent(topic) + "&key=" + encodeURIComponent(key);
  try {
    const found = await getJSON("/api/messages?" + q);
    let text = JSON.stringify(found, null, 2);
    // The trace of each message found, when its topic is traced.
    for (const m of found) {
      try {
        const t = await getJSON("/api/messages/" + m.id + "/trace");
        text += "\n\ntrace of " + m.id + (t.leader ? " (stored by " + t.leader + " in term " + t.term + ")" : "") + ":\n" +
          t.steps.map((s) => s.time + "  " + s.step + (s.group ? " group " + s.group : "") + (s.queue ? " " + s.queue + "@" + s.offset : "") +
            (s.attempt ? " attempt " + s.attempt : "") + (s.copy ? " copy " + s.copy : "")).join("\n");
      } catch (e) { /* not traced */ }
    }
    $("lookup-result").textContent = text;
  } catch (e) { $("lookup-result").textContent = e.message; }
};
// Charts from this node's last three minutes (sampled by the node every two seconds).
async function charts() {
  try {
    const points = await getJSON("/api/history");
    const sends = points.map((p) => p.sendRequestsPerSecond), delivered = points.map((p) => p.deliveredPerSecond);
    const latency = points.map((p) => p.commitMillis);
    const lastCommit = points.filter((p) => p.commitMillis != null).pop();
    $("latency-now").textContent = lastCommit ? "latest " + lastCommit.commitMillis.toFixed(2) + " ms" : "no commits in the last three minutes";
    draw($("throughput"), [[sends, "#2f6fdf"], [delivered, "#2e8b57"]]);
    draw($("latency"), [[latency, "#c4532c"]]);
    $("throughput").dataset.points = points.length;
  } catch (e) { /* the next poll tries again */ }
}
function draw(canvas, lines) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height, pad = 40;
  g.clearRect(0, 0, w, h);
  const max = Math.max(1, ...lines.flatMap(([s]) => s.filter((v) => v != null))) * 1.1;
  g.strokeStyle = "#dde1e8"; g.fillStyle = "#6b7385"; g.font = "20px system-ui";
  for (let i = 0; i <= 4; i++) {
    const y = h - pad / 2 - (h - pad) * i / 4;
    g.beginPath(); g.moveTo(pad + 30, y); g.lineTo(w, y); g.stroke();
    g.fillText((max * i / 4).toFixed(max >= 40 ? 0 : 1), 0, y + 6);
  }
  for (const [s, color] of lines) {
    g.strokeStyle = color; g.lineWidth = 3; g.beginPath();
    // An interval without a value (no commits) leaves a gap.
    let drawing = false;
    s.forEach((v, i) => {
      if (v == null) { drawing = false; return; }
      // The newest point at the right edge: 90 slots of 2 s, older ones to the left.
      const x = pad + 30 + (w - pad - 30) * (90 - s.length + i) / 89, y = h - pad / 2 - (h - pad) * v / max;
      drawing ? g.lineTo(x, y) : g.moveTo(x, y);
      drawing = true;
    });
    g.stroke();
  }
}
async function refresh() {
  await Promise.all([members(), brokerGroups(), topics(), groups(), charts()]);
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  document.body.dataset.loaded = "1";
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
"""#
