// The console's shell: hash routes to pages, the live refresh (the read API is polled
// every few seconds while the tab is visible), and the site line in the header.
import { read, pick, fmtNum, SignedOut } from './api.js';
import * as pages from './pages.js';

const REFRESH_MS = 5000;

const routes = [
  [/^#\/deployments\/([^?]+)/, pages.deployment, (m) => ({ name: decodeURIComponent(m[1]) })],
  [/^#\/deployments/, pages.deployments],
  [/^#\/machines\/([^?]+)/, pages.machine, (m) => ({ name: decodeURIComponent(m[1]) })],
  [/^#\/machines/, pages.machines],
  [/^#\/updates\/([^?]+)/, pages.update, (m) => ({ id: decodeURIComponent(m[1]) })],
  [/^#\/updates/, pages.updates],
  [/^#\/collections\/([^?]+)/, pages.collection, (m) => ({ name: decodeURIComponent(m[1]) })],
  [/^#\/collections/, pages.collections],
  [/^#\/history/, pages.history],
];

const main = document.getElementById('main');
const live = document.getElementById('live');
const refreshed = document.getElementById('refreshed');
const announce = document.getElementById('announce');
let current = null;
let generation = 0;

function signedOut() {
  // The sign-in page is what /ui/ answers without a session.
  location.replace('/ui/');
}

async function route(event) {
  const hash = location.hash || '#/deployments';
  const found = routes.find(([re]) => re.test(hash)) || routes[1];
  const [re, page, args] = found;
  const section = hash.split('/')[1]?.split('?')[0] || 'deployments';
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const mine = ++generation;
  current = null;
  main.replaceChildren();
  main.dataset.page = section;
  main.removeAttribute('data-ready');
  // Which route the ready mark belongs to: a waiter (a person's script, the browser test)
  // tells this page's mark from the one of the page it navigated away from.
  main.dataset.route = hash;
  try {
    const p = await page(main, args ? args(hash.match(re)) : {});
    if (mine !== generation) return;
    current = p;
    main.dataset.ready = 'true';
    const title = document.getElementById('page-title');
    announce.textContent = title ? `${title.textContent} loaded` : '';
    // A new page takes focus to its content (as a page load would put the reader at the
    // top); the first load leaves it where it is, so the first Tab is the skip link.
    if (event) main.focus({ preventScroll: true });
  } catch (e) {
    if (e instanceof SignedOut) return signedOut();
    if (mine !== generation) return;
    const p = document.createElement('p');
    p.className = 'error';
    p.setAttribute('role', 'alert');
    p.textContent = `Cannot load this page: ${e.message}`;
    main.append(p);
    main.dataset.ready = 'error';
  }
}

async function site() {
  try {
    const s = await read('site');
    const el = document.getElementById('site-summary');
    const clients = pick(s, 'clients', 'clientCount', 'machines');
    const catalog = pick(s, 'catalogVersion', 'catalog.version');
    el.textContent = [pick(s, 'revision') ? `rev ${String(s.revision).replace(/^(.*@sha1:)?(.{10}).*$/, '$2')}` : '',
      clients !== undefined ? `${fmtNum(typeof clients === 'object' ? clients.total : clients)} machines` : '',
      catalog !== undefined ? `catalog v${catalog}` : ''].filter(Boolean).join(' · ');
  } catch (e) {
    if (e instanceof SignedOut) signedOut();
  }
}

async function tick() {
  if (!live.checked || document.hidden || !current) return;
  try {
    await Promise.all([current.refresh(), site()]);
    refreshed.textContent = `updated ${new Date().toLocaleTimeString('en-GB')}`;
  } catch (e) {
    if (e instanceof SignedOut) return signedOut();
    refreshed.textContent = `refresh failed: ${e.message}`;
  }
}

window.addEventListener('hashchange', route);
document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
setInterval(tick, REFRESH_MS);
site();
route();
