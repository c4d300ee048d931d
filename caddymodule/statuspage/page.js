'use strict';
// Polls the pools' status (this URL with ?format=json) once a second and
// redraws the tables. Values go in with textContent only.
(function () {
  const poolsEl = document.getElementById('pools');
  const connEl = document.getElementById('conn');
  const url = location.pathname + '?format=json';

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function duration(s) {
    if (!s) return '–';
    if (s < 60) return s.toFixed(0) + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + Math.floor(s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  function bytes(n) {
    if (!n) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + ' ' + units[i];
  }

  // A worker's state as the page shows it: the supervisor's state,
  // refined by whether it is in rotation.
  function stateOf(w) {
    if (w.failed) return 'failed';
    if (w.state === 'running') return w.healthy ? 'healthy' : 'unhealthy';
    return w.state || 'down';
  }

  function inflightCell(w) {
    const td = el('td', 'inflight');
    const limit = w.max_inflight || 0;
    const bar = el('span', 'bar');
    const fill = el('i');
    const frac = limit > 0 ? Math.min(w.inflight / limit, 1) : Math.min(w.inflight / 8, 1);
    fill.style.width = (frac * 100).toFixed(0) + '%';
    if (limit > 0 && w.inflight >= limit) bar.classList.add('full');
    bar.appendChild(fill);
    td.appendChild(bar);
    td.appendChild(el('span', 'count', w.inflight + ' / ' + (limit > 0 ? limit : '∞')));
    return td;
  }

  function row(w) {
    const tr = el('tr', 'worker');
    const state = stateOf(w);
    tr.dataset.workerId = w.id;
    tr.dataset.pid = w.pid || '';
    tr.dataset.state = state;
    tr.appendChild(el('td', 'num', w.id));
    tr.appendChild(el('td', 'num pid', w.pid || '–'));
    const st = el('td');
    st.appendChild(el('span', 'state ' + state, state));
    // The bind check found it listening beyond loopback: reachable past
    // the pool.
    if (w.exposed_on && w.exposed_on.length) {
      tr.dataset.exposed = w.exposed_on.join(' ');
      const x = el('span', 'state exposed', 'exposed');
      x.title = 'listens on ' + w.exposed_on.join(', ') + ': reachable from the network past the pool. ' +
        'Fix: listen(process.env.PORT, process.env.HOST), or listen unix' +
        (w.out_of_rotation ? '. Out of rotation: ' + w.out_of_rotation : '');
      st.appendChild(x);
    }
    tr.appendChild(st);
    tr.appendChild(inflightCell(w));
    // Open WebSockets, event streams, gRPC streams and parked long
    // polls: held, but not counted toward the limit.
    const streams = el('td', 'num streams', w.streams || 0);
    if (w.parked) streams.title = w.parked + ' requests parked so far (long polls on an idle worker)';
    tr.appendChild(streams);
    tr.appendChild(el('td', 'num served', w.served));
    tr.appendChild(el('td', 'num restarts', w.restarts));
    tr.appendChild(el('td', 'num', w.recycles));
    tr.appendChild(el('td', 'breaker-' + (w.breaker || 'closed'), w.breaker || '–'));
    tr.appendChild(el('td', 'num latency', w.latency_ms ? w.latency_ms.toFixed(1) : '–'));
    tr.appendChild(el('td', 'num', duration(w.uptime_seconds)));
    tr.appendChild(el('td', 'num', bytes(w.rss_bytes)));
    tr.title = w.address ? 'address ' + w.address + (w.last_exit ? '; last exit: ' + w.last_exit : '') : '';
    return tr;
  }

  // The floor, the ceiling and the latest decisions of a pool that
  // scales, newest first.
  function scaling(sum, s) {
    const span = el('span');
    span.append('workers ');
    const b = el('b', 'scaling', s.workers + ' (floor ' + s.floor + ', ceiling ' + s.ceiling + ')');
    b.dataset.floor = s.floor;
    b.dataset.ceiling = s.ceiling;
    span.appendChild(b);
    span.title = 'workload ' + s.workload + '; scale_idle ' + duration(s.idle_seconds) +
      '; at most ' + s.cpus + ' workers that compute';
    sum.appendChild(span);
    const list = el('ol', 'decisions');
    for (const d of (s.decisions || []).slice(-5).reverse()) {
      let text = new Date(d.at).toLocaleTimeString() + ' ' + d.direction + ' ' + d.from + '→' + d.to + ' ' + d.reason;
      if (d.queue_wait_ms) text += ' (queue wait ' + d.queue_wait_ms.toFixed(0) + ' ms)';
      const li = el('li', 'decision ' + d.direction, text);
      li.dataset.direction = d.direction;
      li.dataset.reason = d.reason;
      list.appendChild(li);
    }
    return list;
  }

  // The pool's gRPC calls by method and status (absent before the first
  // call): one row per method and status.
  function grpcTable(calls) {
    const table = el('table', 'grpc');
    const head = el('tr');
    for (const [name, cls] of [['gRPC method', ''], ['status', ''], ['calls', 'num'], ['mean ms', 'num']]) head.appendChild(el('th', cls, name));
    table.appendChild(el('thead')).appendChild(head);
    const body = el('tbody');
    for (const c of calls) {
      const tr = el('tr', 'grpc-call');
      tr.dataset.method = c.method;
      tr.dataset.status = c.status;
      tr.dataset.calls = c.calls;
      tr.appendChild(el('td', 'method', c.method));
      tr.appendChild(el('td', 'grpc-status ' + (c.code === 0 ? 'ok' : 'failed'), c.status + ' (' + c.code + ')'));
      tr.appendChild(el('td', 'num', c.calls));
      tr.appendChild(el('td', 'num', c.mean_ms.toFixed(1)));
      body.appendChild(tr);
    }
    table.appendChild(body);
    return table;
  }

  const columns = [['#', 'num'], ['pid', 'num'], ['state', ''], ['in flight', ''], ['streams', 'num'], ['served', 'num'],
    ['restarts', 'num'], ['recycles', 'num'], ['breaker', ''], ['latency ms', 'num'], ['uptime', 'num'], ['memory', 'num']];

  function section(p) {
    const s = el('section', 'pool');
    s.dataset.pool = p.name;
    const sum = el('div', 'summary');
    sum.appendChild(el('h2', '', p.name));
    const healthy = el('span', p.healthy < p.total ? 'bad' : '');
    healthy.append('healthy ');
    healthy.appendChild(el('b', 'healthy', p.healthy + ' / ' + p.total));
    sum.appendChild(healthy);
    const queued = el('span');
    queued.append('queued ');
    queued.appendChild(el('b', 'queued', p.queued));
    sum.appendChild(queued);
    const inflight = el('span');
    inflight.append('in flight ');
    inflight.appendChild(el('b', '', p.workers.reduce((n, w) => n + (w.inflight || 0), 0)));
    sum.appendChild(inflight);
    const decisions = p.scaling ? scaling(sum, p.scaling) : null;
    s.appendChild(sum);
    if (decisions && decisions.childElementCount) s.appendChild(decisions);
    const table = el('table');
    const head = el('tr');
    for (const [name, cls] of columns) head.appendChild(el('th', cls, name));
    table.appendChild(el('thead')).appendChild(head);
    const body = el('tbody');
    for (const w of p.workers) body.appendChild(row(w));
    table.appendChild(body);
    s.appendChild(table);
    if (p.grpc && p.grpc.length) s.appendChild(grpcTable(p.grpc));
    return s;
  }

  function render(pools) {
    const frag = document.createDocumentFragment();
    if (pools.length === 0) frag.appendChild(el('p', 'empty', 'No worker pool is running.'));
    for (const p of pools) frag.appendChild(section(p));
    poolsEl.replaceChildren(frag);
  }

  async function poll() {
    try {
      const resp = await fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } });
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      render(await resp.json());
      connEl.className = 'conn';
      connEl.textContent = 'updated ' + new Date().toLocaleTimeString();
    } catch (err) {
      connEl.className = 'conn lost';
      connEl.textContent = 'cannot reach Caddy (' + err.message + '); retrying';
    }
    setTimeout(poll, 1000);
  }
  poll();
})();
