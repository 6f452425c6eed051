// Entente join page: asks the node for a guest token (POST api/join), then
// joins the room with livekit-client. window.entente is a small debug surface
// that the browser tests poll; keep its shape stable.
import { ConnectionState, Room, RoomEvent, Track } from 'livekit-client';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('join-form'), room: $('room'), name: $('name'), join: $('join'),
  call: $('call'), tiles: $('tiles'), audio: $('audio'), startAudio: $('start-audio'),
  camera: $('camera'), mic: $('mic'), screen: $('screen'), leave: $('leave'),
  status: $('status'), error: $('error'),
};

/** @type {Room | null} */
let room = null;

const dbg = {
  state: 'idle', // idle | joining | connected | reconnecting | disconnected | error
  joined: false,
  error: null,
  identity: null,
  room: null,
  /** Identities of the other participants in the room. */
  remoteIdentities: () => (room ? [...room.remoteParticipants.keys()] : []),
  /** Frames decoded over all subscribed remote video tracks. */
  remoteVideoFramesDecoded: () => sumInbound('video', (s) => s.framesDecoded || 0),
  /** RTP packets received over all subscribed remote audio tracks. */
  remoteAudioPacketsReceived: () => sumInbound('audio', (s) => s.packetsReceived || 0),
  /** One entry per participant as the page shows it. */
  participants: () => [...document.querySelectorAll('.tile')].map((t) => ({
    identity: t.dataset.identity, source: t.dataset.source, name: t.querySelector('.name').textContent,
    speaking: t.classList.contains('speaking'), micMuted: !t.querySelector('.mic-off').hidden,
    hasVideo: !t.querySelector('video').hidden,
  })),
  lkRoom: () => room,
};
window.entente = dbg;

async function sumInbound(kind, pick) {
  if (!room) return 0;
  let n = 0;
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      if (pub.kind !== kind || !pub.track) continue;
      const report = await pub.track.getRTCStatsReport();
      report?.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === kind) n += pick(s); });
    }
  }
  return n;
}

// ---- preferences ---------------------------------------------------------

const prefs = { camera: true, mic: true };

function setPressed(btn, on) {
  btn.setAttribute('aria-pressed', String(on));
}

function syncToggles() {
  const lp = room?.localParticipant;
  setPressed(ui.camera, lp ? lp.isCameraEnabled : prefs.camera);
  setPressed(ui.mic, lp ? lp.isMicrophoneEnabled : prefs.mic);
  setPressed(ui.screen, lp ? lp.isScreenShareEnabled : false);
  ui.screen.textContent = lp?.isScreenShareEnabled ? 'Stop sharing' : 'Share screen';
}

// ---- status and errors -----------------------------------------------------

function setState(state, text) {
  dbg.state = state;
  dbg.joined = state === 'connected' || state === 'reconnecting';
  ui.status.textContent = text;
  document.body.dataset.state = state;
}

function showError(msg) {
  dbg.error = msg;
  ui.error.textContent = msg;
  ui.error.hidden = !msg;
}

// ---- tiles -----------------------------------------------------------------

function tileKey(p, source) { return `${p.identity}\u0000${source}`; }

function makeTile(p, source) {
  const li = document.createElement('li');
  li.className = 'tile';
  li.dataset.key = tileKey(p, source);
  li.dataset.identity = p.identity;
  li.dataset.source = source;
  const video = document.createElement('video');
  video.autoplay = true;
  video.playsInline = true;
  video.muted = true; // audio plays through the separate audio elements
  video.hidden = true;
  const avatar = document.createElement('div');
  avatar.className = 'avatar';
  avatar.setAttribute('aria-hidden', 'true');
  const label = document.createElement('div');
  label.className = 'label';
  const name = document.createElement('span');
  name.className = 'name';
  const micOff = document.createElement('span');
  micOff.className = 'mic-off';
  micOff.textContent = 'Muted';
  micOff.title = 'Microphone off';
  label.append(name, micOff);
  li.append(video, avatar, label);
  if (p.isLocal && source === Track.Source.Camera) li.classList.add('local');
  return li;
}

function displayName(p) {
  const n = p.name || p.identity;
  return p.isLocal ? `${n} (you)` : n;
}

function updateTile(li, p, source) {
  const pub = p.getTrackPublication(source);
  const track = pub && !pub.isMuted ? pub.track : undefined;
  const video = li.querySelector('video');
  if (track) {
    if (!track.attachedElements.includes(video)) track.attach(video);
  } else {
    for (const t of [pub?.track].filter(Boolean)) t.detach(video);
  }
  video.hidden = !track;
  const name = displayName(p);
  const label = source === Track.Source.ScreenShare ? `${name}: screen` : name;
  li.querySelector('.name').textContent = label;
  li.querySelector('.avatar').textContent = (p.name || p.identity).trim().charAt(0).toUpperCase();
  const micOff = li.querySelector('.mic-off');
  micOff.hidden = source !== Track.Source.Camera || p.isMicrophoneEnabled;
  li.classList.toggle('speaking', source === Track.Source.Camera && p.isSpeaking);
  li.setAttribute('aria-label', `${label}${micOff.hidden ? '' : ', microphone off'}${p.isSpeaking ? ', speaking' : ''}`);
}

/** Reconciles the tiles with the room: one camera tile per participant, one per screen share. */
function render() {
  if (!room) { ui.tiles.replaceChildren(); return; }
  const want = [];
  for (const p of [room.localParticipant, ...room.remoteParticipants.values()]) {
    want.push([p, Track.Source.Camera]);
    const ss = p.getTrackPublication(Track.Source.ScreenShare);
    if (ss && !ss.isMuted) want.push([p, Track.Source.ScreenShare]);
  }
  const existing = new Map([...ui.tiles.children].map((li) => [li.dataset.key, li]));
  const keep = new Set();
  for (const [p, source] of want) {
    const key = tileKey(p, source);
    keep.add(key);
    let li = existing.get(key);
    if (!li) { li = makeTile(p, source); ui.tiles.append(li); }
    updateTile(li, p, source);
  }
  for (const [key, li] of existing) {
    if (!keep.has(key)) {
      li.querySelector('video').srcObject = null;
      li.remove();
    }
  }
  ui.tiles.dataset.count = String(keep.size);
  syncToggles();
}

// ---- joining and leaving -------------------------------------------------------

async function requestToken(roomName, name) {
  const res = await fetch('api/join', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ room: roomName, name }),
  });
  let body = null;
  try { body = await res.json(); } catch { /* not JSON: fall through */ }
  if (!res.ok) throw new Error(body?.error || `the node answered ${res.status}`);
  return body;
}

function wireRoom(r) {
  r.on(RoomEvent.ParticipantConnected, render)
    .on(RoomEvent.ParticipantDisconnected, render)
    .on(RoomEvent.ParticipantNameChanged, render)
    .on(RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === Track.Kind.Audio) ui.audio.append(track.attach());
      render();
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => {
      track.detach().forEach((el) => { if (el.tagName === 'AUDIO') el.remove(); });
      render();
    })
    .on(RoomEvent.TrackPublished, render)
    .on(RoomEvent.TrackUnpublished, render)
    .on(RoomEvent.TrackMuted, render)
    .on(RoomEvent.TrackUnmuted, render)
    .on(RoomEvent.LocalTrackPublished, render)
    .on(RoomEvent.LocalTrackUnpublished, render)
    .on(RoomEvent.ActiveSpeakersChanged, render)
    .on(RoomEvent.AudioPlaybackStatusChanged, () => { ui.startAudio.hidden = r.canPlaybackAudio; })
    .on(RoomEvent.MediaDevicesError, (e) => showError(`Camera or microphone unavailable: ${e.message}`))
    .on(RoomEvent.ConnectionStateChanged, (s) => {
      if (s === ConnectionState.Reconnecting || s === ConnectionState.SignalReconnecting) setState('reconnecting', `Reconnecting to ${dbg.room}…`);
      else if (s === ConnectionState.Connected) setState('connected', `In room ${dbg.room}`);
    })
    .on(RoomEvent.Disconnected, (reason) => {
      if (room !== r) return; // a leave we asked for
      teardown();
      setState('disconnected', 'Disconnected');
      showError(`The call ended (${reason ?? 'connection lost'}).`);
    });
}

async function join(ev) {
  ev.preventDefault();
  if (room) return;
  const roomName = ui.room.value.trim();
  const name = ui.name.value.trim();
  if (!roomName || !name) { ui.form.reportValidity(); return; }
  showError('');
  ui.join.disabled = true;
  setState('joining', `Joining ${roomName}…`);
  try { localStorage.setItem('entente.name', name); } catch { /* storage disabled */ }
  const r = new Room({ adaptiveStream: true, dynacast: true });
  room = r;
  wireRoom(r);
  try {
    const { url, token, identity } = await requestToken(roomName, name);
    dbg.identity = identity;
    dbg.room = roomName;
    await r.connect(url, token);
  } catch (e) {
    if (room === r) teardown();
    setState('error', 'Not connected');
    showError(`Could not join: ${e.message}`);
    return;
  }
  if (room !== r) return; // left while connecting
  const url = new URL(location.href);
  url.searchParams.set('room', roomName);
  history.replaceState(null, '', url);
  ui.form.hidden = true;
  ui.call.hidden = false;
  ui.screen.disabled = false;
  ui.leave.disabled = false;
  ui.startAudio.hidden = r.canPlaybackAudio;
  setState('connected', `In room ${roomName}`);
  render();
  // Publish after the UI shows the room: a missing device must not undo the join.
  const results = await Promise.allSettled([
    r.localParticipant.setCameraEnabled(prefs.camera),
    r.localParticipant.setMicrophoneEnabled(prefs.mic),
  ]);
  const failed = results.filter((x) => x.status === 'rejected').map((x) => x.reason?.message || String(x.reason));
  if (failed.length) showError(`Camera or microphone unavailable: ${failed.join('; ')}`);
  render();
}

function teardown() {
  const r = room;
  room = null;
  r?.removeAllListeners();
  ui.audio.replaceChildren();
  render();
  ui.form.hidden = false;
  ui.call.hidden = true;
  ui.join.disabled = false;
  ui.screen.disabled = true;
  ui.leave.disabled = true;
  ui.startAudio.hidden = true;
  dbg.identity = null;
  return r;
}

async function leave() {
  const r = teardown();
  setState('idle', 'Not connected');
  await r?.disconnect();
}

// ---- controls ------------------------------------------------------------------

async function toggle(btn, enabledNow, set, what) {
  const on = !enabledNow();
  btn.disabled = true;
  try {
    await set(on);
  } catch (e) {
    showError(`Could not ${on ? 'start' : 'stop'} ${what}: ${e.message}`);
  } finally {
    btn.disabled = btn === ui.screen && !room;
    render();
  }
}

ui.camera.addEventListener('click', () => {
  if (!room) { prefs.camera = !prefs.camera; syncToggles(); return; }
  const lp = room.localParticipant;
  toggle(ui.camera, () => lp.isCameraEnabled, (on) => lp.setCameraEnabled(on), 'the camera');
});
ui.mic.addEventListener('click', () => {
  if (!room) { prefs.mic = !prefs.mic; syncToggles(); return; }
  const lp = room.localParticipant;
  toggle(ui.mic, () => lp.isMicrophoneEnabled, (on) => lp.setMicrophoneEnabled(on), 'the microphone');
});
ui.screen.addEventListener('click', () => {
  if (!room) return;
  const lp = room.localParticipant;
  toggle(ui.screen, () => lp.isScreenShareEnabled, (on) => lp.setScreenShareEnabled(on), 'screen sharing');
});
ui.leave.addEventListener('click', leave);
ui.startAudio.addEventListener('click', () => room?.startAudio());
ui.form.addEventListener('submit', join);
window.addEventListener('pagehide', () => { room?.disconnect(); });

// ---- start -------------------------------------------------------------------------

const params = new URLSearchParams(location.search);
ui.room.value = params.get('room') ?? '';
try { ui.name.value = localStorage.getItem('entente.name') ?? ''; } catch { /* storage disabled */ }
(ui.room.value ? ui.name : ui.room).focus();
syncToggles();
setState('idle', 'Not connected');
