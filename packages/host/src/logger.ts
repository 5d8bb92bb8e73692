import { pino, type Logger } from 'pino';

/** The daemon's structured log: JSON lines on stderr (stdout carries the few human lines). */
export function createLogger(level: string = process.env.AGENTBOX_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      redact: { paths: ['req.headers["x-api-key"]', 'env', 'env_vars'], censor: '[redacted]' },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
