import { execFile, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import type http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Handler } from './egress-harness.js';

/**
 * A git smart-HTTP server in the shape of github.com: `git http-backend` (CGI) behind the fake
 * HTTPS upstream, serving bare repositories under `root/<owner>/<repo>.git`. With `token` set it
 * answers 401 + a Basic challenge until the request carries that token as the password, the way
 * github.com treats private repositories.
 */

const execFileP = promisify(execFile);
const GIT_ENV = {
  GIT_CONFIG_NOSYSTEM: '1',
  GIT_AUTHOR_NAME: 't',
  GIT_AUTHOR_EMAIL: 't@t',
  GIT_COMMITTER_NAME: 't',
  GIT_COMMITTER_EMAIL: 't@t',
};

/** Makes a bare repository `root/owner/name.git` holding one commit with README.md = `content`. */
export async function makeBareRepo(
  root: string,
  owner: string,
  name: string,
  content: string,
): Promise<void> {
  const bare = path.join(root, owner, `${name}.git`);
  const work = path.join(root, 'work', owner, name);
  await mkdir(path.dirname(bare), { recursive: true });
  await mkdir(work, { recursive: true });
  const env = { ...process.env, ...GIT_ENV, HOME: root };
  const git = (cwd: string, ...args: string[]) => execFileP('git', args, { cwd, env });
  await git(root, 'init', '-q', '--bare', '-b', 'main', bare);
  await git(work, 'init', '-q', '-b', 'main');
  await import('node:fs/promises').then((fs) => fs.writeFile(path.join(work, 'README.md'), content));
  await git(work, 'add', 'README.md');
  await git(work, 'commit', '-q', '-m', 'init');
  await git(work, 'push', '-q', bare, 'main');
}

export function gitHttpBackend(root: string, token?: string): Handler {
  return (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => {
    if (token !== undefined) {
      const auth = String(req.headers.authorization ?? '');
      const pass = auth.startsWith('Basic ')
        ? Buffer.from(auth.slice(6), 'base64').toString().split(':').slice(1).join(':')
        : '';
      if (pass !== token) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="GitHub"', 'content-length': 0 });
        res.end();
        return;
      }
    }
    const url = new URL(req.url ?? '/', 'https://github.com');
    const cgi = spawn('git', ['http-backend'], {
      env: {
        ...process.env,
        GIT_PROJECT_ROOT: root,
        GIT_HTTP_EXPORT_ALL: '1',
        PATH_INFO: decodeURIComponent(url.pathname),
        QUERY_STRING: url.search.slice(1),
        REQUEST_METHOD: req.method ?? 'GET',
        CONTENT_TYPE: String(req.headers['content-type'] ?? ''),
        CONTENT_LENGTH: String(body.length),
        GIT_PROTOCOL: String(req.headers['git-protocol'] ?? ''),
        REMOTE_USER: 'x',
        REMOTE_ADDR: '127.0.0.1',
      },
    });
    const out: Buffer[] = [];
    cgi.stdout.on('data', (c: Buffer) => out.push(c));
    cgi.on('close', () => {
      const all = Buffer.concat(out);
      const split = all.indexOf('\r\n\r\n');
      const headText = all.subarray(0, split).toString();
      const headers: Record<string, string> = {};
      let status = 200;
      for (const line of headText.split('\r\n')) {
        const colon = line.indexOf(':');
        const key = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        if (key === 'status') status = Number(value.split(' ')[0]);
        else headers[key] = value;
      }
      const payload = all.subarray(split + 4);
      headers['content-length'] = String(payload.length);
      res.writeHead(status, headers);
      res.end(payload);
    });
    cgi.stdin.end(body);
  };
}

/**
 * api.github.com's GraphQL endpoint in miniature: 401 unless the request bears `token`, 404 off
 * `POST /graphql`, and otherwise `{data: {repository: {nameWithOwner}}}` from the variables, with
 * what it received (the request as the gateway re-serialized it) echoed under `received`.
 */
export function fakeGraphqlApi(token: string): Handler {
  return (req: http.IncomingMessage, body: Buffer, res: http.ServerResponse) => {
    const send = (status: number, value: unknown): void => {
      const out = JSON.stringify(value);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    };
    if (req.headers.authorization !== `bearer ${token}` && req.headers.authorization !== `Bearer ${token}`) {
      send(401, { message: 'Bad credentials' });
      return;
    }
    if (req.method !== 'POST' || req.url !== '/graphql') {
      send(404, { message: 'Not Found' });
      return;
    }
    const received = JSON.parse(body.toString()) as { variables?: { owner?: string; name?: string } };
    const { owner = '?', name = '?' } = received.variables ?? {};
    send(200, { data: { repository: { nameWithOwner: `${owner}/${name}` } }, received });
  };
}
