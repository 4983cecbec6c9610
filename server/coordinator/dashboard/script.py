"""The console's one script, served from ``/dashboard.js``: live summaries by polling.

An active run's page carries ``data-live-url`` (a small JSON summary whose size does not
grow with the rounds); the script fetches it every ``POLL_S`` seconds and updates the
``data-live`` fields in place, instead of reloading the page. When new rounds arrive it
says so and offers to reload the charts; when the run ends it stops polling.

The runs overview carries ``data-overview-url``: the script asks it for the runs the page
shows as active (``?run=ID&...``) and rewrites the fleet totals and those runs' status,
progress, accuracy and finish cells in place; it says when new runs exist, and stops once
no shown run is active. Pages work without it (every figure is server-rendered).
"""

POLL_S = 5

SCRIPT = """'use strict';
(function () {
  var ACTIVE = ['queued', 'pending', 'running'];
  function isActive(status) { return ACTIVE.indexOf(status) >= 0; }
  function watch(url, show) {
    var timer = null;
    function poll() {
      fetch(url(), {credentials: 'same-origin', headers: {'Accept': 'application/json'}})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) { if (s && show(s) === false) { window.clearInterval(timer); } })
        .catch(function () {});
    }
    timer = window.setInterval(poll, __POLL_MS__);
    poll();
  }
  function notice(id, text) {
    var p = document.getElementById(id);
    var t = document.getElementById(id + '-text');
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
  function setBadge(el, status) {
    var badge = el ? el.querySelector('.badge') : null;
    if (badge) { badge.className = 'badge ' + status; badge.textContent = status; }
    else if (el) { el.textContent = status; }
  }
  function setProgress(el, current, rounds) {
    var bar = el ? el.querySelector('progress') : null;
    var count = el ? el.querySelector('.progress-text') : null;
    if (bar && count) {
      bar.max = Math.max(rounds, 1);
      bar.value = Math.min(current, rounds);
      count.textContent = current + ' / ' + rounds;
    } else if (el) { el.textContent = current + ' / ' + rounds; }
  }
  function polled(el) {
    el.setAttribute('data-polled', String(Number(el.getAttribute('data-polled') || 0) + 1));
  }
  function runPage(box) {
    var shownRound = Number(box.getAttribute('data-round'));
    function field(name) { return box.querySelector('[data-live="' + name + '"]'); }
    function set(name, text) { var el = field(name); if (el) { el.textContent = text; } }
    function show(s) {
      setBadge(field('status'), s.status);
      setProgress(field('progress'), s.current_round, s.rounds);
      set('queue', s.queue_position === null ? '\\u2014' :
          '#' + s.queue_position + ' in the queue');
      set('accuracy', s.latest_accuracy === null ? '\\u2014' :
          (100 * s.latest_accuracy).toFixed(1) + '%');
      set('finished', s.finished_at === null ? '\\u2014' :
          s.finished_at.replace('T', ' ').slice(0, 19) + ' UTC');
      set('energy', si(s.energy_j, 'J'));
      set('uplink', si(s.uplink_bytes, 'B'));
      set('downlink', si(s.downlink_bytes, 'B'));
      box.setAttribute('data-status', s.status);
      polled(box);
      if (s.current_round !== shownRound) {
        notice('live-notice',
          (s.current_round - shownRound) + ' new round(s) recorded since this page loaded.');
      }
      if (!isActive(s.status)) {
        notice('live-notice', 'The run is ' + s.status + '.');
        return false;
      }
      return true;
    }
    var url = box.getAttribute('data-live-url');
    watch(function () { return url; }, show);
  }
  function overview(box) {
    var base = box.getAttribute('data-overview-url');
    var shownCount = Number(box.getAttribute('data-count'));
    function activeRows() {
      return Array.prototype.filter.call(box.querySelectorAll('tr.run-row'), function (row) {
        return isActive(row.getAttribute('data-status'));
      });
    }
    function url() {
      return base + '?' + activeRows().map(function (row) {
        return 'run=' + encodeURIComponent(row.getAttribute('data-run'));
      }).join('&');
    }
    function showRun(r) {
      var row = box.querySelector('tr.run-row[data-run="' + r.id + '"]');
      if (!row) { return; }
      row.setAttribute('data-status', r.status);
      setBadge(row.querySelector('[data-field="status"]'), r.status);
      setProgress(row.querySelector('[data-field="progress"]'), r.current_round, r.rounds);
      row.querySelector('[data-field="accuracy"]').textContent = r.accuracy;
      row.querySelector('[data-field="finished"]').textContent = r.finished;
    }
    function show(s) {
      Object.keys(s.stats).forEach(function (id) {
        var value = document.querySelector('#' + id + ' .value');
        if (value) { value.textContent = s.stats[id]; }
      });
      s.runs.forEach(showRun);
      polled(box);
      if (s.count > shownCount) {
        notice('overview-notice', (s.count - shownCount) + ' new run(s) since this page loaded.');
      }
      return activeRows().length > 0;
    }
    if (activeRows().length > 0) { watch(url, show); }
  }
  var run = document.querySelector('[data-live-url]');
  if (run) { runPage(run); }
  var list = document.querySelector('[data-overview-url]');
  if (list) { overview(list); }
})();
""".replace("__POLL_MS__", str(POLL_S * 1000))
