// BlueWave metrics dashboard: live updates over Server-Sent Events.
// The charts are drawn by the server as SVG; this script only appends new readings to each
// chart's dashed "live" line and updates the latest-values table. Without it the page works,
// without live updates.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  if (!status || !window.EventSource) { return; }
  var source = new EventSource(status.getAttribute("data-src"));
  var SVG = "http://www.w3.org/2000/svg";

  function say(text) { status.textContent = text; }

  function liveLine(chart, buoy) {
    var groups = chart.querySelectorAll("g.series");
    for (var i = 0; i < groups.length; i++) {
      if (groups[i].getAttribute("data-buoy") === buoy) { return groups[i].querySelector("polyline.live"); }
    }
    var g = document.createElementNS(SVG, "g");
    g.setAttribute("class", "series");
    g.setAttribute("data-buoy", buoy);
    g.setAttribute("stroke", "#000000");
    g.setAttribute("fill", "#000000");
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "live");
    line.setAttribute("fill", "none");
    line.setAttribute("points", "");
    g.appendChild(line);
    chart.appendChild(g);
    return line;
  }

  function place(reading) {
    var chart = document.querySelector("svg.chart[data-metric=\"" + reading.metric + "\"]");
    if (!chart) { return false; }
    var num = function (name) { return parseFloat(chart.getAttribute("data-" + name)); };
    var ms = reading.ts / 1e6;
    var start = num("start-ms"), end = num("axis-end-ms"), low = num("low"), high = num("high");
    if (ms < start || ms > end) { return false; }
    var x = num("left") + (ms - start) / (end - start) * (num("right") - num("left"));
    var v = Math.min(Math.max(reading.value, low), high);
    var y = num("top") + (high - v) / (high - low) * (num("bottom") - num("top"));
    var line = liveLine(chart, reading.buoy);
    var points = line.getAttribute("points");
    line.setAttribute("points", (points ? points + " " : "") + x.toFixed(2) + "," + y.toFixed(2));
    // A dot on the newest point (a line of one point draws nothing). Values outside the
    // chart's value range are drawn at its edge; a reload rescales.
    var dot = line.parentNode.querySelector("circle.newest");
    if (!dot) {
      dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("class", "newest");
      dot.setAttribute("r", "3");
      line.parentNode.appendChild(dot);
    }
    dot.setAttribute("cx", x.toFixed(2));
    dot.setAttribute("cy", y.toFixed(2));
    return true;
  }

  function latest(reading) {
    var item = document.querySelector("li[data-latest=\"" + reading.buoy + "/" + reading.metric + "\"]");
    if (!item) { return; }
    var value = item.querySelector(".value");
    var time = item.querySelector(".ts");
    if (value) { value.textContent = String(reading.value); }
    if (time) { time.textContent = new Date(reading.ts / 1e6).toISOString(); }
  }

  source.addEventListener("open", function () { say("Live updates on."); });
  source.addEventListener("reading", function (message) {
    var readings = JSON.parse(message.data);
    var outside = 0;
    for (var i = 0; i < readings.length; i++) {
      if (!place(readings[i])) { outside++; }
      latest(readings[i]);
    }
    say("Live updates on; last reading " + new Date(readings[readings.length - 1].ts / 1e6).toISOString() +
        (outside ? ". Some readings are past the chart's end: reload to see them." : "."));
  });
  source.addEventListener("end", function (message) {
    source.close();
    say(message.data === "session" ? "Live updates stopped: your session ended. Sign in again."
      : message.data === "plan" ? "Live updates stopped: your plan no longer covers these buoys."
      : "Live updates stopped. Reload the page to start them again.");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) { say("Live updates stopped. Reload the page to start them again."); }
    else { say("Live updates reconnecting…"); }
  });
})();
