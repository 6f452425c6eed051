// Bundles a browser test page's script with esbuild, resolving packages
// from the given node_modules (web/'s), for the Go tests in test/e2e. The
// output goes where the test says (a temporary directory), never into the
// repository.
//
// usage: node bundle.mjs NODE_MODULES ENTRY OUTFILE
import { createRequire } from 'node:module';
import path from 'node:path';

const [modules, entry, outfile] = process.argv.slice(2);
const esbuild = createRequire(path.join(modules, 'noop.js'))('esbuild');
await esbuild.build({
  entryPoints: [entry],
  outfile,
  bundle: true,
  format: 'iife',
  target: ['chrome110'],
  nodePaths: [modules],
  logLevel: 'warning',
});
