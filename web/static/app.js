// tenure's page behaviour: poll backoff with a visible notice, the live title, a ticking clock,
// and keeping a tile's details open across polls. Everything shown comes from the server.
(function () {
  "use strict";
  var MAX_BACKOFF_MS = 15000;

  // Polling: htmx asks tenurePoll.due() before each 1 s tick; after failures it waits
  // 1, 2, 4, 8, 15 s between tries, and goes back to every second once the server answers.
  var poll = {
    failures: 0,
    nextAt: 0,
    due: function () { return Date.now() >= this.nextAt; },
    failed: function (why) {
      this.failures += 1;
      var delay = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, this.failures - 1));
      this.nextAt = Date.now() + delay;
      notice((why || "Connection lost") + " — retrying in " + Math.round(delay / 1000) + " s…");
    },
    answered: function () {
      if (this.failures) { notice(null); }
      this.failures = 0;
      this.nextAt = 0;
    },
  };
  window.tenurePoll = poll;

  function notice(text) {
    var el = document.getElementById("connection");
    if (!el) { return; }
    if (text) { el.textContent = text; el.hidden = false; } else { el.hidden = true; }
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
  var clock = { value: null, at: 0 };
  function tick() {
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
      callbacks.beforeAttributeUpdated = function (name, node) {
        return !(name === "open" && node.tagName === "DETAILS");
      };
    }
    document.body.addEventListener("htmx:sendError", function (evt) { if (fromStatus(evt)) { poll.failed(); } });
    document.body.addEventListener("htmx:timeout", function (evt) { if (fromStatus(evt)) { poll.failed(); } });
    document.body.addEventListener("htmx:responseError", function (evt) {
      if (!fromStatus(evt)) { return; }
      var text = (evt.detail.xhr && evt.detail.xhr.responseText || "").trim();
      poll.failed(text && text.length < 300 ? "The server answered: " + text : "The server answered " + evt.detail.xhr.status);
    });
    document.body.addEventListener("htmx:afterRequest", function (evt) {
      if (fromStatus(evt) && evt.detail.xhr && evt.detail.xhr.status >= 200 && evt.detail.xhr.status < 400) {
        poll.answered();
      }
    });
    document.body.addEventListener("htmx:afterSettle", function () { syncTitle(); tick(); });
    syncTitle();
    tick();
    setInterval(tick, 1000);
  });
})();
