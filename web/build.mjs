// Bundles src/ into dist/ for the Go package to embed: livekit-client is
// bundled in, so the page fetches nothing but this node at run time.
import * as esbuild from 'esbuild';
import { copyFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const src = path.join(here, 'src');
const dist = path.join(here, 'dist');

// Empty dist/ but keep .gitkeep, which lets `go build` work without assets.
for (const f of await readdir(dist)) {
  if (f !== '.gitkeep') await rm(path.join(dist, f), { recursive: true, force: true });
}

await esbuild.build({
  entryPoints: [path.join(src, 'app.js'), path.join(src, 'style.css')],
  outdir: dist,
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome110', 'firefox115', 'safari16'],
  legalComments: 'eof',
  logLevel: 'info',
});
await copyFile(path.join(src, 'index.html'), path.join(dist, 'index.html'));
