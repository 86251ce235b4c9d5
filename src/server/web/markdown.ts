/**
 * An answer's Markdown, rendered for the chat page: `marked` (GFM) turns it into HTML, DOMPurify
 * sanitizes that HTML, and only then does it reach the DOM.
 *
 * The model's text is untrusted (a prompt, a pasted page or another model's output can steer it),
 * so it is kept inert in two layers:
 * - raw HTML in the Markdown is escaped, not passed through: `<script>` or `<b>` in an answer is
 *   shown as those characters (a model writing about HTML means the text, and nothing it writes
 *   becomes markup);
 * - what marked makes is sanitized by DOMPurify anyway (no event handlers, no `javascript:` URLs),
 *   with inline styles dropped (the page's CSP refuses them, and each refusal is a console error).
 * Images become links: an `<img>` would make the browser fetch a URL the model chose as soon as it
 * is shown, a known way to leak the conversation through the URL.
 */
import DOMPurify from 'dompurify';
import { Marked, type Tokens } from 'marked';
import { copyText } from './clipboard.ts';

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const markdown = new Marked({
  gfm: true,
  // A chat answer's single newlines are the model's line breaks (a list, a poem, an address), not reflow.
  breaks: true,
  renderer: {
    // A block of HTML is shown as a paragraph of its text, line by line; an inline tag as its text.
    html({ text, block }: Tokens.HTML | Tokens.Tag): string {
      return block ? `<p>${escapeHtml(text.trim()).replace(/\n/g, '<br>')}</p>\n` : escapeHtml(text);
    },
    // No highlighter: the language is kept as data-lang, for the block's label.
    code({ text, lang }: Tokens.Code): string {
      const name = /^\S*/.exec(lang ?? '')![0];
      return `<pre><code${name ? ` data-lang="${escapeHtml(name)}"` : ''}>${escapeHtml(text)}\n</code></pre>\n`;
    },
    image({ href, text }: Tokens.Image): string {
      return `<a href="${escapeHtml(href)}">image: ${escapeHtml(text || href)}</a>`;
    },
  },
});

const purify = DOMPurify(window);
purify.addHook('afterSanitizeAttributes', (node) => {
  // Links open beside the chat, and tell the other site nothing about it.
  if (node instanceof HTMLAnchorElement && node.hasAttribute('href')) {
    node.target = '_blank';
    node.rel = 'noopener noreferrer';
  }
});
// What marked makes from Markdown needs none of these; they are refused in case it ever does
// (inputs stay: a GFM task list's checkboxes are disabled inputs).
const PURIFY_OPTIONS = {
  FORBID_TAGS: ['style', 'img', 'form', 'button', 'textarea', 'select', 'iframe', 'object', 'embed', 'svg', 'math'],
  FORBID_ATTR: ['style', 'id', 'class'],
};

/**
 * `text` rendered and sanitized: what reaches the DOM. As nodes, not as a string to parse again
 * (a sanitized string parsed a second time can mutate into markup the sanitizer never saw).
 */
function markdownToNodes(text: string): DocumentFragment {
  const html = markdown.parse(text, { async: false });
  return purify.sanitize(html, { ...PURIFY_OPTIONS, RETURN_DOM_FRAGMENT: true });
}

/**
 * Replaces `target`'s children with `text` rendered; each code block gets a copy button (made here,
 * after sanitizing, so the model cannot make one).
 */
export function renderMarkdown(target: HTMLElement, text: string): void {
  let nodes: DocumentFragment;
  try {
    nodes = markdownToNodes(text);
  } catch (err) {
    // A renderer's bug must not cost the answer: it is shown as plain text instead.
    console.warn(`the answer's Markdown did not render: ${(err as Error).message}`);
    target.textContent = text;
    return;
  }
  for (const pre of nodes.querySelectorAll('pre')) {
    const code = pre.querySelector('code');
    const wrap = document.createElement('div');
    wrap.className = 'code';
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'copy-code';
    button.textContent = 'copy';
    button.title = 'Copy this code';
    button.addEventListener('click', () => void copyWithFeedback(button, (code ?? pre).textContent ?? ''));
    pre.replaceWith(wrap);
    const lang = code?.dataset.lang;
    if (lang) {
      const label = document.createElement('span');
      label.className = 'lang';
      label.textContent = lang;
      wrap.append(label);
    }
    wrap.append(button, pre);
  }
  target.replaceChildren(nodes);
}

/** Copies `text`, and says so on the button for a moment (or that it failed). */
export async function copyWithFeedback(button: HTMLButtonElement, text: string): Promise<void> {
  const label = button.dataset.label ?? button.textContent ?? '';
  button.dataset.label = label;
  try {
    await copyText(text);
    button.textContent = 'copied';
  } catch (err) {
    button.textContent = 'copy failed';
    button.title = (err as Error).message;
  }
  setTimeout(() => {
    button.textContent = label;
  }, 1200);
}
