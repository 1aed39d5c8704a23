// The read API as the console uses it: GET with the session cookie, paged answers
// normalised, CSV export. Nothing here knows a page.

export class SignedOut extends Error {}

/** GET /v1/read/<path> with query parameters (empty ones left out). */
export async function read(path, params = {}) {
  const url = new URL('/v1/read/' + path.replace(/^\/+/, ''), location.origin);
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (response.status === 401) throw new SignedOut('the session ended; sign in again');
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

/** A paged answer `{total, offset, limit, items}`; a plain list is taken as one page. */
export function paged(answer) {
  if (Array.isArray(answer)) return { total: answer.length, offset: 0, limit: answer.length, items: answer, local: true };
  const items = answer.items ?? [];
  return { total: answer.total ?? items.length, offset: answer.offset ?? 0, limit: answer.limit ?? items.length, items };
}

/** The path segment for a name or id. */
export const seg = (s) => encodeURIComponent(s);

/** A field by the first of several names that is present (fields may be optional). */
export function pick(obj, ...names) {
  if (!obj) return undefined;
  for (const n of names) {
    const v = n.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

export function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().replace('T', ' ').replace(/:\d\d(\.\d+)?Z$/, ' UTC');
}

export function fmtPercent(p) {
  return p === undefined || p === null ? '—' : `${Number(p).toFixed(1)} %`;
}

export function fmtNum(n) {
  return n === undefined || n === null ? '—' : Number(n).toLocaleString('en-US');
}

/** One CSV field (RFC 4180); a leading =, +, - or @ is quoted away from spreadsheets' formulas. */
function csvField(v) {
  let s = v === undefined || v === null ? '' : Array.isArray(v) ? v.join(' ') : typeof v === 'object' ? JSON.stringify(v) : String(v);
  if (/^[=+\-@]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

export function toCsv(columns, rows) {
  const lines = [columns.map((c) => csvField(c.label)).join(',')];
  for (const row of rows) lines.push(columns.map((c) => csvField(c.csv ? c.csv(row) : c.value(row))).join(','));
  return lines.join('\r\n') + '\r\n';
}

/** Offer `text` as a download named `name`. */
export function download(name, text, type = 'text/csv;charset=utf-8') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Element builder: h('td', {class: 'num'}, 'text', child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const link = (href, text) => h('a', { href }, text);
