// dashboard.cpp - the page of GET /dashboard, kept here as one raw string literal.
//
// The page lives in this file so that the build embeds it with no generation
// step; edit it here. Its script reads the Prometheus text of /metrics rather
// than /stats because latency percentiles "over the last second" need the
// bucket counts, which only the text exposition carries. Its script uses
// block comments only, so the page holds no "//" at all (the unit test
// relies on that to prove there is no external URL).
#include "ops/dashboard.h"

namespace kiroku {
namespace {

constexpr std::string_view kPage = R"KIROKU(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kiroku</title>
<style>
  :root {
    --bg: #0d1117; --card: #161b22; --edge: #2a313c; --text: #e6edf3; --muted: #8d96a0;
    --good: #3fb950; --bad: #f85149; --warn: #d29922;
  }
  * { box-sizing: border-box; }
  html, body { margin: 0; height: 100%; background: var(--bg); color: var(--text);
    font: 14px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans",
      sans-serif; }
  body { display: flex; flex-direction: column; gap: 10px; padding: 10px 14px 8px; }
  header { display: flex; align-items: center; gap: 10px 14px; flex-wrap: wrap; }
  header h1 { margin: 0 6px 0 0; font-size: 21px; font-weight: 650; letter-spacing: 0.3px; }
  header h1 span { color: var(--muted); font-weight: 400; font-size: 15px; margin-left: 8px; }
  .pill { display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px;
    border: 1px solid var(--edge); border-radius: 999px; font-size: 13px; white-space: nowrap;
    font-variant-numeric: tabular-nums; }
  .pill::before { content: ""; width: 9px; height: 9px; border-radius: 50%;
    background: var(--muted); }
  .pill.good::before { background: var(--good); }
  .pill.bad { border-color: var(--bad); }
  .pill.bad::before { background: var(--bad); }
  .pill.plain::before { display: none; }
  header .spacer { flex: 1; }
  main { flex: 1; min-height: 0; display: grid; gap: 10px;
    grid-template-columns: repeat(3, minmax(0, 1fr));
    grid-template-rows: repeat(3, minmax(0, 1fr)); }
  .card { background: var(--card); border: 1px solid var(--edge); border-radius: 8px;
    padding: 8px 10px 6px; display: flex; flex-direction: column; min-width: 0; min-height: 0; }
  .head { display: flex; justify-content: space-between; align-items: flex-start; gap: 8px; }
  .title { font-size: 15px; font-weight: 600; }
  .note { font-size: 12px; color: var(--muted); white-space: nowrap; overflow: hidden;
    text-overflow: ellipsis; }
  .titles { min-width: 0; }
  .big { font-size: 28px; line-height: 1.05; font-weight: 650; white-space: nowrap;
    font-variant-numeric: tabular-nums; }
  .big small { font-size: 14px; font-weight: 500; color: var(--muted); margin-left: 4px; }
  .legend { display: flex; flex-wrap: wrap; gap: 2px 14px; margin: 4px 0 2px; font-size: 12.5px;
    color: var(--muted); font-variant-numeric: tabular-nums; }
  .legend i { display: inline-block; width: 12px; height: 3px; border-radius: 2px;
    vertical-align: middle; margin-right: 5px; }
  .legend b { color: var(--text); font-weight: 600; margin-left: 3px; }
  .plot { flex: 1; position: relative; min-height: 60px; }
  .plot canvas { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
  footer { font-size: 12px; color: var(--muted); }
  @media (max-width: 1000px) {
    main { grid-template-columns: repeat(2, minmax(0, 1fr)); grid-template-rows: none;
      grid-auto-rows: 250px; }
  }
  @media (max-width: 640px) { main { grid-template-columns: minmax(0, 1fr); } }
</style>
</head>
<body data-polls="0" data-error="">
<header>
  <h1>kiroku<span id="host"></span></h1>
  <span class="pill" id="ready">ready?</span>
  <span class="pill" id="sink">sink?</span>
  <span class="pill plain" id="conns">connections –</span>
  <span class="pill plain" id="spool">spool –</span>
  <span class="pill plain" id="dead">dead-lettered –</span>
  <span class="spacer"></span>
  <span class="pill plain" id="updated">waiting for the first poll</span>
</header>
<main id="charts"></main>
<footer>Polls /metrics and /readyz once a second; charts show up to the last 5 minutes.
  Requests exclude the operations endpoints (/metrics, /stats, /healthz, /readyz, /dashboard,
  /debug). Latency percentiles cover the last second, estimated from histogram buckets.</footer>
<script>
(() => {
  'use strict';

  const POLL_MS = 1000;
  const WINDOW_MS = 5 * 60 * 1000;
  const FONT =
      'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif';
  const GRID = '#252c36';
  const AXIS = '#3a4350';
  const MUTED = '#8d96a0';
  const C = { blue: '#58a6ff', green: '#3fb950', yellow: '#d29922', red: '#f85149',
              purple: '#bc8cff', pink: '#f778ba', cyan: '#39c5cf' };
  const OPS_ROUTES = new Set(['operations']);

  /* ---- the Prometheus text exposition ---- */

  function parseNumber(s) {
    if (s === '+Inf' || s === 'Inf') return Infinity;
    if (s === '-Inf') return -Infinity;
    return Number(s);
  }

  /* name -> [{labels, value}] */
  function parseExposition(text) {
    const families = new Map();
    const lineRe = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)/;
    const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#') continue;
      const m = lineRe.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[2] !== undefined) {
        labelRe.lastIndex = 0;
        let l;
        while ((l = labelRe.exec(m[2])) !== null) {
          labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
        }
      }
      let list = families.get(m[1]);
      if (!list) families.set(m[1], (list = []));
      list.push({ labels, value: parseNumber(m[3]) });
    }
    return families;
  }

  /* [[le, cumulative count]] sorted by le, summed over other labels; null if absent. */
  function cumulativeBuckets(snap, name) {
    const list = snap.get(name + '_bucket');
    if (!list) return null;
    const byLe = new Map();
    for (const s of list) {
      const le = parseNumber(s.labels.le);
      byLe.set(le, (byLe.get(le) || 0) + s.value);
    }
    return [...byLe.entries()].sort((a, b) => (a[0] === b[0] ? 0 : a[0] < b[0] ? -1 : 1));
  }

  /* Two consecutive polls: values now, and rates and percentiles in between. */
  class Interval {
    constructor(cur, prev, seconds) {
      this.cur = cur;
      this.prev = prev;
      this.seconds = seconds;
    }
    has(name) {
      return this.cur.has(name) || this.cur.has(name + '_bucket');
    }
    static total(snap, name, keep) {
      const list = snap && snap.get(name);
      if (!list) return null;
      let sum = 0;
      for (const s of list) if (!keep || keep(s.labels)) sum += s.value;
      return Number.isFinite(sum) ? sum : null;
    }
    gauge(name) {
      return Interval.total(this.cur, name);
    }
    rate(name, keep) {
      if (!this.prev || !(this.seconds > 0)) return null;
      const a = Interval.total(this.prev, name, keep);
      const b = Interval.total(this.cur, name, keep);
      if (a === null || b === null || b < a) return null;
      return (b - a) / this.seconds;
    }
    /* The q-quantile of what was observed since the previous poll, interpolated
       within its bucket; null when nothing was observed. */
    quantile(name, q) {
      if (!this.prev) return null;
      const a = cumulativeBuckets(this.prev, name);
      const b = cumulativeBuckets(this.cur, name);
      if (!a || !b || a.length !== b.length || b.length === 0) return null;
      const delta = b.map((x, i) => [x[0], x[1] - a[i][1]]);
      const total = delta[delta.length - 1][1];
      if (!(total > 0)) return null;
      const rank = q * total;
      let lower = 0;
      let below = 0;
      for (const [le, count] of delta) {
        if (count >= rank) {
          if (!Number.isFinite(le)) return lower;
          const inside = count - below;
          return inside > 0 ? lower + ((le - lower) * (rank - below)) / inside : le;
        }
        lower = le;
        below = count;
      }
      return lower;
    }
  }

  /* ---- numbers for people ---- */

  function trimZeros(s) {
    return s.indexOf('.') < 0 || s.indexOf('e') >= 0 ? s : s.replace(/\.?0+$/, '');
  }

  function plainDigits(x) {
    const a = Math.abs(x);
    if (Number.isInteger(x) && a < 1e4) return String(x);
    if (a >= 100) return x.toFixed(0);
    if (a >= 10) return x.toFixed(1);
    if (a >= 1) return x.toFixed(2);
    return x.toPrecision(2);
  }

  const digits = plainDigits;

  /* [number text, unit text] for a value of a chart's unit; `axis` drops
     trailing zeros (1.50 -> 1.5). */
  function split(v, chart, axis) {
    const digits = axis ? (x) => trimZeros(plainDigits(x)) : plainDigits;
    if (v === null || v === undefined || !Number.isFinite(v)) return ['–', chart.suffix || ''];
    switch (chart.unit) {
      case 'seconds':
        if (v === 0) return ['0', 's'];
        if (v < 1e-3) return [digits(v * 1e6), 'µs'];
        if (v < 1) return [digits(v * 1e3), 'ms'];
        return [digits(v), 's'];
      case 'bytes': {
        const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
        let i = 0;
        while (Math.abs(v) >= 1024 && i < units.length - 1) {
          v /= 1024;
          i++;
        }
        return [digits(v), units[i]];
      }
      case 'percent':
        return [digits(v), '%'];
      default: {
        const prefixes = [[1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
        for (const [scale, p] of prefixes) {
          if (Math.abs(v) >= scale) return [digits(v / scale) + p, chart.suffix || ''];
        }
        return [digits(v), chart.suffix || ''];
      }
    }
  }

  function text(v, chart) {
    const [n, u] = split(v, chart);
    if (n === '–') return n;
    return u === '' || u === '%' ? n + u : n + ' ' + u;
  }

  function axisText(v, chart) {
    if (v === 0) return '0';
    const [n, u] = split(v, chart, true);
    if (chart.unit === 'count') return n;
    return u === '%' ? n + u : n + ' ' + u;
  }

  /* The smallest 1, 2, 2.5 or 5 times a power of ten that is >= x. */
  function niceCeil(x) {
    const p = Math.pow(10, Math.floor(Math.log10(x)));
    for (const m of [1, 2, 2.5, 5]) if (m * p >= x * (1 - 1e-9)) return m * p;
    return 10 * p;
  }

  /* The top of the y axis: four even steps that hold max. */
  function axisTop(max, chart) {
    if (!(max > 0)) max = chart.emptyTop;
    let base = 1;
    if (chart.unit === 'bytes') while (max / base >= 1024) base *= 1024;
    let step = niceCeil(max / base / 4) * base;
    if (chart.integer) step = Math.max(1, Math.ceil(step));
    return step * 4;
  }

  /* ---- the charts ---- */

  const apiRoute = (labels) => !OPS_ROUTES.has(labels.route);
  const gauge = (name) => (w) => w.gauge(name);
  const rate = (name, keep) => (w) => w.rate(name, keep);
  const percentiles = (name) => [
    { label: 'p50', color: C.blue, metric: name, read: (w) => w.quantile(name, 0.5) },
    { label: 'p90', color: C.yellow, metric: name, read: (w) => w.quantile(name, 0.9) },
    { label: 'p99', color: C.red, metric: name, read: (w) => w.quantile(name, 0.99) },
  ];
  const secondsText = (v) => text(v, { unit: 'seconds' });
  const bytesText = (v) => text(v, { unit: 'bytes' });

  const CHARTS = [
    { id: 'throughput', title: 'Throughput', unit: 'count', suffix: '/s', emptyTop: 4,
      big: 0, bigLabel: 'req/s',
      note: () => 'requests and events per second',
      series: [
        { label: 'requests', color: C.blue, metric: 'kiroku_http_requests_total',
          read: rate('kiroku_http_requests_total', apiRoute) },
        { label: 'accepted', color: C.green, metric: 'kiroku_events_accepted_total',
          read: rate('kiroku_events_accepted_total') },
        { label: 'committed', color: C.yellow, metric: 'kiroku_events_committed_total',
          read: rate('kiroku_events_committed_total') },
      ] },
    { id: 'latency', title: 'Request latency', unit: 'seconds', emptyTop: 0.001,
      big: 2, bigLabel: 'p99', note: () => 'from request to answer, last second',
      series: percentiles('kiroku_http_request_seconds') },
    { id: 'durable', title: 'Accept → durable', unit: 'seconds', emptyTop: 0.1,
      big: 2, bigLabel: 'p99', note: () => 'receipt to database commit, last second',
      series: percentiles('kiroku_accept_to_durable_seconds') },
    { id: 'queue', title: 'Backlog: events', unit: 'count', suffix: 'events', integer: true,
      emptyTop: 4, big: 0, bigLabel: 'events',
      note: (w) => {
        const batches = w.gauge('kiroku_queue_batches');
        const oldest = w.gauge('kiroku_oldest_unflushed_seconds');
        return (batches === null ? '' : digits(batches) + ' batches waiting · ') +
               'oldest ' + (oldest === null ? '–' : secondsText(oldest));
      },
      series: [
        { label: 'not yet committed', color: C.purple, metric: 'kiroku_queue_events',
          read: gauge('kiroku_queue_events') },
      ] },
    { id: 'bytes', title: 'Backlog: bytes', unit: 'bytes', emptyTop: 4096, big: 0,
      note: (w) => {
        const max = w.gauge('kiroku_spool_max_bytes');
        return w.has('kiroku_spool_bytes')
            ? 'spool limit ' + (max === null ? '–' : bytesText(max))
            : 'no spool (durability none)';
      },
      series: [
        { label: 'spool', color: C.pink, metric: 'kiroku_spool_bytes', absent: 'off',
          read: gauge('kiroku_spool_bytes') },
        { label: 'queue memory', color: C.cyan, metric: 'kiroku_queue_memory_bytes',
          read: gauge('kiroku_queue_memory_bytes') },
      ] },
    { id: 'pool', title: 'Database pool', unit: 'count', integer: true,
      emptyTop: 4, big: 1, bigLabel: 'in use',
      note: (w) => {
        const waits = w.gauge('kiroku_db_wait_count_total');
        const waited = w.gauge('kiroku_db_wait_seconds_total');
        const max = w.gauge('kiroku_db_max_open_connections');
        return (max === null ? '' : 'max ' + digits(max) + ' · ') +
               (waits === null ? 'waits –' : digits(waits) + ' waits') +
               (waited === null ? '' : ', ' + secondsText(waited) + ' waited');
      },
      series: [
        { label: 'open', color: C.blue, metric: 'kiroku_db_open_connections',
          read: gauge('kiroku_db_open_connections') },
        { label: 'in use', color: C.red, metric: 'kiroku_db_in_use_connections',
          read: gauge('kiroku_db_in_use_connections') },
        { label: 'idle', color: C.green, metric: 'kiroku_db_idle_connections',
          read: gauge('kiroku_db_idle_connections') },
      ] },
    { id: 'memory', title: 'Memory', unit: 'bytes', emptyTop: 1 << 20, big: 0, bigLabel: 'RSS',
      note: (w) => 'peak ' + bytesText(w.gauge('process_resident_memory_peak_bytes')),
      series: [
        { label: 'resident (RSS)', color: C.green, metric: 'process_resident_memory_bytes',
          read: gauge('process_resident_memory_bytes') },
      ] },
    { id: 'cpu', title: 'CPU', unit: 'percent', emptyTop: 100, big: 0, bigLabel: '',
      note: (w) => {
        const fds = w.gauge('process_open_fds');
        return '% of one core · ' + (fds === null ? '–' : digits(fds)) + ' open files';
      },
      series: [
        { label: 'process', color: C.yellow, metric: 'process_cpu_seconds_total',
          read: (w) => {
            const r = w.rate('process_cpu_seconds_total');
            return r === null ? null : r * 100;
          } },
      ] },
    { id: 'files-transfers', title: 'Files: transfers', unit: 'count', integer: true, emptyTop: 4,
      big: 0, bigLabel: 'in flight',
      note: (w) => {
        const cleaning = w.gauge('kiroku_object_uploads_cleaning_up');
        return 'uploads and downloads in flight' +
               (cleaning ? ' · ' + digits(cleaning) + ' failed uploads being cleaned up' : '');
      },
      series: [
        { label: 'uploads', color: C.blue, metric: 'kiroku_object_uploads_in_flight',
          read: gauge('kiroku_object_uploads_in_flight') },
        { label: 'downloads', color: C.green, metric: 'kiroku_object_downloads_in_flight',
          read: gauge('kiroku_object_downloads_in_flight') },
      ] },
    { id: 'files-throughput', title: 'Files: bytes', unit: 'bytes', suffix: '/s', emptyTop: 1 << 20,
      big: 0, bigLabel: 'up', note: () => 'per second each way, counted as they move',
      series: [
        { label: 'up (uploads)', color: C.blue, metric: 'kiroku_object_transfer_bytes_total',
          read: rate('kiroku_object_transfer_bytes_total', (labels) => labels.direction === 'up') },
        { label: 'down (downloads)', color: C.green, metric: 'kiroku_object_transfer_bytes_total',
          read: rate('kiroku_object_transfer_bytes_total', (labels) => labels.direction === 'down') },
      ] },
    { id: 'files-buffers', title: 'Files: part buffers', unit: 'count', integer: true, emptyTop: 4,
      big: 0, bigLabel: 'in use',
      note: (w) => {
        const total = w.gauge('kiroku_object_buffers');
        return (total === null ? '' : 'of ' + digits(total) + ' · ') + 'waiting: transfers without a buffer';
      },
      series: [
        { label: 'in use', color: C.purple, metric: 'kiroku_object_buffers_in_use',
          read: gauge('kiroku_object_buffers_in_use') },
        { label: 'waiting', color: C.red, metric: 'kiroku_object_buffer_waiters',
          read: gauge('kiroku_object_buffer_waiters') },
      ] },
    { id: 'files-errors', title: 'Files: store errors', unit: 'count', suffix: '/s', emptyTop: 4,
      big: 0, bigLabel: 'errors/s', note: () => 'failed operations and retried requests per second',
      series: [
        { label: 'failed operations', color: C.red, metric: 'kiroku_object_operations_total',
          read: rate('kiroku_object_operations_total', (labels) => labels.result === 'error') },
        { label: 'retried requests', color: C.yellow, metric: 'kiroku_object_store_retries_total',
          read: rate('kiroku_object_store_retries_total') },
      ] },
    { id: 'errors', title: 'Rejected and failed', unit: 'count', suffix: '/s', emptyTop: 4,
      big: 0, bigLabel: 'rejected/s', note: () => 'per second',
      series: [
        { label: 'rejected', color: C.red, metric: 'kiroku_requests_rejected_total',
          read: rate('kiroku_requests_rejected_total') },
        { label: 'sink errors', color: C.pink, metric: 'kiroku_sink_errors_total',
          read: rate('kiroku_sink_errors_total') },
        { label: 'dead-lettered', color: C.green, metric: 'kiroku_events_dead_lettered_total',
          read: rate('kiroku_events_dead_lettered_total') },
        { label: '5xx answers', color: C.cyan, metric: 'kiroku_http_requests_total',
          read: rate('kiroku_http_requests_total', (labels) => String(labels.status).startsWith('5')) },
        { label: 'bad requests', color: C.yellow, metric: 'kiroku_http_bad_requests_total',
          read: rate('kiroku_http_bad_requests_total') },
        { label: 'timeouts', color: C.purple, metric: 'kiroku_http_timeouts_total',
          read: rate('kiroku_http_timeouts_total') },
      ] },
  ];

  function el(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  }

  function build(chart) {
    chart.points = [];
    chart.section = el('section', 'card');
    chart.section.dataset.chart = chart.id;
    chart.section.dataset.points = '0';
    const head = el('div', 'head');
    const titles = el('div', 'titles');
    chart.noteEl = el('div', 'note', '\u00a0');
    titles.append(el('div', 'title', chart.title), chart.noteEl);
    chart.bigEl = el('div', 'big', '–');
    head.append(titles, chart.bigEl);
    const legend = el('div', 'legend');
    for (const s of chart.series) {
      const item = el('span');
      const swatch = el('i');
      swatch.style.background = s.color;
      s.valueEl = el('b', null, '–');
      item.append(swatch, document.createTextNode(s.label), s.valueEl);
      legend.append(item);
    }
    const plot = el('div', 'plot');
    chart.canvas = el('canvas');
    plot.append(chart.canvas);
    chart.section.append(head, legend, plot);
    return chart.section;
  }

  function draw(chart) {
    const canvas = chart.canvas;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (w < 40 || h < 30) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const left = 62;
    const right = 8;
    const top = 7;
    const bottom = 18;
    const pw = w - left - right;
    const ph = h - top - bottom;
    const now = chart.points.length ? chart.points[chart.points.length - 1].t : 0;

    let max = 0;
    for (const p of chart.points) for (const v of p.values) if (v !== null && v > max) max = v;
    const yTop = axisTop(max, chart);

    ctx.font = '11px ' + FONT;
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (let i = 0; i <= 4; i++) {
      const y = Math.round(top + ph * (1 - i / 4)) + 0.5;
      ctx.strokeStyle = i === 0 ? AXIS : GRID;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + pw, y);
      ctx.stroke();
      ctx.fillStyle = MUTED;
      ctx.fillText(axisText((yTop * i) / 4, chart), left - 6, y);
    }
    /* The time axis grows with the data from one minute to WINDOW_MS. */
    const span = chart.points.length ? now - chart.points[0].t : 0;
    const windowMs = Math.min(WINDOW_MS, Math.max(60000, Math.ceil(span / 60000) * 60000));
    const tickMs = windowMs <= 60000 ? 15000 : windowMs <= 120000 ? 30000 : 60000;
    ctx.textBaseline = 'top';
    for (let ago = 0; ago <= windowMs; ago += tickMs) {
      const x = left + pw * (1 - ago / windowMs);
      ctx.textAlign = ago === 0 ? 'right' : ago === windowMs ? 'left' : 'center';
      const label = ago === 0 ? 'now'
          : ago % 60000 === 0 ? '−' + ago / 60000 + ' min' : '−' + ago / 1000 + ' s';
      ctx.fillText(label, x, top + ph + 4);
    }

    const xOf = (t) => left + pw * (1 - (now - t) / windowMs);
    const yOf = (v) => top + ph * (1 - Math.min(v, yTop) / yTop);
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top - 2, pw + 2, ph + 4);
    ctx.clip();
    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    /* Last series first, so the first (the headline) is drawn on top. */
    for (let i = chart.series.length - 1; i >= 0; i--) {
      const s = chart.series[i];
      ctx.strokeStyle = s.color;
      ctx.fillStyle = s.color;
      ctx.beginPath();
      const lone = [];
      let run = [];
      const end = () => {
        if (run.length === 1) lone.push(run[0]);
        run = [];
      };
      for (const p of chart.points) {
        const v = p.values[i];
        if (v === null) {
          end();
          continue;
        }
        const x = xOf(p.t);
        const y = yOf(v);
        if (run.length === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
        run.push([x, y]);
      }
      end();
      ctx.stroke();
      for (const [x, y] of lone) {
        ctx.beginPath();
        ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.restore();
  }

  function update(chart, w, t) {
    const values = chart.series.map((s) => {
      const v = s.read(w);
      return v === null || v === undefined || !Number.isFinite(v) ? null : v;
    });
    chart.points.push({ t, values });
    while (chart.points.length && t - chart.points[0].t > WINDOW_MS + POLL_MS) chart.points.shift();
    const drawn = chart.points.filter((p) => p.values.some((v) => v !== null)).length;
    chart.section.dataset.points = String(drawn);

    chart.series.forEach((s, i) => {
      s.valueEl.textContent = w.has(s.metric) ? text(values[i], chart) : (s.absent || 'n/a');
    });
    /* The headline is the chart's `big` series, or the first one the server has. */
    let big = chart.big;
    if (!w.has(chart.series[big].metric)) {
      const present = chart.series.findIndex((s) => w.has(s.metric));
      if (present >= 0) big = present;
    }
    const bigLabel = chart.bigLabel !== undefined ? chart.bigLabel : chart.series[big].label;
    const [n, u] = split(values[big], chart);
    const label = [u, bigLabel].filter((x) => x && x !== chart.suffix).join(' ');
    chart.bigEl.textContent = n;
    if (label || chart.suffix) {
      chart.bigEl.append(el('small', null, label || chart.suffix));
    }
    chart.noteEl.textContent = chart.note(w) || '\u00a0';
    draw(chart);
  }

  function setPill(id, content, state) {
    const e = document.getElementById(id);
    e.textContent = content;
    e.classList.toggle('good', state === 'good');
    e.classList.toggle('bad', state === 'bad');
  }

  function fetchText(path) {
    const options = { cache: 'no-store' };
    if (typeof AbortSignal !== 'undefined' && AbortSignal.timeout) {
      options.signal = AbortSignal.timeout(5000);
    }
    return fetch(path, options).then((r) => r.text().then((body) => ({ status: r.status, body })));
  }

  function showReady(answer) {
    if (!answer) {
      setPill('ready', 'no answer from /readyz', 'bad');
      return;
    }
    let j = null;
    try {
      j = JSON.parse(answer.body);
    } catch (e) {
      j = null;
    }
    if (answer.status === 200) setPill('ready', 'ready', 'good');
    else setPill('ready', 'not ready' + (j && j.reason ? ': ' + j.reason : ''), 'bad');
  }

  function showStatus(w) {
    const up = w.gauge('kiroku_sink_up');
    if (up === null) setPill('sink', 'sink ?', '');
    else setPill('sink', up >= 1 ? 'sink up' : 'sink down', up >= 1 ? 'good' : 'bad');
    const conns = w.gauge('kiroku_http_open_connections');
    setPill('conns', 'connections ' + (conns === null ? '–' : digits(conns)), '');
    const spool = w.gauge('kiroku_spool_bytes');
    setPill('spool', spool === null ? 'spool off' : 'spool ' + bytesText(spool), '');
    const dead = w.gauge('kiroku_events_dead_lettered_total');
    const deadBytes = w.gauge('kiroku_dead_letter_bytes');
    setPill('dead', deadBytes === null ? 'dead-letter off'
                    : 'dead-lettered ' + digits(dead || 0) + ' (' + bytesText(deadBytes) + ')', '');
    const throughput = CHARTS[0].points;
    const rps = throughput.length ? throughput[throughput.length - 1].values[0] : null;
    document.title = 'kiroku ' + location.host + (rps === null ? '' : ' · ' + text(rps, CHARTS[0]));
  }

  let previous = null;
  let previousT = 0;
  let polls = 0;

  async function poll() {
    const started = performance.now();
    try {
      const [metrics, ready] = await Promise.all([
        fetchText('metrics').catch((e) => ({ status: 0, body: '', why: String(e && e.message) })),
        fetchText('readyz').catch(() => null),
      ]);
      showReady(ready);
      if (metrics.status === 0) throw new Error('server unreachable (' + metrics.why + ')');
      if (metrics.status !== 200) throw new Error('GET /metrics answered ' + metrics.status);
      const snap = parseExposition(metrics.body);
      const t = performance.now();
      const w = new Interval(snap, previous, previous ? (t - previousT) / 1000 : 0);
      for (const chart of CHARTS) update(chart, w, t);
      showStatus(w);
      previous = snap;
      previousT = t;
      polls++;
      document.body.dataset.polls = String(polls);
      document.body.dataset.error = '';
      setPill('updated', 'updated ' + new Date().toLocaleTimeString(), '');
    } catch (e) {
      const why = e && e.message ? e.message : String(e);
      document.body.dataset.error = why;
      setPill('updated', 'no data: ' + why, 'bad');
    }
    setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
  }

  document.getElementById('host').textContent = location.host;
  const grid = document.getElementById('charts');
  for (const chart of CHARTS) grid.append(build(chart));
  window.addEventListener('resize', () => CHARTS.forEach(draw));
  poll();
})();
</script>
</body>
</html>
)KIROKU";

}  // namespace

std::string_view dashboard_html() { return kPage; }

}  // namespace kiroku
