import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readModelPrices } from '../../src/commands/serve.js';
import { cli } from '../helpers.js';

/** `serve --model-prices FILE`: the operator's prices, checked before anything is booted. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-prices-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}

describe('serve --model-prices', () => {
  it('reads id prefixes and their prices per million tokens', () => {
    const p = file(
      'ok.json',
      '{"claude-opus-5": {"input": 5, "output": 25}, "claude-x-1[1m]": {"input": 0, "output": 0.5}}',
    );
    expect(readModelPrices(p)).toEqual({
      'claude-opus-5': { input: 5, output: 25 },
      'claude-x-1[1m]': { input: 0, output: 0.5 },
    });
  });

  it.each([
    ['missing.json', null, /--model-prices .*missing\.json: no such file$/],
    ['text.json', 'input=5', /text\.json: not JSON$/],
    ['array.json', '[]', /array\.json: \(the file\): .*expected \{"<model id prefix>"/],
    ['negative.json', '{"m": {"input": -1, "output": 1}}', /negative\.json: m\.input: /],
    ['extra.json', '{"m": {"input": 1, "output": 1, "cache": 2}}', /extra\.json: m: .*cache/],
    [
      'upper.json',
      '{"Claude-Opus": {"input": 1, "output": 1}}',
      /upper\.json: Claude-Opus: not a lowercase model id/,
    ],
  ])('%s is refused with one line naming the file and the entry', (name, text, message) => {
    const p = text === null ? path.join(dir, name) : file(name, text);
    expect(() => readModelPrices(p)).toThrow(message);
  });

  it('a bad file stops serve at once: exit 2, one line, nothing booted', async () => {
    const r = await cli([
      'serve',
      '--port',
      '0',
      '--data',
      dir,
      '--model-prices',
      path.join(dir, 'nope.json'),
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--model-prices .*nope\.json: no such file/);
  });
});
