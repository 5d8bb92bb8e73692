/* Pure: no DOM, so unit tests run it under Node. */
import type { ApiKey, ApiKeyGrantsUpdate } from '@agentbox/protocol';

/** A key's grants as the form edits them: text, blank for "no limit". */
export interface GrantsForm {
  repos: string;
  maxBoxes: string;
  maxTasks: string;
}

export const EMPTY_GRANTS_FORM: GrantsForm = { repos: '', maxBoxes: '', maxTasks: '' };

export function grantsForm(grants: ApiKey['grants']): GrantsForm {
  return {
    repos: grants.repos.join('\n'),
    maxBoxes: grants.maxBoxes === null ? '' : String(grants.maxBoxes),
    maxTasks: grants.maxTasks === null ? '' : String(grants.maxTasks),
  };
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
