// ESLint rule: source files are named in kebab-case (`chat-view-provider.ts`), in
// engine/, extension/, webview/, test/ and bench/ alike.
import path from 'node:path';

const KEBAB = /^[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)*$/;

export default {
  meta: {
    type: 'suggestion',
    docs: { description: 'Require kebab-case file names' },
    schema: [],
    messages: { name: "Name the file '{{suggested}}': files are kebab-case everywhere (git mv it and update its imports)." },
  },
  create(context) {
    const base = path.basename(context.filename);
    if (KEBAB.test(base)) return {};
    const suggested = base
      .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
      .replace(/[_\s]+/g, '-')
      .toLowerCase();
    return { Program: (node) => context.report({ node, loc: { line: 1, column: 0 }, messageId: 'name', data: { suggested } }) };
  },
};
