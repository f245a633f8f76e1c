// Copies the one package schema (runtime/package_schema.json, read by the Python runtime and the
// exporter too) into this package, byte for byte; test/limits.test.js checks the copy is identical.
import { copyFileSync, existsSync } from 'node:fs';

const source = new URL('../../runtime/package_schema.json', import.meta.url);
const target = new URL('../package_schema.json', import.meta.url);
if (existsSync(source)) {
  copyFileSync(source, target);
  console.log('copied runtime/package_schema.json -> js/package_schema.json');
} else if (!existsSync(target)) {
  console.error('error: runtime/package_schema.json not found, and js/package_schema.json is missing');
  process.exit(2);
}
