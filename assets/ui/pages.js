// The console's pages. Each takes the main element and the route's parameters, renders,
// and returns { refresh } for live updates. Fields the read API may leave out show as "—".
import { read, paged, seg, pick, fmtTime, fmtPercent, fmtNum, h, link } from './api.js';
import { table } from './table.js';

const STATES = [
  ['Compliant', 'compliant', 'Compliant'],
  ['Required', 'required', 'Required'],
  ['Unknown', 'unknown', 'Unknown'],
  ['Failed', 'failed', 'Failed'],
  ['PendingReboot', 'reboot', 'Pending reboot'],
  ['Waived', 'waived', 'Waived'],
];

/** Machine counts of a deployment status, by state name of the machines endpoint. */
function counts(status) {
  const m = status?.machines || {};
  return {
    Compliant: m.compliant ?? 0, Required: m.required ?? 0, Unknown: m.unknown ?? 0,
    Failed: m.failed ?? 0, PendingReboot: m.pendingReboot ?? 0, Waived: m.waived ?? 0,
  };
}

/** The compliance bar: Compliant / Required / Unknown / Failed / Pending reboot of the targeted machines. */
export function complianceBar(status, { legend = false } = {}) {
  const c = counts(status);
  const targeted = status?.targeted ?? 0;
  const label = `${fmtPercent(status?.compliancePercent)} compliant: ` +
    STATES.map(([k, , l]) => `${l} ${fmtNum(c[k])}`).join(', ') + ` of ${fmtNum(targeted)} targeted`;
  // Failed and pending-reboot machines are also Required: the bar shows them apart, so
  // the Required segment is what is left of Required after them (never below zero).
  const required = Math.max(0, c.Required - c.Failed - c.PendingReboot);
  const parts = [['compliant', c.Compliant], ['required', required], ['failed', c.Failed],
    ['reboot', c.PendingReboot], ['unknown', c.Unknown], ['waived', c.Waived]];
  const sum = parts.reduce((s, [, n]) => s + n, 0) || 1;
  const bar = h('div', { class: 'bar', role: 'img', 'aria-label': label, title: label },
    parts.filter(([, n]) => n > 0).map(([cls, n]) => h('span', { class: cls, style: null, 'data-n': n })));
  for (const span of bar.children) span.style.width = `${(100 * Number(span.dataset.n)) / sum}%`;
  if (!legend) return bar;
  return h('div', { class: 'big-bar' }, bar, h('ul', { class: 'legend', 'aria-hidden': 'true' },
    STATES.map(([k, cls, l]) => h('li', {}, h('i', { class: cls }), `${l} ${fmtNum(c[k])}`)),
    c.Waived ? h('li', {}, h('i', { class: 'waived' }), `Waived ${fmtNum(c.Waived)}`) : null));
}

const statusOf = (d) => d.status ?? d;
const nameOf = (d) => pick(d, 'name', 'metadata.name');
const ready = (status) => (status?.conditions || []).find((c) => c.type === 'Ready');

function conditionText(status) {
  const r = ready(status);
  if (!r) return '—';
  return `${r.status === 'True' ? 'Ready' : 'Not ready'}${r.reason ? ` (${r.reason})` : ''}${r.message ? `: ${r.message}` : ''}`;
}

/** `main@sha1:<40 hex>` as `main@e53f005ef8`, the whole revision in its title. */
function shortRevision(revision) {
  if (!revision) return '—';
  const short = revision.replace(/sha1:([0-9a-f]{10})[0-9a-f]*/, '$1');
  return h('code', { title: revision }, short);
}

/** The Ready condition as a tag; its message in the title and for screen readers. */
function conditionTag(status) {
  const r = ready(status);
  if (!r) return '—';
  const ok = r.status === 'True';
  return h('span', { class: `tag ${ok ? 'ok' : 'warn'}`, title: conditionText(status) },
    ok ? 'Ready' : r.reason || 'Not ready', h('span', { class: 'visually-hidden' }, r.message ? `: ${r.message}` : ''));
}

function phaseText(status) {
  const phase = status?.phase || '—';
  return status?.rolloutPhase ? `${phase} [${status.rolloutPhase}]` : phase;
}

function heading(main, title, crumbs = []) {
  const nav = crumbs.length
    ? h('nav', { 'aria-label': 'Breadcrumb' }, h('p', { class: 'breadcrumb' },
      crumbs.flatMap(([href, text], i) => [i ? ' › ' : '', link(href, text)])))
    : null;
  const h1 = h('h1', { id: 'page-title' }, title);
  main.replaceChildren(...[nav, h1].filter(Boolean));
  document.title = `${title} — patchops console`;
}

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

function refreshAll(parts) {
  return { refresh: () => Promise.all(parts.map((p) => p.refresh())) };
}

// ---------------------------------------------------------------------------------------
// Deployments

const deploymentColumns = [
  { key: 'name', label: 'Deployment', value: nameOf, render: (d) => link(`#/deployments/${seg(nameOf(d))}`, nameOf(d)) },
  { key: 'phase', label: 'Phase', value: (d) => phaseText(statusOf(d)) },
  { key: 'compliancePercent', label: 'Compliance', num: true, value: (d) => statusOf(d).compliancePercent,
    render: (d) => h('div', {}, fmtPercent(statusOf(d).compliancePercent), complianceBar(statusOf(d))) },
  { key: 'targeted', label: 'Targeted', num: true, value: (d) => statusOf(d).targeted, render: (d) => fmtNum(statusOf(d).targeted) },
  { key: 'compliant', label: 'Compliant', num: true, value: (d) => counts(statusOf(d)).Compliant },
  { key: 'required', label: 'Required', num: true, value: (d) => counts(statusOf(d)).Required },
  { key: 'unknown', label: 'Unknown', num: true, value: (d) => counts(statusOf(d)).Unknown },
  { key: 'failed', label: 'Failed', num: true, value: (d) => counts(statusOf(d)).Failed },
  { key: 'pendingReboot', label: 'Pending reboot', num: true, value: (d) => counts(statusOf(d)).PendingReboot },
  { key: 'nextMaintenanceWindow', label: 'Next window', value: (d) => statusOf(d).nextMaintenanceWindow, render: (d) => fmtTime(statusOf(d).nextMaintenanceWindow) },
  { key: 'deadline', label: 'Deadline', value: (d) => statusOf(d).deadline, render: (d) => fmtTime(statusOf(d).deadline) },
  { key: 'revision', label: 'Revision', value: (d) => statusOf(d).lastAppliedRevision, render: (d) => shortRevision(statusOf(d).lastAppliedRevision) },
  { key: 'conditions', label: 'Conditions', value: (d) => conditionText(statusOf(d)), render: (d) => conditionTag(statusOf(d)) },
];

export function deployments(main) {
  heading(main, 'Deployments');
  const t = table({
    caption: 'Deployments', columns: deploymentColumns, csvName: 'deployments', initialSort: 'name', rowKey: nameOf,
    filters: [{ name: 'q', label: 'Filter', placeholder: 'name, phase…' }],
    load: (p) => read('deployments', p),
  });
  main.append(t.el);
  return refreshAll([t]);
}

function reasonText(m) {
  return pick(m, 'reason', 'subReason', 'reasons') ?? '—';
}

export async function deployment(main, { name }) {
  heading(main, name, [['#/deployments', 'Deployments']]);
  const summary = h('div', { class: 'card', id: 'deployment-summary' });
  const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Machines by state' });
  const panel = h('div', { role: 'tabpanel', id: 'machines-panel' });
  const updates = h('div', { id: 'deployment-updates' });
  main.append(summary, h('h2', { id: 'machines-heading' }, 'Machines'), tabs, panel, updates);
  let selected = new URLSearchParams(location.hash.split('?')[1] || '').get('state') || 'Required';
  let machines;

  const machineColumns = [
    { key: 'name', label: 'Machine', sorts: ['name'], value: (m) => pick(m, 'name', 'client'), render: (m) => link(`#/machines/${seg(pick(m, 'name', 'client'))}`, pick(m, 'name', 'client')) },
    { key: 'state', label: 'State', value: (m) => [m.state, m.failed ? 'Failed' : '', m.pendingReboot ? 'PendingReboot' : ''].filter(Boolean).join(' · ') },
    { key: 'phase', label: 'Rollout phase', value: (m) => m.phase },
    { key: 'reason', label: 'Sub-reason (Table 1)', value: (m) => { const r = reasonText(m); return Array.isArray(r) ? r.join(', ') : r; } },
    { key: 'message', label: 'Failure message', value: (m) => pick(m, 'message', 'failure', 'error') },
    { key: 'lastScan', label: 'Last scan', sorts: ['lastScan', '-lastScan'], value: (m) => pick(m, 'lastScan.time', 'lastScan', 'lastScanTime'), render: (m) => fmtTime(pick(m, 'lastScan.time', 'lastScan', 'lastScanTime')) },
  ];

  function select(state) {
    selected = state;
    for (const b of tabs.children) b.setAttribute('aria-selected', String(b.dataset.state === state));
    for (const b of tabs.children) b.tabIndex = b.dataset.state === state ? 0 : -1;
    machines = table({
      caption: `Machines ${state} for ${name}`, columns: machineColumns, csvName: `${name}-${state}`, initialSort: 'name',
      filters: [{ name: 'q', label: 'Filter machines', placeholder: 'machine name' }],
      load: (p) => read(`deployments/${seg(name)}/machines`, { ...p, state }), serverSort: true,
      rowKey: (m) => pick(m, 'name', 'client'),
    });
    panel.setAttribute('aria-labelledby', `tab-${state}`);
    panel.replaceChildren(machines.el);
  }

  tabs.addEventListener('keydown', (e) => {
    const buttons = [...tabs.children];
    const i = buttons.indexOf(document.activeElement);
    if (i < 0) return;
    const j = e.key === 'ArrowRight' ? (i + 1) % buttons.length : e.key === 'ArrowLeft' ? (i - 1 + buttons.length) % buttons.length : -1;
    if (j >= 0) { e.preventDefault(); buttons[j].focus(); buttons[j].click(); }
  });

  async function load() {
    const d = await read(`deployments/${seg(name)}`);
    const s = statusOf(d);
    const c = counts(s);
    summary.replaceChildren(
      h('div', { class: 'grid' },
        facts([
          ['Phase', phaseText(s)],
          ['Compliance', h('span', { id: 'compliance-percent' }, fmtPercent(s.compliancePercent))],
          ['Targeted machines', h('span', { id: 'targeted' }, fmtNum(s.targeted))],
          ['Updates deployed', fmtNum(s.updateCount)],
          ['Update list', pick(d, 'updateList', 'spec.updateList')],
          ['Template', pick(d, 'template')],
          ['Mandatory', d.mandatory === undefined ? undefined : d.mandatory ? 'yes' : 'no (optional)'],
          ['Collections', (d.collections || []).length ? h('span', {}, d.collections.flatMap((n, i) => [i ? ', ' : '', link(`#/collections/${seg(n)}`, n)])) : undefined],
        ]),
        facts([
          ['Available', fmtTime(s.availableTime)],
          ['Deadline', fmtTime(s.deadline)],
          ['Next maintenance window', fmtTime(s.nextMaintenanceWindow)],
          ['Revision', s.lastAppliedRevision ?? '—'],
          ['Waived pairs', s.waivedPairs ? fmtNum(s.waivedPairs) : undefined],
        ])),
      complianceBar(s, { legend: true }),
      h('h2', {}, 'Conditions'),
      h('ul', {}, (s.conditions || []).map((cond) => h('li', {}, h('strong', {}, `${cond.type}=${cond.status}`),
        cond.reason ? ` ${cond.reason}` : '', cond.message ? `: ${cond.message}` : '',
        cond.lastTransitionTime ? h('span', { class: 'muted' }, ` (since ${fmtTime(cond.lastTransitionTime)})`) : ''))),
      (s.phases || []).length ? h('div', {}, h('h2', {}, 'Rollout phases'), h('ol', {}, s.phases.map((p) =>
        h('li', {}, `${p.name}: ${p.state}`, p.startedTime ? ` since ${fmtTime(p.startedTime)}` : ''))))
        : '');
    const existing = new Map([...tabs.children].map((b) => [b.dataset.state, b]));
    for (const [k, , l] of STATES) {
      const text = `${l} (${fmtNum(c[k])})`;
      if (existing.has(k)) { existing.get(k).textContent = text; continue; }
      tabs.append(h('button', { type: 'button', role: 'tab', id: `tab-${k}`, 'data-state': k, 'data-count': c[k],
        'aria-controls': 'machines-panel', 'aria-selected': 'false', onclick: () => select(k) }, text));
    }
    for (const b of tabs.children) b.dataset.count = c[b.dataset.state];
    const list = d.updates || s.updateIds;
    if (Array.isArray(list) && list.length && !updates.childElementCount) {
      updates.append(h('h2', {}, 'Updates in this deployment'), h('ul', {}, list.map((u) => {
        const id = typeof u === 'string' ? u : pick(u, 'id');
        return h('li', {}, link(`#/updates/${seg(id)}`, id), typeof u === 'object' && u.title ? ` — ${u.title}` : '');
      })));
    }
  }

  await load();
  select(selected);
  return { refresh: () => Promise.all([load(), machines.refresh()]) };
}

// ---------------------------------------------------------------------------------------
// Machines

export function machines(main) {
  heading(main, 'Machines');
  const t = table({
    caption: 'Machines', csvName: 'machines', initialSort: 'name', rowKey: (c) => c.name, serverSort: true,
    columns: [
      { key: 'name', label: 'Machine', sorts: ['name'], value: (c) => c.name, render: (c) => link(`#/machines/${seg(c.name)}`, c.name) },
      { key: 'os', label: 'OS', value: (c) => pick(c, 'os', 'facts.os') },
      { key: 'agentVersion', label: 'Agent', value: (c) => c.agentVersion },
      { key: 'lastScan', label: 'Last scan', sorts: ['lastScan', '-lastScan'], value: (c) => pick(c, 'lastScan.time', 'lastScan'), render: (c) => fmtTime(pick(c, 'lastScan.time', 'lastScan')) },
      { key: 'scanState', label: 'Scan', value: (c) => c.scanState },
      { key: 'required', label: 'Updates required', num: true, value: (c) => pick(c, 'required', 'counts.required') },
      { key: 'deployments', label: 'Deployments', num: true, value: (c) => (Array.isArray(c.deployments) ? c.deployments.length : c.deployments) },
    ],
    filters: [
      { name: 'q', label: 'Name', placeholder: 'ber-ws' },
      { name: 'selector', label: 'Fact selector', placeholder: 'site=BER' },
    ],
    load: (p) => read('clients', p),
  });
  main.append(t.el);
  return refreshAll([t]);
}

/** A maintenance window in words: "lunch: Weekly Mon, Tue at 12:00 Europe/Berlin for 1h". */
function windowText(w) {
  if (typeof w === 'string') return w;
  const days = (w.daysOfWeek || []).join(', ');
  const week = w.weekOfMonth ? ` (week ${w.weekOfMonth}${w.offsetDays ? ` + ${w.offsetDays} days` : ''})` : '';
  return `${w.name ?? 'window'}: ${w.recurrence ?? ''}${days ? ` ${days}` : ''}${week} at ${w.start ?? '?'} ${w.timeZone ?? 'UTC'} for ${w.duration ?? '?'}`;
}

function windowsList(windows) {
  if (!Array.isArray(windows) || !windows.length) return 'none (installs at once)';
  return h('ul', {}, windows.map((w) => h('li', {}, windowText(w))));
}

/** The one sentence that says why a machine is not compliant (from the API, or made from its states). */
function whyNotCompliant(c, states) {
  const given = pick(c, 'whyNotCompliant', 'why', 'summary');
  if (given) return given;
  const required = states.filter((s) => s.state === 'Required');
  const unknown = states.filter((s) => s.state === 'Unknown');
  if (!required.length && !unknown.length) return `${c.name} is compliant: no deployed update is Required or Unknown.`;
  const parts = [];
  if (required.length) parts.push(`${required.length} update${required.length > 1 ? 's are' : ' is'} Required (${[...new Set(required.map(reasonText))].join(', ')})`);
  if (unknown.length) parts.push(`${unknown.length} ${unknown.length > 1 ? 'are' : 'is'} Unknown (${[...new Set(unknown.map(reasonText))].join(', ')})`);
  return `${c.name} is not compliant: ${parts.join(' and ')}.`;
}

export async function machine(main, { name }) {
  heading(main, name, [['#/machines', 'Machines']]);
  const top = h('div', {});
  main.append(top);
  let updatesTable;
  async function load() {
    const c = await read(`clients/${seg(name)}`);
    const states = c.updates || c.states || [];
    const compliant = !states.some((s) => s.state === 'Required' || s.state === 'Unknown');
    const collections = c.collections || [];
    top.replaceChildren(
      h('p', { class: `card sentence ${compliant ? 'ok' : 'bad'}`, id: 'why' }, whyNotCompliant(c, states)),
      h('div', { class: 'grid' },
        h('section', { class: 'card', 'aria-labelledby': 'h-machine' }, h('h2', { id: 'h-machine' }, 'Machine'), facts([
          ['Agent version', c.agentVersion ?? '—'],
          ['Last scan', fmtTime(pick(c, 'lastScan.time', 'lastScan'))],
          ['Scanned catalog version', pick(c, 'lastScan.catalogVersion') ?? '—'],
          ['Scan error', pick(c, 'lastScan.error')],
          ['Last failed scan', c.lastFailure ? `${fmtTime(c.lastFailure.time)}: ${c.lastFailure.error ?? ''}` : undefined],
          ['Every update Unknown because', c.unknownReason],
          ['Deployments', (c.deployments || []).length ? h('span', {}, c.deployments.flatMap((d, i) => [i ? ', ' : '', link(`#/deployments/${seg(d.name ?? d)}`, d.name ?? d),
            d.phase ? ` (${d.phase})` : ''])) : 'none'],
          ['Pending reboot', (pick(c, 'pendingReboot') ?? states.some((s) => /PendingReboot/.test(reasonText(s)))) ? 'yes' : 'no'],
          ['Collections', collections.length ? h('span', {}, collections.flatMap((n, i) => [i ? ', ' : '', link(`#/collections/${seg(n.name ?? n)}`, n.name ?? n)])) : 'none'],
          ['Maintenance windows', windowsList(pick(c, 'maintenanceWindows', 'windows'))],
        ])),
        h('section', { class: 'card', 'aria-labelledby': 'h-facts' }, h('h2', { id: 'h-facts' }, 'Facts'),
          facts(Object.entries(c.facts || {}).map(([k, v]) => [k, String(v)])))));
    return states;
  }
  let states = await load();
  main.append(h('h2', {}, 'Applicable updates'));
  updatesTable = table({
    caption: `Updates applicable to ${name}`, csvName: `${name}-updates`, initialSort: 'state',
    columns: [
      { key: 'id', label: 'Update', value: (s) => pick(s, 'id', 'update'), render: (s) => link(`#/updates/${seg(pick(s, 'id', 'update'))}`, pick(s, 'id', 'update')) },
      { key: 'title', label: 'Title', value: (s) => s.title },
      { key: 'state', label: 'State', value: (s) => s.state },
      { key: 'reason', label: 'Sub-reason', value: reasonText },
      { key: 'deployments', label: 'Deployments', value: (s) => (s.deployments || []).join(', '),
        render: (s) => h('span', {}, (s.deployments || []).flatMap((d, i) => [i ? ', ' : '', link(`#/deployments/${seg(d)}`, d)])) },
      { key: 'message', label: 'Message', value: (s) => pick(s, 'message', 'error') },
      { key: 'waivedBy', label: 'Waived by', value: (s) => (s.waivedBy || []).join(', ') },
    ],
    filters: [{ name: 'q', label: 'Filter updates' }],
    load: async () => states,
  });
  main.append(updatesTable.el);
  return { refresh: async () => { states = await load(); await updatesTable.refresh(); } };
}

// ---------------------------------------------------------------------------------------
// Updates (the Update Repository)

const SEVERITIES = ['Critical', 'Important', 'Moderate', 'Low', 'Unspecified'].map((s) => [s, s]);
const CLASSIFICATIONS = ['Security Updates', 'Critical Updates', 'Updates', 'Update Rollups', 'Feature Packs', 'Service Packs', 'Definition Updates', 'Drivers', 'Tools']
  .map((s) => [s, s]);

function flags(u) {
  const out = [];
  if (pick(u, 'superseded') || (pick(u, 'supersededBy') || []).length) out.push(h('span', { class: 'tag warn' }, 'superseded'));
  if (u.expired) out.push(h('span', { class: 'tag bad' }, 'expired'));
  return out.length ? h('span', {}, out.flatMap((x, i) => [i ? ' ' : '', x])) : '';
}

export function updates(main) {
  heading(main, 'Updates');
  const q = new URLSearchParams(location.hash.split('?')[1] || '');
  const t = table({
    caption: 'Updates', csvName: 'updates', rowKey: (u) => u.id, serverSort: true,
    columns: [
      { key: 'id', label: 'Update', sorts: ['id', '-id'], value: (u) => u.id, render: (u) => link(`#/updates/${seg(u.id)}`, u.id) },
      { key: 'kb', label: 'KB / advisory', value: (u) => pick(u, 'kb', 'advisory') },
      { key: 'title', label: 'Title', value: (u) => u.title },
      { key: 'classification', label: 'Classification', value: (u) => u.classification },
      { key: 'severity', label: 'Severity', sorts: ['-severity', 'severity'], value: (u) => u.severity },
      { key: 'products', label: 'Products', value: (u) => (u.products || []).join(', ') },
      { key: 'released', label: 'Released', sorts: ['-released', 'released'], value: (u) => u.released },
      { key: 'cves', label: 'CVEs', value: (u) => (u.cves || []).join(' ') },
      { key: 'required', label: 'Systems requiring', num: true, sorts: ['-required', 'required'], value: (u) => pick(u, 'required', 'counts.required', 'fleet.required') },
      { key: 'installed', label: 'Installed on', num: true, value: (u) => pick(u, 'installed') },
      { key: 'deployments', label: 'Deployments', value: (u) => (u.deployments || []).join(', ') },
      { key: 'flags', label: 'Status', value: (u) => [u.superseded || (u.supersededBy || []).length ? 'superseded' : '', u.expired ? 'expired' : ''].filter(Boolean).join(' '), render: flags },
    ],
    filters: [
      { name: 'q', label: 'Search', placeholder: 'title, id…', value: q.get('q') || '' },
      { name: 'kb', label: 'KB', placeholder: 'KB5046617', value: q.get('kb') || '' },
      { name: 'cve', label: 'CVE', placeholder: 'CVE-2026-…', value: q.get('cve') || '' },
      { name: 'advisory', label: 'Advisory', placeholder: 'DSA-…', value: q.get('advisory') || '' },
      { name: 'product', label: 'Product', placeholder: 'Windows 11 24H2', value: q.get('product') || '' },
      { name: 'classification', label: 'Classification', type: 'select', options: CLASSIFICATIONS, value: q.get('classification') || '' },
      { name: 'severity', label: 'Severity', type: 'select', options: SEVERITIES, value: q.get('severity') || '' },
      { name: 'superseded', label: 'Superseded', type: 'select', options: [['true', 'Superseded'], ['false', 'Current']], value: q.get('superseded') || '' },
      { name: 'expired', label: 'Expired', type: 'select', options: [['true', 'Expired'], ['false', 'Not expired']], value: q.get('expired') || '' },
    ],
    load: (p) => read('updates', p),
  });
  main.append(t.el);
  return refreshAll([t]);
}

export async function update(main, { id }) {
  heading(main, id, [['#/updates', 'Updates']]);
  const body = h('div', {});
  main.append(body);
  async function load() {
    const u = await read(`updates/${seg(id)}`);
    const fleet = u.fleet || u.counts || u;
    const full = u.update || u;
    const list = (xs, href) => (xs && xs.length ? h('span', {}, xs.flatMap((x, i) => [i ? ', ' : '', href ? link(href(x), x) : x])) : 'none');
    body.replaceChildren(
      h('p', { class: 'card' }, h('strong', {}, u.title ?? id), ' ', flags(u)),
      h('div', { class: 'grid' },
        h('section', { class: 'card', 'aria-labelledby': 'h-update' }, h('h2', { id: 'h-update' }, 'Update'), facts([
          ['KB', u.kb ?? '—'], ['Advisory', u.advisory], ['Classification', u.classification ?? '—'], ['Severity', u.severity ?? '—'],
          ['Products', (u.products || []).join(', ') || '—'], ['Released', u.released ?? '—'],
          ['CVEs', list(u.cves, (c) => `#/updates?cve=${seg(c)}`)],
          ['Supersedes', list(full.supersedes, (x) => `#/updates/${seg(x)}`)],
          ['Superseded by', list(u.supersededBy, (x) => `#/updates/${seg(x)}`)],
          ['Expired', u.expired ? 'yes' : 'no'], ['Restart', full.rebootRequired ? 'required' : 'not required'],
          ['Max run time', full.maxRunTime],
          ['In catalog since version', u.sinceVersion],
        ])),
        h('section', { class: 'card', 'aria-labelledby': 'h-fleet' }, h('h2', { id: 'h-fleet' }, 'Systems'), facts([
          ['Required', h('span', { id: 'update-required' }, fmtNum(pick(fleet, 'required')))],
          ['Installed', fmtNum(pick(fleet, 'installed'))],
          ['Not required', pick(fleet, 'notRequired') === undefined ? undefined : fmtNum(fleet.notRequired)],
          ['Unknown', pick(fleet, 'unknown') === undefined ? undefined : fmtNum(fleet.unknown)],
          ['Deployments', list((u.deployments || []).map((d) => d.name ?? d), (d) => `#/deployments/${seg(d)}`)],
          ['Update lists', list((u.updateLists || []).map((d) => d.name ?? d))],
        ]))));
  }
  await load();
  return { refresh: load };
}

// ---------------------------------------------------------------------------------------
// Collections

export function collections(main) {
  heading(main, 'Collections');
  const t = table({
    caption: 'Collections', csvName: 'collections', initialSort: 'name', rowKey: (c) => nameOf(c),
    columns: [
      { key: 'name', label: 'Collection', value: nameOf, render: (c) => link(`#/collections/${seg(nameOf(c))}`, nameOf(c)) },
      { key: 'memberCount', label: 'Members', num: true, value: (c) => pick(c, 'memberCount', 'status.memberCount', 'members') },
      { key: 'nextWindow', label: 'Next maintenance window', value: (c) => pick(c, 'nextWindow', 'status.nextWindow', 'nextMaintenanceWindow', 'status.nextMaintenanceWindow'),
        render: (c) => fmtTime(pick(c, 'nextWindow', 'status.nextWindow', 'nextMaintenanceWindow', 'status.nextMaintenanceWindow')) },
      { key: 'nextWindowEnd', label: 'Window ends', value: (c) => pick(c, 'status.nextWindowEnd', 'nextWindowEnd'), render: (c) => fmtTime(pick(c, 'status.nextWindowEnd', 'nextWindowEnd')) },
      { key: 'conditions', label: 'Conditions', value: (c) => conditionText(c.status ?? c), render: (c) => conditionTag(c.status ?? c) },
    ],
    filters: [{ name: 'q', label: 'Filter' }],
    load: (p) => read('collections', p),
  });
  main.append(t.el);
  return refreshAll([t]);
}

export function collection(main, { name }) {
  heading(main, name, [['#/collections', 'Collections']]);
  const info = h('div', { class: 'card' });
  main.append(info);
  async function load() {
    const all = paged(await read('collections')).items;
    const c = all.find((x) => nameOf(x) === name) || {};
    info.replaceChildren(facts([
      ['Members', fmtNum(pick(c, 'memberCount', 'status.memberCount'))],
      ['Next maintenance window', fmtTime(pick(c, 'nextWindow', 'status.nextWindow', 'nextMaintenanceWindow', 'status.nextMaintenanceWindow'))],
      ['Window ends', fmtTime(pick(c, 'status.nextWindowEnd', 'nextWindowEnd'))],
      ['Maintenance windows', pick(c, 'maintenanceWindows', 'spec.maintenanceWindows') ? windowsList(pick(c, 'maintenanceWindows', 'spec.maintenanceWindows')) : undefined],
      ['Conditions', conditionText(c.status ?? c)],
    ]));
  }
  const t = table({
    caption: `Members of ${name}`, csvName: `${name}-members`,
    columns: [
      { key: 'name', label: 'Machine', value: (m) => m.name ?? m, render: (m) => link(`#/machines/${seg(m.name ?? m)}`, m.name ?? m) },
      { key: 'os', label: 'OS', value: (m) => pick(m, 'os', 'facts.os') },
      { key: 'agentVersion', label: 'Agent', value: (m) => m.agentVersion },
      { key: 'lastScan', label: 'Last scan', value: (m) => pick(m, 'lastScan.time', 'lastScan'), render: (m) => fmtTime(pick(m, 'lastScan.time', 'lastScan')) },
    ],
    filters: [{ name: 'q', label: 'Filter members' }], serverSort: true,
    load: (p) => read(`collections/${seg(name)}/members`, p),
  });
  main.append(h('h2', {}, 'Members'), t.el);
  load();
  return { refresh: () => Promise.all([load(), t.refresh()]) };
}

// ---------------------------------------------------------------------------------------
// History: compliance over time (uPlot), catalog versions

export async function history(main) {
  heading(main, 'History');
  const list = paged(await read('deployments')).items.map(nameOf);
  const wanted = new URLSearchParams(location.hash.split('?')[1] || '').get('deployment') || list[0] || '';
  const choose = h('select', { id: 'history-deployment' }, list.map((n) => h('option', { value: n, selected: n === wanted }, n)));
  const chartBox = h('div', { class: 'chart', id: 'history-chart', role: 'img', 'aria-label': 'Compliance over time' });
  const summary = h('p', { class: 'muted', id: 'history-summary', 'aria-live': 'polite' });
  main.append(h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() }, h('label', { for: 'history-deployment' }, 'Deployment', choose)),
    h('h2', {}, 'Compliance over time'), chartBox, summary);
  let plot;

  async function draw() {
    const name = choose.value;
    if (!name) { summary.textContent = 'No deployments.'; return; }
    const answer = await read(`deployments/${seg(name)}/history`);
    const points = (Array.isArray(answer) ? answer : answer.entries ?? answer.items ?? []).map((p) => ({
      t: Date.parse(pick(p, 'time', 'at', 'timestamp')) / 1000,
      pct: pick(p, 'compliancePercent', 'status.compliancePercent', 'percent'),
      req: pick(p, 'machines.required', 'required', 'status.machines.required'),
      unk: pick(p, 'machines.unknown', 'unknown', 'status.machines.unknown'),
    })).filter((p) => Number.isFinite(p.t)).sort((a, b) => a.t - b.t);
    const data = [points.map((p) => p.t), points.map((p) => p.pct ?? null), points.map((p) => p.req ?? null), points.map((p) => p.unk ?? null)];
    const last = points[points.length - 1];
    summary.textContent = points.length
      ? `${points.length} samples of ${name}; latest ${fmtPercent(last.pct)} compliant at ${fmtTime(new Date(last.t * 1000))}.`
      : `No history recorded for ${name} yet.`;
    chartBox.setAttribute('aria-label', `Compliance of ${name} over time. ${summary.textContent}`);
    const width = Math.max(280, chartBox.clientWidth - 16);
    const style = getComputedStyle(document.documentElement);
    const color = (v) => style.getPropertyValue(v).trim() || '#888';
    const opts = {
      width, height: 320, title: `${name}: compliance`,
      scales: { pct: { range: [0, 100] } },
      series: [{}, { label: 'Compliant %', scale: 'pct', stroke: color('--compliant'), width: 2 },
        { label: 'Required machines', scale: 'n', stroke: color('--required') },
        { label: 'Unknown machines', scale: 'n', stroke: color('--unknown') }],
      axes: [{}, { scale: 'pct', label: '% compliant' }, { scale: 'n', side: 1, label: 'machines', grid: { show: false } }],
    };
    if (!window.uPlot) { summary.textContent += ' (the chart library did not load)'; return; }
    if (plot && plot.series.length === opts.series.length && plot._name === name) { plot.setData(data); return; }
    plot?.destroy();
    plot = new window.uPlot(opts, data, chartBox);
    plot._name = name;
  }
  choose.addEventListener('change', () => { plot?.destroy(); plot = null; draw(); });

  const versions = table({
    caption: 'Catalog versions', csvName: 'catalog-versions', initialSort: '-version',
    columns: [
      { key: 'version', label: 'Version', num: true, value: (v) => v.version },
      { key: 'createdAt', label: 'Synced', value: (v) => pick(v, 'createdAt', 'created_at', 'time'), render: (v) => fmtTime(pick(v, 'createdAt', 'created_at', 'time')) },
      { key: 'updates', label: 'Updates', num: true, value: (v) => pick(v, 'updateCount', 'update_count', 'updates') },
      { key: 'digest', label: 'Digest', value: (v) => pick(v, 'digest') },
    ],
    load: (p) => read('catalog/versions', p),
  });
  main.append(h('h2', {}, 'Catalog versions'), versions.el);
  await draw();
  return { refresh: () => Promise.all([draw(), versions.refresh()]) };
}
