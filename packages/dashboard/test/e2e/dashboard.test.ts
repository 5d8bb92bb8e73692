import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiKey, Box, EgressAuditRecord } from '@agentbox/protocol';
import { agentboxHome, processesMentioning } from '@agentbox/vm';
import {
  client,
  deleteAllBoxes,
  leftoversIn,
  startDaemon,
  type Daemon,
} from '../../../host/test/helpers/daemon.js';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const DIST = path.join(ROOT, 'packages/dashboard/dist');
/** Collected by CI as artifacts (gitignored). */
const SHOTS = path.join(ROOT, 'artifacts/screenshots');
const CHROMIUM = process.env.AGENTBOX_CHROMIUM ?? '/usr/bin/chromium';
/** Debian's chromium as root, offline: no sandbox, no GPU, no background calls home. */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const SCRIPT = [
  'curl -sS -o /dev/null https://example.com/ 2>/dev/null; echo "curl exit $?"',
  'for i in 1 2 3; do echo tick $i; sleep 2; done',
].join('\n');

/*
 * Scripts run in the page (strings: this file is type-checked as Node code, without the DOM lib).
 */
const STORED_KEY = "sessionStorage.getItem('agentbox.apiKey')";
/** Records each event element as it is added, with the time and what the page said then. */
const RECORD_EVENTS = `(() => {
  const seen = (window.__seen = []);
  const data = (selector, key) => document.querySelector(selector)?.dataset[key];
  // An event element added itself, or inside a list added whole (what had happened by the page's
  // first render of the task comes in one piece).
  const eventsIn = (node) =>
    !(node instanceof HTMLElement)
      ? []
      : node.dataset.testid === 'task-event'
        ? [node]
        : [...node.querySelectorAll('[data-testid=task-event]')];
  new MutationObserver((mutations) => {
    for (const m of mutations)
      for (const node of [...m.addedNodes].flatMap(eventsIn)) {
        seen.push({
          seq: Number(node.dataset.seq),
          type: node.dataset.type,
          text: node.querySelector('.event-body')?.textContent ?? '',
          at: performance.now(),
          stream: data('[data-testid=stream-state]', 'stream'),
          taskState: data('[data-testid=task-state]', 'state'),
        });
      }
  }).observe(document.body, { childList: true, subtree: true });
})()`;

/** What the page saw, in order: each event element as it was added, with the time. */
interface Seen {
  seq: number;
  type: string;
  text: string;
  at: number;
  stream: string | undefined;
  taskState: string | undefined;
}

/**
 * The dashboard in a real browser (Debian's chromium through playwright-core) against a real
 * daemon with real VMs: sign in, create a box, run a shell task in it and watch its events arrive
 * one by one while it runs, cancel another, see the box's egress audit, pause and resume it, kill
 * it. Screenshots of each step go to artifacts/screenshots/.
 */
describe('the web dashboard in Chromium against a real daemon', () => {
  let dataDir: string;
  let daemon: Daemon;
  let api: ReturnType<typeof client>;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];
  let boxId: string;

  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

  beforeAll(async () => {
    // The test setup's own Debian packages (idempotent; scripts/test.sh runs it too).
    if (!fs.existsSync(CHROMIUM))
      execFileSync('bash', [path.join(ROOT, 'scripts/test-packages.sh')], { stdio: 'inherit' });
    if (!fs.existsSync(path.join(DIST, 'index.html'))) {
      execFileSync(
        process.execPath,
        [path.join(ROOT, 'node_modules/vite/bin/vite.js'), 'build', 'packages/dashboard'],
        {
          cwd: ROOT,
          stdio: 'inherit',
        },
      );
    }
    fs.mkdirSync(SHOTS, { recursive: true });
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbox-dashboard-'));
    daemon = await startDaemon(dataDir);
    api = client(daemon.url, daemon.initialKey!);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on('pageerror', (err) => pageErrors.push(`pageerror: ${err.message}`));
    page.on('console', (msg) => {
      // HTTP errors the page handles (the refused key) are logged by the browser itself; anything
      // else (a CSP refusal, a script error) counts.
      if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource'))
        pageErrors.push(`console: ${msg.text()}`);
    });
  });

  afterAll(async () => {
    await browser?.close();
    if (api) await deleteAllBoxes(api);
    if (daemon) {
      daemon.process.kill('SIGTERM');
      await daemon.exited;
      for (const pid of leftoversIn(dataDir).processes) process.kill(pid, 'SIGKILL');
      // Template builds (shared `$AGENTBOX_HOME/templates/<id>.build-<daemon pid>/`) that were still
      // running when the daemon stopped: it does not stop them itself yet, and they must not outlive
      // the test. Only this daemon's, by its pid.
      const building = `.build-${daemon.process.pid}/`;
      for (const pid of processesMentioning(building)) process.kill(pid, 'SIGKILL');
      const templates = path.join(agentboxHome(), 'templates');
      for (const dir of fs.existsSync(templates) ? fs.readdirSync(templates) : [])
        if (dir.endsWith(building.slice(0, -1)))
          fs.rmSync(path.join(templates, dir), { recursive: true, force: true });
    }
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses a wrong key, then signs in with the real one', async () => {
    await page.goto(daemon.url);
    await page.getByTestId('login-form').waitFor();
    await shot('01-login');
    await page.getByLabel('API key').fill('abk_not-a-real-key');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect.poll(() => page.getByTestId('error').getAttribute('data-code')).toBe('unauthorized');
    await page.getByLabel('API key').fill(daemon.initialKey!);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('no-boxes').waitFor();
    // The key is kept for this tab only, and never put in a URL.
    expect(await page.evaluate(STORED_KEY)).toBe(daemon.initialKey);
    expect(page.url()).not.toContain(daemon.initialKey!);
    await shot('02-boxes-empty');
  });

  it('creates a box from the form and lists it with state, resources and age', async () => {
    await page.getByTestId('new-box').click();
    await page.getByLabel('Memory (MiB)').fill('512');
    await page.getByLabel('User id').fill('e2e-dashboard');
    await page.getByTestId('create-box').click();
    const row = page.locator('[data-testid=box-row]', { hasText: 'e2e-dashboard' });
    await expect.poll(() => row.count(), { timeout: 200_000 }).toBe(1);
    boxId = (await row.getAttribute('data-box-id'))!;
    expect(boxId).toMatch(/^box-[a-z0-9]{10}$/);
    await expect
      .poll(() => row.getAttribute('data-state'), { timeout: 200_000 })
      .toMatch(/^(running|paused|hibernated)$/);
    const cells = await row.locator('td').allInnerTexts();
    expect(cells[2]).toBe('bash');
    expect(cells[3]).toBe('512 MiB');
    expect(cells[4]).toBe('1');
    expect(cells[5]).toMatch(/^\d+[smhd]/);
    expect(cells[6]).toBe('e2e-dashboard');
    await shot('03-box-running');
  });

  it('starts a shell task in the box and shows its events live, one by one, before it ends', async () => {
    await page.locator(`a[href="/boxes/${boxId}"]`).first().click();
    await page.getByTestId('box-facts').waitFor();
    await page.getByTestId('task-in-box').click();
    const form = page.getByTestId('create-task-form');
    await form.waitFor();
    expect(await form.locator('select[name=agent]').inputValue()).toBe('shell');
    expect(await form.locator('select[name=where]').inputValue()).toBe(boxId);
    await form.locator('textarea[name=prompt]').fill(SCRIPT);

    // Record every event element the moment it is added (the page stays: routing is client-side).
    await page.evaluate(RECORD_EVENTS);
    await page.getByTestId('start-task').click();
    await page.waitForURL(/\/tasks\/[^/]+$/);
    const taskId = page.url().split('/').pop()!;

    // Mid-run (the page's own record below is what proves it: Playwright polls late under load).
    await page
      .locator('[data-testid=task-event][data-type=text]', { hasText: 'tick 1' })
      .waitFor({ timeout: 120_000 });
    await shot('04-task-live');

    await page.locator('[data-testid=task-state][data-state=succeeded]').waitFor({ timeout: 120_000 });
    await page.locator('[data-testid=task-event][data-type=completion]').waitFor();
    await expect.poll(() => page.getByTestId('stream-state').getAttribute('data-stream')).toBe('ended');
    await shot('05-task-done');

    const seen = await page.evaluate<Seen[]>('window.__seen');
    const ticks = [1, 2, 3].map((n) => seen.find((s) => s.type === 'text' && s.text.trim() === `tick ${n}`));
    for (const t of ticks) {
      expect(t, JSON.stringify(seen)).toBeDefined();
      // Shown while the task was still running (as far as the page knew), over the live stream.
      expect(['queued', 'running']).toContain(t!.taskState);
      expect(t!.stream).toBe('live');
    }
    // One by one, as the script printed them (two seconds apart), not all at the end.
    expect(ticks[1]!.at - ticks[0]!.at, JSON.stringify(seen)).toBeGreaterThan(1000);
    expect(ticks[2]!.at - ticks[1]!.at, JSON.stringify(seen)).toBeGreaterThan(1000);
    const completion = seen.find((s) => s.type === 'completion')!;
    expect(completion.at).toBeGreaterThanOrEqual(ticks[2]!.at);
    // In order, no duplicates: what the page shows is exactly the stored log.
    const shown = await page.evaluate<number[]>(
      "[...document.querySelectorAll('[data-testid=task-event]')].map((e) => Number(e.dataset.seq))",
    );
    const stored = (await (await api('GET', `/v1/tasks/${taskId}/events?follow=false`)).text())
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { seq: number }).seq);
    expect(shown).toEqual(stored);
    // Each kind is rendered apart.
    expect(await page.locator('li.event-status').count()).toBeGreaterThan(0);
    expect(await page.locator('li.event-text').count()).toBeGreaterThanOrEqual(4);
    expect(await page.locator('li.event-completion').count()).toBe(1);
  });

  it('cancels a running task from its page', async () => {
    await page.getByRole('link', { name: boxId }).first().click();
    await page.getByTestId('task-in-box').click();
    await page.locator('textarea[name=prompt]').fill('echo started; sleep 120; echo never');
    await page.getByTestId('start-task').click();
    await page.waitForURL(/\/tasks\/[^/]+$/);
    await page
      .locator('[data-testid=task-event][data-type=text]', { hasText: 'started' })
      .waitFor({ timeout: 120_000 });
    await page.getByTestId('cancel-task').click();
    await page.locator('[data-testid=task-state][data-state=cancelled]').waitFor({ timeout: 60_000 });
    await expect.poll(() => page.getByTestId('stream-state').getAttribute('data-stream')).toBe('ended');
    expect(await page.locator('[data-testid=task-event]', { hasText: 'never' }).count()).toBe(0);
    expect(await page.getByTestId('cancel-task').count()).toBe(0);
    await shot('06-task-cancelled');
    // Ended: it can be deleted, events and all.
    const cancelledId = page.url().split('/').pop()!;
    await page.getByTestId('delete-task').click();
    await page.getByTestId('delete-task-confirm').click();
    await page.waitForURL(/\/tasks$/);
    expect((await api('GET', `/v1/tasks/${cancelledId}`)).status).toBe(404);
  });

  it("shows the box's egress audit: the refused connection of the task", async () => {
    const records = async () =>
      ((await (await api('GET', `/v1/boxes/${boxId}/egress`)).json()) as { records: EgressAuditRecord[] })
        .records;
    await expect.poll(async () => (await records()).length, { timeout: 30_000 }).toBeGreaterThan(0);
    await page.getByRole('link', { name: boxId }).first().click();
    const table = page.getByTestId('egress-table');
    await table.waitFor({ timeout: 15_000 });
    const row = table.locator('tr', { hasText: 'example.com:443' }).first();
    await row.waitFor();
    expect(await row.innerText()).toContain('deny');
    await shot('07-box-egress-audit');
  });

  it("browses the box's files: uploads one, downloads the same bytes, opens a directory, deletes", async () => {
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    await page.getByTestId('box-facts').waitFor();
    await page.getByTestId('browse-files').click();
    await expect.poll(() => page.getByTestId('files-path').getAttribute('data-path')).toBe('/workspace');

    const bytes = randomBytes(256 * 1024);
    await page
      .getByTestId('upload-file')
      .setInputFiles({ name: 'up.bin', mimeType: 'application/octet-stream', buffer: bytes });
    const row = page.locator('[data-testid=file-row][data-name="up.bin"]');
    await row.waitFor({ timeout: 60_000 });
    expect(await row.locator('td').nth(1).innerText()).toBe('256 KiB');
    const inBox = Buffer.from(await (await api('GET', `/v1/boxes/${boxId}/files?path=up.bin`)).arrayBuffer());
    expect(sha(inBox)).toBe(sha(bytes));
    const [download] = await Promise.all([page.waitForEvent('download'), row.locator('a').first().click()]);
    expect(download.suggestedFilename()).toBe('up.bin');
    expect(sha(fs.readFileSync(await download.path()))).toBe(sha(bytes));

    expect(
      (await api('PUT', `/v1/boxes/${boxId}/files?path=sub/inner.txt`, Buffer.from('inner\n'))).status,
    ).toBe(200);
    await page.getByTestId('refresh-files').click();
    await page.locator('[data-testid=file-row][data-name=sub] a').first().click();
    await expect.poll(() => page.getByTestId('files-path').getAttribute('data-path')).toBe('/workspace/sub');
    await page.locator('[data-testid=file-row][data-name="inner.txt"]').waitFor();
    await page.getByTestId('files-up').click();
    await expect.poll(() => page.getByTestId('files-path').getAttribute('data-path')).toBe('/workspace');
    await shot('08-box-files');

    await row.getByTestId('delete-file').click();
    await row.getByTestId('delete-file-confirm').click();
    await expect.poll(() => row.count(), { timeout: 60_000 }).toBe(0);
    expect((await api('GET', `/v1/boxes/${boxId}/files?path=up.bin`)).status).toBe(404);
  });

  it("lists the box's processes and kills one", async () => {
    const started = await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, {
      command: 'setsid sleep 7777 >/dev/null 2>&1 < /dev/null & echo $!',
    });
    const pid = Number(
      Buffer.from(((await started.json()) as { stdout: string }).stdout, 'base64').toString(),
    );
    expect(pid).toBeGreaterThan(1);
    await page.getByTestId('list-processes').click();
    const row = page.locator(`[data-testid=process-row][data-pid="${pid}"]`);
    await row.waitFor({ timeout: 60_000 });
    expect(await row.innerText()).toContain('sleep 7777');
    await shot('09-box-processes');
    await row.getByTestId('kill-process').click();
    await row.getByTestId('kill-process-confirm').click();
    await expect.poll(() => row.count(), { timeout: 60_000 }).toBe(0);
    const left = await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, {
      command: `kill -0 ${pid} 2>/dev/null && echo alive || echo gone`,
    });
    expect(
      Buffer.from(((await left.json()) as { stdout: string }).stdout, 'base64')
        .toString()
        .trim(),
    ).toBe('gone');
  });

  it("lists the box's background commands, shows one's output, deletes it", async () => {
    const started = await api('POST', `/v1/boxes/${boxId}/commands`, {
      command: 'echo hello from the background; echo a warning >&2; sleep 7778',
    });
    expect(started.status).toBe(201);
    const cmd = (await started.json()) as { id: string; pid: number };
    const row = page.locator(`[data-testid=command-row][data-command="${cmd.id}"]`);
    await row.waitFor({ timeout: 60_000 });
    expect(await row.innerText()).toContain('running');
    await row.getByTestId('command-output').click();
    await expect
      .poll(() => page.getByTestId('command-stdout').innerText(), { timeout: 60_000 })
      .toBe('hello from the background\n');
    expect(await page.getByTestId('command-stderr').innerText()).toBe('a warning\n');
    expect(await page.getByTestId('command-output-view').innerText()).toContain('still running');
    await shot('09b-box-commands');
    await row.getByTestId('delete-command').click();
    await row.getByTestId('delete-command-confirm').click();
    await expect.poll(() => row.count(), { timeout: 60_000 }).toBe(0);
    const left = await api('POST', `/v1/boxes/${boxId}/exec?stream=false`, {
      command: `kill -0 ${cmd.pid} 2>/dev/null && echo alive || echo gone`,
    });
    expect(
      Buffer.from(((await left.json()) as { stdout: string }).stdout, 'base64')
        .toString()
        .trim(),
    ).toBe('gone');
  });

  it('pauses and resumes the box when the daemon can', async () => {
    await page.getByTestId('box-facts').waitFor();
    const state = () => page.getByTestId('box-facts').getByTestId('state').innerText();
    // Idle boxes pause themselves after a while: start from a running one.
    if ((await state()) !== 'running') {
      await page.getByTestId('resume-box').click();
      await expect.poll(state, { timeout: 120_000 }).toBe('running');
    }
    const pause = page.getByTestId('pause-box');
    if ((await pause.count()) === 0) return; // a daemon without pause/resume: the buttons stay hidden
    await pause.click();
    await expect.poll(state, { timeout: 60_000 }).toBe('paused');
    await shot('10-box-paused');
    await page.getByTestId('resume-box').click();
    await expect.poll(state, { timeout: 120_000 }).toBe('running');
  });

  it('kills the box from the UI and it is gone', async () => {
    await page.getByTestId('kill-box').click();
    await page.getByTestId('kill-box-confirm').click();
    await page.waitForURL(/\/boxes$/);
    await page.getByTestId('refresh-boxes').waitFor();
    await expect.poll(() => page.locator(`[data-box-id="${boxId}"]`).count(), { timeout: 60_000 }).toBe(0);
    const after = await api('GET', `/v1/boxes/${boxId}`);
    if (after.status !== 404) expect(((await after.json()) as Box).state).toBe('deleted');
    await shot('11-box-killed');
  });

  it('manages API keys as admin: makes a user key with grants (secret shown once), changes them, revokes it', async () => {
    const keyOf = async (id: string) =>
      ((await (await api('GET', '/v1/keys')).json()) as { keys: ApiKey[] }).keys.find((k) => k.id === id);
    await page.getByTestId('nav-keys').click();
    await page.waitForURL(/\/keys$/);
    await page.getByTestId('keys-table').waitFor();
    // The key this tab signed in with is listed and marked.
    const mine = page.locator('[data-testid=key-row]', { hasText: 'this tab’s key' });
    expect(await mine.count()).toBe(1);
    expect(await mine.getByTestId('key-repos').innerText()).toBe('any (admin)');

    await page.getByTestId('new-key').click();
    const form = page.getByTestId('create-key-form');
    await form.locator('input[name=name]').fill('e2e-user');
    await form.locator('input[name=maxBoxes]').fill('2');
    // A limit that is no number is refused in the page, naming the field; nothing is made.
    const before = ((await (await api('GET', '/v1/keys')).json()) as { keys: ApiKey[] }).keys.length;
    await form.locator('input[name=maxTasks]').fill('two');
    await page.getByTestId('create-key').click();
    await expect.poll(() => form.getByTestId('error').innerText()).toContain('Max tasks');
    // A repository spelled wrong is refused by the daemon, which names it; nothing is made either.
    await form.locator('input[name=maxTasks]').fill('');
    await form.locator('textarea[name=repos]').fill('octo/hello\nhttps://github.com/octo/x');
    await page.getByTestId('create-key').click();
    await expect.poll(() => form.getByTestId('error').getAttribute('data-code')).toBe('invalid_request');
    expect(await form.getByTestId('error').innerText()).toContain('grants.repos.1');
    expect(((await (await api('GET', '/v1/keys')).json()) as { keys: ApiKey[] }).keys.length).toBe(before);

    await form.locator('textarea[name=repos]').fill('octo/hello\nacme/*');
    await page.getByTestId('create-key').click();
    const created = page.getByTestId('new-key-secret');
    await created.waitFor();
    const secret = await page.getByTestId('new-key-value').innerText();
    const keyId = (await created.getAttribute('data-key-id'))!;
    expect(secret).toMatch(/^abk_/);
    await shot('12-key-created');
    expect(await keyOf(keyId)).toMatchObject({
      name: 'e2e-user',
      scope: 'user',
      revokedAt: null,
      grants: {
        repos: ['acme/*', 'octo/hello'],
        maxBoxes: 2,
        maxTasks: null,
        maxMemoryMib: null,
        maxSpendUsd: null,
      }, // kept sorted
    });
    // The secret is a working user key: its own boxes, no key management.
    const asUser = client(daemon.url, secret);
    expect((await asUser('GET', '/v1/boxes')).status).toBe(200);
    expect((await asUser('GET', '/v1/keys')).status).toBe(403);
    // Shown once: gone from the page when dismissed, and the list never shows it.
    await page.getByTestId('new-key-done').click();
    expect(await page.getByTestId('new-key-value').count()).toBe(0);
    expect(await page.content()).not.toContain(secret);

    const row = page.locator(`[data-testid=key-row][data-key-id="${keyId}"]`);
    expect(await row.getByTestId('key-repos').innerText()).toBe('acme/*, octo/hello');
    expect(await row.getByTestId('key-max-boxes').innerText()).toBe('2');
    await row.getByTestId('edit-grants').click();
    const grants = page.getByTestId('grants-form');
    expect(await grants.locator('textarea[name=repos]').inputValue()).toBe('acme/*\nocto/hello');
    await grants.locator('textarea[name=repos]').fill('');
    await grants.locator('input[name=maxBoxes]').fill('');
    await grants.locator('input[name=maxTasks]').fill('3');
    await grants.locator('input[name=maxSpendUsd]').fill('7.5');
    await grants.locator('input[name=maxMemoryMib]').fill('4096');
    await grants.locator('input[name=maxDiskGib]').fill('40');
    await page.getByTestId('save-grants').click();
    await expect.poll(() => row.getByTestId('key-repos').innerText()).toBe('none');
    expect(await row.getByTestId('key-max-tasks').innerText()).toBe('3');
    expect(await row.getByTestId('key-size-caps').innerText()).toBe('4096 MiB memory, 40 GiB disk');
    expect(await row.getByTestId('key-spend').innerText()).toBe('$0.00 of $7.50');
    expect((await keyOf(keyId))?.grants).toEqual({
      repos: [],
      maxBoxes: null,
      maxTasks: 3,
      maxMemoryMib: 4096,
      maxDiskGib: 40,
      maxSpendUsd: 7.5,
    });
    await shot('13-key-grants');
    // A new billing period: the spend count starts again, after a confirm.
    const made = (await keyOf(keyId))!;
    expect(made.spentSince).toBe(made.createdAt);
    await row.getByTestId('reset-spend').click();
    await row.getByTestId('reset-spend-confirm').click();
    await expect.poll(async () => (await keyOf(keyId))!.spentSince).toBeGreaterThan(made.createdAt);
    expect(await row.getByTestId('key-spend').innerText()).toBe('$0.00 of $7.50');

    // Signed in with the user key, the page has no Keys section, and /keys shows the refusal.
    await page.getByTestId('sign-out').click();
    await page.getByLabel('API key').fill(secret);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('nav-boxes').waitFor();
    await page.goto(`${daemon.url}/keys`);
    await expect.poll(() => page.getByTestId('error').getAttribute('data-code')).toBe('forbidden');
    expect(await page.getByTestId('nav-keys').count()).toBe(0);
    await page.getByTestId('sign-out').click();
    await page.getByLabel('API key').fill(daemon.initialKey!);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('nav-keys').click();

    await row.getByTestId('revoke-key').click();
    await row.getByTestId('revoke-key-confirm').click();
    await expect.poll(() => row.getAttribute('data-state')).toBe('revoked');
    expect((await keyOf(keyId))?.revokedAt).toEqual(expect.any(Number));
    expect((await asUser('GET', '/v1/boxes')).status).toBe(401);
    expect(await row.getByTestId('revoke-key').count()).toBe(0);
  });

  it('signs out, and the page had no script or CSP errors', async () => {
    await page.getByTestId('sign-out').click();
    await page.getByTestId('login-form').waitFor();
    expect(await page.evaluate(STORED_KEY)).toBeNull();
    expect(pageErrors).toEqual([]);
  });
});
