// Strom console: a single-page app over the HTTP door's public API (REST, SSE, /metrics).
// No framework and no build step. Every piece of broker data enters the page as text nodes
// (never as HTML): keys, values and headers are whatever producers wrote.

const main = document.getElementById('main');
let leave = []; // what the current view must stop (timers, event sources) when it is left

// ---- DOM and API helpers -------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'unreachable', `the broker did not answer: ${e.message}`);
  }
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!r.ok) {
    const err = json && json.error;
    throw new ApiError(r.status, err ? err.code : 'http_' + r.status,
      err ? err.message : `${method} ${path}: HTTP ${r.status}`);
  }
  return json;
}

function errorBox(e) {
  return h('div', { class: 'error', role: 'alert' },
    e.code ? `${e.code}: ` : '', e.message || String(e));
}

function fmtBytes(n) {
  if (n === undefined || n === null) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function fmtDuration(ms) {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function link(href, text) {
  return h('a', { href, 'data-link': true }, text);
}

// ---- routing --------------------------------------------------------------------------

const routes = [
  [/^\/console\/?$/, 'overview', overview],
  [/^\/console\/topics\/?$/, 'topics', topics],
  [/^\/console\/topics\/([^/]+)\/?$/, 'topics', topicPage],
  [/^\/console\/groups\/?$/, 'groups', groups],
  [/^\/console\/groups\/([^/]+)\/?$/, 'groups', groupPage],
];

function navigate(url, replace = false) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

async function render() {
  for (const stop of leave) stop();
  leave = [];
  const path = location.pathname;
  for (const [re, nav, view] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    main.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
    try {
      await view(...m.slice(1).map(decodeURIComponent));
    } catch (e) {
      main.replaceChildren(h('h1', {}, 'Something went wrong'), errorBox(e));
    }
    return;
  }
  document.title = 'Not found · Strom';
  main.replaceChildren(h('h1', {}, 'Not found'),
    h('p', {}, 'No console page at ', h('code', {}, path), '. ', link('/console', 'Go to the overview')));
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a[data-link]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', render);

// ---- overview -------------------------------------------------------------------------

// Throughput from /metrics: the sum of strom_topic_bytes_in_total / _out_total over topics.
function parseTotals(text) {
  let bin = 0, bout = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('strom_topic_bytes_in_total')) bin += Number(line.split(' ').pop()) || 0;
    else if (line.startsWith('strom_topic_bytes_out_total')) bout += Number(line.split(' ').pop()) || 0;
  }
  return { bin, bout };
}

// Bytes produced to each topic so far: strom_topic_bytes_in_total{topic="..."}.
function topicBytesIn(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    const m = line.match(/^strom_topic_bytes_in_total\{topic="((?:[^"\\]|\\.)*)"\} (\S+)$/);
    if (m) out.set(m[1].replace(/\\(.)/g, '$1'), Number(m[2]));
  }
  return out;
}

function lineChart(series, colors) {
  const W = 600, H = 160, n = Math.max(...series.map((s) => s.length), 2);
  const max = Math.max(1, ...series.flat()) * 1.25;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('role', 'img');
  series.forEach((s, i) => {
    const pts = s.map((v, j) => `${(j / (n - 1)) * W},${H - 4 - (v / max) * (H - 8)}`).join(' ');
    const pl = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
    pl.setAttribute('points', pts);
    pl.setAttribute('fill', 'none');
    pl.setAttribute('stroke', colors[i]);
    pl.setAttribute('stroke-width', '2');
    pl.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(pl);
  });
  return { svg, max };
}

async function overview() {
  document.title = 'Overview · Strom';
  const b = await api('GET', '/broker');
  const rateIn = h('div', { class: 'v', id: 'rate-in' }, '–');
  const rateOut = h('div', { class: 'v', id: 'rate-out' }, '–');
  const chart = h('div', { class: 'chart', 'aria-label': 'Throughput over the last minutes' });
  const chartErr = h('div');
  main.replaceChildren(
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      card('Version', b.version, 'version'),
      card('Uptime', fmtDuration(b.uptime_ms), 'uptime'),
      card('Topics', b.topics, 'topics'),
      card('Partitions', b.offline_partitions ? `${b.partitions} (${b.offline_partitions} offline)` : b.partitions, 'partitions'),
      card('Data', fmtBytes(b.data_bytes), 'data-bytes'),
      h('div', { class: 'card' }, h('div', { class: 'k' }, 'Produce'), rateIn),
      h('div', { class: 'card' }, h('div', { class: 'k' }, 'Fetch'), rateOut)),
    h('div', { class: 'panel' }, h('div', { class: 'k' }, 'Data directory'), h('code', { id: 'data-dir' }, b.data_dir)),
    h('h2', {}, 'Listeners'),
    h('div', { class: 'panel' }, h('table', { id: 'listeners' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Door'), h('th', {}, 'Listener'), h('th', {}, 'Bound to'), h('th', {}, 'Advertised'))),
      h('tbody', {}, (b.listeners || []).map((l) => h('tr', { 'data-listener': l.name },
        h('td', {}, l.door), h('td', {}, l.name), h('td', {}, h('code', {}, l.address)), h('td', {}, l.advertised ? h('code', {}, l.advertised) : '–')))))),
    h('h2', {}, 'Throughput'),
    h('div', { class: 'panel' }, chartErr, chart,
      h('div', { class: 'legend' }, h('span', { class: 'sw-in' }, '— produce B/s'), h('span', { class: 'sw-out' }, '— fetch B/s'),
        h('span', { id: 'chart-scale' }, 'sampled every 2 s'))));
  const ins = [], outs = [];
  let last = null;
  const tick = async () => {
    try {
      const r = await fetch('/metrics');
      if (!r.ok) throw new ApiError(r.status, 'metrics', `/metrics answered HTTP ${r.status}`);
      const t = parseTotals(await r.text());
      const now_b = await api('GET', '/broker');
      document.getElementById('uptime').textContent = fmtDuration(now_b.uptime_ms);
      document.getElementById('topics').textContent = now_b.topics;
      document.getElementById('data-bytes').textContent = fmtBytes(now_b.data_bytes);
      const now = performance.now();
      if (last) {
        const dt = (now - last.at) / 1000;
        ins.push(Math.max(0, (t.bin - last.bin) / dt));
        outs.push(Math.max(0, (t.bout - last.bout) / dt));
        if (ins.length > 150) { ins.shift(); outs.shift(); }
        rateIn.textContent = `${fmtBytes(ins.at(-1))}/s`;
        rateOut.textContent = `${fmtBytes(outs.at(-1))}/s`;
        const { svg, max } = lineChart([ins, outs], ['#0b6bcb', '#c4320a']);
        svg.setAttribute('aria-label', `produce ${fmtBytes(ins.at(-1))}/s, fetch ${fmtBytes(outs.at(-1))}/s, scale up to ${fmtBytes(max)}/s`);
        chart.replaceChildren(svg);
        document.getElementById('chart-scale').textContent = `top of the chart: ${fmtBytes(max)}/s, last ${Math.round(ins.length * 2 / 60 * 10) / 10} min`;
      }
      last = { at: now, ...t };
      chartErr.replaceChildren();
    } catch (e) {
      chartErr.replaceChildren(errorBox(e));
    }
  };
  await tick();
  const timer = setInterval(tick, 2000);
  leave.push(() => clearInterval(timer));
}

function card(k, v, id) {
  return h('div', { class: 'card' }, h('div', { class: 'k' }, k), h('div', { class: 'v', id }, v));
}

// ---- topics ---------------------------------------------------------------------------

async function topics() {
  document.title = 'Topics · Strom';
  const list = await api('GET', '/topics');
  const names = list.topics.filter((t) => !t.internal).map((t) => t.name).sort();
  const details = await Promise.all(names.slice(0, 500).map((n) =>
    api('GET', `/topics/${encodeURIComponent(n)}`).catch((e) => ({ name: n, error: e }))));
  const status = h('div', { 'aria-live': 'polite' });
  const rows = details.map((t) => {
    if (t.error) return h('tr', {}, h('td', {}, t.name), h('td', { colspan: 4 }, errorBox(t.error)));
    const parts = t.partitions;
    const size = parts.reduce((a, p) => a + (p.size_bytes || 0), 0);
    const records = parts.reduce((a, p) => a + ((p.log_end_offset ?? 0) - (p.log_start_offset ?? 0)), 0);
    return h('tr', { 'data-topic': t.name },
      h('td', {}, link(`/console/topics/${encodeURIComponent(t.name)}`, t.name)),
      h('td', { class: 'num' }, parts.length),
      h('td', { class: 'num' }, records),
      h('td', { class: 'num' }, fmtBytes(size)),
      h('td', { class: 'num rate' }, '–'),
      h('td', { class: 'hide-narrow' }, t.configs['retention.ms'] === '-1' ? 'forever' : fmtDuration(Number(t.configs['retention.ms']))));
  });
  // Each topic's produce rate, from two scrapes of /metrics 2 s apart.
  let prev = null;
  const rates = async () => {
    try {
      const r = await fetch('/metrics');
      if (!r.ok) return;
      const now = { at: performance.now(), bytes: topicBytesIn(await r.text()) };
      if (prev) {
        const dt = (now.at - prev.at) / 1000;
        for (const tr of document.querySelectorAll('#topics tr[data-topic]')) {
          const n = tr.dataset.topic;
          const cell = tr.querySelector('td.rate');
          if (cell) cell.textContent = `${fmtBytes(Math.max(0, ((now.bytes.get(n) ?? 0) - (prev.bytes.get(n) ?? 0)) / dt))}/s`;
        }
      }
      prev = now;
    } catch { /* the next scrape tries again */ }
  };
  rates();
  const timer = setInterval(rates, 2000);
  leave.push(() => clearInterval(timer));
  const form = h('form', { class: 'inline', id: 'create-topic', 'aria-label': 'Create a topic' },
    h('label', {}, 'Name', h('input', { name: 'name', required: true, pattern: '[A-Za-z0-9._\\-]+', maxlength: 249 })),
    h('label', {}, 'Partitions', h('input', { name: 'partitions', type: 'number', min: 1, value: 1 })),
    h('label', {}, 'Retention (ms, -1 forever)', h('input', { name: 'retention', type: 'number', placeholder: 'broker default' })),
    h('label', {}, 'Cleanup', h('select', { name: 'cleanup' }, h('option', { value: '' }, 'default'),
      h('option', { value: 'delete' }, 'delete'), h('option', { value: 'compact' }, 'compact'))),
    h('button', { type: 'submit' }, 'Create'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const configs = {};
    if (f.get('retention')) configs['retention.ms'] = String(f.get('retention'));
    if (f.get('cleanup')) configs['cleanup.policy'] = f.get('cleanup');
    try {
      await api('POST', '/topics', { name: f.get('name'), partitions: Number(f.get('partitions') || 1), configs });
      navigate(`/console/topics/${encodeURIComponent(f.get('name'))}`);
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  });
  main.replaceChildren(
    h('h1', {}, 'Topics'),
    h('div', { class: 'panel' }, h('h2', {}, 'New topic'), form, status),
    h('div', { class: 'panel' },
      names.length === 0 ? h('p', { id: 'no-topics' }, 'No topics yet.') :
        h('table', { id: 'topics' },
          h('thead', {}, h('tr', {}, h('th', {}, 'Topic'), h('th', { class: 'num' }, 'Partitions'),
            h('th', { class: 'num' }, 'Records'), h('th', { class: 'num' }, 'Size'), h('th', { class: 'num' }, 'Produce'),
            h('th', { class: 'hide-narrow' }, 'Retention'))),
          h('tbody', {}, rows))));
}

// ---- one topic ------------------------------------------------------------------------

function b64bytes(s) {
  if (s === null || s === undefined) return null;
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

function render_bytes(bytes, mode) {
  if (bytes === null) return h('em', {}, 'null');
  if (mode === 'hex') {
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0'));
    const lines = [];
    for (let i = 0; i < hex.length; i += 16) lines.push(hex.slice(i, i + 16).join(' '));
    return h('pre', {}, lines.join('\n'));
  }
  const text = new TextDecoder().decode(bytes);
  if (mode === 'json') {
    try { return h('pre', {}, JSON.stringify(JSON.parse(text), null, 2)); } catch { /* as text */ }
  }
  return h('pre', {}, text);
}

function recordRows(records, mode, topic) {
  return records.map((r) => h('tr', { 'data-offset': r.offset },
    h('td', { class: 'num' }, r.partition ?? ''),
    h('td', { class: 'num' }, r.offset),
    h('td', { class: 'hide-narrow' }, new Date(r.timestamp).toISOString()),
    h('td', { class: 'key' }, render_bytes(b64bytes(r.key), mode === 'hex' ? 'hex' : 'text')),
    h('td', { class: 'value' }, render_bytes(b64bytes(r.value), mode)),
    h('td', { class: 'headers' }, (r.headers || []).map(([k, v]) => h('div', {}, `${k}: ${v ?? 'null'}`)),
      topic && (r.headers || []).some(([k]) => k === '_dlq.errors.original.topic') ? redriveButton(topic, r) : null)));
}

// A dead-lettered record (it has `_dlq.errors.*` headers) can be sent back to its topic.
function redriveButton(topic, r) {
  const out = h('div', { class: 'redrive-status', 'aria-live': 'polite' });
  const button = h('button', { type: 'button', class: 'secondary redrive', onclick: async () => {
    button.disabled = true;
    try {
      const w = await api('POST', `/topics/${encodeURIComponent(topic)}/partitions/${r.partition}/records/${r.offset}/redrive`);
      out.replaceChildren(h('span', { class: 'notice' }, 'Re-driven to ', link(`/console/topics/${encodeURIComponent(w.topic)}?partition=${w.partition}&offset=${w.offset}`, `${w.topic}/${w.partition} @ ${w.offset}`)));
    } catch (e) {
      out.replaceChildren(errorBox(e));
      button.disabled = false;
    }
  } }, 'Re-drive');
  return h('div', {}, button, out);
}

function recordsTable(id) {
  const body = h('tbody');
  const table = h('table', { id },
    h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'P'), h('th', { class: 'num' }, 'Offset'),
      h('th', { class: 'hide-narrow' }, 'Time'), h('th', {}, 'Key'), h('th', {}, 'Value'), h('th', {}, 'Headers'))),
    body);
  return { table, body };
}

async function topicPage(name) {
  document.title = `${name} · Strom`;
  const t = await api('GET', `/topics/${encodeURIComponent(name)}`);
  const q = new URLSearchParams(location.search);
  const parts = t.partitions;

  const partRows = parts.map((p) => h('tr', {},
    h('td', { class: 'num' }, p.partition),
    p.offline ? h('td', { colspan: 3, class: 'error' }, `offline: ${p.offline}`) : [
      h('td', { class: 'num' }, p.log_start_offset), h('td', { class: 'num' }, p.log_end_offset),
      h('td', { class: 'num' }, fmtBytes(p.size_bytes))]));
  // Configs: edit in place, saved together (all or nothing); an emptied field goes back to
  // the broker's default.
  const configStatus = h('div', { 'aria-live': 'polite' });
  const configs = h('form', { id: 'configs', 'aria-label': 'Topic configs' },
    h('table', {}, h('tbody', {}, Object.entries(t.configs).map(([k, v]) => h('tr', {},
      h('td', {}, h('label', { for: `cfg-${k}` }, h('code', {}, k))),
      h('td', {}, h('input', { id: `cfg-${k}`, name: k, value: v, 'data-was': v })))))),
    h('button', { type: 'submit' }, 'Save configs'));
  configs.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const changed = {};
    for (const input of configs.querySelectorAll('input')) {
      if (input.value !== input.dataset.was) changed[input.name] = input.value === '' ? null : input.value;
    }
    if (Object.keys(changed).length === 0) { configStatus.replaceChildren(h('p', {}, 'Nothing changed.')); return; }
    try {
      await api('PATCH', `/topics/${encodeURIComponent(name)}/configs`, { configs: changed });
      navigate(location.pathname + location.search, true);
    } catch (e) {
      configStatus.replaceChildren(errorBox(e));
    }
  });
  const grow = h('form', { class: 'inline', id: 'add-partitions', 'aria-label': 'Add partitions' },
    h('label', {}, 'Partitions', h('input', { name: 'count', type: 'number', min: parts.length + 1, value: parts.length + 1 })),
    h('button', { type: 'submit', class: 'secondary' }, 'Add partitions'));
  const growStatus = h('div', { 'aria-live': 'polite' });
  grow.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', `/topics/${encodeURIComponent(name)}/partitions`, { count: Number(new FormData(grow).get('count')) });
      navigate(location.pathname + location.search, true);
    } catch (e) {
      growStatus.replaceChildren(errorBox(e));
    }
  });

  // Message browser: partition + offset, rendered as text, JSON or hex.
  const browseStatus = h('div', { 'aria-live': 'polite' });
  const { table: browseTable, body: browseBody } = recordsTable('records');
  const browse = h('form', { class: 'inline', id: 'browse', 'aria-label': 'Browse messages' },
    h('label', {}, 'Partition', h('select', { name: 'partition' },
      parts.map((p) => h('option', { value: p.partition, selected: String(p.partition) === (q.get('partition') ?? '0') }, p.partition)))),
    h('label', {}, 'From offset', h('input', { name: 'offset', type: 'number', min: 0, value: q.get('offset') ?? (parts[0]?.log_start_offset ?? 0) })),
    h('label', {}, 'or from time (local)', h('input', { name: 'time', type: 'datetime-local', step: 1 })),
    h('label', {}, 'Show', h('select', { name: 'mode' },
      ['text', 'json', 'hex'].map((m) => h('option', { value: m, selected: m === (q.get('view') ?? 'text') }, m)))),
    h('button', { type: 'submit' }, 'Load'));
  const load = async () => {
    const f = new FormData(browse);
    const p = f.get('partition'), mode = f.get('mode');
    let off = f.get('offset') || 0, from = `offset=${off}`;
    const time = f.get('time') ? new Date(String(f.get('time'))).getTime() : (q.has('time') && !q.has('offset') ? Number(q.get('time')) : NaN);
    if (!Number.isNaN(time)) from = `time_ms=${time}`;
    history.replaceState(null, '', `${location.pathname}?partition=${p}&${from.replace('time_ms', 'time')}&view=${mode}`);
    browseStatus.replaceChildren(h('p', { class: 'loading' }, 'Loading…'));
    try {
      const r = await api('GET', `/topics/${encodeURIComponent(name)}/partitions/${p}/records?${from}&max_records=50&format=base64&timeout_ms=0`);
      if (!Number.isNaN(time)) {
        off = r.records.length ? r.records[0].offset : off;
        browse.offset.value = off;
        browse.time.value = '';
        q.delete('time');
      }
      browseBody.replaceChildren(...recordRows(r.records.map((x) => ({ ...x, partition: Number(p) })), mode, name));
      browseStatus.replaceChildren(r.records.length ? `${r.records.length} records` : 'No records at this offset.');
    } catch (e) {
      browseStatus.replaceChildren(errorBox(e));
    }
  };
  browse.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });

  // Live tail over SSE.
  const { table: tailTable, body: tailBody } = recordsTable('tail');
  const tailStatus = h('span', { id: 'tail-status' }, 'stopped');
  let source = null;
  const stopTail = () => { if (source) { source.close(); source = null; } tailStatus.textContent = 'stopped'; tailButton.textContent = 'Start live tail'; };
  const tailButton = h('button', { type: 'button', class: 'secondary', id: 'tail-toggle', onclick: () => {
    if (source) return stopTail();
    source = new EventSource(`/topics/${encodeURIComponent(name)}/events?from=latest&format=base64`);
    tailStatus.textContent = 'connecting';
    source.onopen = () => { tailStatus.textContent = 'live'; };
    source.onerror = () => { tailStatus.textContent = 'reconnecting'; };
    source.addEventListener('record', (ev) => {
      const rec = JSON.parse(ev.data).record;
      tailBody.prepend(...recordRows([rec], 'text'));
      while (tailBody.children.length > 200) tailBody.lastChild.remove();
    });
    tailButton.textContent = 'Stop live tail';
  } }, 'Start live tail');
  leave.push(stopTail);

  // Produce.
  const produceStatus = h('div', { 'aria-live': 'polite' });
  const produce = h('form', { class: 'inline', id: 'produce', 'aria-label': 'Produce a message' },
    h('label', {}, 'Key', h('input', { name: 'key' })),
    h('label', {}, 'Value', h('textarea', { name: 'value' })),
    h('label', {}, 'Headers (k=v per line)', h('textarea', { name: 'headers' })),
    h('label', {}, 'Partition', h('select', { name: 'partition' }, h('option', { value: '' }, 'by key'),
      parts.map((p) => h('option', { value: p.partition }, p.partition)))),
    h('button', { type: 'submit' }, 'Produce'));
  produce.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(produce);
    const headers = [];
    for (const line of String(f.get('headers')).split('\n')) {
      if (!line.trim()) continue;
      const i = line.indexOf('=');
      headers.push(i < 0 ? [line.trim(), null] : [line.slice(0, i).trim(), line.slice(i + 1)]);
    }
    const rec = { value: String(f.get('value')), headers };
    if (f.get('key')) rec.key = String(f.get('key'));
    if (f.get('partition') !== '') rec.partition = Number(f.get('partition'));
    try {
      const r = await api('POST', `/topics/${encodeURIComponent(name)}/records`, { records: [rec] });
      const o = r.offsets ? r.offsets[0] : r;
      produceStatus.replaceChildren(h('p', { class: 'notice', id: 'produced' }, `Written to partition ${o.partition} at offset ${o.offset}.`));
    } catch (e) {
      produceStatus.replaceChildren(errorBox(e));
    }
  });

  const del = h('button', { type: 'button', class: 'danger', id: 'delete-topic', onclick: async () => {
    if (!confirm(`Delete topic ${name} and all its records?`)) return;
    try {
      await api('DELETE', `/topics/${encodeURIComponent(name)}`);
      navigate('/console/topics');
    } catch (e) {
      main.prepend(errorBox(e));
    }
  } }, 'Delete topic');

  main.replaceChildren(
    h('p', {}, link('/console/topics', '← Topics')),
    h('div', { class: 'row' }, h('h1', {}, name), del),
    h('div', { class: 'panel' }, h('table', { id: 'partitions' },
      h('thead', {}, h('tr', {}, h('th', { class: 'num' }, 'Partition'), h('th', { class: 'num' }, 'Start offset'),
        h('th', { class: 'num' }, 'End offset'), h('th', { class: 'num' }, 'Size'))),
      h('tbody', {}, partRows)), grow, growStatus),
    h('h2', {}, 'Messages'),
    h('div', { class: 'panel' }, browse, browseStatus, browseTable),
    h('h2', {}, 'Live tail'),
    h('div', { class: 'panel' }, h('div', { class: 'row' }, tailButton, tailStatus), tailTable),
    h('h2', {}, 'Produce'),
    h('div', { class: 'panel' }, produce, produceStatus),
    h('h2', {}, 'Configs'),
    h('div', { class: 'panel' }, configs, configStatus));
  if (q.has('offset') || q.has('time') || parts.some((p) => p.log_end_offset > p.log_start_offset)) await load();
}

// ---- groups ---------------------------------------------------------------------------

async function groups() {
  document.title = 'Groups · Strom';
  const list = await api('GET', '/groups');
  main.replaceChildren(
    h('h1', {}, 'Groups'),
    h('div', { class: 'panel' }, list.groups.length === 0 ? h('p', { id: 'no-groups' }, 'No consumer or share groups yet.') :
      h('table', { id: 'groups' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Group'), h('th', {}, 'Type'), h('th', {}, 'State'))),
        h('tbody', {}, list.groups.map((g) => h('tr', { 'data-group': g.group },
          h('td', {}, link(`/console/groups/${encodeURIComponent(g.group)}${g.type === 'share' ? '?type=share' : ''}`, g.group)),
          h('td', {}, g.type), h('td', {}, g.state)))))));
}

async function groupPage(name) {
  document.title = `${name} · Strom`;
  if (new URLSearchParams(location.search).get('type') === 'share') return sharePage(name);
  const g = await api('GET', `/groups/${encodeURIComponent(name)}`);
  const lagChart = h('div', { class: 'chart', id: 'lag-chart', 'aria-label': 'Lag over the last minutes' });
  const status = h('div', { 'aria-live': 'polite' });
  const reset = h('form', { class: 'inline', id: 'reset-offsets', 'aria-label': 'Reset offsets' },
    h('label', {}, 'Reset to', h('select', { name: 'to' }, h('option', { value: 'earliest' }, 'earliest'),
      h('option', { value: 'latest' }, 'latest'), h('option', { value: 'time' }, 'time'))),
    h('label', {}, 'Time (local)', h('input', { name: 'time', type: 'datetime-local' })),
    h('label', {}, 'Topic', h('select', { name: 'topic' }, h('option', { value: '' }, 'all'),
      [...new Set(g.offsets.map((o) => o.topic))].map((t) => h('option', { value: t }, t)))),
    h('button', { type: 'submit', disabled: g.members.length > 0 }, 'Reset'),
    g.members.length ? h('span', { class: 'k' }, 'Only an empty group can be reset.') : null);
  reset.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(reset);
    let to = f.get('to');
    if (to === 'time') {
      const t = new Date(String(f.get('time'))).getTime();
      if (Number.isNaN(t)) { status.replaceChildren(errorBox(new Error('choose a time'))); return; }
      to = `time:${t}`;
    }
    const body = { to };
    if (f.get('topic')) body.topic = f.get('topic');
    try {
      await api('POST', `/groups/${encodeURIComponent(name)}/offsets/reset`, body);
      navigate(location.pathname, true);
    } catch (e) {
      status.replaceChildren(errorBox(e));
    }
  });
  main.replaceChildren(
    h('p', {}, link('/console/groups', '← Groups')),
    h('h1', {}, name),
    h('div', { class: 'cards' }, card('Type', g.type, 'group-type'), card('State', g.state, 'group-state'),
      card('Members', g.members.length, 'group-members'), card('Lag', g.lag, 'group-lag')),
    h('h2', {}, 'Members'),
    h('div', { class: 'panel' }, g.members.length === 0 ? h('p', {}, 'No members.') :
      h('table', { id: 'members' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Client'), h('th', { class: 'hide-narrow' }, 'Host'), h('th', {}, 'Assignment'))),
        h('tbody', {}, g.members.map((m) => h('tr', {},
          h('td', {}, m.client_id, h('div', { class: 'k hide-narrow' }, m.member_id)),
          h('td', { class: 'hide-narrow' }, m.client_host),
          h('td', {}, m.assignment.map((a) => h('div', {}, `${a.topic}: ${a.partitions.join(', ')}`)))))))),
    h('h2', {}, 'Committed offsets'),
    h('div', { class: 'panel' }, h('table', { id: 'offsets' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Topic'), h('th', { class: 'num' }, 'Partition'), h('th', { class: 'num' }, 'Committed'),
        h('th', { class: 'num' }, 'Log end'), h('th', { class: 'num' }, 'Lag'))),
      h('tbody', {}, g.offsets.map((o) => h('tr', { 'data-partition': `${o.topic}/${o.partition}` },
        h('td', {}, link(`/console/topics/${encodeURIComponent(o.topic)}?partition=${o.partition}&offset=${o.committed}`, o.topic)),
        h('td', { class: 'num' }, o.partition), h('td', { class: 'num' }, o.committed),
        h('td', { class: 'num' }, o.log_end_offset ?? '–'), h('td', { class: 'num lag' }, o.lag ?? '–')))))),
    h('h2', {}, 'Lag'),
    h('div', { class: 'panel' }, lagChart, h('div', { class: 'legend' }, h('span', { class: 'sw-out' }, '— records behind'),
      h('span', { id: 'lag-scale' }, 'sampled every 2 s'))),
    h('h2', {}, 'Reset offsets'),
    h('div', { class: 'panel' }, reset, status));
  // The group's total lag over the last minutes.
  const lags = [g.lag];
  const timer = setInterval(async () => {
    try {
      const now = await api('GET', `/groups/${encodeURIComponent(name)}`);
      lags.push(now.lag);
      if (lags.length > 150) lags.shift();
      document.getElementById('group-lag').textContent = now.lag;
      const { svg, max } = lineChart([lags], ['#c4320a']);
      svg.setAttribute('aria-label', `lag ${now.lag} records, scale up to ${Math.round(max)}`);
      lagChart.replaceChildren(svg);
      document.getElementById('lag-scale').textContent = `top of the chart: ${Math.round(max)} records`;
    } catch (e) {
      lagChart.replaceChildren(errorBox(e));
    }
  }, 2000);
  leave.push(() => clearInterval(timer));
}

async function sharePage(name) {
  const [q, cfg] = await Promise.all([api('GET', `/queues/${encodeURIComponent(name)}`),
    api('GET', `/queues/${encodeURIComponent(name)}/config`).catch(() => null)]);
  const dlq = cfg?.configs?.['errors.deadletterqueue.topic.name']?.value || '';
  main.replaceChildren(
    h('p', {}, link('/console/groups', '← Groups')),
    h('h1', {}, name),
    h('div', { class: 'cards' }, card('Type', 'share (queue)', 'group-type'), card('State', q.state, 'group-state'),
      card('Members', q.members.length, 'group-members')),
    h('p', { id: 'dlq' }, dlq ? ['Dead-letter topic: ', link(`/console/topics/${encodeURIComponent(dlq)}`, dlq),
      ' (its records carry their reason in _dlq.errors.* headers and can be re-driven from there)'] : 'No dead-letter topic configured (errors.deadletterqueue.topic.name).'),
    h('h2', {}, 'Partitions'),
    h('div', { class: 'panel' }, h('table', { id: 'share-partitions' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Topic'), h('th', { class: 'num' }, 'P'), h('th', { class: 'num' }, 'Start'),
        h('th', { class: 'num' }, 'In flight'), h('th', { class: 'num' }, 'Redeliveries'), h('th', { class: 'num' }, 'Dead-lettered'),
        h('th', { class: 'num' }, 'Lag'))),
      h('tbody', {}, q.partitions.map((p) => h('tr', {},
        h('td', {}, link(`/console/topics/${encodeURIComponent(p.topic)}`, p.topic)), h('td', { class: 'num' }, p.partition),
        h('td', { class: 'num' }, p.start_offset), h('td', { class: 'num' }, p.in_flight),
        h('td', { class: 'num' }, p.redeliveries), h('td', { class: 'num' }, p.dead_lettered), h('td', { class: 'num' }, p.lag)))))));
}

render();
