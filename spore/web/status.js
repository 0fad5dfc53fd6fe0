/* Spore status: refreshes the totals and the tunnels every 2 s from api/tunnels. */
"use strict";
(function () {
  var PERIOD = 2000;
  var UNITS = ["kB", "MB", "GB", "TB", "PB", "EB"];
  var COLUMNS = [
    ["Tunnel", "tunnel"], ["Port", "num port"], ["Open for", "num"], ["Forwarding", "num"],
    ["Pending", "num"], ["Visitors", "num"], ["From visitors", "num"], ["To visitors", "num"]
  ];
  var rows = document.getElementById("tunnels");
  var updated = document.getElementById("updated");
  var lost = document.getElementById("lost");
  var timer = null;
  var fetching = false;

  // A whole, non-negative number from a snapshot value, as _count does on the server.
  function count(value) {
    if (typeof value !== "number" || !isFinite(value)) return 0;
    return Math.max(0, Math.floor(value));
  }

  // The same text as format_bytes on the server: powers of 1000, halves rounded up.
  function formatBytes(value) {
    var n = count(value), unit = 1;
    if (n < 1000) return n + " B";
    for (var i = 0; i < UNITS.length; i++) {
      unit *= 1000;
      var tenths = Math.floor((n * 10 + unit / 2) / unit);
      if (tenths < 1000) return Math.floor(tenths / 10) + "." + (tenths % 10) + " " + UNITS[i];
      var whole = Math.floor((n + unit / 2) / unit);
      if (whole < 1000 || i === UNITS.length - 1) return whole + " " + UNITS[i];
    }
  }

  function formatDuration(value) {
    var s = count(value);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  function element(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function row(tunnel) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-port", String(count(tunnel.port)));
    var client = text(tunnel.client);
    var who = [];
    if (tunnel.name === null || tunnel.name === undefined) {
      who.push(element("span", "name unnamed", client));
    } else {
      who.push(element("span", "name", text(tunnel.name)), document.createTextNode(" "),
               element("span", "client", client));
    }
    var opened = element("time", "", formatDuration(tunnel.open_seconds));
    opened.setAttribute("datetime", text(tunnel.opened));
    opened.setAttribute("title", text(tunnel.opened));
    var values = [
      who, String(count(tunnel.port)), [opened], String(count(tunnel.visitors_forwarding)),
      String(count(tunnel.visitors_pending)), String(count(tunnel.visitors_total)),
      formatBytes(tunnel.bytes_from_visitors), formatBytes(tunnel.bytes_to_visitors)
    ];
    for (var i = 0; i < COLUMNS.length; i++) {
      var td = element("td", COLUMNS[i][1]);
      td.setAttribute("data-label", COLUMNS[i][0]);
      if (typeof values[i] === "string") {
        td.textContent = values[i];
      } else {
        for (var j = 0; j < values[i].length; j++) td.appendChild(values[i][j]);
      }
      tr.appendChild(td);
    }
    return tr;
  }

  function emptyRow() {
    var tr = element("tr", "empty");
    var td = element("td", "", "No tunnels open");
    td.setAttribute("colspan", String(COLUMNS.length));
    tr.appendChild(td);
    return tr;
  }

  function show(snapshot) {
    var server = snapshot.server || {};
    var totals = document.querySelectorAll("[data-total]");
    for (var i = 0; i < totals.length; i++) {
      var value = server[totals[i].getAttribute("data-total")];
      var bytes = totals[i].getAttribute("data-format") === "bytes";
      totals[i].textContent = bytes ? formatBytes(value) : String(count(value));
    }
    var tunnels = (Array.isArray(snapshot.tunnels) ? snapshot.tunnels : []).slice();
    tunnels.sort(function (a, b) { return count(a.port) - count(b.port); });
    var fresh = document.createDocumentFragment();
    for (var k = 0; k < tunnels.length; k++) fresh.appendChild(row(tunnels[k]));
    if (!tunnels.length) fresh.appendChild(emptyRow());
    while (rows.firstChild) rows.removeChild(rows.firstChild);
    rows.appendChild(fresh);
    document.getElementById("version").textContent = text(server.version);
    var uptime = document.getElementById("uptime");
    var up = (Date.parse(server.now) - Date.parse(server.started)) / 1000;
    uptime.textContent = isFinite(up) ? formatDuration(up) : "?";
    uptime.setAttribute("datetime", text(server.started));
    uptime.setAttribute("title", "since " + text(server.started));
  }

  function two(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function refresh() {
    timer = null;
    if (document.hidden) return;
    fetching = true;
    fetch("api/tunnels", {cache: "no-store", credentials: "same-origin", headers: {Accept: "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (snapshot) {
        show(snapshot);
        var now = new Date();
        updated.textContent = "updated " + [now.getHours(), now.getMinutes(), now.getSeconds()].map(two).join(":");
        lost.hidden = true;
      })
      .catch(function (error) {
        lost.title = String(error);
        lost.hidden = false;
      })
      .then(function () {
        fetching = false;
        timer = setTimeout(refresh, PERIOD);
      });
  }

  // A hidden tab does not poll; it catches up when it is shown again.
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null && !fetching) refresh();
  });
  refresh();
})();
