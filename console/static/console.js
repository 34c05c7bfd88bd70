// Renders the plotly figures of a page. Figures come as JSON in
// <script type="application/json" id=...> blocks (data, not code), so the
// Content-Security-Policy can allow scripts from this server only.
"use strict";
document.querySelectorAll("[data-figure]").forEach(function (el) {
  var source = document.getElementById(el.getAttribute("data-figure"));
  if (!source || !window.Plotly) { return; }
  var figure = JSON.parse(source.textContent);
  window.Plotly.newPlot(el, figure.data, figure.layout,
    { displaylogo: false, displayModeBar: false, responsive: true });
});
