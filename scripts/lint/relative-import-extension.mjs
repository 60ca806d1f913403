// ESLint rule: a relative import of a TypeScript module names it as `./module.js`,
// in engine/, extension/, webview/, test/ alike (what Node's own resolution and
// tsconfig's NodeNext expect, and what tsx and esbuild map back to the .ts file).
// `eslint --fix` adds the missing `.js`.
import { existsSync } from 'node:fs';
import path from 'node:path';

const HAS_EXTENSION = /\.(?:js|mjs|cjs|json|css)$/;

export default {
  meta: {
    type: 'suggestion',
    docs: { description: 'Require the .js extension on relative imports of TypeScript modules' },
    fixable: 'code',
    schema: [],
    messages: { missing: "Write the relative import as '{{fixed}}': one import style everywhere (eslint --fix adds it)." },
  },
  create(context) {
    const dir = path.dirname(context.filename);
    const check = (source) => {
      if (!source || source.type !== 'Literal' || typeof source.value !== 'string') return;
      const specifier = source.value;
      if (!specifier.startsWith('.') || HAS_EXTENSION.test(specifier)) return;
      if (!existsSync(path.resolve(dir, `${specifier}.ts`))) return;
      const fixed = `${specifier}.js`;
      const quote = source.raw?.[0] ?? "'";
      context.report({ node: source, messageId: 'missing', data: { fixed }, fix: (fixer) => fixer.replaceText(source, `${quote}${fixed}${quote}`) });
    };
    const onDeclaration = (node) => check(node.source);
    return { ImportDeclaration: onDeclaration, ExportNamedDeclaration: onDeclaration, ExportAllDeclaration: onDeclaration, ImportExpression: onDeclaration };
  },
};
