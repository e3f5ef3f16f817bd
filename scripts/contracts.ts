/**
 * `node scripts/contracts.ts [--check]`: writes docs/contracts.md, the public API of every workspace package,
 * generated from what each `packages/<name>/src/index.ts` exports (declarations without bodies, with their
 * doc comments). `--check` exits 1 when the file on disk differs from what the exports say, so the page
 * cannot drift from the code.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'docs', 'contracts.md');

const entries = readdirSync(join(root, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => join(root, 'packages', d.name, 'src', 'index.ts'))
  .filter((f) => {
    try {
      readFileSync(f);
      return true;
    } catch {
      return false;
    }
  })
  .sort();

const program = ts.createProgram(entries, {
  target: ts.ScriptTarget.ESNext,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  allowImportingTsExtensions: true,
  resolveJsonModule: true,
  noEmit: true,
  strict: true,
});
const checker = program.getTypeChecker();
const printer = ts.createPrinter({ removeComments: true });

/** The leading doc comment of a declaration, as written. */
function docOf(node: ts.Node): string {
  const sf = node.getSourceFile();
  const ranges = ts.getLeadingCommentRanges(sf.text, node.getFullStart()) ?? [];
  const doc = ranges.filter((r) => sf.text.startsWith('/**', r.pos)).at(-1);
  if (doc === undefined) return '';
  return `${sf.text
    .slice(doc.pos, doc.end)
    .split('\n')
    .map((l) => l.trim().replace(/^\*/, ' *'))
    .join('\n')}\n`;
}

/** A declaration as a signature: bodies and initialisers dropped, members kept. */
function signatureOf(node: ts.Node): string {
  const f = ts.factory;
  if (ts.isFunctionDeclaration(node)) {
    const sig = f.updateFunctionDeclaration(
      node,
      node.modifiers,
      node.asteriskToken,
      node.name,
      node.typeParameters,
      node.parameters,
      node.type,
      undefined,
    );
    return printer.printNode(ts.EmitHint.Unspecified, sig, node.getSourceFile());
  }
  if (ts.isVariableDeclaration(node)) {
    const type = node.type
      ? node.type.getText()
      : checker.typeToString(checker.getTypeAtLocation(node), node, ts.TypeFormatFlags.NoTruncation);
    return `export const ${node.name.getText()}: ${type};`;
  }
  if (ts.isClassDeclaration(node)) {
    const members = node.members
      .filter(
        (m) =>
          !(
            ts.getCombinedModifierFlags(m as ts.Declaration) &
            (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)
          ) && !(m.name !== undefined && ts.isPrivateIdentifier(m.name)),
      )
      .map((m) => {
        if (ts.isMethodDeclaration(m))
          return f.updateMethodDeclaration(
            m,
            m.modifiers,
            m.asteriskToken,
            m.name,
            m.questionToken,
            m.typeParameters,
            m.parameters,
            m.type,
            undefined,
          );
        if (ts.isConstructorDeclaration(m))
          return f.updateConstructorDeclaration(m, m.modifiers, m.parameters, undefined);
        if (ts.isPropertyDeclaration(m))
          return f.updatePropertyDeclaration(m, m.modifiers, m.name, m.questionToken, m.type, undefined);
        if (ts.isGetAccessorDeclaration(m))
          return f.updateGetAccessorDeclaration(m, m.modifiers, m.name, m.parameters, m.type, undefined);
        return m;
      });
    const cls = f.updateClassDeclaration(
      node,
      node.modifiers,
      node.name,
      node.typeParameters,
      node.heritageClauses,
      members,
    );
    return printer.printNode(ts.EmitHint.Unspecified, cls, node.getSourceFile());
  }
  return printer.printNode(ts.EmitHint.Unspecified, node, node.getSourceFile());
}

function packageName(entry: string): string {
  const pkg = JSON.parse(readFileSync(join(dirname(entry), '..', 'package.json'), 'utf8')) as {
    name: string;
  };
  return pkg.name;
}

const sections: string[] = [];
for (const entry of entries) {
  const sf = program.getSourceFile(entry);
  if (sf === undefined) continue;
  const moduleSymbol = checker.getSymbolAtLocation(sf);
  if (moduleSymbol === undefined) continue;
  const blocks: string[] = [];
  const exports = checker.getExportsOfModule(moduleSymbol).sort((a, b) => a.name.localeCompare(b.name));
  for (const exported of exports) {
    const symbol = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
    for (const decl of symbol.declarations ?? []) {
      const docNode = ts.isVariableDeclaration(decl) ? decl.parent.parent : decl;
      const from = relative(root, decl.getSourceFile().fileName);
      if (from.includes('node_modules')) {
        blocks.push(`// ${exported.name}: re-exported from ${packageOfModule(from)}`);
        continue;
      }
      blocks.push(`${docOf(docNode)}${signatureOf(decl)}`);
    }
  }
  sections.push(
    `## ${packageName(entry)}\n\n\`${relative(root, entry)}\` exports:\n\n\`\`\`ts\n${blocks.join('\n\n')}\n\`\`\`\n`,
  );
}

function packageOfModule(path: string): string {
  const parts = [...path.matchAll(/node_modules\/(@[^/]+\/[^/]+|[^/.][^/]*)/g)];
  return parts.at(-1)?.[1] ?? path;
}

const text = `# Ferry contracts between packages

Generated by \`node scripts/contracts.ts\` from each package's \`src/index.ts\`: the declarations every
package exports, with their doc comments. Do not edit by hand; \`scripts/test.sh\` checks that this page
matches the code.

${sections.join('\n')}`;

if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(out, 'utf8');
  } catch {}
  if (current !== text) {
    console.error('docs/contracts.md is out of date: run `node scripts/contracts.ts`');
    process.exit(1);
  }
  console.log('docs/contracts.md matches the exports');
} else {
  writeFileSync(out, text);
  console.log(`wrote ${relative(root, out)} (${entries.length} packages)`);
}
