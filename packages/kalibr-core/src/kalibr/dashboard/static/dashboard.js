// The goal page's two charts (uPlot), redrawn from series.json every two seconds while traffic flows.
(function () {
  "use strict";
  var section = document.getElementById("charts");
  if (!section || typeof uPlot === "undefined") return;
  var url = section.dataset.series;
  var palette = ["#0f766e", "#7c3aed", "#c2410c", "#2563eb", "#be123c", "#4d7c0f", "#a16207", "#475569"];
  var plots = {};
  var shape = "";

  function marksPlugin(marks) {
    return {
      hooks: {
        draw: function (u) {
          var ctx = u.ctx;
          ctx.save();
          ctx.font = 11 * devicePixelRatio + "px sans-serif";
          marks.forEach(function (mark) {
            var x = u.valToPos(mark.t, "x", true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
            ctx.strokeStyle = mark.kind.indexOf("drift") >= 0 ? "#b91c1c" : "#64748b";
            ctx.setLineDash([4 * devicePixelRatio, 4 * devicePixelRatio]);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.fillStyle = ctx.strokeStyle;
            ctx.fillText(mark.label, x + 4 * devicePixelRatio, u.bbox.top + 12 * devicePixelRatio);
          });
          ctx.restore();
        },
      },
    };
  }

  function options(title, data, target) {
    var width = Math.max(320, target.clientWidth || 600);
    return {
      width: width,
      height: 220,
      scales: { y: { range: [0, 1] } },
      axes: [{}, { values: function (u, ticks) { return ticks.map(function (v) { return Math.round(v * 100) + "%"; }); } }],
      series: [{}].concat(
        data.paths.map(function (path, i) {
          return {
            label: path.label,
            stroke: palette[i % palette.length],
            width: 2,
            spanGaps: title === "success",
            value: function (u, v) { return v == null ? "–" : (v * 100).toFixed(1) + "%"; },
          };
        })
      ),
      plugins: [marksPlugin(data.marks)],
    };
  }

  function draw(data) {
    var signature = data.paths.map(function (p) { return p.path_id; }).join(",") + "|" + data.marks.length;
    ["share", "success"].forEach(function (name) {
      var target = document.getElementById(name + "-chart");
      var rows = [data.t].concat(data.paths.map(function (p) { return p[name]; }));
      if (plots[name] && signature === shape) {
        plots[name].setData(rows);
        return;
      }
      if (plots[name]) plots[name].destroy();
      plots[name] = new uPlot(options(name, data, target), rows, target);
    });
    shape = signature;
    section.dataset.drawn = String(data.paths.length);
  }

  function refresh() {
    fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) { if (data) draw(data); });
  }

  refresh();
  setInterval(refresh, 2000);
})();
