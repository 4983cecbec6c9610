"""The dashboard's stylesheet, served from ``/dashboard.css`` (kept in code: no data files)."""

STYLESHEET = """
:root { --fg: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f9fafb; --card: #ffffff;
        --accent: #2563eb; --ok: #15803d; --warn: #b45309; --bad: #b91c1c; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--fg); background: var(--bg); }
header.top { display: flex; align-items: center; gap: 16px; padding: 10px 24px;
             background: #111827; color: #f9fafb; }
header.top a { color: #f9fafb; text-decoration: none; font-weight: 600; }
header.top .spacer { flex: 1; }
header.top form { margin: 0; }
header.top button { background: transparent; color: #d1d5db; border: 1px solid #4b5563;
                    border-radius: 4px; padding: 3px 10px; cursor: pointer; }
main { max-width: 1400px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 12px; }
h2 { font-size: 16px; margin: 0 0 10px; }
a { color: var(--accent); }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
               padding: 14px 16px; margin: 0 0 16px; overflow-x: auto; }
.grid { display: grid; gap: 16px; margin-bottom: 16px;
        grid-template-columns: repeat(auto-fit, minmax(min(600px, 100%), 1fr)); }
.grid section.card { margin: 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line);
         vertical-align: top; }
th, td.num, td.nowrap { white-space: nowrap; }
th { font-weight: 600; color: #4b5563; font-size: 12px; text-transform: uppercase; }
td.wrap { white-space: normal; word-break: break-word; min-width: 200px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px;
         font-weight: 600; background: #e5e7eb; color: #374151; }
.badge.running, .badge.pending { background: #dbeafe; color: #1d4ed8; }
.badge.completed { background: #dcfce7; color: var(--ok); }
.badge.failed, .badge.interrupted { background: #fee2e2; color: var(--bad); }
.badge.stopped { background: #fef3c7; color: var(--warn); }
progress { width: 140px; height: 10px; vertical-align: middle; accent-color: var(--accent); }
meter { width: 160px; vertical-align: middle; }
.muted { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; padding: 12px 0; margin: 0; }
.error { color: var(--bad); }
dl.facts { display: grid; grid-template-columns: max-content 1fr max-content 1fr; gap: 4px 16px;
           margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; word-break: break-word; }
.stats { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 16px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
        padding: 10px 16px; min-width: 160px; }
.stat .value { font-size: 20px; font-weight: 600; }
.stat .label { color: var(--muted); font-size: 12px; }
svg.chart { display: block; max-width: 100%; height: auto; }
svg.chart text { font: 12px system-ui, sans-serif; }
svg.chart text:not(.cell-label) { fill: #374151; }
svg.chart .axis-label { font-weight: 600; fill: #4b5563; }
svg.chart .grid { stroke: #eef0f3; }
svg.chart .axis, svg.chart .tick-mark { stroke: #9ca3af; }
svg.chart .cell-label { font-size: 11px; pointer-events: none; }
svg.chart .marker:hover { r: 5; }
svg.chart g:hover > rect.cell { stroke: #111827; stroke-width: 1.5; }
code, pre { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; }
form.login { max-width: 440px; margin: 40px auto; }
form.login label { display: block; font-weight: 600; margin-bottom: 6px; }
form.login input[type=password] { width: 100%; padding: 8px; border: 1px solid #d1d5db;
                                  border-radius: 4px; font: inherit; }
form.login button { margin-top: 12px; padding: 8px 16px; border: 0; border-radius: 4px;
                    background: var(--accent); color: #fff; font: inherit; cursor: pointer; }
details summary { cursor: pointer; color: var(--accent); margin: 4px 0; }
tr.current td { background: #eff6ff; }
header.top nav { display: flex; flex-wrap: wrap; gap: 4px 14px; }
header.top nav a { font-weight: 500; color: #e5e7eb; }
header.top .brand { margin-right: 8px; }
a.skip { position: absolute; left: -9999px; top: 0; background: #fff; color: var(--accent);
         padding: 8px 12px; z-index: 10; }
a.skip:focus { left: 8px; top: 8px; }
:focus-visible { outline: 3px solid #f59e0b; outline-offset: 2px; }
main:focus { outline: none; }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 11px;
       font-weight: 600; text-transform: uppercase; letter-spacing: .02em;
       text-decoration: none; vertical-align: middle; }
.tag.measured { background: #dcfce7; color: #14532d; }
.tag.modelled { background: #fef3c7; color: #78350f; text-decoration: underline; }
.tag.computed { background: #e0e7ff; color: #312e81; }
.badge.queued { background: #ede9fe; color: #5b21b6; }
.badge.online { background: #dcfce7; color: var(--ok); }
.badge.offline { background: #e5e7eb; color: #374151; }
.notice { background: #eff6ff; border: 1px solid #bfdbfe; border-radius: 6px;
          padding: 8px 12px; }
.controls { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 12px 0; }
form.inline { display: inline; margin: 0; }
button, a.button { display: inline-block; padding: 6px 14px; border: 1px solid #1d4ed8;
                   border-radius: 4px; background: var(--accent); color: #fff; font: inherit;
                   cursor: pointer; text-decoration: none; }
#stop-submit { background: var(--bad); border-color: var(--bad); }
a.button { background: #fff; color: #1d4ed8; }
header.top button { background: transparent; color: #e5e7eb; border-color: #6b7280; }
.console-form { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr));
                gap: 12px 20px; align-items: start; }
.console-form > .error, .console-form > .buttons, .console-form > section,
.console-form > button, .field:has(textarea) { grid-column: 1 / -1; }
.field label { display: block; font-weight: 600; margin-bottom: 4px; }
.field input, .field select, .field textarea { width: 100%; padding: 6px 8px; font: inherit;
                                               border: 1px solid #9ca3af; border-radius: 4px; }
.field textarea { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.field.invalid input, .field.invalid select, .field.invalid textarea {
  border: 2px solid var(--bad); }
.field .help { color: var(--muted); font-size: 12px; margin: 4px 0 0; }
.field-error { color: var(--bad); font-weight: 600; margin: 4px 0 0; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px; align-items: center;
               margin-bottom: 12px; }
form.filters select { padding: 4px 6px; font: inherit; }
fieldset { border: 1px solid var(--line); border-radius: 6px; margin: 0 0 10px; }
label.pick { display: inline-block; margin: 4px 14px 4px 0; white-space: nowrap; }
li.rejection { margin-bottom: 6px; }
tr.rejected td { background: #fef2f2; }
tr.failed td { background: #fffbeb; }
@media (max-width: 800px) {
  main { padding: 12px; }
  dl.facts { grid-template-columns: max-content 1fr; }
  header.top { flex-wrap: wrap; padding: 10px 12px; }
  .stat { min-width: 140px; flex: 1; }
  th, td { padding: 4px 6px; }
}
"""
