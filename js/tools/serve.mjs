// A static file server for the browser tests: 127.0.0.1 only, cross-origin isolated (COOP/COEP, so
// WebAssembly threads work), each URL prefix mapped to one folder, nothing outside a folder served
// (real paths checked, symlinks out refused).
import { createServer } from 'node:http';
import { createReadStream, realpathSync, statSync } from 'node:fs';
import { extname, join, sep } from 'node:path';

const TYPES = {
  '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm',
  '.html': 'text/html; charset=utf-8', '.png': 'image/png', '.onnx': 'application/octet-stream',
};

/**
 * @param {Record<string, string>} roots URL prefix ("/js/") -> folder
 * @param {Record<string, string>} [pages] URL path -> HTML text
 * @param {{ log?: boolean }} [options] log: record every requested path (`requests`)
 * @returns {Promise<{ url: string, close: () => Promise<void>, requests: string[] }>}
 */
export async function serve(roots, pages = {}, { log = false } = {}) {
  const real = Object.fromEntries(Object.entries(roots).map(([p, d]) => [p, realpathSync(d)]));
  /** @type {string[]} */
  const requests = [];
  const server = createServer((req, res) => {
    if (log) requests.push(req.url ?? '');
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store',
    };
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    if (path === '/favicon.ico') {
      res.writeHead(204, headers);
      res.end();
      return;
    }
    if (pages[path] !== undefined) {
      res.writeHead(200, { ...headers, 'Content-Type': TYPES['.html'] });
      res.end(pages[path]);
      return;
    }
    const prefix = Object.keys(real).find((p) => path.startsWith(p));
    let file = null;
    if (prefix && !path.split('/').includes('..')) {
      try {
        const candidate = realpathSync(join(real[prefix], ...path.slice(prefix.length).split('/')));
        if ((candidate === real[prefix] || candidate.startsWith(real[prefix] + sep)) && statSync(candidate).isFile()) file = candidate;
      } catch { /* missing */ }
    }
    if (file === null) {
      res.writeHead(404, headers);
      res.end();
      return;
    }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream', 'Content-Length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(null)));
  const addr = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${addr.port}`, requests, close: () => new Promise((ok) => server.close(() => ok())) };
}
