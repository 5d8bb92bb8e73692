import { describe, expect, it } from 'vitest';
import { boxPath, workspaceFile } from '../../src/index.js';

describe('path rules', () => {
  it.each([
    ['hello.py', '/workspace/hello.py'],
    ['src/main.py', '/workspace/src/main.py'],
    ['./a//b.txt', '/workspace/a/b.txt'],
    ['..hidden', '/workspace/..hidden'],
  ])('seed filename %s → %s', (name, full) => {
    expect(workspaceFile(name)).toBe(full);
  });

  it.each(['../x', '/etc/passwd', 'a/../../x', 'a/..', '.', '..', 'a\\..\\..\\x', 'a\0b'])(
    'seed filename %j is refused',
    (name) => {
      expect(() => workspaceFile(name)).toThrow(
        expect.objectContaining({ code: name.includes('\0') ? 'invalid_request' : 'path_outside_workspace' }),
      );
    },
  );

  it('/v1 paths: absolute anywhere, relative under the workspace, never ".."', () => {
    expect(boxPath('/etc/hosts')).toBe('/etc/hosts');
    expect(boxPath('notes/a.txt')).toBe('/workspace/notes/a.txt');
    expect(boxPath('.')).toBe('/workspace');
    expect(boxPath('x', '/tmp/ws')).toBe('/tmp/ws/x');
    // One path, one spelling: the delete guard compares it with the workspace and with /.
    for (const p of ['/workspace/', './', '/workspace//', '//workspace', './/'])
      expect(boxPath(p)).toBe('/workspace');
    expect(boxPath('/')).toBe('/');
    expect(boxPath('///')).toBe('/');
    for (const p of ['../x', '/workspace/../etc', 'a/../b'])
      expect(() => boxPath(p)).toThrow(expect.objectContaining({ code: 'path_outside_workspace' }));
  });
});
