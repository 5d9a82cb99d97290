#!/usr/bin/env node
// Browser test of the built site: serves the static site on 127.0.0.1, opens every page in headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core) and checks what a reader sees.
//
//   node site/tests/browser.mjs [SITE_DIR=_build/html] [--screenshots DIR] [--chromium PATH] [--full-page]
//
// Per page: HTTP 200; no request fails or leaves 127.0.0.1; no cell error (unless tagged raises-exception); math
// rendered by KaTeX with its fonts loaded and no
// raw TeX left; every image decoded; every equation/figure/table reference points at an element carrying the
// same number; citations link to a rendered bibliography entry; chapter pages have Colab and download links,
// previous/next links and the sidebar; every diagram (an SVG figure of the chapter's source) renders; every link of
// the source to a label (`[chapter 05](#ch05)`, `(#appendix-notation)`, `(#api-...)`) is a link on the page.
// Every internal link (and #anchor) of every page resolves. Then: the search box finds "skew" and its first result
// opens chapter 05; MultiHeadAttention's API entry opens, with its signature and a link to its chapter; a teacher's
// page has its running time, folded answers and a slide zip that downloads, and the course outline links it; at phone
// width (390 px) no page scrolls sideways. A screenshot of each page is saved. Exits 1 with one line per problem.

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
const siteDir = resolve(args.find((a) => !a.startsWith('--')) ?? '_build/html');
const shotDir = resolve(option('--screenshots', join(siteDir, '..', 'screenshots')));
// Screenshots show the first screen of each page; --full-page takes whole pages (slow: long chapters are tall).
const fullPageShots = args.includes('--full-page');
let shotMs = 0;
const PHONE_WIDTH = 390;

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
    // Chapters are titled "NN. Title"; the appendices and the API reference are pages too, but not chapters.
    if (page.slug) pages.push({ slug: page.slug, url: url(page.slug), chapter: /^\d\d\. /.test(page.title ?? ''), title: page.title });
  }
  return pages;
}

/** The page's source in the repository (when run from its root): chapters/NN-slug.md for an executed notebook. */
function sourceOf(location) {
  if (!location || !existsSync('myst.yml')) return undefined;
  let file = location.replace(/^\/+/, '');
  const name = file.split('/').pop();
  if (file.startsWith('_build/executed/')) file = join('chapters', name.replace(/\.ipynb$/, '.md'));
  return existsSync(file) ? readFileSync(file, 'utf8') : undefined;
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
    student: [...document.querySelectorAll('a.student')].map((a) => a.href),
    pager: document.querySelectorAll('.pager a').length,
    sidebarLinks: document.querySelectorAll('.sidebar a').length,
    highlightedCode: document.querySelectorAll('pre code.hljs span[class^="hljs-"]').length,
    codeBlocks: document.querySelectorAll('pre code').length,
    widgetLeaks: [...document.querySelectorAll('pre.output')].map(text).filter((t) => /^(interactive|VBox|HBox|IntSlider|FloatSlider)\(/.test(t)).length,
    diagrams: [...document.querySelectorAll('figure img')].filter((img) => /\.svg$/.test(img.getAttribute('src') ?? ''))
      .map((img) => ({ src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0 })),
    hrefs: [...document.querySelectorAll('article a[href]')].map((a) => new URL(a.href).pathname.replace(/\/$/, '') + new URL(a.href).hash),
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
  // Labels -> {url, kind, html_id}, as mystmd resolved them.
  const xrefs = new Map();
  for (const ref of JSON.parse(readFileSync(join(siteDir, 'myst.xref.json'), 'utf8')).references ?? []) {
    if (ref.identifier) xrefs.set(ref.identifier.toLowerCase(), ref);
  }
  let diagramPages = 0;
  let labelLinks = 0;
  const started = Date.now();
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
      // A font loads only when visible text uses it: a page whose math sits only in folded answers (a teacher's
      // page) loads none. Ask for KaTeX's main font wherever there is math, so the check below tests that the
      // site serves it, not whether this page happened to show math.
      await tab.evaluate(async () => {
        if (document.querySelector('.katex')) await document.fonts.load('16px KaTeX_Main');
        await document.fonts.ready;
      });
      const seen = await tab.evaluate(inspectPage);
      idsByPath.set(new URL(tab.url()).pathname, new Set(seen.ids));
      const name = page.slug.replace(/[^\w.-]+/g, '_');
      const shot = Date.now();
      await tab.screenshot({ path: join(shotDir, `${name}.png`), fullPage: fullPageShots, timeout: 120_000 });
      shotMs += Date.now() - shot;
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
        for (const link of seen.download) {
          // The download is the reader notebook, served by the site: plain Jupyter, no MyST syntax left.
          const file = join(siteDir, decodeURIComponent(new URL(link).pathname));
          if (!existsSync(file)) fail(page, `"Download notebook" links to ${link}, which the site does not have`);
          else if (/\{cite|\{eq\}|:::\{/.test(readFileSync(file, 'utf8'))) fail(page, `the downloaded notebook ${link} still has MyST syntax`);
        }
        if (seen.student.length !== 1) fail(page, `${seen.student.length} "Student edition" links, not 1`);
        for (const link of seen.student) {
          // The student edition: the exercises blanked (nbgrader's stub), no solution left, no MyST syntax.
          const file = join(siteDir, decodeURIComponent(new URL(link).pathname));
          const text = existsSync(file) ? readFileSync(file, 'utf8') : null;
          if (text === null) fail(page, `"Student edition" links to ${link}, which the site does not have`);
          else if (!text.includes('raise NotImplementedError()') || /SOLUTION|Solution<\/summary>|\{cite|:::\{/.test(text)) {
            fail(page, `the student edition ${link} is not blanked, or still has a solution or MyST syntax`);
          }
        }
        if (seen.codeBlocks && !seen.highlightedCode) fail(page, 'code is not syntax-highlighted');
      }
      const pageJson = JSON.parse(readFileSync(join(siteDir, page.url === '/' ? 'index.json' : `${page.url.slice(1, -1)}.json`), 'utf8'));
      const source = sourceOf(pageJson.location);
      if (source) {
        const figures = [...source.matchAll(/^(?::{3,}|`{3,})\{figure\} *(\S+\.svg)|!\[[^\]]*\]\((\S+\.svg)\)/gm)].map((m) => m[1] ?? m[2]);
        if (figures.length && !seen.diagrams.filter((d) => d.ok).length) fail(page, `its source has ${figures.length} SVG diagram(s) (${figures[0]}, ...) but none renders`);
        if (figures.length && seen.diagrams.some((d) => d.ok)) diagramPages += 1;
        // Every [text](#label) of the source is a link on the page, to the page (and anchor) that carries the label.
        for (const [, target] of source.matchAll(/\]\(#([\w-]+)\)/g)) {
          const ref = xrefs.get(target.toLowerCase());
          if (!ref) {
            fail(page, `link to #${target}: no page or anchor has this label`);
            continue;
          }
          const want = ref.kind === 'page' ? ref.url.replace(/\/$/, '') : `${ref.url.replace(/\/$/, '')}#${ref.html_id ?? ref.identifier}`;
          const local = ref.url.replace(/\/$/, '') === page.url.replace(/\/$/, '');
          const found = seen.hrefs.some((h) => h === want || (ref.kind === 'page' ? h.split('#')[0] === want : local && h.endsWith(`#${ref.html_id ?? ref.identifier}`)));
          if (!found) fail(page, `[...](#${target}) of the source is not a link to ${want} on the page`);
          else labelLinks += 1;
        }
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
    console.log(`${diagramPages} page(s) with SVG diagrams rendered; ${labelLinks} label links of the sources found on their pages`);
    const timed = async (name, check) => {
      const t0 = Date.now();
      await check();
      console.log(`  (${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    };
    console.log(`  (pages: ${((Date.now() - started) / 1000).toFixed(1)} s)`);
    await timed('search', () => checkSearch(context, origin, pages, failures));
    await timed('API entry', () => checkApiEntry(context, origin, pages, failures));
    await timed('teacher page', () => checkTeacherPage(context, origin, pages, failures));
    await timed('phone width', () => checkPhoneWidth(browser, origin, pages, failures));
  } finally {
    await browser.close();
    server.close();
  }
  console.log(`checked ${pages.length} pages and ${linkTargets.size} internal link targets in ${((Date.now() - started) / 1000).toFixed(1)} s (screenshots ${(shotMs / 1000).toFixed(1)} s); screenshots in ${shotDir}`);
  if (failures.length) {
    console.error(`\nBROWSER TEST FAILED (${failures.length} problems):`);
    failures.forEach((f) => console.error(`  - ${f}`));
    process.exit(1);
  }
  console.log('browser test passed');
}

/** The search box (Pagefind): "skew" is found, and the first result opens chapter 05. */
async function checkSearch(context, origin, pages, failures) {
  const chapter05 = pages.find((p) => /^05\. /.test(p.title ?? ''));
  if (!chapter05) return; // a book without chapter 05 has nothing to find
  const tab = await context.newPage();
  try {
    await tab.goto(`${origin}/`, { waitUntil: 'load' });
    const input = tab.locator('#search input.pagefind-ui__search-input');
    await input.waitFor({ timeout: 10_000 });
    await input.fill('skew');
    const first = tab.locator('#search .pagefind-ui__result-link').first();
    await first.waitFor({ timeout: 10_000 });
    const results = await tab.locator('#search .pagefind-ui__result').count();
    await tab.screenshot({ path: join(shotDir, 'search-skew.png') });
    await first.click();
    await tab.waitForLoadState('load');
    const landed = new URL(tab.url()).pathname;
    if (landed.replace(/\/$/, '') !== chapter05.url.replace(/\/$/, '')) failures.push(`search "skew": the first result opens ${landed}, not chapter 05 (${chapter05.url})`);
    else console.log(`search "skew": ${results} result(s); the first opens ${landed}`);
  } catch (error) {
    failures.push(`search "skew" failed: ${String(error.message ?? error).split('\n')[0]}`);
  } finally {
    await tab.close();
  }
}

/** MultiHeadAttention's API entry: its anchor opens, with the signature, the public path's anchor, and a link to chapter 04. */
async function checkApiEntry(context, origin, pages, failures) {
  const api = pages.find((p) => p.slug === 'api-attention');
  if (!api) {
    failures.push('no API reference page for attnbook.attention (api-attention)');
    return;
  }
  const tab = await context.newPage();
  try {
    await tab.goto(`${origin}${api.url}#api-attnbook-attention-core-multiheadattention`, { waitUntil: 'load' });
    const entry = await tab.evaluate(() => {
      const heading = document.getElementById('api-attnbook-attention-core-multiheadattention');
      if (!heading) return undefined;
      const box = heading.getBoundingClientRect();
      const parts = [];
      for (let el = heading.nextElementSibling; el && !/^H[1-4]$/.test(el.tagName); el = el.nextElementSibling) parts.push(el);
      return {
        heading: heading.textContent,
        inView: box.top >= 0 && box.top < window.innerHeight,
        alias: Boolean(document.getElementById('api-attnbook-attention-multiheadattention')),
        signature: parts.map((el) => el.querySelector('pre code')?.textContent ?? '').join(''),
        chapterLinks: parts.flatMap((el) => [...el.querySelectorAll('a')]).filter((a) => /chapter \d\d/.test(a.textContent)).map((a) => ({ text: a.textContent, href: a.href })),
      };
    });
    await tab.screenshot({ path: join(shotDir, 'api-MultiHeadAttention.png') });
    if (!entry) failures.push(`${api.url}: no entry #api-attnbook-attention-core-multiheadattention`);
    else {
      if (!entry.inView) failures.push(`${api.url}#api-attnbook-attention-core-multiheadattention: the entry is not scrolled into view`);
      if (!entry.alias) failures.push(`${api.url}: no anchor for the public path attnbook.attention.MultiHeadAttention`);
      if (!/class MultiHeadAttention\(\s*embed_dim/.test(entry.signature)) failures.push(`${api.url}: MultiHeadAttention's signature is missing`);
      const chapter04 = pages.find((p) => /^04\. /.test(p.title ?? ''));
      const link = entry.chapterLinks.find((l) => /chapter 04/.test(l.text));
      if (chapter04 && (!link || new URL(link.href).pathname.replace(/\/$/, '') !== chapter04.url.replace(/\/$/, ''))) {
        failures.push(`${api.url}: MultiHeadAttention's entry does not link to chapter 04 (${chapter04.url}): ${JSON.stringify(entry.chapterLinks)}`);
      } else console.log(`API entry MultiHeadAttention: signature, public-path anchor, link to ${link?.href ?? 'its chapter'}`);
    }
  } finally {
    await tab.close();
  }
}

/** A teacher's page (the first one): its running time, 3-5 concept checks with folded answers that open, its
 * slide folder as a zip that downloads, and the course outline linking to it. */
async function checkTeacherPage(context, origin, pages, failures) {
  const teacher = pages.find((p) => p.slug.endsWith('-teaching'));
  const course = pages.find((p) => p.slug === 'course');
  if (!teacher || !course) {
    failures.push(`no teacher's page or no course outline among the pages (${teacher?.url}, ${course?.url})`);
    return;
  }
  const tab = await context.newPage();
  try {
    await tab.goto(`${origin}${teacher.url}`, { waitUntil: 'load' });
    const page = await tab.evaluate(() => ({
      running: [...document.querySelectorAll('tr')].map((tr) => tr.textContent).find((t) => t.startsWith('Running time')),
      questions: [...document.querySelectorAll('p')].filter((p) => /^Question \d\./.test(p.textContent)).length,
      zip: [...document.querySelectorAll('a')].map((a) => a.href).find((href) => href.endsWith('.zip')),
    }));
    const answers = await tab.locator('details:has(summary:has-text("Answer"))');
    const count = await answers.count();
    if (!page.running) failures.push(`${teacher.url}: no "Running time" row`);
    if (page.questions < 3 || page.questions > 5 || count !== page.questions) {
      failures.push(`${teacher.url}: ${page.questions} concept checks and ${count} folded answers (want 3-5, one each)`);
    } else {
      await answers.first().locator('summary').click();
      if (!(await answers.first().evaluate((d) => d.open))) failures.push(`${teacher.url}: an answer does not unfold`);
    }
    if (!page.zip) failures.push(`${teacher.url}: no link to the slide folder (.zip)`);
    else {
      const response = await tab.request.get(page.zip);
      const body = await response.body();
      if (!response.ok() || body.subarray(0, 2).toString() !== 'PK') failures.push(`${teacher.url}: the slide zip ${page.zip} does not download as a zip`);
    }
    await tab.goto(`${origin}${course.url}`, { waitUntil: 'load' });
    const linked = await tab.evaluate((url) => [...document.querySelectorAll('a')].some((a) => new URL(a.href).pathname.replace(/\/$/, '') === url.replace(/\/$/, '')), teacher.url);
    if (!linked) failures.push(`${course.url}: the course outline does not link to ${teacher.url}`);
    console.log(`teacher page ${teacher.url}: ${page.running ?? 'no running time'}; ${page.questions} concept checks; zip ${page.zip ? 'downloads' : 'missing'}`);
  } finally {
    await tab.close();
  }
}

/** At phone width the page itself never scrolls sideways (wide code, tables and math scroll inside their boxes). */
async function checkPhoneWidth(browser, origin, pages, failures) {
  const context = await browser.newContext({ viewport: { width: PHONE_WIDTH, height: 844 }, isMobile: true, hasTouch: true });
  try {
    const tab = await context.newPage();
    for (const page of pages) {
      // The layout is all that matters here: no need to wait for images ("load").
      await tab.goto(`${origin}${page.url}`, { waitUntil: 'domcontentloaded' });
      // A mobile browser widens its layout viewport to fit wide content (innerWidth grows with it), so both are
      // compared with the phone's 390 px.
      const { scrollWidth, innerWidth, culprits } = await tab.evaluate((width) => ({
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: window.innerWidth,
        culprits: [...document.querySelectorAll('body *')].filter((el) => el.getBoundingClientRect().right > width + 1)
          .filter((el) => !el.parentElement.closest('pre, .table-wrapper, .math-display, .output-html, .katex-display, .katex-mathml, svg'))
          .slice(0, 3).map((el) => `${el.tagName.toLowerCase()}.${[...el.classList].join('.')}`),
      }), PHONE_WIDTH);
      if (Math.max(scrollWidth, innerWidth) > PHONE_WIDTH) {
        failures.push(`${page.url} at ${PHONE_WIDTH} px: the page scrolls sideways (scrollWidth ${scrollWidth}, innerWidth ${innerWidth}): ${culprits.join(', ')}`);
      }
      if (page.url === '/' || page.chapter) await tab.screenshot({ path: join(shotDir, `phone-${page.slug.replace(/[^\w.-]+/g, '_')}.png`) });
    }
    console.log(`phone width (${PHONE_WIDTH} px): ${pages.length} pages checked for sideways scrolling`);
  } finally {
    await context.close();
  }
}

main().catch((error) => {
  console.error(`BROWSER TEST FAILED: ${error.stack ?? error}`);
  process.exit(1);
});
