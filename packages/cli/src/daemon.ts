import { AgentboxError } from '@agentbox/protocol';
import { AgentboxClient } from '@agentbox/sdk';

/** How long the CLI keeps reconnecting a followed task stream: 5 tries, 0.5 s to 2 s apart. */
export const FOLLOW_RECONNECT = { attempts: 5, delayMs: 500 };

/** The daemon to talk to, as an SDK client: --url/--key, then AGENTBOX_URL / AGENTBOX_API_KEY. */
export function daemonClient(options: { url?: string; key?: string }, env = process.env): AgentboxClient {
  const key = options.key ?? env.AGENTBOX_API_KEY;
  if (!key) {
    throw new AgentboxError(
      'unauthorized',
      'no API key: pass --key or set AGENTBOX_API_KEY (`agentbox keys create` makes one)',
    );
  }
  return new AgentboxClient({ ...(options.url ? { url: options.url } : {}), apiKey: key }, env);
}
