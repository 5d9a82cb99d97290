// The site server that mystmd starts (template.yml build.start) for `myst build --html` and `myst start`.
//
// mystmd serves the book's content (config.json, content/<slug>.json, public files) on localhost:CONTENT_CDN_PORT,
// starts this server on HOST:PORT, waits for a stdout line with "http://", crawls the pages and files below into
// _build/html, then copies this folder's public/ (stylesheets, KaTeX) into the site root. Keep stdout quiet:
// mystmd reads it through a 1 MiB buffer.

import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

import { layout, pageUrl, siteIndex } from './lib/layout.mjs';
import { loadOutputFiles, renderPage } from './lib/render.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const HOST = process.env.HOST || 'localhost';
const PORT = Number(process.env.PORT || 3000);
const CONTENT = `http://localhost:${process.env.CONTENT_CDN_PORT || 3100}`;
const BASE = (process.env.BASE_URL || '').replace(/\/+$/, '');
const PUBLIC = join(here, 'public');

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.css': 'text/css; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg',
  '.gif': 'image/gif', '.webp': 'image/webp', '.woff2': 'font/woff2', '.woff': 'font/woff', '.ttf': 'font/ttf',
  '.ipynb': 'application/x-ipynb+json', '.txt': 'text/plain; charset=utf-8', '.xml': 'application/xml', '.xsl': 'application/xml',
  '.ico': 'image/x-icon', '.md': 'text/markdown; charset=utf-8',
};

/** KaTeX's stylesheet and fonts come from the npm package, copied into public/katex so the site serves them itself. */
function installKatexAssets() {
  const require = createRequire(import.meta.url);
  const dist = join(dirname(require.resolve('katex/package.json')), 'dist');
  const target = join(PUBLIC, 'katex');
  mkdirSync(join(target, 'fonts'), { recursive: true });
  copyFileSync(join(dist, 'katex.min.css'), join(target, 'katex.min.css'));
  for (const font of readdirSync(join(dist, 'fonts'))) {
    if (font.endsWith('.woff2')) copyFileSync(join(dist, 'fonts', font), join(target, 'fonts', font));
  }
}

async function fetchContent(path) {
  const response = await fetch(`${CONTENT}${path}`);
  if (!response.ok) return undefined;
  return response;
}

async function fetchJson(path) {
  const response = await fetchContent(path);
  return response ? response.json() : undefined;
}

async function loadSite() {
  const config = await fetchJson('/config.json');
  if (!config) throw new Error('config.json is not available from the content server');
  const indexSlug = config.projects?.[0]?.index ?? 'index';
  const index = await fetchJson(`/content/${indexSlug}.json`);
  return { config, site: siteIndex(config, index?.frontmatter?.title) };
}

async function renderSlug(slug) {
  const page = await fetchJson(`/content/${slug}.json`);
  if (!page) return undefined;
  const { config, site } = await loadSite();
  await loadOutputFiles(page, async (path) => (await fetchContent(path))?.text());
  const { html, headings } = renderPage(page, { base: BASE });
  return layout({ page, body: html, headings, site, base: BASE, options: config.options ?? {} });
}

async function sitemap() {
  const { site } = await loadSite();
  const urls = site.readingOrder.map((e) => `<url><loc>${pageUrl(BASE, e.slug, site.indexSlug)}</loc></url>`).join('\n');
  return `<?xml version="1.0" encoding="UTF-8"?>\n<?xml-stylesheet type="text/xsl" href="${BASE}/sitemap_style.xsl"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n${urls}\n</urlset>\n`;
}

const SITEMAP_XSL = `<?xml version="1.0" encoding="UTF-8"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:s="http://www.sitemaps.org/schemas/sitemap/0.9">
<xsl:template match="/"><html><body><h1>Pages</h1><ul><xsl:for-each select="s:urlset/s:url"><li><a href="{s:loc}"><xsl:value-of select="s:loc"/></a></li></xsl:for-each></ul></body></html></xsl:template>
</xsl:stylesheet>
`;

/** A 16x16 icon (a violet square with a light diagonal), drawn as an ICO file holding one 32-bit bitmap. */
function favicon() {
  const size = 16;
  const header = Buffer.alloc(6 + 16 + 40);
  header.writeUInt16LE(1, 2); // type: icon
  header.writeUInt16LE(1, 4); // one image
  header.writeUInt8(size, 6);
  header.writeUInt8(size, 7);
  header.writeUInt16LE(1, 10); // colour planes
  header.writeUInt16LE(32, 12); // bits per pixel
  const pixels = Buffer.alloc(size * size * 4);
  const mask = Buffer.alloc(size * 4); // AND mask: all opaque
  header.writeUInt32LE(40 + pixels.length + mask.length, 14);
  header.writeUInt32LE(22, 18); // offset of the bitmap
  header.writeUInt32LE(40, 22); // BITMAPINFOHEADER
  header.writeInt32LE(size, 26);
  header.writeInt32LE(size * 2, 30); // height counts the mask too
  header.writeUInt16LE(1, 34);
  header.writeUInt16LE(32, 36);
  for (let y = 0; y < size; y += 1) {
    for (let x = 0; x < size; x += 1) {
      const light = Math.abs(x - y) < 2;
      pixels.set(light ? [0xff, 0xe5, 0xed, 0xff] : [0xfc, 0x3f, 0x8a, 0xff], (y * size + x) * 4); // BGRA
    }
  }
  return Buffer.concat([header, pixels, mask]);
}

function sendFile(res, file) {
  res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
  res.end(readFileSync(file));
}

async function handle(req, res) {
  let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (BASE && (path === BASE || path.startsWith(`${BASE}/`))) path = path.slice(BASE.length) || '/';
  const send = (status, type, body) => {
    res.writeHead(status, { 'Content-Type': type });
    res.end(body);
  };
  if (path === '/favicon.ico') {
    res.writeHead(200, { 'Content-Type': 'image/x-icon' });
    return res.end(favicon());
  }
  if (path.startsWith('/myst_assets_folder/')) {
    // Public files of the book (figures, notebooks): proxied from the content server.
    const upstream = await fetchContent(path.replace(/^\/myst_assets_folder/, ''));
    if (!upstream) return send(404, 'text/plain', 'not found');
    res.writeHead(200, { 'Content-Type': upstream.headers.get('content-type') ?? 'application/octet-stream' });
    return res.end(Buffer.from(await upstream.arrayBuffer()));
  }
  if (path === '/myst-theme.css') return sendFile(res, join(here, 'theme.css'));
  if (path === '/robots.txt') return send(200, 'text/plain', `User-agent: *\nAllow: /\nSitemap: ${BASE}/sitemap.xml\n`);
  if (path === '/sitemap.xml') return send(200, 'application/xml', await sitemap());
  if (path === '/sitemap_style.xsl') return send(200, 'application/xml', SITEMAP_XSL);
  if (path.endsWith('.json')) {
    // Page data next to each page (the crawl saves /<slug>.json), and the site's own JSON files.
    const name = path.slice(1, -'.json'.length);
    const upstream = (await fetchContent(`/content/${name}.json`)) ?? (await fetchContent(path));
    if (!upstream) return send(404, 'text/plain', 'not found');
    return send(200, 'application/json', await upstream.text());
  }
  const publicFile = normalize(join(PUBLIC, path));
  if (publicFile.startsWith(PUBLIC + '/') && existsSync(publicFile) && statSync(publicFile).isFile()) return sendFile(res, publicFile);
  // A page: "/" is the index; "/a/b" is slug "a.b". Hidden pages are absent from config.json but have content.
  const { site } = await loadSite();
  const slug = path === '/' || path === '' ? site.indexSlug : path.replace(/^\/+|\/+$/g, '').replace(/\//g, '.');
  const html = (await renderSlug(slug)) ?? (await renderSlug(`${slug}.index`));
  if (!html) return send(404, 'text/html; charset=utf-8', '<!DOCTYPE html><title>Not found</title><p>Page not found.</p>');
  return send(200, 'text/html; charset=utf-8', html);
}

installKatexAssets();
createServer((req, res) => {
  handle(req, res).catch((error) => {
    process.stderr.write(`site template: ${req.url}: ${error.stack ?? error}\n`);
    if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end('internal error');
  });
}).listen(PORT, HOST, () => {
  // mystmd waits for this line: it must contain "http://" and the port.
  process.stdout.write(`Attention, Derived site template on http://${HOST}:${PORT}\n`);
});
