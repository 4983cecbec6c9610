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
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; }
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
@media (max-width: 800px) {
  main { padding: 12px; }
  dl.facts { grid-template-columns: max-content 1fr; }
  header.top { flex-wrap: wrap; }
}
"""
