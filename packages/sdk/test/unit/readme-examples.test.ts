import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { format } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AgentboxClient } from '../../src/index.js';
import { sdkDaemon, type SdkDaemon } from '../helpers/sdk-daemon.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const README = path.join(here, '../../README.md');
const SDK_ENTRY = path.join(here, '../../src/index.ts');

interface Example {
  line: number;
  code: string;
  expected: string[];
  /** ```ts skip-test: type-checked but not run. */
  run: boolean;
}

/** The ```ts blocks of the README, with their `// → text` expectations. */
function readmeExamples(markdown: string): Example[] {
  const examples: Example[] = [];
  const fence = /^```ts([^\n]*)\n([\s\S]*?)^```$/gm;
  for (const m of markdown.matchAll(fence)) {
    const code = m[2]!;
    const expected = [...code.matchAll(/\/\/ → (.*)$/gm)].map((e) => e[1]!.trim());
    const line = markdown.slice(0, m.index).split('\n').length;
    examples.push({ line, code, expected, run: !m[1]!.includes('skip-test') });
  }
  return examples;
}

/** The example as a module importing the SDK's source. */
const moduleText = (example: Example) =>
  example.code.replaceAll("from '@agentbox/sdk'", `from ${JSON.stringify(SDK_ENTRY)}`);

/**
 * Every TypeScript example of packages/sdk/README.md runs, as written, against a daemon on the
 * fake driver (AGENTBOX_URL / AGENTBOX_API_KEY point at it), prints what its `// →` comments say,
 * and leaves no box behind.
 */
describe('README examples', () => {
  const all = readmeExamples(fs.readFileSync(README, 'utf8'));
  const examples = all.filter((e) => e.run);
  let d: SdkDaemon;
  let dir: string;
  const saved = { url: process.env.AGENTBOX_URL, key: process.env.AGENTBOX_API_KEY };

  beforeAll(async () => {
    d = await sdkDaemon();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-sdk-readme-'));
    process.env.AGENTBOX_URL = d.url;
    process.env.AGENTBOX_API_KEY = d.admin;
  });
  afterAll(async () => {
    process.env.AGENTBOX_URL = saved.url;
    process.env.AGENTBOX_API_KEY = saved.key;
    if (saved.url === undefined) delete process.env.AGENTBOX_URL;
    if (saved.key === undefined) delete process.env.AGENTBOX_API_KEY;
    fs.rmSync(dir, { recursive: true, force: true });
    await d.close();
  });

  it('has examples, most with checked output', () => {
    expect(examples.length).toBeGreaterThanOrEqual(6);
    expect(examples.filter((e) => e.expected.length > 0).length).toBe(examples.length);
  });

  it('every example type-checks (strict, as the packages are)', () => {
    const files = all.map((example) => {
      const file = path.join(dir, `typed-${example.line}.mts`);
      fs.writeFileSync(file, moduleText(example));
      return file;
    });
    const program = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2023.d.ts'],
      types: ['node'],
      typeRoots: [path.join(here, '../../../../node_modules/@types')],
      strict: true,
      noUncheckedIndexedAccess: true,
      skipLibCheck: true,
      noEmit: true,
      allowImportingTsExtensions: true,
      customConditions: ['source'],
    });
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file
        ? `${path.basename(d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start!).line + 1}`
        : '';
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
    });
    expect(problems).toEqual([]);
  }, 60_000);

  it.each(examples.map((e) => [e.line, e] as const))(
    'the example at README.md:%i runs',
    async (_line, example) => {
      const file = path.join(dir, `example-${example.line}.ts`);
      fs.writeFileSync(
        file,
        example.code.replaceAll("from '@agentbox/sdk'", `from ${JSON.stringify(SDK_ENTRY)}`),
      );
      const printed: string[] = [];
      const log = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
        printed.push(...format(...args).split('\n'));
      });
      try {
        await import(pathToFileURL(file).href);
      } finally {
        log.mockRestore();
      }
      for (const line of example.expected)
        expect(printed, `printed: ${JSON.stringify(printed)}`).toContain(line);
      // Examples clean up after themselves (a task's fresh box goes when the task ends).
      const client = new AgentboxClient({ url: d.url, apiKey: d.admin });
      await expect
        .poll(async () => (await client.boxes.list()).map((b) => b.id), { timeout: 5000 })
        .toEqual([]);
    },
  );
});
