// Validate one glTF/GLB file with the Khronos glTF validator; print its report as JSON on stdout.
// Usage: node validate.cjs FILE [MAX_ISSUES]. Exit 0 when a report was produced (errors or not),
// 2 when the file could not be read or the validator failed to run.
'use strict';
const fs = require('fs');
const path = require('path');
const validator = require('gltf-validator');

const file = process.argv[2];
const maxIssues = Number(process.argv[3] || 100);
if (!file) {
  process.stderr.write('usage: node validate.cjs FILE [MAX_ISSUES]\n');
  process.exit(2);
}
let bytes;
try {
  bytes = fs.readFileSync(file);
} catch (err) {
  process.stderr.write(`cannot read ${file}: ${err.message}\n`);
  process.exit(2);
}
validator.validateBytes(new Uint8Array(bytes), {
  uri: path.basename(file),
  maxIssues,
  // A GLB from toon3d is self-contained; an external URI is reported, not fetched.
  externalResourceFunction: (uri) => Promise.reject(new Error(`external resource ${uri} not loaded`)),
}).then((report) => {
  process.stdout.write(JSON.stringify(report));
}).catch((err) => {
  process.stderr.write(`glTF validator failed: ${err && err.message ? err.message : err}\n`);
  process.exit(2);
});
