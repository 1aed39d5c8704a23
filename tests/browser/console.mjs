// The console in headless Chromium (started by tests/console.rs, which passes the
// management point's address and tokens in CONSOLE_*). Every number checked on a page is
// compared with what the read API answers for the same thing.
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const base = process.env.CONSOLE_BASE;
const readToken = process.env.CONSOLE_READ_TOKEN;
const clientToken = process.env.CONSOLE_CLIENT_TOKEN;
const shots = process.env.CONSOLE_SCREENSHOTS;
const downloads = process.env.CONSOLE_DOWNLOADS || join(tmpdir(), 'console-downloads');
assert.ok(base && readToken && clientToken && shots, 'CONSOLE_BASE, _READ_TOKEN, _CLIENT_TOKEN and _SCREENSHOTS are set');
mkdirSync(downloads, { recursive: true });

const step = (s) => console.log(`- ${s}`);

/** The read API with the read token (what the page must agree with). */
async function api(path, params = {}) {
  const url = new URL(`/v1/read/${path}`, base);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const r = await fetch(url, { headers: { Authorization: `Bearer ${readToken}` } });
  assert.equal(r.status, 200, `GET ${url} answered ${r.status}`);
  return r.json();
}
const items = (a) => (Array.isArray(a) ? a : a.items);
const num = (text) => Number(String(text).replace(/[^0-9.]/g, ''));

// ---------------------------------------------------------------------------------------
// Without a session: nothing but the sign-in page.
step('without a session the console files and the read API answer 401');
for (const path of ['/ui/app.js', '/ui/pages.js', '/ui/style.css', '/ui/vendor/uPlot.iife.min.js', '/v1/read/deployments', '/v1/read/site']) {
  const r = await fetch(new URL(path, base), { redirect: 'manual' });
  assert.ok(r.status === 401 || (r.status >= 300 && r.status < 400), `${path} answered ${r.status} without a session`);
}
for (const token of ['wrong-token', clientToken]) {
  const r = await fetch(new URL('/ui/login', base), {
    method: 'POST', redirect: 'manual', body: new URLSearchParams({ token }),
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
  });
  assert.equal(r.status, 401, 'a wrong or client token is refused');
  assert.equal(r.headers.get('set-cookie'), null, 'no cookie for a refused token');
}
const clientCookie = await fetch(new URL('/v1/read/deployments', base), { headers: { cookie: `patchops_read=${clientToken}` } });
assert.ok([401, 403].includes(clientCookie.status), `a client token in the cookie reads nothing (${clientCookie.status})`);

const profile = mkdtempSync(join(tmpdir(), 'patchops-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-background-networking', '--disable-gpu',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
  viewport: { width: 1280, height: 900 },
  acceptDownloads: true,
  downloadsPath: downloads,
});
const page = context.pages()[0] ?? (await context.newPage());
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error') errors.push(`${m.text()} (${m.location().url})`); });
page.on('response', (r) => { if (r.status() >= 400 && r.status() !== 401) errors.push(`${r.status()} ${r.url()}`); });
page.setDefaultTimeout(30_000);

async function ready() {
  // A click's hash change is handled after the click returns: wait for the mark of the
  // page now in the address bar, not the one of the page before.
  const state = await page.waitForFunction(() => {
    const m = document.querySelector('main');
    return m.dataset.ready && m.dataset.route === (location.hash || '#/deployments') && m.dataset.ready;
  }).then((h) => h.jsonValue());
  if (state !== 'true') throw new Error(`the page did not load: ${await page.textContent('main')}`);
}
async function shot(name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

try {
  step('the sign-in page refuses a wrong token and a client token');
  await page.goto(`${base}/ui/`);
  assert.ok(await page.isVisible('form#login-form'));
  for (const token of ['wrong-token', clientToken]) {
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('#login-error');
    assert.match(await page.textContent('#login-error'), /not a read token/);
  }
  assert.equal((await context.cookies()).length, 0, 'no cookie after refused sign-ins');
  await shot('sign-in-1280');

  step('signing in with the read token sets an HttpOnly SameSite=Strict cookie');
  await page.fill('#token', readToken);
  await page.click('button[type=submit]');
  await page.waitForURL(`${base}/ui/`);
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, 'patchops_read');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');

  // -------------------------------------------------------------------------------------
  step('Deployments: every row agrees with the deployment status');
  await ready();
  await page.waitForSelector('main table tbody tr[data-key]');
  const deployments = items(await api('deployments'));
  assert.ok(deployments.length > 0, 'the examples have deployments');
  for (const d of deployments) {
    const row = page.locator(`main table tbody tr[data-key="${d.name}"]`);
    const cell = async (col) => num(await row.locator(`td[data-col="${col}"]`).textContent());
    const m = d.status.machines;
    assert.equal(await cell('targeted'), d.status.targeted, `${d.name} targeted`);
    assert.equal(await cell('required'), m.required, `${d.name} required`);
    assert.equal(await cell('unknown'), m.unknown, `${d.name} unknown`);
    assert.equal(await cell('failed'), m.failed, `${d.name} failed`);
    assert.equal(await cell('pendingReboot'), m.pendingReboot, `${d.name} pending reboot`);
    assert.equal(await cell('compliant'), m.compliant, `${d.name} compliant`);
  }
  await shot('deployments-1280');

  step('sorting the deployments by a header is announced by aria-sort');
  await page.click('th button[data-sort="targeted"]');
  await page.waitForSelector('th[aria-sort="ascending"] button[data-sort="targeted"]');
  // The header announces the sort at once; the rows follow with the answer.
  await page.waitForFunction(() => {
    const v = [...document.querySelectorAll('main tbody td[data-col="targeted"]')].map((td) => Number(td.textContent.replace(/[^0-9]/g, '')));
    return v.length > 0 && v.every((x, i) => i === 0 || v[i - 1] <= x);
  }).catch(() => {});
  const targetedCells = await page.locator('main tbody td[data-col="targeted"]').allTextContents();
  const sorted = [...targetedCells].map(num).sort((a, b) => a - b);
  assert.deepEqual(targetedCells.map(num), sorted, 'rows are in ascending order of targeted machines');

  step('a deployment with Required machines: its tabs and the Required list agree with the status');
  const chosen = deployments.filter((d) => d.status.machines.required > 0).sort((a, b) => b.status.machines.required - a.status.machines.required)[0];
  assert.ok(chosen, 'some example deployment has Required machines');
  await page.click(`main a[href="#/deployments/${encodeURIComponent(chosen.name)}"]`);
  await ready();
  const detail = await api(`deployments/${encodeURIComponent(chosen.name)}`);
  assert.equal(num(await page.textContent('#targeted')), detail.status.targeted);
  for (const [state, key] of [['Compliant', 'compliant'], ['Required', 'required'], ['Unknown', 'unknown'], ['Failed', 'failed'], ['PendingReboot', 'pendingReboot']]) {
    assert.equal(Number(await page.getAttribute(`#tab-${state}`, 'data-count')), detail.status.machines[key], `${state} tab`);
  }
  await page.waitForSelector('#machines-panel tbody tr[data-key]');
  const requiredApi = await api(`deployments/${encodeURIComponent(chosen.name)}/machines`, { state: 'Required', limit: 50 });
  assert.equal(requiredApi.total, detail.status.machines.required, 'the machines endpoint lists as many Required as the status counts');
  assert.equal(Number(await page.getAttribute('#machines-panel .range', 'data-total')), requiredApi.total, 'the Required list shows the total');
  const firstRow = page.locator('#machines-panel tbody tr[data-key]').first();
  assert.equal(await firstRow.getAttribute('data-key'), requiredApi.items[0].name, 'the first Required machine is the API\'s first');
  assert.equal((await firstRow.locator('td[data-col="reason"]').textContent()).trim(), requiredApi.items[0].reason ?? '—', 'the sub-reason is shown');
  await shot('deployment-1280');

  step('the tabs are reachable with the arrow keys');
  await page.focus('#tab-Required');
  await page.keyboard.press('ArrowRight');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'tab-Unknown');
  assert.equal(await page.getAttribute('#tab-Unknown', 'aria-selected'), 'true');
  await page.click('#tab-Required');
  await page.waitForSelector('#machines-panel tbody tr[data-key]');

  step('a Required machine: its sentence and updates agree with the client detail');
  const machineName = await page.locator('#machines-panel tbody tr[data-key]').first().getAttribute('data-key');
  await page.click(`#machines-panel a[href="#/machines/${encodeURIComponent(machineName)}"]`);
  await ready();
  const client = await api(`clients/${encodeURIComponent(machineName)}`);
  assert.equal((await page.textContent('#why')).trim(), client.whyNotCompliant);
  const requiredUpdate = client.updates.find((u) => u.state === 'Required' && u.deployments.includes(chosen.name)) ?? client.updates.find((u) => u.state === 'Required');
  assert.ok(requiredUpdate, `${machineName} has a Required update`);
  await page.fill('main input[name="q"]', requiredUpdate.id);
  await page.waitForSelector(`main tbody a[href="#/updates/${encodeURIComponent(requiredUpdate.id)}"]`);
  await shot('machine-1280');

  step('its Required update: the systems requiring it agree with the update listing');
  await page.click(`main tbody a[href="#/updates/${encodeURIComponent(requiredUpdate.id)}"]`);
  await ready();
  const update = await api(`updates/${encodeURIComponent(requiredUpdate.id)}`);
  assert.equal(num(await page.textContent('#update-required')), update.required);
  await shot('update-1280');

  // -------------------------------------------------------------------------------------
  step('Updates: searching a CVE lists what the API finds for it');
  const withCve = items(await api('updates', { limit: 500 })).find((u) => (u.cves || []).length);
  assert.ok(withCve, 'the example catalog has an update with a CVE');
  const cve = withCve.cves[0];
  const cveApi = await api('updates', { cve, limit: 500 });
  await page.click('a[data-nav="updates"]');
  await ready();
  await page.fill('main input[name="cve"]', cve);
  await page.waitForFunction((n) => document.querySelector('main .range')?.dataset.total === String(n), cveApi.total);
  const cveCells = await page.locator('main tbody td[data-col="cves"]').allTextContents();
  assert.equal(cveCells.length, Math.min(cveApi.total, 50));
  for (const c of cveCells) assert.ok(c.includes(cve), `every row carries ${cve}`);
  await shot('updates-cve-1280');

  step('Export CSV downloads every matching row');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('main button.export')]);
  assert.equal(download.suggestedFilename(), 'updates.csv');
  const csvPath = join(downloads, 'updates.csv');
  await download.saveAs(csvPath);
  const lines = readFileSync(csvPath, 'utf8').trim().split(/\r\n/);
  assert.equal(lines.length, cveApi.total + 1, 'a header and one line per update');
  assert.match(lines[0], /^Update,KB \/ advisory,Title,/);

  step('Machines, Collections and History open; the history chart is drawn by uPlot');
  await page.click('a[data-nav="machines"]');
  await ready();
  await page.waitForSelector('main tbody tr[data-key]');
  const clients = await api('clients', { limit: 1 });
  assert.equal(Number(await page.getAttribute('main .range', 'data-total')), clients.total);
  await shot('machines-1280');

  await page.click('a[data-nav="collections"]');
  await ready();
  await page.waitForSelector('main tbody tr[data-key]');
  const collections = items(await api('collections'));
  assert.equal(await page.locator('main tbody tr[data-key]').count(), Math.min(collections.length, 50));
  const coll = collections.find((c) => (c.status?.memberCount ?? 0) > 0) ?? collections[0];
  assert.equal(num(await page.locator(`main tbody tr[data-key="${coll.name}"] td[data-col="memberCount"]`).textContent()), coll.status.memberCount);
  await page.click(`main a[href="#/collections/${encodeURIComponent(coll.name)}"]`);
  await ready();
  await page.waitForSelector('main tbody tr');
  const members = await api(`collections/${encodeURIComponent(coll.name)}/members`, { limit: 1 });
  await page.waitForFunction((n) => document.querySelector('main .range')?.dataset.total === String(n), members.total);
  await shot('collections-1280');

  await page.click('a[data-nav="history"]');
  await ready();
  await page.waitForSelector('#history-chart .uplot canvas');
  assert.match(await page.textContent('#history-summary'), /samples|No history/);
  await shot('history-1280');

  step('keyboard: the first Tab of a freshly loaded page reaches the skip link, focus is visible');
  await page.reload();
  await ready();
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.notEqual(outline, 'none', 'the focused element has an outline');

  // -------------------------------------------------------------------------------------
  step('at phone width (375 px) the pages fit without sideways scrolling of the page');
  await page.setViewportSize({ width: 375, height: 812 });
  for (const [hash, name] of [['#/deployments', 'deployments-375'], [`#/deployments/${encodeURIComponent(chosen.name)}`, 'deployment-375'],
    [`#/machines/${encodeURIComponent(machineName)}`, 'machine-375'], ['#/updates', 'updates-375']]) {
    await page.goto(`${base}/ui/${hash}`);
    await ready();
    await page.waitForTimeout(200);
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    // What sticks out, to say where in the page the layout breaks.
    const wide = await page.evaluate(() => [...document.querySelectorAll('body *')]
      .filter((e) => e.getBoundingClientRect().right > 376 && !e.parentElement.closest('.scroll'))
      .slice(0, 8).map((e) => `${e.tagName.toLowerCase()}${e.id ? '#' + e.id : ''}${e.className ? '.' + e.className : ''}`).join(', '));
    assert.ok(width <= 376, `${hash} is ${width} px wide at 375 px: ${wide}`);
    await shot(name);
  }

  step('live refresh: the page asks the read API again within a few seconds');
  const asked = page.waitForRequest((r) => r.url().includes('/v1/read/updates'), { timeout: 20_000 });
  await asked;

  step('signing out clears the cookie; the files answer 401 again');
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click('button:has-text("Sign out")');
  await page.waitForSelector('form#login-form');
  assert.equal((await context.cookies()).filter((c) => c.name === 'patchops_read').length, 0);
  const after = await page.request.get(`${base}/ui/app.js`);
  assert.equal(after.status(), 401);

  assert.deepEqual(errors.filter((e) => !/status of 401/.test(e)), [], 'no script errors and no failed requests');
  console.log('console: all checks passed');
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
