"""The demo page's live panel: the exported package run in the reader's browser by the JavaScript runtime.

:func:`live_panel` is an HTML section (task, prompt, condition image, mask, seed, scheduler, steps ->
image) whose module script imports the JS runtime from ``/js/`` and opens the demo's ``package/`` by URL —
fetched, validated, size- and hash-checked like any untrusted package, then run on onnxruntime-web
(WASM; WebGPU when the browser has it and the box is ticked). It works when the page is served by
``taskfold serve DEMO_DIR`` (127.0.0.1, cross-origin isolated, ``/js/`` mounted); opened from a file it
says so. The result is drawn on a canvas; ``window.taskfoldLive`` keeps the last images and timings (the
browser test reads them).
"""

from __future__ import annotations

import html
import json

#: how the page finds the runtime and its dependencies (the folders `taskfold serve` mounts at /js/)
IMPORT_MAP = {"imports": {
    "#ort": "/js/src/ort_web.js",
    "onnxruntime-web": "/js/node_modules/onnxruntime-web/dist/ort.min.mjs",
    "fast-png": "/js/node_modules/fast-png/lib/index.js",
    "fflate": "/js/node_modules/fflate/esm/browser.js",
    "iobuffer": "/js/node_modules/iobuffer/lib/iobuffer.js",
}}

_SCRIPT = r"""
import { openPackage, SCHEDULERS } from '/js/src/index.js';
const $ = (id) => document.getElementById(id);
const live = (window.taskfoldLive = { images: null, seconds: null, error: null, ready: false });
const status = (text) => { $('live-status').textContent = text; };
let pkg = null;
async function open() {
  if (!window.crossOriginIsolated) status('(not cross-origin isolated: WebAssembly runs on one thread)');
  const gpu = $('live-webgpu').checked && 'gpu' in navigator;
  pkg = await openPackage(PACKAGE, { executionProviders: gpu ? ['webgpu', 'wasm'] : ['wasm'] });
  return pkg;
}
function needs(task) {
  const inputs = pkg.task(task).inputs;
  return { image: inputs.includes('image') || inputs.includes('masked_image'), mask: inputs.includes('mask') || inputs.includes('masked_image') };
}
async function bytes(input) {
  const f = input.files && input.files[0];
  return f ? new Uint8Array(await f.arrayBuffer()) : null;
}
async function run() {
  $('live-run').disabled = true;
  live.error = null;
  try {
    if (!pkg) { status('opening the package (fetching and checking every file)…'); await open(); }
    const task = $('live-task').value;
    const need = needs(task);
    const image = need.image ? await bytes($('live-image')) : null;
    const mask = need.mask ? await bytes($('live-mask')) : null;
    if (need.image && !image) throw new Error(`task ${task} needs a condition image (a PNG of the package's size or half of it)`);
    if (need.mask && !mask) throw new Error(`task ${task} needs a mask (a PNG, white = region to fill)`);
    const steps = $('live-steps').value ? Number($('live-steps').value) : null;
    const t0 = performance.now();
    const images = await pkg.generate(task, {
      prompt: $('live-prompt').value, image, mask, seed: Number($('live-seed').value), scheduler: $('live-scheduler').value,
      steps, onStep: ({ step, steps: n }) => status(`step ${step + 1} of ${n}…`),
    });
    live.seconds = (performance.now() - t0) / 1000;
    const im = images[0];
    const canvas = $('live-out');
    canvas.width = im.width;
    canvas.height = im.height;
    canvas.getContext('2d').putImageData(new ImageData(im.data, im.width, im.height), 0, 0);
    live.images = images;
    status(`${task}, seed ${$('live-seed').value}: ${live.seconds.toFixed(2)} s in this page (${pkg.executionProviders.join(' + ')})`);
  } catch (e) {
    live.error = `${e.name}: ${e.message}`;
    status(`error: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ''}`);
  } finally {
    $('live-run').disabled = false;
  }
}
$('live-scheduler').innerHTML = SCHEDULERS.map((s) => `<option>${s}</option>`).join('');
$('live-run').addEventListener('click', run);
$('live-run').disabled = false;
live.ready = true;
status(location.protocol === 'file:' ? 'serve this folder with `taskfold serve DIR` and open http://127.0.0.1:8000/ to run it' : 'ready');
"""


def live_panel(manifest: dict, package: str = "package/") -> str:
    """The live panel's HTML (a section of the demo page) for the package whose manifest is ``manifest``."""
    tasks = list(manifest["tasks"])
    h, w = manifest["sample"]["image_height"], manifest["sample"]["image_width"]
    options = "".join(f"<option>{html.escape(t)}</option>" for t in tasks)
    script = f"const PACKAGE = new URL({json.dumps(package)}, location.href).href;" + _SCRIPT
    return "\n".join([
        "<h2>Run it in your browser</h2>",
        "<p class='note'>The package above, run in this page by taskfold's JavaScript runtime (onnxruntime-web): "
        "the same seed gives the Python runtime's image. Serve this folder with <code>taskfold serve DIR</code> "
        f"(127.0.0.1, cross-origin isolated) and open it there. Images are PNGs of {w}×{h} "
        "(super-resolution also takes half that).</p>",
        "<div id='live'>",
        f"<label>task <select id='live-task'>{options}</select></label> "
        "<label>prompt <input id='live-prompt' size='32' value='a red circle'></label> "
        "<label>seed <input id='live-seed' type='number' min='0' max='4294967295' value='0'></label> "
        "<label>scheduler <select id='live-scheduler'><option>ddim</option></select></label> "
        "<label>steps <input id='live-steps' type='number' min='1' max='1000' placeholder='package default' size='8'></label><br>",
        "<label>image <input id='live-image' type='file' accept='image/png'></label> "
        "<label>mask <input id='live-mask' type='file' accept='image/png'></label> "
        "<label><input id='live-webgpu' type='checkbox'> WebGPU where present</label> "
        "<button id='live-run' disabled>Generate</button>",
        f"<div><canvas id='live-out' width='{w}' height='{h}' style='width:{4 * w}px;image-rendering:pixelated;"
        "border:1px solid #ccc'></canvas> <span id='live-status'>loading the runtime…</span></div>",
        "</div>",
        f"<script type='importmap'>{json.dumps(IMPORT_MAP)}</script>",
        f"<script type='module'>{script}</script>",
    ])
