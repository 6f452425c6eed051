// Drives stock Element Call (the npm build, served by the Go test) in
// headless Chromium the way a new user does, and reports what each person
// saw as JSON on stdout. Started by test/e2e/elementcall_test.go.
//
// usage: node element-call.mjs CONFIG.json
//
// CONFIG: {
//   "modules": "/abs/web/node_modules",   where playwright-core is installed
//   "chromium": "/usr/bin/chromium",
//   "userDataDir": "/tmp/...",            fresh and empty; one sub-directory per person
//   "timeoutMs": 90000,                   whole run, including launch
//   "app": "http://127.0.0.1:P/",         Element Call's home page
//   "people": [
//     {"label": "alice", "name": "Alice", "create": "Standup"},  starts a call from the home page
//     {"label": "bob", "name": "Bob"},                           opens the first person's link
//     {"label": "carol", "name": "Carol", "url": "http://…/room/#/?roomId=…"}, opens this link
//     {"label": "dan", "name": "Dan", "app": "http://127.0.0.1:Q/"}  the first person's link, on
//                                                                     another agency's Element Call
//   ]
// A person's "minRemotes" (default 1) is how many remote video and audio
// streams they must receive media on before the run ends for them.
// A person's "args" are extra Chromium flags for their browser process (e.g.
// --host-resolver-rules: their agency's DNS).
// With "readyFile" and "releaseFile" (paths), once everyone has what they
// wait for (or the run times out) the script writes readyFile and keeps
// everyone in the call until releaseFile exists (or the deadline): runs in
// several processes (one per agency) then leave together.
// A person with "gate": true waits in the lobby for the test (see gate).
// A person with "login": {"user", "password"} signs in with that account on
// Element Call's sign-in page before opening the link.
// A person's "expect" ends the run for them: "media" (default: remote
// video and audio, or an error screen), "error" (an error screen), "token"
// (a token from the token service: someone alone in a call).
// }
//
// Each person has a browser profile of their own (Element Call keeps its
// session in localStorage). The selectors are Element Call's test IDs, as
// its own Playwright tests use them (element-call playwright/spa-helpers.ts
// createCall and joinCallFromInviteLink). The first person's room link is
// the page's own URL once the lobby shows: Element Call puts the room ID
// and, for a shared key, the password in it, as its Invite button does.
// Remote video is counted from the pages' RTCPeerConnection statistics
// (inbound-rtp framesDecoded), so a preview of the person's own camera does
// not count.
//
// Where each person's client went is reported too: "websockets" (every
// websocket URL the page opened, tokens redacted), "tokenURLs" (every token
// call, method and URL) and "selectedPairs" (the remote end of each open
// peer connection's selected ICE candidate pair, "udp 127.0.0.1:P").
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

const deadline = Date.now() + (cfg.timeoutMs || 90000);
const left = () => Math.max(1, deadline - Date.now());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// watchPeerConnections runs in every page before Element Call: it keeps the
// page's RTCPeerConnections so that their statistics can be read.
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
  window.__entente = {
    async remote() {
      let frames = 0;
      let audio = 0;
      const streams = []; // each inbound video stream's counters
      let videoStreams = 0; // inbound video streams with a decoded frame
      let audioStreams = 0; // inbound audio streams with a packet
      for (const pc of pcs) {
        if (pc.connectionState === 'closed') continue;
        const stats = await pc.getStats();
        stats.forEach((s) => {
          if (s.type !== 'inbound-rtp') return;
          if (s.kind === 'video') frames += s.framesDecoded || 0;
          if (s.kind === 'audio') audio += s.packetsReceived || 0;
          if (s.kind === 'video' && s.framesDecoded > 0) videoStreams++;
          if (s.kind === 'audio' && s.packetsReceived > 0) audioStreams++;
          if (s.kind === 'video') {
            streams.push({
              ssrc: s.ssrc, packets: s.packetsReceived || 0, frames: s.framesDecoded || 0,
              keyFrames: s.keyFramesDecoded || 0, pli: s.pliCount || 0, nack: s.nackCount || 0,
              width: s.frameWidth || 0, dropped: s.framesDropped || 0,
            });
          }
        });
      }
      return { frames, audio, videoStreams, audioStreams, streams, pcs: pcs.length };
    },
    async selectedPairs() {
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
    },
  };
}

const keep = (s) => s.replace(/(access_token|password|jwt)=[^&\s'"]+/g, '$1=REDACTED').slice(0, 400);

// wsURL is a websocket URL for the report: its token replaced by the
// identity it carries (the JWT's sub), the rest of its query dropped.
function wsURL(u) {
  const url = new URL(u);
  let sub = '?';
  try {
    const payload = url.searchParams.get('access_token').split('.')[1];
    sub = JSON.parse(Buffer.from(payload, 'base64url').toString()).sub;
  } catch { /* no readable token */ }
  return `${url.origin}${url.pathname}?sub=${sub}`;
}

async function open(browserCtx, person, url) {
  const r = { label: person.label, ok: false, t: {}, log: [], frames: 0, audio: 0, websockets: [], tokenURLs: [] };
  const page = await browserCtx.newPage();
  page.on('websocket', (ws) => r.websockets.push(wsURL(ws.url())));
  page.on('request', (req) => {
    if (/\/(get_token|sfu\/get)$/.test(new URL(req.url()).pathname)) r.tokenURLs.push(`${req.method()} ${req.url()}`);
  });
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') r.log.push(keep(`+${Date.now() - r.t0}ms ${m.type()}: ${m.text()}`));
  });
  page.on('pageerror', (e) => r.log.push(keep(`pageerror: ${e.message}`)));
  // The token service's answers, as Element Call received them.
  page.on('response', async (resp) => {
    const u = resp.url();
    if (!/\/(get_token|sfu\/get)$/.test(new URL(u).pathname)) return;
    r.tokenStatus = r.tokenStatus || [];
    let body = '';
    if (resp.status() !== 200) body = keep(await resp.text().catch(() => ''));
    else {
      // Where the answer sends the client: its SFU url and the token's
      // subject and room (the signature is left out).
      try {
        const a = JSON.parse(await resp.text());
        const c = JSON.parse(Buffer.from(a.jwt.split('.')[1], 'base64url').toString());
        body = `url=${a.url} sub=${c.sub} room=${c.video && c.video.room}`;
      } catch { /* not a token answer */ }
    }
    const at = new URL(u);
    r.tokenStatus.push(`${at.origin}${at.pathname} ${resp.status()} ${body}`);
  });
  const t0 = Date.now();
  r.t0 = t0;
  await page.goto(url, { timeout: left() });
  return { page, r, t0 };
}

async function startCall(p, person) {
  const { page } = p;
  await page.getByTestId('home_callName').fill(person.create, { timeout: left() });
  await page.getByTestId('home_displayName').fill(person.name, { timeout: left() });
  await page.getByTestId('home_go').click({ timeout: left() });
  await page.getByTestId('lobby_joinCall').waitFor({ timeout: left() });
}

// joinFromLink: someone new gets Element Call's "join call" form (a display
// name; it registers an account); someone signed in who is already a member
// goes straight to the lobby.
async function joinFromLink(p, person) {
  const { page } = p;
  const form = page.getByTestId('joincall_displayName');
  await form.or(page.getByTestId('lobby_joinCall')).first().waitFor({ timeout: left() });
  if (await form.isVisible()) {
    await form.fill(person.name, { timeout: left() });
    await page.getByTestId('joincall_joincall').click({ timeout: left() });
  }
  await page.getByTestId('lobby_joinCall').waitFor({ timeout: left() });
}

// signIn uses Element Call's own sign-in page with an existing account,
// then opens url.
async function signIn(p, person, app, url) {
  const { page } = p;
  await page.goto(new URL('login', app).toString(), { timeout: left() });
  await page.getByTestId('login_username').fill(person.login.user, { timeout: left() });
  await page.getByTestId('login_password').fill(person.login.password, { timeout: left() });
  await page.getByTestId('login_login').click({ timeout: left() });
  await page.getByTestId('home_callName').waitFor({ timeout: left() }); // the signed-in home page
  await page.goto(url, { timeout: left() });
}

// gate: a person with "gate": true, once in the lobby, writes
// <userDataDir>/<label>.lobby and waits for <label>.go before clicking
// "Join call", so that the Go test can act in between (kick them).
async function gate(p, person) {
  if (!person.gate) return;
  fs.writeFileSync(path.join(cfg.userDataDir, `${person.label}.lobby`), '');
  const go = path.join(cfg.userDataDir, `${person.label}.go`);
  while (!fs.existsSync(go)) {
    if (Date.now() >= deadline) throw new Error(`${person.label}: the test never said go`);
    await sleep(100);
  }
}

async function clickJoin(p) {
  await gate(p, p.person);
  p.r.t.joinClicked = Date.now() - p.t0;
  if (!p.person.gate) {
    await p.page.getByTestId('lobby_joinCall').click({ timeout: left() });
    return;
  }
  // What the test did in the lobby may have taken the button away (a kick):
  // then the screen tells what Element Call made of it.
  await p.page.getByTestId('lobby_joinCall').click({ timeout: Math.min(left(), 5000) })
    .catch((e) => { p.r.log.push(keep(`join call not clicked: ${e.message}`)); });
}

// poll reads the person's media and, when Element Call shows an error
// screen instead of the call, its text.
async function poll(p) {
  const { page, r } = p;
  // The error screen's "Technical details" are in a closed <details>,
  // which innerText leaves out: their textContent is added.
  const s = await page.evaluate(async () => ({
    media: await window.__entente.remote(),
    pairs: await window.__entente.selectedPairs(),
    text: (document.body ? document.body.innerText : '') + '\n' +
      [...document.querySelectorAll('details')].map((d) => d.textContent).join('\n'),
  })).catch((e) => ({ media: { frames: 0, audio: 0 }, text: '', err: String(e) }));
  if (s.pairs) r.selectedPairs = s.pairs;
  r.frames = s.media.frames;
  r.audio = s.media.audio;
  r.videoStreams = s.media.videoStreams || 0;
  // Each inbound video stream: its counters now, and when (ms after the
  // page opened) its first packet and first decoded frame came.
  r.video = r.video || {};
  for (const v of s.media.streams || []) {
    const prev = r.video[v.ssrc] || {};
    const now = Date.now() - p.t0;
    r.video[v.ssrc] = {
      ...v, firstPacket: prev.firstPacket ?? (v.packets > 0 ? now : undefined),
      firstFrame: prev.firstFrame ?? (v.frames > 0 ? now : undefined),
    };
  }
  r.audioStreams = s.media.audioStreams || 0;
  if (r.frames > 0 && r.t.firstRemoteFrame === undefined) r.t.firstRemoteFrame = Date.now() - p.t0;
  r.screen = s.text.slice(0, 600);
  if (/Something went wrong|contact your server admin|You have been removed/.test(s.text)) {
    r.errorText = s.text.slice(0, 600);
  }
  const n = p.person.minRemotes || 1;
  r.ok = r.frames > 0 && r.audio > 0 && r.videoStreams >= n && r.audioStreams >= n;
  if (r.ok && r.t.allRemotes === undefined) r.t.allRemotes = Date.now() - p.t0;
  switch (p.expect) {
    case 'error': return !!r.errorText; // refused: done once the error screen shows
    case 'token': return (r.tokenStatus || []).some((x) => / 200 /.test(x)) || !!r.errorText; // alone in the call
    default: return r.ok || !!r.errorText;
  }
}

async function main() {
  const out = { people: [], timedOut: false };
  const t0 = Date.now();
  const browsers = [];
  try {
    const people = [];
    let link = '';
    for (const person of cfg.people) {
      const dir = path.join(cfg.userDataDir, person.label);
      fs.mkdirSync(dir, { recursive: true });
      const ctx = await chromium.launchPersistentContext(dir, {
        executablePath: cfg.chromium || '/usr/bin/chromium', headless: true, args: [...FLAGS, ...(person.args || [])],
        viewport: { width: 960, height: 600 }, timeout: left(),
      });
      browsers.push(ctx);
      await ctx.addInitScript(watchPeerConnections);
      let url = person.create ? (person.app || cfg.app) : (person.url || link);
      if (!person.create && !person.url && person.app) {
        // The same room link, opened on this person's own Element Call.
        const l = new URL(link);
        url = new URL(l.pathname + l.search + l.hash, person.app).toString();
      }
      const p = await open(ctx, person, person.login ? (person.app || cfg.app) : url);
      p.expect = person.expect || 'media';
      p.person = person;
      if (person.login) await signIn(p, person, person.app || cfg.app, url);
      out.people.push(p.r);
      if (person.create) {
        await startCall(p, person);
        link = p.page.url();
      } else {
        await joinFromLink(p, person);
      }
      people.push(p);
    }
    out.launchMs = Date.now() - t0;
    for (const p of people) await clickJoin(p);
    for (;;) {
      const done = await Promise.all(people.map(poll));
      if (done.every(Boolean)) break;
      if (Date.now() >= deadline) { out.timedOut = true; break; }
      await sleep(100);
    }
    if (cfg.readyFile) {
      out.readyMs = Date.now() - t0;
      fs.writeFileSync(cfg.readyFile, '');
      while (!fs.existsSync(cfg.releaseFile) && Date.now() < deadline) await sleep(100);
      out.releasedMs = Date.now() - t0;
    }
  } catch (e) {
    out.error = keep(String(e && e.stack || e));
  } finally {
    out.totalMs = Date.now() - t0;
    await Promise.all(browsers.map((b) => b.close().catch(() => {})));
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

process.on('SIGTERM', () => process.exit(143));
await main();
