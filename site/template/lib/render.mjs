// Page JSON (mystmd's mdast) -> HTML for the body of one page.
//
// mdast-util-to-hast does the CommonMark nodes; the handlers below do MyST's own nodes: math (rendered by KaTeX
// here, so the HTML matches the KaTeX stylesheet the site serves), cross-references, citations, figures and
// their captions, notebook cells and their outputs, admonitions, dropdowns. Public files (figures, notebook
// downloads) are referenced as /myst_assets_folder/<file>; `myst build --html` rewrites that prefix to the
// site's /build/ folder, and server.mjs proxies it under `myst start`.

import katex from 'katex';
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import json from 'highlight.js/lib/languages/json';
import python from 'highlight.js/lib/languages/python';
import pythonRepl from 'highlight.js/lib/languages/python-repl';
import yaml from 'highlight.js/lib/languages/yaml';
import { toHast } from 'mdast-util-to-hast';
import { toHtml } from 'hast-util-to-html';

hljs.registerLanguage('python', python);
hljs.registerLanguage('pycon', pythonRepl);
hljs.registerLanguage('bash', bash);
hljs.registerLanguage('json', json);
hljs.registerLanguage('yaml', yaml);
const LANGUAGE_ALIASES = { ipython3: 'python', ipython: 'python', py: 'python', python3: 'python', sh: 'bash', shell: 'bash', console: 'bash', yml: 'yaml' };

export const ASSETS = '/myst_assets_folder';
const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
const IMAGE_MIMES = ['image/svg+xml', 'image/png', 'image/jpeg', 'image/gif', 'image/webp'];
const ANSI = /\u001b\[[0-9;]*[A-Za-z]/g;

const el = (tagName, properties = {}, children = []) => ({ type: 'element', tagName, properties, children });
const text = (value) => ({ type: 'text', value: String(value ?? '') });
const raw = (value) => ({ type: 'raw', value });
const cls = (...names) => names.filter(Boolean);

/** A root-relative public file ("/abc.png") as the URL the site serves it from. */
export function assetUrl(path) {
  if (!path || /^[a-z]+:/i.test(path) || path.startsWith('data:')) return path;
  return `${ASSETS}/${path.replace(/^\/+/, '')}`;
}

function plainText(node) {
  if (!node) return '';
  if (typeof node.value === 'string' && !node.children) return node.value;
  return (node.children ?? []).map(plainText).join('');
}

function renderTex(value, displayMode, fallbackHtml, macros) {
  try {
    return katex.renderToString(value, { displayMode, throwOnError: true, macros: { ...macros }, strict: 'ignore', trust: false });
  } catch (error) {
    if (fallbackHtml) return fallbackHtml; // mystmd's own KaTeX managed it: keep that
    return `<span class="math-error" title="${String(error.message).replace(/"/g, '&quot;')}">${value.replace(/[&<>]/g, (c) => `&#${c.charCodeAt(0)};`)}</span>`;
  }
}

function highlighted(value, lang) {
  const language = LANGUAGE_ALIASES[lang] ?? lang;
  if (language && hljs.getLanguage(language)) {
    return { html: hljs.highlight(value, { language, ignoreIllegals: true }).value, language };
  }
  return { html: value.replace(/[&<>]/g, (c) => `&#${c.charCodeAt(0)};`), language: language || 'text' };
}

function mimeText(entry) {
  if (!entry) return undefined;
  if (typeof entry === 'string') return entry;
  if (Array.isArray(entry)) return entry.join('');
  return entry.content ?? entry.loadedContent;
}

/** Renders one notebook output (a jupyter_data object). */
function renderOutput(data, ctx) {
  if (!data) return [];
  if (data.output_type === 'stream') {
    const value = (Array.isArray(data.text) ? data.text.join('') : data.text ?? '').replace(ANSI, '');
    return [el('pre', { className: cls('output', 'output-stream', data.name === 'stderr' && 'output-stderr') }, [text(value)])];
  }
  if (data.output_type === 'error') {
    const tb = Array.isArray(data.traceback) ? data.traceback.join('\n') : data.traceback ?? `${data.ename}: ${data.evalue}`;
    // A cell tagged raises-exception shows its error on purpose; any other error means the chapter failed to run.
    return [el('pre', { className: cls('output', 'output-error', ctx.expectError && 'output-error-expected') }, [text(String(tb).replace(ANSI, ''))])];
  }
  const bundle = data.data ?? {};
  if (bundle[WIDGET_MIME]) {
    // The site has no live kernel: widgets are replaced by a note (chapters always draw the static figure too).
    return [el('p', { className: ['output', 'output-widget'] }, [
      text('Interactive widget: open the notebook in Jupyter or Colab to use it; the static figure shows the same result.'),
    ])];
  }
  for (const mime of IMAGE_MIMES) {
    const entry = bundle[mime];
    if (!entry) continue;
    const plain = mimeText(bundle['text/plain']) ?? '';
    const alt = !plain || plain.startsWith('<Figure') ? 'Figure drawn by the code cell above' : plain;
    let src;
    if (entry.path) src = assetUrl(entry.path);
    else if (mime === 'image/svg+xml') src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(mimeText(entry))}`;
    else src = `data:${mime};base64,${mimeText(entry)}`;
    return [el('div', { className: ['output', 'output-image'] }, [el('img', { src, alt})])];
  }
  if (bundle['text/html']) {
    return [el('div', { className: ['output', 'output-html'] }, [raw(mimeText(bundle['text/html']) ?? '')])];
  }
  if (bundle['text/latex']) {
    const tex = (mimeText(bundle['text/latex']) ?? '').trim().replace(/^\$\$?|\$\$?$/g, '');
    return [el('div', { className: ['output', 'output-latex'] }, [raw(renderTex(tex, true, null, ctx.macros))])];
  }
  if (bundle['text/plain']) {
    return [el('pre', { className: ['output', 'output-text'] }, [text((mimeText(bundle['text/plain']) ?? '').replace(ANSI, ''))])];
  }
  return [];
}

function hideable(summaryText, body) {
  return el('details', { className: ['hidden-part'] }, [el('summary', {}, [text(summaryText)]), body]);
}

function makeHandlers(ctx) {
  const all = (state, node) => state.all(node);
  return {
    block(state, node) {
      if (node.visibility === 'remove') return [];
      const isCell = node.kind === 'notebook-code';
      ctx.expectError = (node.data?.tags ?? []).includes('raises-exception');
      // A labelled cell's figure carries the same id as the cell: put it on the figure only, so ids stay unique.
      const figureHasId = (node.children ?? []).some((child) => child.type === 'container' && child.html_id === node.html_id);
      const id = isCell && !figureHasId ? node.html_id : undefined;
      const div = el('div', { className: cls(isCell ? 'cell' : 'block'), id }, all(state, node));
      ctx.expectError = false;
      return node.visibility === 'hide' ? hideable('Show cell', div) : div;
    },
    heading(state, node) {
      const id = node.html_id ?? node.identifier;
      const children = all(state, node);
      if (id && node.depth >= 2 && node.depth <= 3) ctx.headings.push({ id, depth: node.depth, text: plainText(node) });
      if (node.enumerator) children.unshift(el('span', { className: ['heading-number'] }, [text(`${node.enumerator} `)]));
      if (id) children.push(el('a', { className: ['anchor'], href: `#${id}`, ariaLabel: 'Link to this section' }, [text('¶')]));
      return el(`h${Math.min(6, node.depth)}`, { id }, children);
    },
    math(state, node) {
      const body = raw(renderTex(node.value, true, node.html, ctx.macros));
      const children = [el('div', { className: ['math-body'] }, [body])];
      if (node.enumerator) children.push(el('span', { className: ['equation-number'] }, [text(`(${node.enumerator})`)]));
      return el('div', { className: ['math-display'], id: node.html_id }, children);
    },
    inlineMath(state, node) {
      return el('span', { className: ['math-inline'] }, [raw(renderTex(node.value, false, node.html, ctx.macros))]);
    },
    crossReference(state, node) {
      const children = all(state, node);
      if (node.resolved === false || (!node.html_id && !node.identifier)) {
        ctx.problems.push(`unresolved reference "${node.identifier ?? node.label}"`);
        return el('span', { className: ['xref', 'xref-unresolved'] }, children.length ? children : [text(node.identifier ?? '?')]);
      }
      const anchor = node.html_id ?? node.identifier;
      const href = node.remote && node.url ? `${ctx.base}${node.url}#${anchor}` : `#${anchor}`;
      return el('a', { className: ['xref', `xref-${node.kind ?? 'target'}`], href }, children);
    },
    link(state, node) {
      let href = node.url ?? '';
      if (node.static) href = assetUrl(href);
      else if (node.internal && href.startsWith('/')) href = `${ctx.base}${href}`;
      const external = /^https?:/.test(href);
      return el('a', { href, className: cls(external && 'external'), title: node.title || undefined }, all(state, node));
    },
    image(state, node) {
      return el('img', {
        src: assetUrl(node.url),
        alt: node.alt ?? '',
        title: node.title || undefined,
        width: node.width || undefined,
        className: cls(node.align && `align-${node.align}`, node.class),
        });
    },
    container(state, node) {
      return el('figure', { id: node.html_id ?? node.identifier, className: cls('figure', `figure-${node.kind ?? 'figure'}`, node.class) }, all(state, node));
    },
    caption(state, node) {
      return el('figcaption', {}, all(state, node));
    },
    legend(state, node) {
      return el('div', { className: ['legend'] }, all(state, node));
    },
    captionNumber(state, node) {
      return el('span', { className: ['caption-number'] }, [...all(state, node), text(' ')]);
    },
    cite(state, node) {
      if (node.error || !ctx.citations[node.label]) {
        ctx.problems.push(`unknown citation key "${node.label}"`);
        return el('span', { className: ['cite', 'cite-missing'] }, [text(`[${node.label}?]`)]);
      }
      return el('a', { className: ['cite'], href: `#ref-${node.label}` }, all(state, node));
    },
    citeGroup(state, node) {
      const parts = [];
      all(state, node).forEach((child, i) => {
        if (i) parts.push(text('; '));
        parts.push(child);
      });
      return node.kind === 'parenthetical' ? el('span', { className: ['cite-group'] }, [text('('), ...parts, text(')')]) : el('span', { className: ['cite-group'] }, parts);
    },
    code(state, node) {
      if (node.visibility === 'remove') return [];
      const { html, language } = highlighted(node.value ?? '', node.lang);
      const pre = el('pre', { className: cls('code', node.executable && 'code-cell'), id: node.html_id }, [
        el('code', { className: ['hljs', `language-${language}`] }, [raw(html)]),
      ]);
      return node.visibility === 'hide' ? hideable('Show code', pre) : pre;
    },
    outputs(state, node) {
      if (node.visibility === 'remove') return [];
      const rendered = (node.children ?? []).flatMap((child) => renderOutput(child.jupyter_data, ctx));
      if (!rendered.length) return [];
      const div = el('div', { className: ['outputs'], id: node.html_id }, rendered);
      return node.visibility === 'hide' ? hideable('Show output', div) : div;
    },
    output(state, node) {
      return renderOutput(node.jupyter_data, ctx);
    },
    admonition(state, node) {
      return el('aside', { className: cls('admonition', `admonition-${node.kind ?? 'note'}`, node.class) }, all(state, node));
    },
    admonitionTitle(state, node) {
      return el('p', { className: ['admonition-title'] }, all(state, node));
    },
    details(state, node) {
      return el('details', { className: cls('dropdown', node.class), open: node.open || undefined }, all(state, node));
    },
    summary(state, node) {
      return el('summary', {}, all(state, node));
    },
    table(state, node) {
      const rows = (node.children ?? []).map((row) => el('tr', {}, (row.children ?? []).map((cell) =>
        el(cell.header ? 'th' : 'td', { align: cell.align || undefined, colSpan: cell.colspan, rowSpan: cell.rowspan }, state.all(cell)))));
      return el('div', { className: ['table-wrapper'] }, [el('table', { className: cls(node.class) }, [el('tbody', {}, rows)])]);
    },
    abbreviation: (state, node) => el('abbr', { title: node.title }, all(state, node)),
    subscript: (state, node) => el('sub', {}, all(state, node)),
    superscript: (state, node) => el('sup', {}, all(state, node)),
    keyboard: (state, node) => el('kbd', {}, all(state, node)),
    underline: (state, node) => el('u', {}, all(state, node)),
    smallcaps: (state, node) => el('span', { className: ['smallcaps'] }, all(state, node)),
    // Line breaks between terms and definitions, so that text extracted from the page (search) keeps words apart.
    definitionList: (state, node) => el('dl', {}, all(state, node).flatMap((child) => [child, text('\n')])),
    definitionTerm: (state, node) => el('dt', {}, all(state, node)),
    definitionDescription: (state, node) => el('dd', {}, all(state, node)),
    aside: (state, node) => el('aside', { className: cls('margin', node.kind) }, all(state, node)),
    tabSet: (state, node) => el('div', { className: ['tab-set'] }, all(state, node)),
    tabItem: (state, node) => el('section', { className: ['tab-item'] }, [el('p', { className: ['tab-title'] }, [text(node.title)]), ...all(state, node)]),
    card: (state, node) => el('div', { className: ['card'] }, all(state, node)),
    cardTitle: (state, node) => el('p', { className: ['card-title'] }, all(state, node)),
    grid: (state, node) => el('div', { className: ['grid'] }, all(state, node)),
    div: (state, node) => el('div', { id: node.html_id, className: cls(node.class) }, all(state, node)),
    embed: (state, node) => el('div', { className: ['embed'] }, all(state, node)),
    include: (state, node) => el('div', { className: ['include'] }, all(state, node)),
    proof: (state, node) => el('div', { className: cls('proof', node.kind), id: node.html_id }, all(state, node)),
    mermaid: (state, node) => el('pre', { className: ['mermaid'] }, [text(node.value)]),
    html: (state, node) => raw(node.value ?? ''),
    comment: () => [],
    mystComment: () => [],
    mystTarget: () => [],
    mystDirective(state, node) {
      ctx.problems.push(`unknown directive {${node.name}}`);
      return el('pre', { className: ['unhandled'] }, [text(`{${node.name}} ${node.args ?? ''}\n${node.value ?? ''}`)]);
    },
    mystRole(state, node) {
      ctx.problems.push(`unknown role {${node.name}}`);
      return el('code', { className: ['unhandled'] }, [text(`{${node.name}}\`${node.value ?? ''}\``)]);
    },
  };
}

const PHRASING = new Set(['text', 'emphasis', 'strong', 'inlineCode', 'inlineMath', 'link', 'span', 'superscript', 'subscript',
  'abbreviation', 'crossReference', 'cite', 'citeGroup', 'break', 'image', 'underline', 'smallcaps', 'keyboard', 'delete', 'html']);

/** Nodes nobody handles (mystmd's `span`, for one): keep their content in a span when it is inline, else a div. */
function unknownHandler(state, node) {
  if (!Array.isArray(node.children)) return typeof node.value === 'string' ? text(node.value) : [];
  const inline = node.children.every((child) => PHRASING.has(child.type));
  return el(inline ? 'span' : 'div', { className: [`node-${node.type}`] }, state.all(node));
}

/**
 * Renders a page JSON to HTML.
 * @returns {{ html: string, headings: {id: string, depth: number, text: string}[], problems: string[] }}
 */
export function renderPage(page, { base = '' } = {}) {
  const references = page.references?.cite ?? { order: [], data: {} };
  const ctx = {
    base,
    headings: [],
    problems: [],
    citations: references.data ?? {},
    macros: page.frontmatter?.math ?? {},
  };
  const hast = toHast(page.mdast, { handlers: makeHandlers(ctx), unknownHandler, allowDangerousHtml: true });
  let html = toHtml(hast, { allowDangerousHtml: true });
  if (references.order?.length) {
    const items = references.order
      .map((label) => `<li id="ref-${label}">${references.data[label]?.html ?? label}</li>`)
      .join('\n');
    html += `\n<section class="bibliography" id="references"><h2>References<a class="anchor" href="#references" aria-label="Link to this section">¶</a></h2>\n<ol>\n${items}\n</ol></section>`;
    ctx.headings.push({ id: 'references', depth: 2, text: 'References' });
  }
  return { html, headings: ctx.headings, problems: ctx.problems };
}

/** Text outputs stored as separate public files ({path} instead of {content}) are fetched before rendering. */
export async function loadOutputFiles(page, fetchText) {
  const pending = [];
  const visit = (node) => {
    const bundle = node.type === 'output' ? node.jupyter_data?.data : undefined;
    for (const [mime, entry] of Object.entries(bundle ?? {})) {
      if (entry && typeof entry === 'object' && entry.path && entry.content == null && !mime.startsWith('image/')) {
        pending.push(fetchText(entry.path).then((value) => { entry.loadedContent = value; }));
      }
    }
    (node.children ?? []).forEach(visit);
  };
  visit(page.mdast);
  await Promise.all(pending);
}
