"""The console's one script, served from ``/dashboard.js``: live run summaries by polling.

An active run's page carries ``data-live-url`` (a small JSON summary whose size does not
grow with the rounds); the script fetches it every ``POLL_S`` seconds and updates the
``data-live`` fields in place, instead of reloading the page. When new rounds arrive it
says so and offers to reload the charts; when the run ends it stops polling. Pages work
without it (every figure is server-rendered).
"""

POLL_S = 5

SCRIPT = """'use strict';
(function () {
  var box = document.querySelector('[data-live-url]');
  if (!box) { return; }
  var url = box.getAttribute('data-live-url');
  var shownRound = Number(box.getAttribute('data-round'));
  var active = ['queued', 'pending', 'running'];
  var timer = null;
  function set(name, text) {
    var el = box.querySelector('[data-live="' + name + '"]');
    if (el) { el.textContent = text; }
  }
  function notice(text) {
    var p = document.getElementById('live-notice');
    var t = document.getElementById('live-notice-text');
    if (p && t) { t.textContent = text; p.hidden = false; }
  }
  function si(value, unit) {
    var prefixes = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
    for (var i = 0; i < prefixes.length; i++) {
      if (Math.abs(value) >= prefixes[i][0]) {
        return Number((value / prefixes[i][0]).toPrecision(3)) + ' ' + prefixes[i][1] + unit;
      }
    }
    return Number(value.toPrecision(3)) + ' ' + unit;
  }
  function show(s) {
    var badge = box.querySelector('[data-live="status"] .badge');
    if (badge) { badge.className = 'badge ' + s.status; badge.textContent = s.status; }
    else { set('status', s.status); }
    var bar = box.querySelector('[data-live="progress"] progress');
    var count = box.querySelector('[data-live="progress"] .progress-text');
    if (bar && count) {
      bar.max = Math.max(s.rounds, 1);
      bar.value = Math.min(s.current_round, s.rounds);
      count.textContent = s.current_round + ' / ' + s.rounds;
    } else { set('progress', s.current_round + ' / ' + s.rounds); }
    set('queue', s.queue_position === null ? '\\u2014' : '#' + s.queue_position + ' in the queue');
    set('accuracy', s.latest_accuracy === null ? '\\u2014' :
        (100 * s.latest_accuracy).toFixed(1) + '%');
    set('finished', s.finished_at === null ? '\\u2014' :
        s.finished_at.replace('T', ' ').slice(0, 19) + ' UTC');
    set('energy', si(s.energy_j, 'J'));
    set('uplink', si(s.uplink_bytes, 'B'));
    set('downlink', si(s.downlink_bytes, 'B'));
    box.setAttribute('data-status', s.status);
    box.setAttribute('data-polled', String(Number(box.getAttribute('data-polled') || 0) + 1));
    if (s.current_round !== shownRound) {
      notice((s.current_round - shownRound) + ' new round(s) recorded since this page loaded.');
    }
    if (active.indexOf(s.status) < 0) {
      notice('The run is ' + s.status + '.');
      window.clearInterval(timer);
    }
  }
  function poll() {
    fetch(url, {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s) { show(s); } })
      .catch(function () {});
  }
  timer = window.setInterval(poll, __POLL_MS__);
  poll();
})();
""".replace("__POLL_MS__", str(POLL_S * 1000))
