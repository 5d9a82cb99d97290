#!/usr/bin/env node
// Browser test of the built site: serves the static site on 127.0.0.1, opens every page in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core) and checks what a reader sees.
//
//   node site/tests/browser.mjs [SITE_DIR=_build/html] [--screenshots DIR] [--chromium PATH]
//
// Per page: HTTP 200; no request fails or leaves 127.0.0.1; no cell error (unless tagged raises-exception); math
// rendered by KaTeX with its fonts loaded and no
// raw TeX left; every image decoded; every equation/figure/table reference points at an element carrying the
// same number; citations link to a rendered bibliography entry; chapter pages have Colab and download links,
// previous/next links and the sidebar. Every internal link (and #anchor) of every page resolves. A full-page
// screenshot of each page is saved. Exits 1 with one line per problem.

import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '..', 'template', 'package.json'));
const { chromium } = require('playwright-core');

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  if (i === -1) return fallback;
  const [, value] = args.splice(i, 2);
  return value;
};
const chromiumPath = option('--chromium', process.env.CHROMIUM || '/usr/bin/chromium');
const siteDir = resolve(args.find((a) => !a.startsWith('--')) ?? option('--site', '_build/html'));
const shotDir = resolve(option('--screenshots', join(siteDir, '..', 'screenshots')));

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.css': 'text/css', '.js': 'text/javascript', '.json': 'application/json',
  '.png': 'image/png', '.svg': 'image/svg+xml', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif',
  '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf', '.ico': 'image/x-icon', '.xml': 'application/xml',
  '.xsl': 'application/xml', '.txt': 'text/plain', '.ipynb': 'application/x-ipynb+json',
};

/** A static file server like any web host: /a/ and /a serve a/index.html. */
function serve(root) {
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = normalize(join(root, path));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!existsSync(file) && existsSync(`${file}.html`)) file = `${file}.html`;
    if (!existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

function pagesOf(config) {
  const project = config.projects?.[0] ?? {};
  const url = (slug) => (slug === project.index ? '/' : `/${slug.replace(/\.index$/, '').replace(/\./g, '/')}/`);
  const pages = [{ slug: project.index ?? 'index', url: '/', chapter: false }];
  for (const page of project.pages ?? []) {
    if (page.slug) pages.push({ slug: page.slug, url: url(page.slug), chapter: true, title: page.title });
  }
  return pages;
}

/** Runs inside the page: everything the reader would see, as data. */
function inspectPage() {
  const text = (el) => (el?.textContent ?? '').replace(/\s+/g, ' ').trim();
  const article = document.querySelector('article');
  const clone = article?.cloneNode(true);
  clone?.querySelectorAll('pre, code, .katex, script, style').forEach((el) => el.remove());
  const proseText = clone ? clone.textContent : '';
  const idOf = (href) => decodeURIComponent(href.split('#')[1] ?? '');
  return {
    hasArticle: Boolean(article),
    title: text(document.querySelector('h1')),
    katex: document.querySelectorAll('.katex').length,
    katexErrors: [...document.querySelectorAll('.katex-error, .math-error')].map(text).slice(0, 5),
    rawTex: (proseText.match(/\$\$|\\begin\{|\\frac\{|(^|[^\\$])\$[^$\s][^$]*\$/g) ?? []).slice(0, 5),
    katexFont: document.fonts.check('16px KaTeX_Main'),
    images: [...document.images].map((img) => ({ src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0 })),
    links: [...document.querySelectorAll('a[href]')].map((a) => a.href),
    ids: [...document.querySelectorAll('[id]')].map((el) => el.id),
    xrefs: [...document.querySelectorAll('a.xref')].map((a) => {
      const target = document.getElementById(idOf(a.getAttribute('href')));
      const local = a.getAttribute('href').startsWith('#');
      const number = target?.querySelector(':scope > .equation-number, :scope > figcaption .caption-number, figcaption .caption-number');
      return { text: text(a), href: a.getAttribute('href'), local, found: Boolean(target), number: text(number) };
    }),
    unresolved: [...document.querySelectorAll('.xref-unresolved, .cite-missing')].map(text),
    errors: [...document.querySelectorAll('pre.output-error:not(.output-error-expected)')].map((el) => text(el).split(' ').slice(-12).join(' ')),
    cites: [...document.querySelectorAll('a.cite')].map((a) => ({ text: text(a), ok: Boolean(document.getElementById(idOf(a.getAttribute('href')))) })),
    bibliography: document.querySelectorAll('.bibliography li').length,
    equationNumbers: [...document.querySelectorAll('.equation-number')].map(text),
    figureNumbers: [...document.querySelectorAll('figcaption .caption-number')].map(text),
    colab: [...document.querySelectorAll('a.colab')].map((a) => a.href),
    download: [...document.querySelectorAll('a.download')].map((a) => a.href),
    pager: document.querySelectorAll('.pager a').length,
    sidebarLinks: document.querySelectorAll('.sidebar a').length,
    highlightedCode: document.querySelectorAll('pre code.hljs span[class^="hljs-"]').length,
    codeBlocks: document.querySelectorAll('pre code').length,
    widgetLeaks: [...document.querySelectorAll('pre.output')].map(text).filter((t) => /^(interactive|VBox|HBox|IntSlider|FloatSlider)\(/.test(t)).length,
  };
}

async function main() {
  const configFile = join(siteDir, 'config.json');
  if (!existsSync(configFile)) throw new Error(`${configFile} is missing: build the site first (bash scripts/build_site.sh)`);
  if (!existsSync(chromiumPath)) throw new Error(`no Chromium at ${chromiumPath} (apt-get install -y chromium)`);
  const pages = pagesOf(JSON.parse(readFileSync(configFile, 'utf8')));
  mkdirSync(shotDir, { recursive: true });
  const server = await serve(siteDir);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
    // playwright gives every launch a fresh, empty --user-data-dir of its own.
  });
  const failures = [];
  const fail = (page, message) => failures.push(`${page.url}: ${message}`);
  const linkTargets = new Map(); // url without fragment -> set of fragments wanted
  const idsByPath = new Map();
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    for (const page of pages) {
      const tab = await context.newPage();
      const badRequests = [];
      tab.on('requestfailed', (r) => badRequests.push(`${r.url()} (${r.failure()?.errorText})`));
      tab.on('response', (r) => { if (r.status() >= 400) badRequests.push(`${r.url()} (HTTP ${r.status()})`); });
      tab.on('request', (r) => { if (!r.url().startsWith(origin) && !r.url().startsWith('data:')) badRequests.push(`${r.url()} (leaves the site)`); });
      tab.on('pageerror', (e) => badRequests.push(`script error: ${e.message}`));
      const started = Date.now();
      const response = await tab.goto(`${origin}${page.url}`, { waitUntil: 'load', timeout: 60_000 });
      if (!response || response.status() !== 200) {
        fail(page, `HTTP ${response?.status()}`);
        await tab.close();
        continue;
      }
      await tab.evaluate(() => document.fonts.ready);
      const seen = await tab.evaluate(inspectPage);
      idsByPath.set(new URL(tab.url()).pathname, new Set(seen.ids));
      const name = page.slug.replace(/[^\w.-]+/g, '_');
      await tab.screenshot({ path: join(shotDir, `${name}.png`), fullPage: true });
      badRequests.forEach((r) => fail(page, `request failed: ${r}`));
      if (!seen.hasArticle) fail(page, 'no <article>: the page did not render');
      if (!seen.title) fail(page, 'no title');
      seen.katexErrors.forEach((t) => fail(page, `math failed to render: ${t}`));
      seen.rawTex.forEach((t) => fail(page, `raw TeX left in the text: ${t}`));
      if (seen.katex && !seen.katexFont) fail(page, 'KaTeX fonts did not load');
      seen.images.filter((i) => !i.ok).forEach((i) => fail(page, `broken image ${i.src}`));
      seen.unresolved.forEach((t) => fail(page, `unresolved reference or citation: ${t}`));
      seen.errors.forEach((t) => fail(page, `a code cell failed when the chapter was executed: ...${t}`));
      for (const x of seen.xrefs) {
        if (!x.text) fail(page, `empty cross-reference ${x.href}`);
        if (x.local && !x.found) fail(page, `cross-reference ${x.href} has no target`);
        const wanted = x.text.match(/\d+(\.\d+)*/)?.[0];
        if (x.local && x.found && x.number && wanted && !x.number.includes(wanted) && /^(\(|Figure|Table|Equation|Eq)/.test(x.text)) {
          fail(page, `cross-reference "${x.text}" points at an element numbered "${x.number}"`);
        }
      }
      seen.cites.filter((c) => !c.ok).forEach((c) => fail(page, `citation "${c.text}" has no bibliography entry`));
      if (seen.cites.length && !seen.bibliography) fail(page, 'citations but no rendered bibliography');
      if (seen.widgetLeaks) fail(page, `${seen.widgetLeaks} widget output(s) shown as text`);
      if (seen.sidebarLinks < pages.length) fail(page, `sidebar links ${seen.sidebarLinks} < ${pages.length} pages`);
      if (pages.length > 1 && !seen.pager) fail(page, 'no previous/next links');
      if (page.chapter) {
        if (!seen.katex) fail(page, 'a chapter without rendered math (no .katex element)');
        if (!seen.colab.length) fail(page, 'no "Open in Colab" link');
        for (const link of seen.colab) {
          // Colab opens the notebook from the repository: it must exist there (checked when run from the repo root).
          const file = link.match(/\/blob\/[^/]+\/(.+)$/)?.[1];
          if (existsSync('myst.yml') && file && !existsSync(decodeURIComponent(file))) fail(page, `Colab link to ${file}, which is not in the repository`);
        }
        if (!seen.download.length) fail(page, 'no "Download notebook" link');
        if (seen.codeBlocks && !seen.highlightedCode) fail(page, 'code is not syntax-highlighted');
      }
      for (const link of seen.links) {
        const url = new URL(link);
        if (url.origin !== origin) continue;
        const key = url.pathname;
        if (!linkTargets.has(key)) linkTargets.set(key, { fragments: new Set(), from: page.url });
        if (url.hash.length > 1) linkTargets.get(key).fragments.add(decodeURIComponent(url.hash.slice(1)));
      }
      console.log(`ok ${page.url.padEnd(48)} ${String(Date.now() - started).padStart(6)} ms  katex=${seen.katex} images=${seen.images.length} eqs=[${seen.equationNumbers.join(' ')}] figs=${seen.figureNumbers.length} xrefs=${seen.xrefs.length} cites=${seen.cites.length} bib=${seen.bibliography}`);
      await tab.close();
    }
    // Every internal link resolves (HTTP 200), and its #anchor exists on the page it names.
    for (const [path, { fragments, from }] of linkTargets) {
      const response = await fetch(`${origin}${path}`);
      if (response.status !== 200) {
        failures.push(`${from}: link to ${path} gives HTTP ${response.status}`);
        continue;
      }
      const ids = idsByPath.get(path) ?? idsByPath.get(path.endsWith('/') ? path : `${path}/`);
      if (!ids) continue; // a file (notebook, image), not a page
      for (const fragment of fragments) {
        if (!ids.has(fragment)) failures.push(`${from}: link to ${path}#${fragment}: no such anchor`);
      }
    }
  } finally {
    await browser.close();
    server.close();
  }
  console.log(`checked ${pages.length} pages and ${linkTargets.size} internal link targets; screenshots in ${shotDir}`);
  if (failures.length) {
    console.error(`\nBROWSER TEST FAILED (${failures.length} problems):`);
    failures.forEach((f) => console.error(`  - ${f}`));
    process.exit(1);
  }
  console.log('browser test passed');
}

main().catch((error) => {
  console.error(`BROWSER TEST FAILED: ${error.stack ?? error}`);
  process.exit(1);
});
