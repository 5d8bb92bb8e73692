import { installPackages, missingPackages } from '../prerequisites.js';

export async function setup(options: { check: boolean }): Promise<number> {
  if (options.check) {
    const missing = await missingPackages();
    if (missing.length === 0) {
      process.stdout.write('all host packages are installed\n');
      return 0;
    }
    process.stdout.write(`missing: ${missing.join(' ')}\nfix: agentbox setup\n`);
    return 1;
  }
  const { installed } = await installPackages((line) => process.stderr.write(`  ${line}\n`));
  process.stdout.write(
    installed.length ? `installed ${installed.join(' ')}\n` : 'all host packages are installed\n',
  );
  return 0;
}
