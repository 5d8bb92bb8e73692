/* Pure: no DOM, so unit tests run it under Node. */
import type { ApiKey, ApiKeyGrantsUpdate } from '@agentbox/protocol';

/** A key's grants as the form edits them: text, blank for "no limit". */
export interface GrantsForm {
  repos: string;
  maxBoxes: string;
  maxTasks: string;
  /** MiB of guest memory and GiB of disk of all the key's live boxes together. */
  maxMemoryMib: string;
  maxDiskGib: string;
  /** Dollars, blank for no cap. */
  maxSpendUsd: string;
}

export const EMPTY_GRANTS_FORM: GrantsForm = {
  repos: '',
  maxBoxes: '',
  maxTasks: '',
  maxMemoryMib: '',
  maxDiskGib: '',
  maxSpendUsd: '',
};

const text = (value: number | null): string => (value === null ? '' : String(value));

export function grantsForm(grants: ApiKey['grants']): GrantsForm {
  return {
    repos: grants.repos.join('\n'),
    maxBoxes: text(grants.maxBoxes),
    maxTasks: text(grants.maxTasks),
    maxMemoryMib: text(grants.maxMemoryMib),
    maxDiskGib: text(grants.maxDiskGib),
    maxSpendUsd: text(grants.maxSpendUsd),
  };
}

/** A dollar field: blank is no cap (null); anything but a number ≥ 0 is refused here. */
function dollars(label: string, text: string): number | null {
  const trimmed = text.trim().replace(/^\$/, '');
  if (trimmed === '') return null;
  if (!/^\d+(\.\d+)?$/.test(trimmed))
    throw new Error(`${label}: dollars (like 25 or 2.50), or blank for no cap`);
  return Number(trimmed);
}

/** A limit field: blank is no limit (null); anything but a whole number ≥ 0 is refused here. */
function limit(label: string, text: string): number | null {
  const trimmed = text.trim();
  if (trimmed === '') return null;
  if (!/^\d+$/.test(trimmed)) throw new Error(`${label}: a whole number, or blank for no limit`);
  return Number(trimmed);
}

/**
 * The form as the API takes it. Repositories are split on white space and commas (one per line in
 * the form), repeats dropped; their spelling is the daemon's to check (it names a bad one).
 */
export function grantsFromForm(form: GrantsForm): Required<ApiKeyGrantsUpdate> {
  const repos = [...new Set(form.repos.split(/[\s,]+/).filter((r) => r !== ''))];
  return {
    repos,
    maxBoxes: limit('Max boxes', form.maxBoxes),
    maxTasks: limit('Max tasks', form.maxTasks),
    maxMemoryMib: limit('Max memory', form.maxMemoryMib),
    maxDiskGib: limit('Max disk', form.maxDiskGib),
    maxSpendUsd: dollars('Max spend', form.maxSpendUsd),
  };
}

/** The repositories a key's boxes may have the host's token for, in a few words. */
export function describeRepos(key: Pick<ApiKey, 'scope' | 'grants'>): string {
  if (key.scope === 'admin') return 'any (admin)';
  if (key.grants.repos.length === 0) return 'none';
  return key.grants.repos.join(', ');
}

export function describeLimit(value: number | null): string {
  return value === null ? 'no limit' : String(value);
}

/** The caps on the memory and disk of a key's live boxes together, in a few words. */
export function describeSizeCaps(grants: Pick<ApiKey['grants'], 'maxMemoryMib' | 'maxDiskGib'>): string {
  const caps = [
    ...(grants.maxMemoryMib === null ? [] : [`${grants.maxMemoryMib} MiB memory`]),
    ...(grants.maxDiskGib === null ? [] : [`${grants.maxDiskGib} GiB disk`]),
  ];
  return caps.length === 0 ? 'no limit' : caps.join(', ');
}

/** What a key's boxes spent on model calls (the host's count), and of what cap. */
export function describeSpend(key: Pick<ApiKey, 'spentUsd' | 'grants'>): string {
  const spent = `$${key.spentUsd.toFixed(2)}`;
  return key.grants.maxSpendUsd === null ? spent : `${spent} of $${key.grants.maxSpendUsd.toFixed(2)}`;
}
