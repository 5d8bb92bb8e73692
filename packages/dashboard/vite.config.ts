import { defineConfig } from 'vite';

/**
 * Static files for the daemon to serve at `/`: index.html + hashed assets, no CDN, no source
 * maps. JSX goes through Vite's own transform with Preact's automatic runtime (tsconfig.json).
 */
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  logLevel: 'warn',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: false,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    // `npm run dev -w packages/dashboard` against a local daemon.
    proxy: Object.fromEntries(
      ['/v1', '/health', '/openapi.json'].map((p) => [
        p,
        process.env.AGENTBOX_URL ?? 'http://127.0.0.1:8080',
      ]),
    ),
  },
});
