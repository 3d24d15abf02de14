// Draws the overview's charts from the JSON in <script type="application/json" id="chart-data">.
// The same numbers are in the page's tables; without this script (or Chart.js) nothing is lost.
(function () {
  "use strict";
  var source = document.getElementById("chart-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var colours = { images: "#3b82f6", refusals: "#f59e0b", failures: "#ef4444", p50: "#10b981", p90: "#6366f1", p99: "#a855f7" };
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) { new Chart(canvas, config); }
  }

  draw("chart-days", {
    type: "bar",
    data: {
      labels: data.days.labels,
      datasets: [
        { label: "Images", data: data.days.images, backgroundColor: colours.images, stack: "day" },
        { label: "Refusals", data: data.days.refusals, backgroundColor: colours.refusals, stack: "day" },
        { label: "Failures", data: data.days.failures, backgroundColor: colours.failures, stack: "day" }
      ]
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } }
  });

  draw("chart-refusals", {
    type: "bar",
    data: { labels: data.refusals.labels, datasets: [{ label: "Refusals", data: data.refusals.counts, backgroundColor: colours.refusals }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } }
  });

  draw("chart-members", {
    type: "bar",
    data: { labels: data.members.labels, datasets: [{ label: "Images", data: data.members.images, backgroundColor: colours.images }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } }, scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } }
  });

  draw("chart-latency", {
    type: "bar",
    data: {
      labels: data.providers.labels,
      datasets: ["p50", "p90", "p99"].map(function (name) {
        return { label: name + " (s)", data: data.providers[name], backgroundColor: colours[name] };
      })
    },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: "seconds" } } } }
  });

  draw("chart-storage", {
    type: "bar",
    data: {
      labels: data.storage.users,
      datasets: [{
        label: "% of the per-member limit",
        data: data.storage.user_bytes.map(function (b) { return data.storage.user_limit ? Math.round(b / data.storage.user_limit * 1000) / 10 : 0; }),
        backgroundColor: colours.p90
      }]
    },
    options: { indexAxis: "y", scales: { x: { beginAtZero: true, suggestedMax: 100 } } }
  });
})();
