// The HTML page around a rendered body: top bar, sidebar table of contents (parts, chapters, planned chapters),
// chapter actions (Colab, download), "on this page" headings, previous/next links. No JavaScript is needed
// except for the search box: Pagefind's UI, whose index scripts/build_site.sh writes into _build/html/pagefind/
// after the build (under `myst start` there is no index, and the box stays empty).

const escapeHtml = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The site's reading order and sidebar, from config.json and the index page's title. */
export function siteIndex(config, indexTitle) {
  const project = config.projects?.[0] ?? {};
  const entries = [{ kind: 'page', slug: project.index ?? 'index', title: indexTitle ?? 'Home', level: 1 }];
  for (const page of project.pages ?? []) {
    if (page.slug) entries.push({ kind: 'page', slug: page.slug, title: page.title, level: page.level ?? 1 });
    else if ((page.level ?? 1) <= 1) entries.push({ kind: 'part', title: page.title, level: 1 });
    else entries.push({ kind: 'planned', title: page.title, level: page.level });
  }
  return {
    title: project.title ?? config.title ?? 'Book',
    indexSlug: project.index ?? 'index',
    github: project.github,
    entries,
    readingOrder: entries.filter((e) => e.kind === 'page'),
  };
}

export function pageUrl(base, slug, indexSlug) {
  if (slug === indexSlug) return `${base}/`;
  return `${base}/${slug.replace(/\.index$/, '').replace(/\./g, '/')}`;
}

function sidebar(site, current, base) {
  const items = site.entries.map((entry) => {
    const title = escapeHtml(entry.title);
    if (entry.kind === 'part') return `<li class="toc-part">${title}</li>`;
    if (entry.kind === 'planned') {
      return `<li class="toc-planned level-${entry.level}"><span>${title}</span> <span class="badge">planned</span></li>`;
    }
    const active = entry.slug === current ? ' aria-current="page" class="active"' : '';
    return `<li class="toc-page level-${entry.level}"><a href="${pageUrl(base, entry.slug, site.indexSlug)}"${active}>${title}</a></li>`;
  });
  return `<nav class="sidebar" id="toc" aria-label="Table of contents"><ul>\n${items.join('\n')}\n</ul></nav>`;
}

function pager(site, current, base) {
  const order = site.readingOrder;
  const i = order.findIndex((e) => e.slug === current);
  const link = (entry, rel, label) =>
    entry
      ? `<a class="pager-${rel}" rel="${rel}" href="${pageUrl(base, entry.slug, site.indexSlug)}"><span class="pager-label">${label}</span><span class="pager-title">${escapeHtml(entry.title)}</span></a>`
      : '<span></span>';
  return `<nav class="pager" aria-label="Previous and next">${link(order[i - 1], 'prev', '← Previous')}${link(order[i + 1], 'next', 'Next →')}</nav>`;
}

/**
 * "Open in Colab", "Download notebook", "Student edition" and "Source" for chapter pages. Colab and the download
 * get the reader notebook (notebooks/NN-slug.ipynb: plain Jupyter, no MyST syntax, first cell installs what the
 * chapter needs); the student edition is notebooks/student/NN-slug.ipynb (exercises blanked, in nbgrader's format);
 * build_site.sh puts both into the built site. Source is the chapter's MyST markdown.
 */
function chapterActions(page, site, options) {
  const notebook = (page.frontmatter?.exports ?? []).find((e) => e.format === 'ipynb' && e.url);
  if (!notebook && !String(page.location ?? '').endsWith('.ipynb')) return '';
  const name = String(page.location).split('/').pop();
  const folder = options.notebook_folder ?? 'chapters';
  const readers = options.reader_folder ?? 'notebooks';
  const branch = options.branch ?? 'main';
  const links = [];
  const repo = String(site.github ?? '').match(/github\.com\/([^/]+\/[^/#?]+)/)?.[1]?.replace(/\.git$/, '');
  if (repo) {
    links.push(`<a class="action colab" href="https://colab.research.google.com/github/${repo}/blob/${branch}/${readers}/${name}">Open in Colab</a>`);
  }
  links.push(`<a class="action download" href="/${readers}/${name}" download="${escapeHtml(name)}">Download notebook</a>`);
  // The student edition (exercises blanked, tests kept: scripts/teach.py), which build_site.sh puts beside it.
  const student = name.replace(/\.ipynb$/, '-student.ipynb');
  links.push(`<a class="action student" href="/${readers}/student/${name}" download="${escapeHtml(student)}">Student edition</a>`);
  if (repo) {
    const source = name.replace(/\.ipynb$/, '.md');
    links.push(`<a class="action source" href="https://github.com/${repo}/blob/${branch}/${folder}/${source}">Source</a>`);
  }
  return `<div class="chapter-actions">${links.join('')}</div>`;
}

/** The book's contents on the landing page: parts, chapters (linked) and planned chapters. */
function contents(site, base) {
  const blocks = [];
  let items = [];
  const flush = () => {
    if (items.length) blocks.push(`<ul class="contents-list">\n${items.join('\n')}\n</ul>`);
    items = [];
  };
  for (const entry of site.entries.slice(1)) {
    const title = escapeHtml(entry.title);
    if (entry.kind === 'part') {
      flush();
      blocks.push(`<h3 class="contents-part">${title}</h3>`);
    } else if (entry.kind === 'planned') {
      items.push(`<li class="planned">${title} <span class="badge">planned</span></li>`);
    } else {
      items.push(`<li><a href="${pageUrl(base, entry.slug, site.indexSlug)}">${title}</a></li>`);
    }
  }
  flush();
  return `<section class="book-contents" id="contents"><h2>Contents<a class="anchor" href="#contents" aria-label="Link to this section">¶</a></h2>\n${blocks.join('\n')}\n</section>`;
}

function onThisPage(headings) {
  const items = headings.filter((h) => h.depth === 2);
  if (items.length < 2) return '<aside class="page-toc"></aside>';
  const li = items.map((h) => `<li><a href="#${escapeHtml(h.id)}">${escapeHtml(h.text)}</a></li>`).join('\n');
  return `<aside class="page-toc" aria-label="On this page"><p class="page-toc-title">On this page</p><ul>\n${li}\n</ul></aside>`;
}

export function layout({ page, body, headings, site, base, options, titleId }) {
  const title = page.frontmatter?.title ?? site.title;
  const isIndex = page.slug === site.indexSlug;
  const docTitle = isIndex ? site.title : `${title} · ${site.title}`;
  const description = page.frontmatter?.description ?? '';
  if (isIndex) headings = [...headings, { id: 'contents', depth: 2, text: 'Contents' }];
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(docTitle)}</title>
${description ? `<meta name="description" content="${escapeHtml(description)}">` : ''}
<link rel="icon" href="${base}/favicon.ico">
<link rel="stylesheet" href="${base}/katex/katex.min.css">
<link rel="stylesheet" href="${base}/myst-theme.css">
<link rel="stylesheet" href="${base}/pagefind/pagefind-ui.css">
<script src="${base}/pagefind/pagefind-ui.js" defer></script>
<script>
window.addEventListener('DOMContentLoaded', () => {
  if (window.PagefindUI) new PagefindUI({ element: '#search', baseUrl: '${base}/', showSubResults: true, showImages: false, resetStyles: false });
});
</script>
</head>
<body>
<header class="topbar"><a class="brand" href="${base}/">${escapeHtml(site.title)}</a><a class="toc-jump" href="#toc">Contents</a><div id="search" class="search" role="search"></div></header>
<div class="layout">
${sidebar(site, page.slug, base)}
<main class="content">
<article class="page" data-slug="${escapeHtml(page.slug)}" data-pagefind-body>
<h1 class="page-title"${titleId ? ` id="${escapeHtml(titleId)}"` : ''}>${escapeHtml(title)}</h1>
${chapterActions(page, site, options)}
${body}
${isIndex ? contents(site, base) : ''}
</article>
${pager(site, page.slug, base)}
</main>
${onThisPage(headings)}
</div>
</body>
</html>
`;
}
