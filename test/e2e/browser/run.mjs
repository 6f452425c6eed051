// Drives headless Chromium pages into one LiveKit room and reports, as JSON on
// stdout, what each page received. Started by the Go tests in test/e2e.
//
// usage: node run.mjs CONFIG.json
//
// CONFIG: {
//   "modules": "/abs/web/node_modules",   where playwright-core is installed
//   "chromium": "/usr/bin/chromium",
//   "userDataDir": "/tmp/...",            fresh and empty, removed by the caller
//   "timeoutMs": 40000,                   whole run, including launch
//   "screenshotDir": "",                  optional: one PNG per page at the end
//   "leave": "label",                     optional: once every page has media, this
//                                         page leaves its room; "leave" in the
//                                         report says when the others stopped
//                                         seeing it
//   "pages": [
//     {"label": "a", "kind": "client", "url": "http://.../client.html",
//      "wsURL": "ws://...", "token": "...", "simulcast": true},
//     {"label": "f", "kind": "client", "url": "...", "tokenService": "http://rtc.example:P",
//      "tokenRequest": {...}},                the page POSTs tokenRequest to
//                                             tokenService/sfu/get and joins with the answer
//                                             ("tokenEndpoint" replaces /sfu/get; "subscribe":
//                                             {tokenService, tokenEndpoint, tokenRequest} adds a
//                                             subscribe-only connection; "tokens" reports the answers)
//     {"label": "b", "kind": "joinpage", "url": "http://node/?room=r", "name": "Bob"},
//     {"label": "c", "kind": "joinpage", "url": "http://node/?matrix_room=!r",
//      "fill": {"#mx-user": "carol", "#mx-password": "…"}, "click": "#mx-signin"}
//   ]
// }
//
// A page's "expectFrom" ({identity: "frames" | "packets"}) makes it wait,
// besides remote video and audio, for audio packets from each identity
// named and, from each, decoded video frames ("frames") or video packets
// ("packets": a Go SDK client's synthetic VP8 cannot be decoded). Its
// report then has "inboundBy" (identity -> {frames, videoPackets,
// audioPackets}) and "firstMediaFrom" (identity -> ms since navigation
// start when its audio and video had both arrived as expected).
//
// With "readyFile" and "releaseFile" (paths), once every page has what it
// waits for (or the run times out) the script writes readyFile and keeps
// its pages in the call until releaseFile exists (or the deadline): runs
// in several processes (one per agency) then leave together.
//
// A page with "browser": NAME runs in a Chromium process of its own, one per
// NAME (profile userDataDir/NAME), started with the extra flags "args" of the
// group's first page (e.g. --host-resolver-rules, one agency's DNS per
// process); pages without one share the default process.
//
// Each page reports the websocket URLs it opened ("websockets") and, for each
// of its RTCPeerConnections, the remote address of the ICE candidate pair in
// use ("selectedPairs": "udp 127.0.0.1:P") and its local end ("selectedLocal":
// "host udp", "host tcp", "relay udp via tls").
//
// Both kinds of page expose window.entente with remoteVideoFramesDecoded() and
// remoteAudioPacketsReceived(); times are ms since the page's navigation start.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { chromium } = createRequire(path.join(cfg.modules, 'noop.js'))('playwright-core');

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required', '--allow-loopback-in-peer-connection',
];

const deadline = Date.now() + (cfg.timeoutMs || 40000);
const left = () => Math.max(1, deadline - Date.now());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// monitor runs in the page: it samples window.entente every 50 ms so that
// first-media times do not depend on how fast this script polls.
function monitor() {
  const m = { t: {} };
  window.__e2e = m;
  const mark = (k) => { if (m.t[k] === undefined) m.t[k] = Math.round(performance.now()); };
  const tick = async () => {
    const e = window.entente;
    try {
      if (e && e.joined) mark('joined');
      if (e && e.joined) {
        m.frames = await e.remoteVideoFramesDecoded();
        m.audio = await e.remoteAudioPacketsReceived();
        if (m.frames > 0) mark('firstDecodedFrame');
        if (e.framesByIdentity) {
          const by = await e.framesByIdentity();
          m.firstFrom = m.firstFrom || {};
          for (const [id, n] of Object.entries(by)) {
            if (n > 0 && m.firstFrom[id] === undefined) m.firstFrom[id] = Math.round(performance.now());
          }
        }
        if (m.audio > 0) mark('firstAudioPacket');
        if (e.inboundByIdentity && window.__expectFrom) {
          const by = await e.inboundByIdentity();
          m.firstMediaFrom = m.firstMediaFrom || {};
          for (const [id, want] of Object.entries(window.__expectFrom)) {
            const o = by[id];
            if (!o || m.firstMediaFrom[id] !== undefined) continue;
            if (o.audioPackets > 0 && (want === 'packets' ? o.videoPackets > 0 : o.frames > 0)) {
              m.firstMediaFrom[id] = Math.round(performance.now());
            }
          }
        }
      }
    } catch (err) { m.monitorError = String(err); }
    setTimeout(tick, 50);
  };
  tick();
}

// watchPeerConnections runs in every page before its own scripts: it keeps
// the page's RTCPeerConnections so that their selected ICE pairs can be read.
function watchPeerConnections() {
  const pcs = [];
  const Orig = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new Orig(...args);
    pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Orig.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Orig);
  // The local end of each selected pair: candidate type, protocol and, for
  // a relay, how the browser reaches its TURN server ("host tcp",
  // "relay udp via tls").
  window.__selectedLocal = async () => {
    const out = [];
    for (const pc of pcs) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
        const pair = stats.get(s.selectedCandidatePairId);
        const lc = pair && stats.get(pair.localCandidateId);
        if (lc) out.push(`${lc.candidateType} ${lc.protocol}${lc.relayProtocol ? ` via ${lc.relayProtocol}` : ''}`);
      });
    }
    return out;
  };
  window.__selectedPairs = async () => {
    const out = [];
    for (const pc of pcs) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      stats.forEach((s) => {
        if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
        const pair = stats.get(s.selectedCandidatePairId);
        const rc = pair && stats.get(pair.remoteCandidateId);
        if (rc) out.push(`${rc.protocol} ${rc.address}:${rc.port}`);
      });
    }
    return out;
  };
}

async function startPage(ctx, spec) {
  const r = { label: spec.label, kind: spec.kind, ok: false, t: {}, log: [], websockets: [] };
  Object.defineProperty(r, 'spec', { value: spec }); // not reported
  const page = await ctx.newPage();
  page.on('websocket', (ws) => r.websockets.push(ws.url().replace(/access_token=[^&]+/, 'access_token=REDACTED')));
  // Keep tokens out of test logs (livekit-client puts them in the signal URL).
  const keep = (s) => s.replace(/access_token=[^&\s'"]+/g, 'access_token=REDACTED').slice(0, 400);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') r.log.push(keep(`${m.type()}: ${m.text()}`));
  });
  page.on('pageerror', (e) => r.log.push(keep(`pageerror: ${e.message}`)));
  await page.goto(spec.url, { timeout: left() });
  if (spec.expectFrom) await page.evaluate((x) => { window.__expectFrom = x; }, spec.expectFrom);
  await page.evaluate(monitor);
  if (spec.kind === 'client') {
    await page.evaluate((s) => window.start(s), {
      url: spec.wsURL, token: spec.token, simulcast: !!spec.simulcast,
      tokenService: spec.tokenService, tokenEndpoint: spec.tokenEndpoint, tokenRequest: spec.tokenRequest,
      subscribe: spec.subscribe,
    });
  } else {
    // "joinpage": type spec.name into the guest form; or fill the fields
    // spec.fill names (selector -> value) and click spec.click.
    const fill = spec.fill || { '#name': spec.name };
    for (const [sel, v] of Object.entries(fill)) await page.fill(sel, v, { timeout: left() });
    r.t.joinClicked = await page.evaluate(() => Math.round(performance.now()));
    await page.click(spec.click || '#join', { timeout: left() });
  }
  return { page, r };
}

async function poll({ page, r }) {
  const s = await page.evaluate(() => {
    const e = window.entente;
    const m = window.__e2e;
    return {
      state: e.state, joined: e.joined, error: e.error, identity: e.identity, tokens: e.tokens,
      remotes: e.remoteIdentities ? e.remoteIdentities() : [],
      tiles: e.participants ? e.participants() : undefined,
      frames: m.frames || 0, audio: m.audio || 0, t: m.t, monitorError: m.monitorError, firstFrom: m.firstFrom,
      firstMediaFrom: m.firstMediaFrom,
    };
  });
  if (r.kind === 'client') r.framesBy = await page.evaluate(() => window.entente.framesByIdentity()).catch(() => r.framesBy);
  r.selectedPairs = await page.evaluate(() => window.__selectedPairs()).catch(() => r.selectedPairs);
  r.selectedLocal = await page.evaluate(() => window.__selectedLocal()).catch(() => r.selectedLocal);
  Object.assign(r, {
    state: s.state, joined: s.joined, error: s.error || null, identity: s.identity, remotes: s.remotes, tokens: s.tokens,
    tiles: s.tiles, framesDecoded: s.frames, audioPackets: s.audio, monitorError: s.monitorError,
  });
  Object.assign(r.t, s.t);
  if (s.firstFrom) r.firstFrameFrom = s.firstFrom;
  if (s.firstMediaFrom) r.firstMediaFrom = s.firstMediaFrom;
  r.ok = s.frames > 0 && s.audio > 0;
  if (r.spec.expectFrom) {
    r.inboundBy = await page.evaluate(() => window.entente.inboundByIdentity()).catch(() => r.inboundBy);
    for (const [id, want] of Object.entries(r.spec.expectFrom)) {
      const o = (r.inboundBy || {})[id];
      if (!o || !(o.audioPackets > 0) || !(want === 'packets' ? o.videoPackets > 0 : o.frames > 0)) r.ok = false;
    }
  }
  return r.ok || s.state === 'error';
}

// leave makes the page labelled label leave its room, then waits until
// no other page sees its identity among its remote participants.
async function leave(pages, label) {
  const gone = pages.find((p) => p.r.label === label);
  const others = pages.filter((p) => p !== gone);
  const ids = (p) => p.page.evaluate(() => window.entente.remoteIdentities());
  const res = { label, identity: gone.r.identity, before: {}, after: {}, goneMs: {} };
  for (const p of others) res.before[p.r.label] = await ids(p);
  const t = Date.now();
  await gone.page.evaluate(() => window.leave());
  while (Date.now() < deadline) {
    for (const p of others) {
      if (res.goneMs[p.r.label] !== undefined) continue;
      const now = await ids(p);
      if (!now.includes(res.identity)) {
        res.goneMs[p.r.label] = Date.now() - t;
        res.after[p.r.label] = now;
      }
    }
    if (others.every((p) => res.goneMs[p.r.label] !== undefined)) break;
    await sleep(50);
  }
  for (const p of others) if (!res.after[p.r.label]) res.after[p.r.label] = await ids(p);
  return res;
}

async function main() {
  const t0 = Date.now();
  // One Chromium process per browser group.
  const contexts = new Map();
  const out = { pages: [], timedOut: false };
  try {
    for (const spec of cfg.pages) {
      const name = spec.browser || '';
      if (contexts.has(name)) continue;
      const dir = name ? path.join(cfg.userDataDir, name) : cfg.userDataDir;
      fs.mkdirSync(dir, { recursive: true });
      const ctx = await chromium.launchPersistentContext(dir, {
        executablePath: cfg.chromium || '/usr/bin/chromium', headless: true, args: [...FLAGS, ...(spec.args || [])],
        viewport: { width: 960, height: 600 }, timeout: left(),
      });
      await ctx.addInitScript(watchPeerConnections);
      contexts.set(name, ctx);
    }
    out.launchMs = Date.now() - t0;
    const pages = await Promise.all(cfg.pages.map((spec) => startPage(contexts.get(spec.browser || ''), spec)));
    out.pages = pages.map((p) => p.r);
    for (;;) {
      const done = await Promise.all(pages.map(poll));
      if (done.every(Boolean)) break;
      if (Date.now() >= deadline) { out.timedOut = true; break; }
      await sleep(100);
    }
    // A little longer, so that the numbers show media still flowing.
    if (!out.timedOut && cfg.holdMs) { await sleep(Math.min(cfg.holdMs, left())); await Promise.all(pages.map(poll)); }
    if (cfg.readyFile) {
      out.readyMs = Date.now() - t0;
      fs.writeFileSync(cfg.readyFile, '');
      while (!fs.existsSync(cfg.releaseFile) && Date.now() < deadline) await sleep(100);
      out.releasedMs = Date.now() - t0;
    }
    if (!out.timedOut && cfg.leave) out.leave = await leave(pages, cfg.leave);
    if (cfg.screenshotDir) {
      for (const p of pages) await p.page.screenshot({ path: path.join(cfg.screenshotDir, `${p.r.label}.png`) });
    }
  } catch (e) {
    out.error = String(e && e.stack || e);
  } finally {
    await Promise.all([...contexts.values()].map((c) => c.close().catch(() => {})));
  }
  out.totalMs = Date.now() - t0;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exitCode = !out.error && out.pages.length && out.pages.every((p) => p.ok) ? 0 : 1;
}

// The caller kills us on its own deadline; make sure Chromium goes with us.
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(3));
main().catch((e) => { process.stdout.write(JSON.stringify({ error: String(e && e.stack || e) }) + '\n'); process.exit(2); });
