import { describe, expect, it } from 'vitest';
import { AgentboxError, ERROR_CODES, ERROR_CODE_LIST, httpStatusOf, isErrorCode } from '../../src/index.js';

describe('error registry', () => {
  it('gives every code a snake_case name, a 4xx/5xx status and a description', () => {
    for (const code of ERROR_CODE_LIST) {
      expect(code).toMatch(/^[a-z]+(_[a-z]+)*$/);
      expect(httpStatusOf(code)).toBeGreaterThanOrEqual(400);
      expect(httpStatusOf(code)).toBeLessThan(600);
      expect(ERROR_CODES[code].description.length).toBeGreaterThan(10);
    }
  });

  it('AgentboxError carries code, status, name and cause', () => {
    const cause = new Error('root');
    const err = new AgentboxError('box_not_found', 'no box x', { cause, details: { id: 'x' } });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('AgentboxError');
    expect(err.status).toBe(404);
    expect(err.cause).toBe(cause);
    expect(err.details).toEqual({ id: 'x' });
  });

  it('isErrorCode accepts only registered codes', () => {
    expect(isErrorCode('invalid_request')).toBe(true);
    expect(isErrorCode('toString')).toBe(false);
    expect(isErrorCode(42)).toBe(false);
  });
});
