// A data table: sortable headers, filters, pages asked of the server (offset/limit/sort/q),
// CSV export of every matching row. An endpoint that answers a plain list is sorted,
// filtered and paged here instead (the list is small: deployments, collections).
import { h, paged, toCsv, download, SignedOut } from './api.js';

let serial = 0;

/**
 * columns: [{ key, label, value(row), render?(row), num?, sorts? }]
 *   sorts: the `sort=` values the server accepts for the column, cycled by its header
 *   (e.g. ['lastScan', '-lastScan']); a list answered whole sorts every column here.
 * filters: [{ name, label, type: 'search' | 'select', options?: [[value, label]], value? }]
 * load(params) → a read-API answer (paged or a list)
 */
export function table({ caption, columns, load, filters = [], pageSize = 50, csvName = 'export', initialSort, rowKey, serverSort = false }) {
  const id = `t${++serial}`;
  const state = { offset: 0, limit: pageSize, sort: initialSort || '', values: {} };
  for (const f of filters) state.values[f.name] = f.value ?? '';
  let last = { total: 0, items: [] };

  const status = h('p', { class: 'muted', id: `${id}-status`, 'aria-live': 'polite' });
  const thead = h('thead');
  const tbody = h('tbody');
  const tableEl = h('table', { id, 'aria-describedby': `${id}-status` }, h('caption', { class: 'visually-hidden' }, caption), thead, tbody);
  const prev = h('button', { type: 'button', onclick: () => go(state.offset - state.limit) }, '← Previous');
  const next = h('button', { type: 'button', onclick: () => go(state.offset + state.limit) }, 'Next →');
  const range = h('span', { class: 'range' });
  const size = h('select', { id: `${id}-size`, onchange: () => { state.limit = Number(size.value); go(0); } },
    ...[25, 50, 100, 250].map((n) => h('option', { value: n, selected: n === pageSize }, String(n))));
  const exportButton = h('button', { type: 'button', class: 'export', onclick: exportCsv }, 'Export CSV');

  const filterEls = filters.map((f) => {
    const fid = `${id}-${f.name}`;
    const input = f.type === 'select'
      ? h('select', { id: fid, name: f.name }, h('option', { value: '' }, 'Any'),
        ...(f.options || []).map(([v, l]) => h('option', { value: v, selected: v === state.values[f.name] }, l)))
      : h('input', { id: fid, name: f.name, type: 'search', value: state.values[f.name], placeholder: f.placeholder || '', autocomplete: 'off' });
    let timer;
    input.addEventListener(f.type === 'select' ? 'change' : 'input', () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.values[f.name] = input.value.trim(); go(0); }, f.type === 'select' ? 0 : 300);
    });
    return h('label', { for: fid }, f.label, input);
  });

  const el = h('section', { class: 'datatable', 'aria-label': caption },
    filterEls.length ? h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() }, filterEls) : null,
    h('div', { class: 'scroll', role: 'region', 'aria-label': `${caption} (scrolls sideways)`, tabindex: '0' }, tableEl),
    h('div', { class: 'pager' }, prev, range, next,
      h('label', { for: `${id}-size` }, 'Rows per page ', size), exportButton),
    status);

  // The sort values a column's header cycles through.
  const sortsOf = (c) => (serverSort ? c.sorts || [] : c.sorts === false ? [] : [c.key, `-${c.key}`]);

  function header() {
    thead.replaceChildren(h('tr', {}, columns.map((c) => {
      const sorts = sortsOf(c);
      const at = sorts.indexOf(state.sort);
      const dir = at < 0 ? 'none' : state.sort.startsWith('-') ? 'descending' : 'ascending';
      const th = h('th', { scope: 'col', class: c.num ? 'num' : null, 'aria-sort': sorts.length ? dir : null });
      if (!sorts.length) th.append(c.label);
      else th.append(h('button', { type: 'button', 'data-sort': c.key, title: `Sort by ${c.label}`, onclick: () => {
        state.sort = sorts[(at + 1) % sorts.length];
        go(0);
      } }, c.label));
      return th;
    })));
  }

  function params(offset, limit) {
    const p = { offset, limit };
    if (state.sort && serverSort) p.sort = state.sort;
    for (const [k, v] of Object.entries(state.values)) if (v) p[k] = v;
    return p;
  }

  // A plain list is filtered (q over every column's value), sorted and cut here.
  function local(answer, offset, limit) {
    let rows = answer.items;
    const q = (state.values.q || '').toLowerCase();
    if (q) rows = rows.filter((r) => columns.some((c) => String(c.value(r) ?? '').toLowerCase().includes(q)));
    if (state.sort) {
      const desc = state.sort.startsWith('-');
      const col = columns.find((c) => c.key === (desc ? state.sort.slice(1) : state.sort));
      if (col) {
        rows = [...rows].sort((a, b) => {
          const x = col.value(a), y = col.value(b);
          const r = typeof x === 'number' && typeof y === 'number' ? x - y : String(x ?? '').localeCompare(String(y ?? ''), 'en', { numeric: true });
          return desc ? -r : r;
        });
      }
    }
    return { total: rows.length, offset, limit, items: rows.slice(offset, offset + limit), all: rows, local: true };
  }

  async function fetchPage(offset, limit) {
    const answer = paged(await load(params(offset, limit)));
    return answer.local ? local(answer, offset, limit) : answer;
  }

  function body(answer) {
    const focused = document.activeElement && tbody.contains(document.activeElement) ? document.activeElement.getAttribute('href') : null;
    if (!answer.items.length) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: columns.length, class: 'empty' }, 'Nothing matches.')));
    } else {
      tbody.replaceChildren(...answer.items.map((row) => h('tr', { 'data-key': rowKey ? rowKey(row) : null },
        columns.map((c) => h('td', { class: c.num ? 'num' : null, 'data-col': c.key }, c.render ? c.render(row) : c.value(row) ?? '—')))));
    }
    if (focused) tbody.querySelector(`a[href="${CSS.escape(focused)}"]`)?.focus();
    const from = answer.total ? answer.offset + 1 : 0;
    const to = answer.offset + answer.items.length;
    range.textContent = `${from}–${to} of ${answer.total.toLocaleString('en-US')}`;
    range.dataset.total = answer.total;
    prev.disabled = answer.offset <= 0;
    next.disabled = to >= answer.total;
  }

  async function go(offset) {
    state.offset = Math.max(0, offset);
    header();
    await refresh(true);
  }

  // Each refresh takes a ticket; only the newest one's answer is shown (a live refresh
  // still in flight when the sort or the page changed would show the old order).
  let ticket = 0;
  async function refresh(announce = false) {
    const mine = ++ticket;
    try {
      const answer = await fetchPage(state.offset, state.limit);
      if (mine !== ticket) return;
      if (answer.offset >= answer.total && answer.total > 0 && state.offset > 0) return go(Math.floor((answer.total - 1) / state.limit) * state.limit);
      last = answer;
      body(answer);
      if (announce) status.textContent = `${answer.total.toLocaleString('en-US')} rows`;
      status.classList.remove('error');
    } catch (e) {
      status.textContent = `Cannot load: ${e.message}`;
      status.classList.add('error');
      if (e instanceof SignedOut) throw e;
    }
  }

  async function exportCsv() {
    exportButton.disabled = true;
    try {
      let rows;
      if (last.local) rows = last.all ?? (await fetchPage(0, Number.MAX_SAFE_INTEGER)).all;
      else {
        rows = [];
        const chunk = 1000;
        for (let offset = 0; ; offset += chunk) {
          const page = await fetchPage(offset, chunk);
          rows.push(...page.items);
          status.textContent = `Exporting ${rows.length.toLocaleString('en-US')} of ${page.total.toLocaleString('en-US')} rows…`;
          if (!page.items.length || rows.length >= page.total) break;
        }
      }
      download(`${csvName}.csv`, toCsv(columns, rows));
      status.textContent = `Exported ${rows.length.toLocaleString('en-US')} rows to ${csvName}.csv`;
    } catch (e) {
      status.textContent = `Cannot export: ${e.message}`;
    } finally {
      exportButton.disabled = false;
    }
  }

  header();
  return { el, refresh, ready: refresh(true), get total() { return last.total; } };
}
