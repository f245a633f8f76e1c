// Headless Chromium (Debian's /usr/bin/chromium, never a downloaded build) driven by playwright-core.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.TASKFOLD_CHROMIUM ?? '/usr/bin/chromium';

/**
 * A fresh headless Chromium context; `close()` ends it and removes its profile.
 * @param {{ gpu?: boolean }} [options] gpu: leave WebGPU on (SwiftShader where there is no GPU)
 */
export async function launch({ gpu = false } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'taskfold-chromium-'));
  const args = ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'];
  args.push(...(gpu ? ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=swiftshader', '--use-webgpu-adapter=swiftshader'] : ['--disable-gpu']));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args });
  return {
    context,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * The import map a page needs to load the runtime from /js/ without a bundler: onnxruntime-web's WASM
 * build, or (webgpu) its build with the WebGPU execution provider.
 * @param {boolean} [gpu]
 */
export function importMap(gpu = false) {
  return {
    imports: {
      '#ort': '/js/src/ort_web.js',
      'onnxruntime-web': `/js/node_modules/onnxruntime-web/dist/${gpu ? 'ort.min.mjs' : 'ort.wasm.min.mjs'}`,
      'fast-png': '/js/node_modules/fast-png/lib/index.js',
      fflate: '/js/node_modules/fflate/esm/browser.js',
      iobuffer: '/js/node_modules/iobuffer/lib/iobuffer.js',
    },
  };
}

/** A page that loads nothing but the import map (tests import the runtime with `page.evaluate`). @param {boolean} [gpu] */
export const page = (gpu = false) => `<!doctype html><meta charset="utf-8"><title>taskfold-js</title>
<script type="importmap">${JSON.stringify(importMap(gpu))}</script><body></body>`;
export const PAGE = page(false);
