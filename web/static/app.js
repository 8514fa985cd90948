// tenure's page behaviour: polling and what the page says while the server is away, the live
// title, a ticking clock, a tile's details as an overlay kept open across polls, and painting a big
// run's map. Everything shown comes from the server.
(function () {
  "use strict";
  var MAX_BACKOFF_MS = 2000; // an error answer is retried after 1 s, then every 2 s
  var SLACK_MS = 250; // htmx asks due() once a second: a retry due a little after a tick runs at that tick

  // Polling: htmx asks tenurePoll.due() before each 1 s tick. A server that does not answer at all
  // (killed, restarting) is tried again at every tick: a refused connection costs nothing, and a
  // restart is seen within a second of the server answering. One that answers with an error is
  // tried after 1 s, then every 2 s. Until an answer comes, the view is marked stale.
  var poll = {
    failures: 0,
    nextAt: 0,
    updatedAt: Date.now(), // when the server last answered (a 200 or a 304)
    stale: false,
    due: function () { return Date.now() >= this.nextAt; },
    failed: function (why, answered) {
      this.failures += 1;
      var delay = answered ? Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, this.failures - 1)) : 1000;
      this.nextAt = Date.now() + delay - SLACK_MS;
      markStale(why || "Connection lost");
    },
    answered: function () {
      this.failures = 0;
      this.nextAt = 0;
      this.updatedAt = Date.now();
      if (this.stale) { markFresh(); }
    },
  };
  window.tenurePoll = poll;

  // Said once to a screen reader when the connection goes and once when it is back; the notice on
  // screen counts the seconds in a part hidden from screen readers, so they are not told each second.
  function say(text) {
    var live = document.getElementById("tenure-live");
    if (!live) {
      live = document.createElement("p");
      live.id = "tenure-live";
      live.className = "visually-hidden";
      live.setAttribute("aria-live", "polite");
      document.body.appendChild(live);
    }
    live.textContent = text;
  }

  function span(text, attrs) {
    var el = document.createElement("span");
    el.textContent = text;
    Object.keys(attrs || {}).forEach(function (name) { el.setAttribute(name, attrs[name]); });
    return el;
  }

  function markStale(why) {
    var el = document.getElementById("connection");
    if (!poll.stale) {
      poll.stale = true;
      document.body.classList.add("stale");
      say(why + ": this view is not updating; it shows the run as it was at " +
          new Date(poll.updatedAt).toLocaleTimeString() + ". Retrying.");
    }
    if (!el || el.getAttribute("data-why") === why) { updateAgo(); return; }
    // Announced through #tenure-live, once: #connection has no live role, or every tick of the count would be.
    el.setAttribute("data-why", why);
    el.textContent = "";
    var ago = span("", { "data-ago": "" });
    var shown = span(" — last updated ", { "aria-hidden": "true" });
    shown.appendChild(ago);
    shown.appendChild(document.createTextNode(" ago. Retrying…"));
    el.appendChild(span(why));
    el.appendChild(shown);
    el.appendChild(span(": the view is not updating.", { "class": "visually-hidden" }));
    el.hidden = false;
    updateAgo();
  }

  function markFresh() {
    poll.stale = false;
    document.body.classList.remove("stale");
    var el = document.getElementById("connection");
    if (el) { el.hidden = true; el.removeAttribute("data-why"); }
    say("Connection back: the view is up to date.");
  }

  function updateAgo() {
    var el = document.querySelector("#connection [data-ago]");
    if (el) { el.textContent = formatAgo((Date.now() - poll.updatedAt) / 1000); }
  }

  function formatAgo(s) {
    var whole = Math.max(0, Math.round(s)), m = Math.floor(whole / 60);
    if (whole < 60) { return whole + " s"; }
    if (m < 60) { return m + " min " + (whole % 60) + " s"; }
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }

  function fromStatus(evt) {
    var elt = evt.detail && evt.detail.elt;
    return elt && elt.id === "status";
  }

  function syncTitle() {
    var status = document.getElementById("status");
    if (status && status.dataset.title) { document.title = status.dataset.title; }
  }

  // The elapsed clock ticks between polls from the server's own figure, so browser and server
  // clocks never need to agree. A 304 (served from cache) re-renders the same figure: keep the base.
  // While the view is stale the clock stops (the run's time is not known) and the notice counts.
  var clock = { value: null, at: 0 };
  function tick() {
    if (poll.stale) { updateAgo(); return; }
    var el = document.querySelector("[data-elapsed]");
    if (!el) { return; }
    var value = parseFloat(el.getAttribute("data-elapsed"));
    if (value !== clock.value) { clock.value = value; clock.at = performance.now(); }
    if (!el.hasAttribute("data-live")) { return; }
    el.textContent = formatSeconds(value + (performance.now() - clock.at) / 1000);
  }

  function formatSeconds(s) {
    if (s < 10) { return s.toFixed(1) + "s"; }
    var whole = Math.round(s), h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), sec = whole % 60;
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    if (h) { return h + "h " + pad(m) + "m"; }
    if (m) { return m + "m " + pad(sec) + "s"; }
    return sec + "s";
  }

  // A big run's map: one cell per task, painted from the server's string of one letter per task
  // (data-cells; data-codes names each letter's status). Status by colour and by shape: succeeded
  // solid, failed solid with a white cross, running a frame half filled, retrying a frame with a
  // dot, queued a pale square, cancelled a solid triangle. The legend's swatches use the same.
  function colour(status) {
    return getComputedStyle(document.documentElement).getPropertyValue("--st-" + status).trim() || "#999";
  }

  function drawCell(ctx, status, x, y, s, fill) {
    var line = Math.max(1, Math.floor(s / 5));
    ctx.fillStyle = fill;
    if (status === "succeeded") { ctx.fillRect(x, y, s, s); return; }
    if (status === "queued") { ctx.globalAlpha = 0.3; ctx.fillRect(x, y, s, s); ctx.globalAlpha = 1; return; }
    if (status === "cancelled") {
      ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + s, y + s); ctx.lineTo(x, y + s); ctx.closePath(); ctx.fill();
      return;
    }
    if (status === "failed") {
      ctx.fillRect(x, y, s, s);
      if (s >= 4) {
        ctx.strokeStyle = "#fff"; ctx.lineWidth = line; ctx.beginPath();
        ctx.moveTo(x + 1, y + 1); ctx.lineTo(x + s - 1, y + s - 1); ctx.moveTo(x + s - 1, y + 1); ctx.lineTo(x + 1, y + s - 1);
        ctx.stroke();
      }
      return;
    }
    // running and retrying: a frame
    ctx.fillRect(x, y, s, line); ctx.fillRect(x, y + s - line, s, line);
    ctx.fillRect(x, y, line, s); ctx.fillRect(x + s - line, y, line, s);
    if (status === "running") { ctx.fillRect(x, y + Math.floor(s / 2), s, Math.ceil(s / 2)); }
    else { var d = Math.max(1, Math.floor(s / 3)); ctx.fillRect(x + (s - d) / 2, y + (s - d) / 2, d, d); }
  }

  function mapGeometry(canvas, total) {
    var width = Math.max(120, Math.floor(canvas.parentElement.clientWidth || 600));
    var pitch = total > 40000 ? 4 : total > 10000 ? 6 : 8; // cell plus a gap, in CSS pixels
    var columns = Math.max(1, Math.floor(width / pitch));
    return { pitch: pitch, size: pitch - (pitch > 4 ? 2 : 1), columns: columns,
             width: columns * pitch, height: Math.ceil(total / columns) * pitch };
  }

  function paintMap() {
    var canvas = document.getElementById("map");
    if (!canvas || !canvas.getContext) { return; }
    var cells = canvas.getAttribute("data-cells") || "";
    var codes = JSON.parse(canvas.getAttribute("data-codes") || "{}");
    var g = mapGeometry(canvas, cells.length), ratio = window.devicePixelRatio || 1;
    var w = Math.round(g.width * ratio), h = Math.round(g.height * ratio);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    canvas.style.width = g.width + "px";
    canvas.style.height = g.height + "px";
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, g.width, g.height);
    var fills = {};
    Object.keys(codes).forEach(function (letter) { fills[letter] = colour(codes[letter]); });
    for (var i = 0; i < cells.length; i++) {
      var letter = cells.charAt(i);
      drawCell(ctx, codes[letter] || "queued", (i % g.columns) * g.pitch, Math.floor(i / g.columns) * g.pitch,
               g.size, fills[letter] || "#999");
    }
    canvas.tenureMap = { geometry: g, cells: cells, codes: codes };
    var swatches = document.querySelectorAll("canvas.swatch[data-status]");
    for (var k = 0; k < swatches.length; k++) {
      var sw = swatches[k], sctx = sw.getContext("2d"), name = sw.getAttribute("data-status");
      sctx.clearRect(0, 0, sw.width, sw.height);
      drawCell(sctx, name, 1, 1, sw.width - 2, colour(name));
    }
  }

  // Which task a point of the map is: its number from 1, or 0 off the cells.
  function cellAt(canvas, evt) {
    var m = canvas.tenureMap;
    if (!m) { return 0; }
    var box = canvas.getBoundingClientRect();
    var col = Math.floor((evt.clientX - box.left) / m.geometry.pitch), row = Math.floor((evt.clientY - box.top) / m.geometry.pitch);
    var i = row * m.geometry.columns + col;
    return col >= 0 && col < m.geometry.columns && i >= 0 && i < m.cells.length ? i + 1 : 0;
  }

  function onMap(evt, open) {
    var canvas = evt.target;
    if (!canvas || canvas.id !== "map") { return; }
    var n = cellAt(canvas, evt);
    if (!n) { canvas.removeAttribute("title"); return; }
    if (open) { window.location.href = canvas.getAttribute("data-task-url").replace(/0$/, String(n)); return; }
    var m = canvas.tenureMap;
    canvas.title = "Task " + n + ": " + (m.codes[m.cells.charAt(n - 1)] || "?");
  }

  // A tile's details (<details class="tile">, its <dl class="more">) open as an overlay: absolutely
  // placed, so the grid never moves; kept inside the grid's width and the viewport (below the tile,
  // or above it when there is more room there, scrolling inside when taller). One is open at a time;
  // Escape or a click outside closes it and Escape gives the focus back to its tile. Native <details>
  // keeps Tab, Enter and Space, and the morph keeps "open" and the placement (the server renders
  // neither), so an open overlay survives each poll.
  var EDGE = 8, GAP = 5, PANEL_PX = 352;
  function place(tile) {
    var panel = tile.querySelector(":scope > .more");
    if (!panel || !tile.open) { return; }
    var box = tile.getBoundingClientRect(), grid = tile.closest(".grid-tiles");
    var area = grid ? grid.getBoundingClientRect() : { left: EDGE, right: window.innerWidth - EDGE };
    var left = Math.max(EDGE, area.left), right = Math.min(document.documentElement.clientWidth - EDGE, area.right);
    var width = Math.min(PANEL_PX, right - left), x = Math.max(left, Math.min(box.left, right - width));
    var s = panel.style;
    s.width = width + "px";
    s.left = Math.floor(x - box.left - tile.clientLeft) + "px"; // from the tile's padding edge, inside its border
    s.top = ""; s.bottom = ""; s.maxHeight = "";
    var height = panel.offsetHeight, vh = window.innerHeight;
    var below = vh - box.bottom - GAP - EDGE, above = box.top - GAP - EDGE;
    if (height <= below || below >= above) {
      s.maxHeight = Math.max(80, Math.floor(below)) + "px";
    } else {
      s.top = "auto";
      s.bottom = "calc(100% + " + GAP + "px)";
      s.maxHeight = Math.floor(above) + "px";
    }
  }

  function placeOpen() { document.querySelectorAll(".tile[open]").forEach(place); }

  function closeTile(tile, refocus) {
    tile.open = false;
    var summary = tile.querySelector(":scope > summary");
    if (refocus && summary) { summary.focus({ preventScroll: true }); }
  }

  function watchTiles() {
    // Placed as the tile opens, before the browser paints it (a mutation observer runs first).
    new MutationObserver(function (changes) {
      changes.forEach(function (change) {
        var tile = change.target;
        if (!tile.classList.contains("tile") || !tile.open) { return; }
        document.querySelectorAll(".tile[open]").forEach(function (other) {
          if (other !== tile) { closeTile(other, false); }
        });
        place(tile);
      });
    }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["open"] });
    document.addEventListener("keydown", function (evt) {
      if (evt.key !== "Escape") { return; }
      var focused = document.activeElement && document.activeElement.closest(".tile[open]");
      var tile = focused || document.querySelector(".tile[open]");
      if (tile) { evt.preventDefault(); closeTile(tile, true); }
    });
    document.addEventListener("click", function (evt) {
      var target = evt.target instanceof Element ? evt.target : null;
      document.querySelectorAll(".tile[open]").forEach(function (tile) {
        if (target && tile.contains(target)) { return; }
        // Back to its tile, unless the click went to something that takes the focus itself.
        closeTile(tile, !(target && target.closest("a[href], button, input, select, textarea, summary, [tabindex]")));
      });
    });
    window.addEventListener("resize", placeOpen);
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (window.htmx) {
      htmx.config.timeout = 5000; // a server that vanished mid-request counts as a failure
      // Never swap an error page or an empty 304 into the run page.
      htmx.config.responseHandling = [
        { code: "204", swap: false },
        { code: "304", swap: false },
        { code: "[23]..", swap: true },
        { code: "[45]..", swap: false, error: true },
        { code: "...", swap: false },
      ];
    }
    if (window.Idiomorph) {
      // A tile the reader opened stays open: the server never renders "open", so morphing
      // must not remove it.
      var callbacks = Idiomorph.defaults.callbacks;
      // Nor does it touch a canvas's size, which the page sets: the map is repainted, not blanked.
      callbacks.beforeAttributeUpdated = function (name, node) {
        if (node.tagName === "CANVAS" && (name === "width" || name === "height" || name === "style" || name === "title")) {
          return false;
        }
        // Nor the placement app.js gave an open tile's overlay.
        if (name === "style" && node.tagName === "DL" && node.classList.contains("more")) { return false; }
        return !(name === "open" && node.tagName === "DETAILS");
      };
    }
    document.body.addEventListener("htmx:sendError", function (evt) { if (fromStatus(evt)) { poll.failed(); } });
    document.body.addEventListener("htmx:timeout", function (evt) { if (fromStatus(evt)) { poll.failed(); } });
    document.body.addEventListener("htmx:responseError", function (evt) {
      if (!fromStatus(evt)) { return; }
      var text = (evt.detail.xhr && evt.detail.xhr.responseText || "").trim();
      var status = evt.detail.xhr ? evt.detail.xhr.status : "an error";
      var why = text && text.length < 300 ? "The server answered: " + text : "The server answered " + status;
      poll.failed(why, true);
    });
    document.body.addEventListener("htmx:afterRequest", function (evt) {
      if (fromStatus(evt) && evt.detail.xhr && evt.detail.xhr.status >= 200 && evt.detail.xhr.status < 400) {
        poll.answered();
      }
    });
    document.body.addEventListener("htmx:afterSwap", paintMap);
    document.body.addEventListener("htmx:afterSettle", function () { syncTitle(); tick(); placeOpen(); });
    document.body.addEventListener("mousemove", function (evt) { onMap(evt, false); });
    document.body.addEventListener("click", function (evt) { onMap(evt, true); });
    window.addEventListener("resize", paintMap);
    watchTiles();
    if (document.getElementById("status")) { say(""); } // the live region exists before anything is said in it
    syncTitle();
    tick();
    paintMap();
    setInterval(tick, 1000);
    // The start form: the chosen kind's description below its select (options show names only).
    var kind = document.querySelector("select[name=kind]"), help = document.getElementById("kind-help");
    if (kind && help) {
      kind.addEventListener("change", function () {
        help.textContent = kind.options[kind.selectedIndex].getAttribute("data-description") || "";
      });
    }
  });
})();
