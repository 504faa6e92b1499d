// The dashboard's only script: polls /dashboard/data and redraws; sends requeue actions
// with the key the operator typed (kept in this tab's sessionStorage only).
"use strict";

(function () {
  const body = document.body;
  const refreshSeconds = Number(body.dataset.refreshSeconds) || 5;
  const KEY = "fetchfleet-key";
  const $ = (selector) => document.querySelector(selector);
  let renders = 0;
  let timer = null;
  let windowMinutes = 1440; // the charts' span: the last 24 hours, or the last hour
  let lastData = null;
  let refreshSaid = false; // the message is the last refresh's problem (cleared when one works)

  const key = () => sessionStorage.getItem(KEY) || "";
  const headers = () => (key() ? { Authorization: "Bearer " + key() } : {});

  function say(text, kind, fromRefresh = false) {
    refreshSaid = fromRefresh;
    const message = $("#message");
    message.textContent = text;
    message.className = kind || "";
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    return td;
  }

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  const ORDER = ["done", "duplicate", "leased", "queued", "retrying", "paused", "scheduled", "dead"];

  function progress(counts) {
    const bar = document.createElement("div");
    bar.className = "bar";
    const total = ORDER.reduce((sum, state) => sum + (counts[state] || 0), 0);
    for (const state of ORDER) {
      const n = counts[state] || 0;
      if (!n) continue;
      const part = document.createElement("span");
      part.style.width = (100 * n / total) + "%";
      part.style.background = "var(--" + (state === "scheduled" ? "queued" : state) + ")";
      part.title = state + ": " + n;
      part.dataset.state = state;
      bar.appendChild(part);
    }
    return bar;
  }

  function renderSites(sites) {
    const tbody = $("#sites tbody");
    tbody.replaceChildren();
    for (const site of sites) {
      const d = site.download;
      const row = tbody.insertRow();
      row.dataset.site = site.name;
      cell(row, site.name);
      row.insertCell().appendChild(progress(d));
      cell(row, (d.done || 0) + (d.duplicate || 0), "num done");
      cell(row, (d.queued || 0) + (d.scheduled || 0) + (d.paused || 0), "num queued");
      cell(row, d.leased || 0, "num leased");
      cell(row, d.retrying || 0, "num retrying");
      cell(row, d.dead || 0, "num dead");
      cell(row, site.in_flight + (site.max_in_flight ? " / " + site.max_in_flight : ""), "num in-flight");
      const m = site.metadata;
      cell(row, Object.keys(m).length ? Object.entries(m).map(([s, n]) => s + " " + n).join(", ") : "—", "metadata");
      const state = row.insertCell();
      if (site.paused) state.insertAdjacentHTML("beforeend", '<span class="badge paused">paused</span> ');
      if (site.cooldown_until) {
        const badge = document.createElement("span");
        badge.className = "badge cooling";
        const left = Math.max(0, Math.round((Date.parse(site.cooldown_until) - Date.now()) / 1000));
        badge.textContent = "cooling " + Math.floor(left / 60) + "m " + (left % 60) + "s";
        badge.title = site.cooldown_reason || "";
        state.appendChild(badge);
        if (site.cooldown_reason) state.appendChild(document.createTextNode(" " + site.cooldown_reason));
      }
      if (!site.configured) state.appendChild(document.createTextNode(" not configured"));
    }
  }

  function chart(svg, series, colours, format) {
    svg.replaceChildren();
    series = series.map((values) => values.slice(-windowMinutes));
    const width = series[0].length;
    svg.setAttribute("viewBox", "0 0 " + width + " 120");
    const height = 120;
    const totals = series[0].map((_, i) => series.reduce((sum, s) => sum + s[i], 0));
    const top = Math.max(1, ...totals);
    const ns = "http://www.w3.org/2000/svg";
    series.forEach((values, which) => {
      values.forEach((value, minute) => {
        if (!value) return;
        const below = series.slice(0, which).reduce((sum, s) => sum + s[minute], 0);
        const rect = document.createElementNS(ns, "rect");
        rect.setAttribute("x", minute);
        rect.setAttribute("width", Math.max(1, width / 240));
        rect.setAttribute("y", height - (below + value) / top * (height - 4));
        rect.setAttribute("height", value / top * (height - 4));
        rect.setAttribute("fill", colours[which]);
        svg.appendChild(rect);
      });
    });
    const peak = document.createElementNS(ns, "title");
    peak.textContent = "peak " + format(top) + " per minute";
    svg.appendChild(peak);
    svg.dataset.peak = String(top);
    svg.previousElementSibling.dataset.peak = format(top);
  }

  function renderThroughput(t) {
    chart($("#chart-done"), [t.downloads, t.metadata], ["var(--done)", "var(--leased)"], String);
    chart($("#chart-bytes"), [t.bytes], ["var(--queued)"], bytes);
    const sum = (values) => values.slice(-windowMinutes).reduce((a, b) => a + b, 0);
    const peak = (id) => " (peak " + $(id).previousElementSibling.dataset.peak + " a minute)";
    $("#done-total").textContent = sum(t.downloads) + " downloads, " + sum(t.metadata) + " metadata" + peak("#chart-done");
    $("#bytes-total").textContent = bytes(sum(t.bytes)) + peak("#chart-bytes");
  }

  function renderNodes(nodes) {
    const tbody = $("#nodes tbody");
    tbody.replaceChildren();
    for (const node of nodes) {
      const row = tbody.insertRow();
      row.dataset.node = node.name;
      const name = cell(row, node.name + (node.role === "admin" ? " (admin)" : ""));
      if (node.silent_minutes !== null) {
        name.insertAdjacentHTML("beforeend", ' <span class="badge silent"></span>');
        name.lastChild.textContent = "silent for " + node.silent_minutes + " min";
      }
      cell(row, node.version || "—");
      cell(row, ago(node.last_seen));
      cell(row, node.done_last_hour, "num");
      cell(row, bytes(node.bytes_last_hour), "num");
      cell(row, node.active_leases, "num");
    }
  }

  function renderErrors(errors) {
    const tbody = $("#errors tbody");
    tbody.replaceChildren();
    for (const error of errors) {
      const row = tbody.insertRow();
      cell(row, error.error_class);
      cell(row, error.error);
      cell(row, error.count, "num");
      cell(row, ago(error.last_seen));
    }
  }

  let shownDead = null; // the dead tasks the list shows, as JSON

  function renderDead(dead) {
    const tbody = $("#dead tbody");
    const same = JSON.stringify(dead);
    if (same === shownDead) {
      // the same tasks: keep the rows (a click in progress is not lost), refresh their ages
      tbody.querySelectorAll("td.when").forEach((td, i) => { td.textContent = ago(dead[i].last_error_at); });
      return;
    }
    shownDead = same;
    const checked = new Set([...tbody.querySelectorAll("input:checked")].map((box) => box.value));
    tbody.replaceChildren();
    for (const task of dead) {
      const row = tbody.insertRow();
      row.dataset.task = task.id;
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = task.id;
      box.checked = checked.has(String(task.id));
      box.setAttribute("aria-label", "select task " + task.id);
      row.insertCell().appendChild(box);
      cell(row, task.id, "num");
      cell(row, task.kind);
      cell(row, task.site);
      cell(row, task.remote_id || task.url);
      cell(row, task.last_error);
      cell(row, ago(task.last_error_at), "when");
    }
  }

  function render(data) {
    lastData = data;
    renderSites(data.sites);
    renderThroughput(data.throughput);
    const full = Boolean(data.full);
    document.querySelector(".only-with-key").hidden = !full;
    $("#needs-key").hidden = full;
    if (full) {
      renderNodes(data.nodes);
      renderErrors(data.errors);
      renderDead(data.dead);
    }
    renders += 1;
    body.dataset.renders = String(renders);
    body.dataset.generatedAt = data.generated_at;
    $("#updated").textContent = "updated " + new Date(data.generated_at).toLocaleTimeString();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const answer = await fetch("/dashboard/data", { headers: headers(), cache: "no-store" });
      if (answer.status === 401 || answer.status === 403) {
        const problem = await answer.json();
        say((problem.message || "refused") + (key() ? "" : ": enter a key above"), "error", true);
      } else if (!answer.ok) {
        say("the coordinator answered HTTP " + answer.status, "error", true);
      } else {
        render(await answer.json());
        if (refreshSaid) say("");
      }
    } catch (problem) {
      say("cannot reach the coordinator: " + problem.message, "error", true);
    }
    timer = setTimeout(refresh, refreshSeconds * 1000);
  }

  async function requeueSelected() {
    const ids = [...document.querySelectorAll("#dead tbody input:checked")].map((box) => Number(box.value));
    if (!ids.length) { say("select dead tasks to requeue first", "error"); return; }
    const answer = await fetch("/tasks/requeue", {
      method: "POST",
      headers: { ...headers(), "Content-Type": "application/json" },
      body: JSON.stringify({ task_ids: ids }),
    });
    const result = await answer.json();
    if (answer.ok) {
      say("requeued " + result.count + " task(s)", "ok");
      refresh();
    } else {
      say("requeue refused: " + (result.message || "HTTP " + answer.status), "error");
    }
  }

  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#key").value.trim();
    if (value) sessionStorage.setItem(KEY, value);
    $("#key").value = "";
    say(value ? "key in use for this tab" : "", "ok");
    refresh();
  });
  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    say("key forgotten", "ok");
    refresh();
  });
  $("#requeue-selected").addEventListener("click", requeueSelected);
  for (const button of document.querySelectorAll(".window button")) {
    button.addEventListener("click", () => {
      windowMinutes = Number(button.dataset.window);
      for (const other of document.querySelectorAll(".window button")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      if (lastData) renderThroughput(lastData.throughput);
    });
  }
  refresh();
})();
