#!/usr/bin/env node
// Opens a package folder by URL in Node (its graphs are copied into a scratch folder for onnxruntime-node),
// builds the t2i UNet, then ends the process without `close()`:  node tools/scratch_exit.mjs PKG_DIR MODE
// MODE "return": the script just ends; "throw": it ends on an uncaught error. Prints the scratch folder and
// whether it existed before the end, as JSON on stdout (the caller checks that it is gone afterwards).
import { existsSync } from 'node:fs';
import { openPackage } from '../src/index.js';
import { serve } from './serve.mjs';

const [dir, mode] = process.argv.slice(2);
const server = await serve({ '/pkg/': dir });
const pkg = await openPackage(`${server.url}/pkg/`, { platform: 'node' });
await pkg.unet('t2i');
await server.close();
console.log(JSON.stringify({ scratch: pkg.scratch, existed: pkg.scratch !== null && existsSync(pkg.scratch) }));
if (mode === 'throw') throw new Error('the caller failed before close()');
