// radarcam console: the little JS the pages need (live values, preview refresh, buttons).
// Loaded from /static under a CSP without inline scripts; builds DOM with textContent only.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  var T = {};
  try { T = JSON.parse(document.body.dataset.i18n || "{}"); } catch (e) { T = {}; }

  function get(obj, path) {
    return path.split(".").reduce(function (o, k) { return o == null ? undefined : o[k]; }, obj);
  }
  function num(v, digits) {
    return typeof v === "number" && isFinite(v) ? v.toFixed(digits) : "—";
  }
  function fmt(v, kind, node) {
    if (v === null || v === undefined) return "—";
    switch (kind) {
      case "kmh": return num(v, 1);
      case "bool": return v ? T.yes : T.no;
      case "gib": return (Number(v) / 1073741824).toFixed(1) + " GiB";
      case "c": return Number(v).toFixed(1) + " °C";
      case "tamper": return v ? node.dataset.open : node.dataset.closed;
      default: return String(v);
    }
  }
  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) throw new Error(j.error || String(r.status));
        return j;
      });
    });
  }
  function postJSON(url) {
    return fetch(url, { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf, Accept: "application/json" } })
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || j.detail || String(r.status)); return j; }); });
  }
  function showError(e) {
    var b = document.getElementById("daemon-error");
    if (!b) return;
    if (e) { b.hidden = false; b.textContent = T.daemon_unreachable + ": " + e.message; } else { b.hidden = true; }
  }

  function dashboard() {
    function status() {
      return getJSON("/api/status").then(function (s) {
        showError(null);
        document.querySelectorAll("[data-k]").forEach(function (n) { n.textContent = fmt(get(s, n.dataset.k), n.dataset.fmt, n); });
        var tamper = document.getElementById("tamper");
        if (tamper) tamper.classList.toggle("alarm", !!get(s, "tamper.open"));
        var ul = document.getElementById("components");
        if (ul && s.components) {
          ul.replaceChildren();
          Object.keys(s.components).forEach(function (name) {
            var c = s.components[name] || {};
            var li = el("li", "st-" + String(c.state || "unknown").replace(/[^a-z]/g, ""));
            li.append(el("b", null, name), " " + String(c.state || "?") + " ", el("small", null, c.detail || ""));
            ul.append(li);
          });
        }
      }).catch(showError);
    }
    function recent() {
      return getJSON("/api/recent").then(function (r) {
        var tb = document.getElementById("passes");
        tb.replaceChildren();
        (r.passes || []).forEach(function (p) {
          var tr = el("tr");
          [p.t_utc || "—", p.lane || "—", p.direction, num(p.peak_kmh, 1), num(p.median_kmh, 1), num(p.readings, 0),
            p.valid ? T.valid : T.invalid].forEach(function (x) { tr.append(el("td", null, x)); });
          tb.append(tr);
        });
        var ul = document.getElementById("violations");
        ul.replaceChildren();
        (r.violations || []).forEach(function (v) {
          var li = el("li");
          if (v.thumbnail_jpeg_b64) { var img = el("img"); img.alt = ""; img.src = "data:image/jpeg;base64," + v.thumbnail_jpeg_b64; li.append(img); }
          var d = el("div");
          d.append(el("b", "plate", v.plate ? v.plate.text : "—"), " ", el("span", "mono", v.plate ? v.plate.text_latin : ""), el("br"),
            num(v.speed_kmh, 1) + " / " + num(v.limit_kmh, 0) + " km/h · " + (v.lane || ""), el("br"),
            el("small", null, (v.t_utc || "") + (v.seq != null ? " · #" + v.seq : "")));
          li.append(d);
          ul.append(li);
        });
      }).catch(showError);
    }
    status(); recent();
    setInterval(status, 1000);
    setInterval(recent, 2000);
  }

  function aim() {
    var img = document.getElementById("preview");
    var age = document.getElementById("preview-age");
    var busy = false;
    function refresh() {
      if (busy) return;
      busy = true;
      var next = new Image();
      next.onload = function () { img.src = next.src; busy = false; if (age) age.textContent = new Date().toISOString().slice(11, 19); showError(null); };
      next.onerror = function () { busy = false; showError(new Error("preview")); };
      next.src = "/api/preview.jpg?t=" + Date.now();
    }
    setInterval(refresh, 700);
    var btn = document.getElementById("test-trigger");
    if (btn) btn.addEventListener("click", function () {
      var out = document.getElementById("trigger-result");
      out.replaceChildren(el("span", "muted", T.working));
      btn.disabled = true;
      postJSON("/api/test_trigger").then(function (r) {
        out.replaceChildren();
        if (r.thumbnail_jpeg_b64) { var i = el("img"); i.id = "trigger-image"; i.alt = ""; i.src = "data:image/jpeg;base64," + r.thumbnail_jpeg_b64; out.append(i); }
        out.append(el("p", null, T.ok + " · " + (r.t_utc || "")));
      }).catch(function (e) { out.replaceChildren(el("p", "error", T.failed + ": " + e.message)); })
        .then(function () { btn.disabled = false; });
    });
  }

  function site() {
    var input = document.querySelector("[data-cosine]");
    var helper = document.getElementById("cosine-helper");
    if (!input || !helper) return;
    function update() {
      var a = parseFloat(String(input.value).replace(",", "."));
      if (!isFinite(a) || a < 0 || a > 45) return;
      var reads = 100 * Math.cos(a * Math.PI / 180);
      helper.textContent = helper.dataset.template.replace("{angle}", String(a)).replace("{reads}", reads.toFixed(2));
    }
    input.addEventListener("input", update);
  }

  function uplink() {
    var btn = document.getElementById("uplink-test");
    if (!btn) return;
    btn.addEventListener("click", function () {
      var out = document.getElementById("uplink-test-result");
      out.textContent = T.working;
      btn.disabled = true;
      postJSON("/api/uplink_test").then(function (r) {
        out.textContent = (r.ok ? T.ok : T.failed) + ": " + r.detail;
        out.className = r.ok ? "ok" : "error";
      }).catch(function (e) { out.textContent = T.failed + ": " + e.message; out.className = "error"; })
        .then(function () { btn.disabled = false; });
    });
  }

  var pages = { dashboard: dashboard, aim: aim, site: site, uplink: uplink };
  var fn = pages[document.body.dataset.page];
  if (fn) fn();
})();
