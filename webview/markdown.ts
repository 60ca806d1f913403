// Model output → safe HTML: markdown-it without raw HTML, highlight.js core with
// a few languages (the bundle stays small), then DOMPurify, because the text is
// untrusted even after markdown-it escaped it.

import DOMPurify from 'dompurify';
import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import cpp from 'highlight.js/lib/languages/cpp';
import css from 'highlight.js/lib/languages/css';
import go from 'highlight.js/lib/languages/go';
import java from 'highlight.js/lib/languages/java';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import python from 'highlight.js/lib/languages/python';
import rust from 'highlight.js/lib/languages/rust';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import MarkdownIt from 'markdown-it';

const languages = { bash, cpp, css, go, java, javascript, json, python, rust, typescript, xml };
for (const [name, language] of Object.entries(languages)) hljs.registerLanguage(name, language);
hljs.registerAliases(['ts', 'tsx'], { languageName: 'typescript' });
hljs.registerAliases(['js', 'jsx', 'mjs', 'cjs'], { languageName: 'javascript' });
hljs.registerAliases(['sh', 'shell', 'zsh'], { languageName: 'bash' });
hljs.registerAliases(['py'], { languageName: 'python' });
hljs.registerAliases(['rs'], { languageName: 'rust' });
hljs.registerAliases(['html', 'svg'], { languageName: 'xml' });
hljs.registerAliases(['c', 'h', 'hpp', 'cc'], { languageName: 'cpp' });

const markdown: MarkdownIt.MarkdownIt = new MarkdownIt({
  html: false, // model output never becomes raw HTML
  linkify: false,
  breaks: false,
  highlight(code: string, language: string): string {
    const known = language !== '' && hljs.getLanguage(language) !== undefined;
    const body: string = known ? hljs.highlight(code, { language, ignoreIllegals: true }).value : markdown.utils.escapeHtml(code);
    return `<pre class="code-block"><code class="hljs${known ? ` language-${language}` : ''}">${body}</code></pre>`;
  },
});

export function renderMarkdown(text: string): string {
  return DOMPurify.sanitize(markdown.render(text), { FORBID_TAGS: ['style', 'form', 'input', 'img'], FORBID_ATTR: ['style'] });
}
