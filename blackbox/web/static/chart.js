/* Trend and comparison charts of the blackbox store pages, drawn with uPlot (vendored, MIT).
 *
 * Trend chart: the server returns min/max buckets (exact extremes, so no spike is lost), the
 * limits in force as segments, phases, alarms and excursions. Drawn: phases as shaded background,
 * standard range (L..H) green, warning zones (H..HH, LL..L) amber, beyond HH/LL red, the min..max
 * band and line, excursions as red marks along the top, alarms as vertical lines. Drag to zoom
 * (the zoomed window is fetched again at full resolution), buttons pan and reset.
 */
(function () {
  "use strict";
  var ZONE = { ok: "rgba(26,127,55,0.13)", warn: "rgba(210,140,0,0.18)", bad: "rgba(198,40,40,0.14)" };
  var PHASE = ["rgba(100,110,130,0.07)", "rgba(100,110,130,0.16)"];
  var ALARM = { raised: "#c62828", acknowledged: "#b26b00", cleared: "#1a7f37", shelved: "#6e40c9" };
  window.bbCharts = {};

  function width(el) { return Math.max(320, Math.min(el.clientWidth || 900, 1350)); }
  function sec(us) { return us / 1e6; }

  function tzDate(tz) {
    return function (ts) { return tz ? uPlot.tzDate(new Date(ts * 1e3), tz) : new Date(ts * 1e3); };
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  /* 24-hour times in the site's zone (uPlot's tzDate shifts the Date into it) */
  function timeFmt(tz, withDate) {
    var toDate = tzDate(tz);
    return function (ts) {
      if (ts == null) return "--";
      var d = toDate(ts), t = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
      return withDate ? d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + t : t;
    };
  }

  function drawBackground(u, meta) {
    var ctx = u.ctx, b = u.bbox, top = b.top, bottom = b.top + b.height;
    function x(us) { return Math.max(b.left, Math.min(b.left + b.width, u.valToPos(sec(us), "x", true))); }
    function y(v) { return Math.max(top, Math.min(bottom, u.valToPos(v, "y", true))); }
    ctx.save();
    meta.phases.forEach(function (p, i) {
      var x0 = x(p.start_us), x1 = x(p.end_us);
      ctx.fillStyle = PHASE[i % 2];
      ctx.fillRect(x0, top, x1 - x0, b.height);
      ctx.fillStyle = "#59636e";
      ctx.font = Math.round(11 * devicePixelRatio) + "px sans-serif";
      if (x1 - x0 > 30) ctx.fillText(p.phase, x0 + 4, top + 12 * devicePixelRatio);
    });
    meta.limits.forEach(function (s) {
      var x0 = x(s.start_us), x1 = x(s.end_us), w = x1 - x0;
      var hi = s.h != null ? s.h : s.hh, lo = s.l != null ? s.l : s.ll;
      var yTop = hi != null ? y(hi) : top, yBot = lo != null ? y(lo) : bottom;
      ctx.fillStyle = ZONE.ok; ctx.fillRect(x0, yTop, w, yBot - yTop);
      if (s.h != null) {  // warning zone above H: up to HH, or to the top
        var yhh = s.hh != null ? y(s.hh) : top;
        ctx.fillStyle = ZONE.warn; ctx.fillRect(x0, yhh, w, yTop - yhh);
        if (s.hh != null) { ctx.fillStyle = ZONE.bad; ctx.fillRect(x0, top, w, yhh - top); }
      } else if (s.hh != null) { ctx.fillStyle = ZONE.bad; ctx.fillRect(x0, top, w, yTop - top); }
      if (s.l != null) {
        var yll = s.ll != null ? y(s.ll) : bottom;
        ctx.fillStyle = ZONE.warn; ctx.fillRect(x0, yBot, w, yll - yBot);
        if (s.ll != null) { ctx.fillStyle = ZONE.bad; ctx.fillRect(x0, yll, w, bottom - yll); }
      } else if (s.ll != null) { ctx.fillStyle = ZONE.bad; ctx.fillRect(x0, yBot, w, bottom - yBot); }
    });
    ctx.restore();
  }

  function drawMarks(u, meta) {
    var ctx = u.ctx, b = u.bbox, top = b.top, bottom = b.top + b.height;
    function x(us) { return u.valToPos(sec(us), "x", true); }
    ctx.save();
    meta.excursions.forEach(function (e) {
      var x0 = x(e.start_us), x1 = Math.max(x(e.end_us), x0 + 3 * devicePixelRatio);
      ctx.fillStyle = "#c62828";
      ctx.fillRect(x0, top, x1 - x0, 5 * devicePixelRatio);
    });
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    ctx.lineWidth = devicePixelRatio;
    meta.alarms.forEach(function (a) {
      var xa = x(a.ts_us);
      if (xa < b.left || xa > b.left + b.width) return;
      ctx.strokeStyle = ALARM[a.transition] || "#c62828";
      ctx.beginPath(); ctx.moveTo(xa, top); ctx.lineTo(xa, bottom); ctx.stroke();
    });
    ctx.restore();
  }

  function yRange(meta) {
    return function (u, min, max) {
      var vals = [min, max];
      meta.limits.forEach(function (s) { [s.ll, s.l, s.h, s.hh].forEach(function (v) { if (v != null) vals.push(v); }); });
      vals = vals.filter(function (v) { return v != null && isFinite(v); });
      if (!vals.length) return [0, 1];
      var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals), pad = (hi - lo) * 0.08 || 1;
      return [lo - pad, hi + pad];
    };
  }

  function toData(meta) {
    return [meta.t.map(sec), meta.min, meta.max];
  }

  function trend(fig) {
    var src = fig.dataset.src, tz = fig.dataset.tz, plot = fig.querySelector(".plot");
    var state = { full: null, meta: null, u: null, loading: 0, zoomed: false };

    function load(fromUs, toUs, cb) {
      var url = src + (fromUs != null ? "&from_us=" + Math.floor(fromUs) + "&to_us=" + Math.ceil(toUs) : "");
      state.loading++;
      fetch(url, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) throw new Error(r.status);
        return r.json();
      }).then(function (meta) { state.loading--; cb(meta); }).catch(function (e) {
        state.loading--; fig.dataset.state = "error"; plot.textContent = "error " + e.message;
      });
    }

    function publish(meta) {
      state.meta = meta;
      fig.dataset.points = String(meta.t.length);
      fig.dataset.readings = String(meta.n_readings);
      fig.dataset.bands = String(meta.limits.length);
      fig.dataset.state = "ready";
      window.bbCharts[fig.dataset.tag] = state;
    }

    load(null, null, function (meta) {
      state.full = meta;
      fig.querySelector(".unit").textContent = meta.eng_unit ? "(" + meta.eng_unit + ")" : "";
      var span = [sec(meta.start_us), sec(meta.end_us)], short = timeFmt(tz, false), long = timeFmt(tz, true);
      var opts = {
        width: width(fig), height: 260, tzDate: tzDate(tz),
        scales: {
          x: { time: true, range: function (u, min, max) { return state.zoomed ? [min, max] : span; } },
          y: { range: yRange(meta) },
        },
        axes: [{ values: function (u, splits) { return splits.map(short); } }, {}],
        series: [
          { value: function (u, v) { return long(v); } },
          { label: "min", stroke: "#1f5fa8", width: 1, points: { show: meta.t.length < 200 } },
          { label: "max", stroke: "#1f5fa8", width: 1, points: { show: meta.t.length < 200 } },
        ],
        bands: [{ series: [2, 1], fill: "rgba(31,95,168,0.25)" }],
        cursor: { drag: { x: true, y: false } },
        hooks: {
          drawClear: [function (u) { drawBackground(u, state.meta || meta); }],
          draw: [function (u) { drawMarks(u, state.meta || meta); }],
          setSelect: [function (u) {
            if (u.select.width < 5) return;
            var a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ left: 0, width: 0 }, false);
            zoom(a * 1e6, b * 1e6);
          }],
        },
      };
      opts.cursor.drag.setScale = false;
      state.u = new uPlot(opts, toData(meta), plot);
      publish(meta);
    });

    function zoom(fromUs, toUs) {
      load(fromUs, toUs, function (meta) {
        meta.limits = state.full.limits; meta.phases = state.full.phases;
        meta.alarms = state.full.alarms;
        state.zoomed = true;
        state.u.setData(toData(meta), false);
        state.u.setScale("x", { min: sec(fromUs), max: sec(toUs) });
        publish(meta);
        fig.dataset.zoomed = "true";
      });
    }

    fig.querySelectorAll("button[data-act]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        if (!state.u) return;
        var act = btn.dataset.act, s = state.u.scales.x, w = (s.max - s.min);
        if (act === "reset") {
          state.zoomed = false;
          state.u.setData(toData(state.full), false);
          state.u.setScale("x", { min: sec(state.full.start_us), max: sec(state.full.end_us) });
          publish(state.full);
          fig.dataset.zoomed = "false";
        } else {
          var d = (act === "left" ? -0.5 : 0.5) * w;
          zoom((s.min + d) * 1e6, (s.max + d) * 1e6);
        }
      });
    });
  }

  function compare(fig) {
    var plot = fig.querySelector(".plot");
    fetch(fig.dataset.src, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
      var step = d.x.length > 1 ? d.x[1] - d.x[0] : 0.025;
      var opts = {
        width: width(fig), height: 320,
        scales: { x: { time: false, range: [0, d.phases.length] } },
        axes: [{ splits: function () { return d.phases.map(function (_, i) { return i + 0.5; }); },
                 values: function () { return d.phases; } }, {}],
        series: [
          {},
          { label: d.batch.batch, stroke: "#c62828", width: 2, spanGaps: true, points: { show: true, size: 5 } },
          { label: "mean", stroke: "#444", dash: [6, 4], width: 1, spanGaps: true },
          { label: "-k·sd", stroke: "#999", width: 1, spanGaps: true },
          { label: "+k·sd", stroke: "#999", width: 1, spanGaps: true },
        ],
        bands: [{ series: [4, 3], fill: "rgba(31,95,168,0.18)" }],
        hooks: {
          drawClear: [function (u) {
            var ctx = u.ctx, b = u.bbox;
            d.phases.forEach(function (_, i) {
              var x0 = u.valToPos(i, "x", true), x1 = u.valToPos(i + 1, "x", true);
              ctx.fillStyle = PHASE[i % 2]; ctx.fillRect(x0, b.top, x1 - x0, b.height);
            });
            d.deviations.forEach(function (v) {
              var x0 = u.valToPos(v.from_x - step / 2, "x", true), x1 = u.valToPos(v.to_x + step / 2, "x", true);
              ctx.fillStyle = "rgba(198,40,40,0.18)"; ctx.fillRect(x0, b.top, x1 - x0, b.height);
            });
          }],
        },
      };
      var u = new uPlot(opts, [d.x, d.this, d.mean, d.lower, d.upper], plot);
      fig.dataset.points = String(d.this.filter(function (v) { return v != null; }).length);
      fig.dataset.state = "ready";
      window.bbCharts.compare = { u: u, meta: d };
    }).catch(function (e) { fig.dataset.state = "error"; plot.textContent = "error " + e.message; });
  }

  var printButton = document.getElementById("print");
  if (printButton) printButton.addEventListener("click", function () { window.print(); });
  document.querySelectorAll("figure.chart[data-tag]").forEach(trend);
  document.querySelectorAll("figure.chart.compare").forEach(compare);
})();
