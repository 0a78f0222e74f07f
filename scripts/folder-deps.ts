/**
 * The folder-level import graph of src/: one node per top-level folder (src/jobs/stages counts as jobs), an edge
 * A -> B when a file in A imports one in B (type-only imports included: they couple the folders just the same).
 * A forwarding file (nothing but `export ... from`: a moved module's old path, kept for importers not yet changed)
 * is followed to the modules it forwards to, so importing it counts as a dependency on their folder, not on its own;
 * the forwarding files are listed so they can be removed.
 * Prints the edges, the strongly connected components and, for every edge inside a component, the file imports
 * that make it. Exits 1 when a component holds more than one folder (a folder cycle), so `npm run check:cycles`
 * fails on a new one.
 *
 * usage: node --import tsx scripts/folder-deps.ts [--json] [src-dir]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';

/**
 * DESIGN.md's "Which folder may use which" for the leaves: each may use only the folders listed. config, domain
 * and redis are leaves everyone reads; imaging and inference know no queue, PACS or web server; hl7 knows no queue;
 * observability knows no app (its readiness probe checks the model files and Redis); dicom knows no job or result.
 */
const MAY_USE_ONLY: Record<string, readonly string[]> = {
  config: [],
  domain: [],
  redis: [],
  imaging: ['config'],
  inference: ['imaging', 'config'],
  hl7: ['config', 'observability', 'domain'],
  observability: ['config', 'redis', 'inference'],
  dicom: ['config', 'domain', 'imaging'],
};

interface FileImport {
  from: string;
  to: string;
}

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return tsFiles(path);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

const parse = (file: string): ts.SourceFile => ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false);

/** The files a forwarding file forwards to; null for any other file. */
function forwardsTo(file: string): string[] | null {
  const { statements } = parse(file);
  if (statements.length === 0) return null;
  const targets: string[] = [];
  for (const st of statements) {
    if (!ts.isExportDeclaration(st) || !st.moduleSpecifier || !ts.isStringLiteral(st.moduleSpecifier)) return null;
    const to = resolveSpecifier(file, st.moduleSpecifier.text);
    if (!to) return null;
    targets.push(to);
  }
  return targets;
}

/** Every module specifier a file names: import/export ... from, import type, and import('...'). */
function specifiers(file: string): string[] {
  const source = parse(file);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const [arg] = node.arguments;
      if (arg && ts.isStringLiteral(arg)) found.push(arg.text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      found.push(node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** The .ts file a relative specifier names ('./x.js' is ./x.ts under NodeNext); null for packages. */
function resolveSpecifier(fromFile: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  const base = resolve(dirname(fromFile), spec);
  return base.replace(/\.js$/, '.ts');
}

function folderOf(srcDir: string, file: string): string {
  const rel = relative(srcDir, file);
  const parts = rel.split(sep);
  return parts.length > 1 ? (parts[0] as string) : '(src)';
}

function fileImports(srcDir: string, forwarding: Map<string, string[]>): FileImport[] {
  const through = (to: string, seen = new Set<string>()): string[] => {
    const targets = forwarding.get(to);
    if (!targets || seen.has(to)) return [to];
    seen.add(to);
    return targets.flatMap((t) => through(t, seen));
  };
  const out: FileImport[] = [];
  for (const file of tsFiles(srcDir)) {
    const own = forwarding.get(file);
    for (const spec of specifiers(file)) {
      const to = resolveSpecifier(file, spec);
      if (!to || relative(srcDir, to).startsWith('..')) continue;
      for (const target of own ? [to] : through(to)) out.push({ from: file, to: target });
    }
  }
  return out;
}

/** Tarjan's algorithm; components in reverse topological order. */
function stronglyConnected(nodes: string[], edges: Map<string, Set<string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const connect = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      components.push(component.sort());
    }
  };
  for (const v of nodes) if (!index.has(v)) connect(v);
  return components;
}

function main(): void {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const srcDir = resolve(args.find((a) => !a.startsWith('--')) ?? 'src');
  const forwarding = new Map<string, string[]>();
  for (const file of tsFiles(srcDir)) {
    const targets = forwardsTo(file);
    if (targets) forwarding.set(file, targets);
  }
  const imports = fileImports(srcDir, forwarding);
  const edges = new Map<string, Set<string>>();
  const why = new Map<string, string[]>();
  const nodes = new Set<string>();
  for (const { from, to } of imports) {
    const a = folderOf(srcDir, from);
    const b = folderOf(srcDir, to);
    nodes.add(a).add(b);
    if (a === b) continue;
    if (!edges.has(a)) edges.set(a, new Set());
    edges.get(a)?.add(b);
    const key = `${a} -> ${b}`;
    why.set(key, [...(why.get(key) ?? []), `${relative(srcDir, from)} -> ${relative(srcDir, to)}`]);
  }
  const sorted = [...nodes].sort();
  const knots = stronglyConnected(sorted, edges).filter((c) => c.length > 1);
  if (json) {
    const graph = Object.fromEntries(sorted.map((n) => [n, [...(edges.get(n) ?? [])].sort()]));
    const forwardingFiles = [...forwarding.keys()].map((f) => relative(srcDir, f)).sort();
    process.stdout.write(`${JSON.stringify({ graph, cycles: knots, forwarding: forwardingFiles }, null, 2)}\n`);
  } else {
    for (const n of sorted) process.stdout.write(`${n} -> ${[...(edges.get(n) ?? [])].sort().join(', ')}\n`);
    for (const [file, targets] of forwarding) {
      process.stdout.write(`forwarding: ${relative(srcDir, file)} -> ${targets.map((t) => relative(srcDir, t)).join(', ')}\n`);
    }
    if (knots.length === 0) process.stdout.write('\nno folder cycles\n');
    for (const knot of knots) {
      process.stdout.write(`\nfolder cycle: ${knot.join(', ')}\n`);
      for (const a of knot) {
        for (const b of knot) {
          for (const line of why.get(`${a} -> ${b}`) ?? []) process.stdout.write(`  ${line}\n`);
        }
      }
    }
  }
  const broken = [...edges].flatMap(([a, uses]) => [...uses].filter((b) => MAY_USE_ONLY[a] && !MAY_USE_ONLY[a]?.includes(b)).map((b) => `${a} -> ${b}`));
  for (const rule of broken) {
    process.stderr.write(`folder rule broken: ${rule} (${(why.get(rule) ?? []).join('; ')})\n`);
  }
  if (knots.length > 0 || broken.length > 0) process.exitCode = 1;
}

main();
