// Live updates of the web UI: polls the JSON API (the page itself works without this file).
// The overview redraws its counters and charts from /api/v1/status; other pages reload
// their <main> from the server every few seconds. Nothing is fetched from elsewhere.
(function () {
  "use strict";
  var page = document.body.getAttribute("data-page");
  var POLL_MS = 1000;

  function fmt(v) {
    if (v === null || v === undefined) { return "-"; }
    if (typeof v === "number") {
      return Number.isInteger(v) ? v.toLocaleString("en-US")
        : v.toLocaleString("en-US", {minimumFractionDigits: 1, maximumFractionDigits: 1});
    }
    return String(v);
  }
  function short(v) { return v >= 1000 ? Math.round(v).toLocaleString("en-US") : (v % 1 ? v.toFixed(1) : String(v)); }

  function drawTimeline(svg, values) {
    var w = +svg.dataset.w, h = +svg.dataset.h, left = +svg.dataset.left, bottom = +svg.dataset.bottom, top = +svg.dataset.top;
    var ys = values.map(function (v) { return v === null ? 0 : v; });
    var max = Math.max.apply(null, ys.concat([0])) || 1;
    var pw = w - left, ph = h - bottom - top, n = ys.length;
    var pts = ys.map(function (y, i) {
      var x = left + (n > 1 ? i * pw / (n - 1) : pw / 2);
      return x.toFixed(1) + "," + (top + ph - y / max * ph).toFixed(1);
    }).join(" ");
    svg.querySelector("polyline").setAttribute("points", pts);
    var clean = values.filter(function (v) { return v !== null; });
    var mean = clean.length ? clean.reduce(function (a, b) { return a + b; }, 0) / clean.length : 0;
    var my = (top + ph - mean / max * ph).toFixed(1);
    var line = svg.querySelector(".meanline");
    line.setAttribute("y1", my); line.setAttribute("y2", my);
    var unit = svg.dataset.unit;
    svg.querySelector(".ymax").textContent = short(max);
    svg.querySelector(".mean").textContent = "avg " + short(mean) + " " + unit;
    svg.querySelector(".count").textContent = n + " batches";
    var avg = document.querySelector('[data-avg="' + svg.dataset.metric + '"]');
    if (avg) { avg.textContent = "avg " + fmt(clean.length ? mean : null) + " " + unit; }
  }

  function drawHistogram(svg, values) {
    var bins = +svg.dataset.bins, w = +svg.dataset.w, h = +svg.dataset.h, bottom = +svg.dataset.bottom, top = +svg.dataset.top;
    var clean = values.filter(function (v) { return v !== null; });
    var max = Math.max.apply(null, clean.concat([0]));
    var counts = [];
    for (var i = 0; i < bins; i++) { counts.push(0); }
    clean.forEach(function (v) { counts[max <= 0 ? bins - 1 : Math.min(bins - 1, Math.floor(v / max * bins))]++; });
    var most = Math.max.apply(null, counts) || 1, ph = h - bottom - top;
    var rects = svg.querySelectorAll("rect.bar");
    counts.forEach(function (c, k) {
      var r = rects[k]; if (!r) { return; }
      var bh = c / most * ph;
      r.setAttribute("y", (top + ph - bh).toFixed(1)); r.setAttribute("height", bh.toFixed(1));
    });
    svg.querySelector(".hmax").textContent = short(max) + " " + svg.parentNode.parentNode.querySelector("svg.timeline").dataset.unit;
  }

  function setState(status) {
    document.querySelectorAll('[data-field]').forEach(function (el) {
      var key = el.getAttribute("data-field");
      if (key in status) { el.textContent = fmt(status[key]); }
    });
    var badge = document.getElementById("job-state");
    if (badge) { badge.className = "state state-" + status.state.replace(/ /g, "-"); }
    var box = document.getElementById("job-error");
    if (status.error && !box) {
      box = document.createElement("div"); box.className = "error"; box.id = "job-error";
      var pre = document.createElement("pre"); pre.textContent = status.error;
      var strong = document.createElement("strong"); strong.textContent = "Job " + status.state + ":";
      box.appendChild(strong); box.appendChild(pre);
      document.getElementById("live").insertBefore(box, document.getElementById("live").firstChild);
    }
  }

  function cell(text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) { td.className = cls; } return td; }

  function fillBatches(table, batches) {
    if (!table) { return; }
    var body = table.querySelector("tbody"), cols = table.querySelectorAll("th").length;
    body.textContent = "";
    if (!batches.length) { var tr0 = document.createElement("tr"); var td0 = cell("no batches", "empty"); td0.colSpan = cols; tr0.appendChild(td0); body.appendChild(tr0); return; }
    batches.forEach(function (b) {
      var tr = document.createElement("tr"), td = document.createElement("td"), a = document.createElement("a");
      a.href = "/batches/" + b.id; a.textContent = b.time; td.appendChild(a); tr.appendChild(td);
      [b.records, b.input_rate, b.scheduling_delay_ms, b.processing_ms, b.total_delay_ms].forEach(function (v) { tr.appendChild(cell(fmt(v))); });
      tr.appendChild(cell((b.output_operations - b.failed_output_operations) + "/" + b.output_operations));
      var st = document.createElement("td"), span = document.createElement("span");
      span.className = "status status-" + b.status; span.textContent = b.status; st.appendChild(span);
      if (b.failure) { st.appendChild(document.createElement("br")); var f = document.createElement("span"); f.className = "failure"; f.textContent = b.failure; st.appendChild(f); }
      tr.appendChild(st); body.appendChild(tr);
    });
  }

  function getJSON(path) {
    return fetch(path, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error(path + ": HTTP " + r.status); }
      return r.json();
    });
  }

  function pollOverview() {
    return Promise.all([getJSON("/api/v1/status"), getJSON("/api/v1/batches")]).then(function (res) {
      var status = res[0], batches = res[1];
      setState(status);
      document.querySelectorAll("svg.timeline").forEach(function (svg) { drawTimeline(svg, status.timeline[svg.dataset.metric]); });
      document.querySelectorAll("svg.histogram").forEach(function (svg) { drawHistogram(svg, status.timeline[svg.dataset.metric]); });
      fillBatches(document.getElementById("recent-batches"), batches.recent);
    });
  }

  function pollBatches() {
    return Promise.all([getJSON("/api/v1/status"), getJSON("/api/v1/batches")]).then(function (res) {
      setState(res[0]);
      fillBatches(document.getElementById("active-batches"), res[1].active);
      fillBatches(document.getElementById("completed-batches"), res[1].completed);
      fillBatches(document.getElementById("failed-batches"), res[1].failed);
    });
  }

  // Inputs, checkpoint and batch pages: the server renders <main> again (same HTML as a reload).
  function pollPage() {
    return fetch(location.pathname, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (html) {
      var doc = new DOMParser().parseFromString(html, "text/html");
      var fresh = doc.getElementById("live"), here = document.getElementById("live");
      var open = Array.prototype.map.call(here.querySelectorAll("details[open]"), function (d, i) { return i; });
      if (fresh && here) { here.replaceWith(document.adoptNode(fresh)); }
      var badge = doc.getElementById("job-state"), mine = document.getElementById("job-state");
      if (badge && mine) { mine.className = badge.className; mine.textContent = badge.textContent; }
      if (open.length) { var ds = document.querySelectorAll("details"); open.forEach(function (i) { if (ds[i]) { ds[i].open = true; } }); }
    });
  }

  var poll = page === "overview" ? pollOverview : page === "batches" ? pollBatches : pollPage;
  var every = page === "overview" || page === "batches" ? POLL_MS : 3 * POLL_MS;
  function loop() {
    poll().catch(function () { /* the job may have exited: keep what is shown */ }).then(function () {
      setTimeout(loop, every);
    });
  }
  setTimeout(loop, every);
}());
