/**
 * Version of the host↔guest wire protocol (frames + messages). Bump on any incompatible change;
 * the host refuses a guest that speaks another version.
 */
export const PROTOCOL_VERSION = 1;

/**
 * Version of the contract between the host and an image: init layout, guest agent location, kernel
 * command line, device names. A host refuses images built for another image API version.
 */
export const IMAGE_API_VERSION = 1;

/** Where the guest agent, its startup snapshot and its runtime files live in a box (a tmpfs). */
export const GUEST_AGENT_DIR = '/run/agentbox';
/** Written by the guest agent once it said hello (init.sh's proof that the agent's snapshot loads). */
export const GUEST_HELLO_MARK = `${GUEST_AGENT_DIR}/hello`;

/** Name of the virtio-serial port that carries the guest channel. */
export const GUEST_PORT_NAME = 'agentbox.0';

/** The in-box egress proxy: the guest agent listens here; the host's gateway decides. */
export const GUEST_PROXY_PORT = 3128;
export const GUEST_PROXY_URL = `http://127.0.0.1:${GUEST_PROXY_PORT}`;
/** Destinations that never go through the proxy: the box's own loopback. */
export const GUEST_NO_PROXY = 'localhost,127.0.0.1,::1';
/** NODE_OPTIONS of the box's processes: node 22 calls NODE_USE_ENV_PROXY experimental at every start. */
export const GUEST_NODE_OPTIONS = '--disable-warning=UNDICI-EHPA';
/** The locale of every process the guest agent starts (LANG), unless the caller sets another. */
export const GUEST_LANG = 'C.UTF-8';
