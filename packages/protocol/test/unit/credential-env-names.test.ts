import { describe, expect, it } from 'vitest';
import { isCredentialEnvName } from '../../src/index.js';

describe('isCredentialEnvName', () => {
  it('takes the usual credential names, whatever their case', () => {
    const credentials = [
      'GH_TOKEN',
      'GITHUB_TOKEN',
      'GITLAB_TOKEN',
      'NPM_TOKEN',
      'HF_TOKEN',
      'NODE_AUTH_TOKEN',
      'AWS_SESSION_TOKEN',
      'CLAUDE_CODE_OAUTH_TOKEN',
      'TOKEN',
      'ANTHROPIC_API_KEY',
      'OPENAI_API_KEY',
      'STRIPE_KEY',
      'MAILGUN_APIKEY',
      'AWS_SECRET_ACCESS_KEY',
      'CLIENT_SECRET',
      'SECRET_KEY_BASE',
      'JWT_SECRETS',
      'DB_PASSWORD',
      'PGPASSWORD',
      'MYSQL_ROOT_PASSWD',
      'SSH_KEY_PASSPHRASE',
      'GOOGLE_APPLICATION_CREDENTIALS',
      'DOCKER_CREDENTIAL',
      'gh_token',
      'db_password',
    ];
    for (const name of credentials) expect(isCredentialEnvName(name), name).toBe(true);
  });

  it('leaves names that only mention a credential word in passing', () => {
    const plain = [
      'MODE',
      'PATH',
      'HOME',
      'TOKENIZERS_PARALLELISM',
      'MAX_TOKENS',
      'AWS_ACCESS_KEY_ID',
      'KEYBOARD',
      'MONKEY',
      'PRIVATE_KEY_PATH',
      'SSH_AUTH_SOCK',
      'GIT_AUTHOR_NAME',
      'CREDENTIALS_DIR',
    ];
    for (const name of plain) expect(isCredentialEnvName(name), name).toBe(false);
  });
});
