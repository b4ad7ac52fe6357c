// Draws each <canvas data-chart="ID"> from the JSON in <script id="ID">, with Chart.js.
// The page reads fine without it: every chart has its figures in a table beside it.
(function () {
  "use strict";
  function start() {
    if (!window.Chart) return;
    var locale = document.body.getAttribute("data-locale") || "en";
    var number = new Intl.NumberFormat(locale);
    var compact = new Intl.NumberFormat(locale, { notation: "compact", maximumFractionDigits: 1 });
    var percent = new Intl.NumberFormat(locale, { style: "percent", maximumFractionDigits: 1 });
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.font.size = 12;
    Chart.defaults.color = "#5b6472";
    Chart.defaults.borderColor = "#eceef2";
    document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      var source = document.getElementById(canvas.getAttribute("data-chart"));
      if (!source) return;
      var spec = JSON.parse(source.textContent);
      var format = spec.percent ? percent.format : (spec.money ? compact.format : number.format);
      var line = spec.type === "line";
      var valueAxis = {
        beginAtZero: true,
        stacked: !!spec.stacked,
        ticks: { callback: function (v) { return format(v); }, maxTicksLimit: 6 },
        grid: { color: "#eceef2" },
        border: { display: false }
      };
      if (spec.percent) { valueAxis.suggestedMax = 1; }
      var labelAxis = {
        stacked: !!spec.stacked,
        grid: { display: false },
        ticks: { autoSkip: true, maxRotation: 0, autoSkipPadding: 12 }
      };
      new Chart(canvas, {
        type: spec.type,
        data: {
          labels: spec.labels,
          datasets: spec.series.map(function (s) {
            return {
              label: s.label,
              data: s.data,
              backgroundColor: line ? s.color + "22" : s.color,
              borderColor: s.color,
              borderWidth: line ? 2 : 0,
              borderRadius: line ? 0 : 4,
              maxBarThickness: 28,
              pointRadius: 0,
              pointHoverRadius: 4,
              tension: 0.25,
              fill: line
            };
          })
        },
        options: {
          indexAxis: spec.horizontal ? "y" : "x",
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          plugins: {
            legend: { display: spec.series.length > 1, position: "bottom", labels: { boxWidth: 10, boxHeight: 10, useBorderRadius: true, borderRadius: 2 } },
            tooltip: {
              callbacks: {
                label: function (ctx) {
                  var v = spec.horizontal ? ctx.parsed.x : ctx.parsed.y;
                  var shown = spec.percent ? percent.format(v) : number.format(v);
                  return " " + ctx.dataset.label + ": " + shown;
                }
              }
            }
          },
          scales: spec.horizontal ? { x: valueAxis, y: labelAxis } : { x: labelAxis, y: valueAxis }
        }
      });
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
