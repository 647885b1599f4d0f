// Live status for the hosted page: server-sent events, polling when the stream fails.
(function () {
  "use strict";
  var body = document.body;
  var id = body.dataset.session;
  var embed = body.dataset.embed === "true";
  // Count down in server time, so a wrong phone clock cannot expire a live session.
  var skew = Number(body.dataset.serverTime) * 1000 - Date.now();
  var expires = Number(body.dataset.expires) * 1000;
  var last = "";
  var redirecting = false;
  var source = null;
  var finished = false;
  var lastView = null;
  var lastLate = false;

  function timeUp(view) {
    return (view && view.time_up) || expires - (Date.now() + skew) <= 0;
  }

  function post(type, extra) {
    if (!embed || window.parent === window) return;
    var msg = { type: "checkout." + type, session: id };
    for (var k in extra || {}) msg[k] = extra[k];
    window.parent.postMessage(msg, "*");
  }

  function show(state, late) {
    document.querySelectorAll("[data-state]").forEach(function (el) {
      el.hidden = el.dataset.state !== state;
    });
    // Past expires_at the address is hidden: the session only waits for payments made in time.
    var open = !late && (state === "Pending" || state === "Confirming" || state === "Underpaid");
    document.querySelectorAll("[data-open]").forEach(function (el) { el.hidden = !open; });
  }

  function apply(view) {
    lastView = view;
    var confirming = null;
    (view.transactions || []).forEach(function (t) { if (t.status === "Unconfirmed" && !t.late) confirming = t; });
    var state = view.status;
    if (view.expires_at) expires = Date.parse(view.expires_at);
    var late = timeUp(view);
    if (state === "Pending" && confirming) state = "Confirming";
    else if (late && (state === "Pending" || state === "Underpaid")) state = "TimeUp";
    document.querySelectorAll('[data-bind="amount_due"]').forEach(function (el) { el.textContent = view.amount_due; });
    document.querySelectorAll('[data-bind="confirmations"]').forEach(function (el) {
      el.textContent = confirming && confirming.confirmations != null ? confirming.confirmations : 0;
    });
    if (state === last && late === lastLate) return;
    if (state !== last && (state === "Confirming" || (state === "Underpaid" && last !== ""))) post("payment_detected", { status: view.status });
    last = state;
    lastLate = late;
    body.dataset.status = view.status;
    show(state, late);
    var final = state === "Paid" || state === "Overpaid" || state === "Expired" || state === "Blocked";
    finished = final;
    if (final && source) { source.close(); source = null; }
    if (state === "Paid" || state === "Overpaid") {
      post("paid", { status: view.status });
      // Embedded, the parent page decides where to go (it gets checkout.paid).
      if (!redirecting && !embed) {
        redirecting = true;
        setTimeout(function () { window.location.assign(view.success_url); }, 4000);
      }
    } else if (state === "Expired") {
      post("expired", {});
    }
    resize();
  }

  function resize() { post("resize", { height: document.documentElement.scrollHeight }); }

  function tick() {
    var el = document.getElementById("countdown");
    if (!el) return;
    var left = Math.max(0, Math.floor((expires - (Date.now() + skew)) / 1000));
    if (left === 0 && !finished) apply(lastView || { status: body.dataset.status, expires_at: new Date(expires).toISOString() });
    var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
    el.textContent = (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(s).padStart(2, "0");
  }

  function poll() {
    fetch("/v1/checkout/sessions/" + id + "/view", { cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) { if (v) apply(v); })
      .catch(function () {})
      .then(function () { if (!finished) setTimeout(poll, 3000); });
  }

  function stream() {
    if (!window.EventSource) return poll();
    var es = (source = new EventSource("/v1/checkout/sessions/" + id + "/events"));
    var failures = 0;
    es.addEventListener("session", function (e) { failures = 0; apply(JSON.parse(e.data)); });
    es.onerror = function () {
      // A refused stream (429: too many open from this address) is closed for good: poll.
      if (source && (es.readyState === EventSource.CLOSED || ++failures >= 3)) {
        es.close(); source = null; poll();
      }
    };
  }

  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var el = document.getElementById(button.dataset.copy);
      var label = button.textContent;
      var done = function () {
        button.textContent = body.dataset.copied;
        setTimeout(function () { button.textContent = label; }, 1500);
      };
      if (navigator.clipboard) navigator.clipboard.writeText(el.textContent).then(done, function () { selectText(el); });
      else { selectText(el); document.execCommand("copy"); done(); }
    });
  });

  // The merchant's logo replaces the initial once it has loaded.
  document.querySelectorAll("img.logo").forEach(function (img) {
    var swap = function () {
      img.hidden = false;
      if (img.previousElementSibling) img.previousElementSibling.hidden = true;
    };
    if (img.complete && img.naturalWidth > 0) swap();
    else img.addEventListener("load", swap);
  });

  tick();
  setInterval(tick, 1000);
  stream();
  post("ready", { status: body.dataset.status });
  resize();
})();
