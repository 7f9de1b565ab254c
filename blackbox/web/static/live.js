/* Live view: the site's current batch, refreshed by server-sent events as sealed batches arrive. */
(function () {
  "use strict";
  var root = document.getElementById("live");
  if (!root) return;
  var tz = root.dataset.tz;
  var fmt = new Intl.DateTimeFormat("sv-SE", { timeZone: tz, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  function when(us) { return us == null ? "-" : fmt.format(new Date(us / 1000)); }
  function num(v) { return v == null ? "-" : (Math.round(v * 1000) / 1000).toString(); }
  function cell(tr, text, cls) { var td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
  function state(v, lim) {
    if (v == null || !lim) return "";
    if ((lim.hh != null && v > lim.hh) || (lim.ll != null && v < lim.ll)) return "bad";
    if ((lim.h != null && v > lim.h) || (lim.l != null && v < lim.l)) return "warn";
    return "ok";
  }
  function alarm(a, fresh) {
    var li = document.createElement("li");
    li.className = a.transition === "raised" ? "sev-failed" : (a.transition === "cleared" ? "sev-info" : "sev-incomplete");
    li.textContent = when(a.ts_us) + "  " + a.transition + "  " + (a.tag || "") + " " + (a.level || "") +
      " " + num(a.value) + (a.user ? "  (" + a.user + ")" : "");
    if (fresh) li.dataset.fresh = "true";
    var list = document.getElementById("live-alarms");
    list.insertBefore(li, list.firstChild);
  }
  var source = new EventSource(root.dataset.src);
  source.addEventListener("snapshot", function (ev) {
    var s = JSON.parse(ev.data), link = document.getElementById("live-batch");
    root.dataset.updates = String(Number(root.dataset.updates || 0) + 1);
    if (!s.batch) { link.textContent = "-"; return; }
    link.textContent = s.batch.batch;
    link.href = "/sites/" + encodeURIComponent(s.site) + "/batches/" + encodeURIComponent(s.batch.batch) +
      "?occurrence=" + s.batch.occurrence;
    root.dataset.batch = s.batch.batch;
    document.getElementById("live-product").textContent = s.batch.product || "";
    var body = document.querySelector("#live-values tbody");
    body.textContent = "";
    s.values.forEach(function (v) {
      var tr = document.createElement("tr");
      tr.dataset.tag = v.tag;
      cell(tr, v.tag); cell(tr, num(v.value), "n " + state(v.value, v.limits)); cell(tr, v.eng_unit || "");
      cell(tr, num(v.limits && v.limits.l)); cell(tr, num(v.limits && v.limits.h)); cell(tr, v.phase || "-");
      cell(tr, when(v.ts_us));
      body.appendChild(tr);
    });
    if (!root.dataset.alarmsShown || root.dataset.alarmsShown !== s.batch.batch) {
      document.getElementById("live-alarms").textContent = "";
      s.alarms.forEach(function (a) { alarm(a, false); });
      root.dataset.alarmsShown = s.batch.batch;
    }
  });
  source.addEventListener("alarm", function (ev) { alarm(JSON.parse(ev.data), true); });
})();
