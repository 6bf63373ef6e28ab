/**
 * The dependency rules of docs/architecture.md, enforced: every `.ts` file under `src/` is read,
 * its imports (static, `export ... from`, dynamic `import()`) are resolved, and each rule below is
 * checked. The rule checker is also run on small made-up trees, so each rule is shown to fire.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { posix } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Import {
  /** Repository-relative path (`src/x/y.ts`) for a relative specifier, else the package name as written. */
  target: string;
  relative: boolean;
  typeOnly: boolean;
}

/** Removes block comments and whole-line `//` comments (an import inside a comment is not one). */
function stripComments(code: string): string {
  return code.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
}

/** The imports of one file at repository path `file`. */
export function importsOf(file: string, code: string): Import[] {
  const out: Import[] = [];
  const add = (spec: string, typeOnly: boolean) => {
    const relative = spec.startsWith('.');
    out.push({ target: relative ? posix.normalize(posix.join(posix.dirname(file), spec)) : spec, relative, typeOnly });
  };
  const src = stripComments(code);
  for (const m of src.matchAll(/(?:^|[;\n])\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]/g))
    add(m[4] as string, Boolean(m[2]));
  for (const m of src.matchAll(/(?:^|[;\n])\s*import\s*['"]([^'"]+)['"]/g)) add(m[1] as string, false);
  for (const m of src.matchAll(/\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g)) add(m[1] as string, false);
  return out;
}

const under = (path: string, dir: string) => path.startsWith(`${dir}/`);
/** `src/sinks/kafka/index.ts` → `kafka`. */
const sinkFolder = (path: string) => (under(path, 'src/sinks') ? path.split('/')[2] : undefined);

/** Every broken rule, as `<file> → <target>: <rule>`. */
export function violations(files: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const [file, code] of files) {
    for (const imp of importsOf(file, code)) {
      if (!imp.relative) continue; // npm packages and node: built-ins are allowed everywhere
      const t = imp.target;
      const broke = (rule: string) => out.push(`${file} → ${t}: ${rule}`);
      const toComponent = under(t, 'src/sources') || under(t, 'src/sinks');
      if ((under(file, 'src/runtime') || under(file, 'src/events') || under(file, 'src/delivery')) && toComponent)
        broke('the runtime, the event contract and delivery name no particular source or sink');
      else if (
        under(file, 'src/events') &&
        !under(t, 'src/events') &&
        t !== 'src/errors.ts' &&
        t !== 'src/backoff.ts' &&
        !(t === 'src/component.ts' && imp.typeOnly)
      )
        broke('src/events imports only src/events, src/errors.ts, src/backoff.ts and npm packages');
      if (under(file, 'src/sinks') && under(t, 'src/sources')) broke('a sink imports no source');
      if (under(file, 'src/sources') && under(t, 'src/sinks')) broke('a source imports no sink');
      const component = under(file, 'src/sources') || under(file, 'src/sinks') || under(file, 'src/stages');
      if (component && (under(t, 'src/runtime') || t === 'src/cli.ts'))
        broke('components never import the runtime or the CLI');
      const from = sinkFolder(file);
      const to = sinkFolder(t);
      if (from && to && from !== to && to !== 'util' && to.endsWith('.ts') === false)
        broke(`sink "${from}" imports sink "${to}" (shared code lives in src/sinks/util/)`);
    }
  }
  return out.sort();
}

function sourceTree(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of readdirSync(posix.join(ROOT, dir), { withFileTypes: true })) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(path);
      else if (e.name.endsWith('.ts')) files.set(path, readFileSync(posix.join(ROOT, path), 'utf8'));
    }
  };
  walk('src');
  return files;
}

describe('dependency rules (docs/architecture.md)', () => {
  it('src/ keeps them', () => {
    const files = sourceTree();
    assert.ok(files.size > 40, `read ${files.size} files under src/`);
    // the scanner sees real imports (so an empty result below means something)
    const runtimeImports = importsOf('src/runtime/runtime.ts', files.get('src/runtime/runtime.ts') ?? '');
    assert.ok(runtimeImports.some((i) => i.target === 'src/runtime/pipeline.ts'));
    assert.ok(runtimeImports.some((i) => i.target === 'src/component.ts' && i.typeOnly));
    assert.deepEqual(violations(files), []);
  });

  it('finds static, re-exported, multi-line, side-effect and dynamic imports; ignores comments', () => {
    const got = importsOf(
      'src/a/b.ts',
      [
        '/** import { x } from "../nope.ts"; */',
        "// import y from '../nope2.ts';",
        "import type { A } from '../component.ts';",
        'import {',
        '  b,',
        '  type C,',
        "} from './c.ts';",
        "export { d } from '../d/index.ts';",
        "import '../side.ts';",
        "import { Ajv } from 'ajv';",
        "const m = await import('../lazy.ts');",
      ].join('\n'),
    );
    assert.deepEqual(
      got.map((i) => [i.target, i.typeOnly]),
      [
        ['src/component.ts', true],
        ['src/a/c.ts', false],
        ['src/d/index.ts', false],
        ['ajv', false],
        ['src/side.ts', false],
        ['src/lazy.ts', false],
      ],
    );
  });

  it('each rule fires on a tree that breaks it', () => {
    const tree = new Map<string, string>([
      ['src/runtime/pipeline.ts', "import { kubeApi } from '../sources/kubernetes/client.ts';"],
      ['src/delivery/queue.ts', "import { x } from '../sinks/kafka/index.ts';"],
      [
        'src/events/build.ts',
        "import { m } from '../telemetry/metrics.ts';\nimport type { C } from '../component.ts';",
      ],
      ['src/events/validate.ts', "import { Source } from '../component.ts';"],
      ['src/sinks/file/index.ts', "import { s } from '../../sources/kubernetes/index.ts';"],
      ['src/sources/kubernetes/source.ts', "import { k } from '../../sinks/kafka/index.ts';"],
      ['src/stages/filter/index.ts', "import { r } from '../../runtime/runtime.ts';"],
      ['src/sinks/stdout/index.ts', "import { main } from '../../cli.ts';\nimport { f } from '../file/index.ts';"],
      // allowed: shared sink code, errors/backoff from events, npm packages
      ['src/sinks/kafka/index.ts', "import { lines } from '../util/lines.ts';\nimport { Kafka } from 'kafkajs';"],
      ['src/events/crd-schema.ts', "import { e } from '../errors.ts';\nimport { b } from '../backoff.ts';"],
    ]);
    assert.deepEqual(violations(tree), [
      'src/delivery/queue.ts → src/sinks/kafka/index.ts: the runtime, the event contract and delivery name no particular source or sink',
      'src/events/build.ts → src/telemetry/metrics.ts: src/events imports only src/events, src/errors.ts, src/backoff.ts and npm packages',
      'src/events/validate.ts → src/component.ts: src/events imports only src/events, src/errors.ts, src/backoff.ts and npm packages',
      'src/runtime/pipeline.ts → src/sources/kubernetes/client.ts: the runtime, the event contract and delivery name no particular source or sink',
      'src/sinks/file/index.ts → src/sources/kubernetes/index.ts: a sink imports no source',
      'src/sinks/stdout/index.ts → src/cli.ts: components never import the runtime or the CLI',
      'src/sinks/stdout/index.ts → src/sinks/file/index.ts: sink "stdout" imports sink "file" (shared code lives in src/sinks/util/)',
      'src/sources/kubernetes/source.ts → src/sinks/kafka/index.ts: a source imports no sink',
      'src/stages/filter/index.ts → src/runtime/runtime.ts: components never import the runtime or the CLI',
    ]);
  });
});
