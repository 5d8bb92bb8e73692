import os from 'node:os';
import path from 'node:path';

/** Root of agentbox's host state: images, caches, box runtime dirs. `AGENTBOX_HOME`, default ~/.agentbox. */
export function agentboxHome(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.AGENTBOX_HOME ?? path.join(os.homedir(), '.agentbox'));
}

export function imagesDir(home = agentboxHome()): string {
  return path.join(home, 'images');
}

export function cacheDir(home = agentboxHome()): string {
  return path.join(home, 'cache');
}

export function boxesDir(home = agentboxHome()): string {
  return path.join(home, 'boxes');
}
