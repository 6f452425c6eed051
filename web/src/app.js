// Entente join page: asks the node for a guest token (POST api/join), then
// joins the room with livekit-client. Opened from a "!meet" link
// (?matrix_room=!id[&meeting=name], bridge/matrix MeetLink), it joins that
// Matrix room's call instead: signed in with the person's Matrix account at
// the node's homeserver, exactly as Element Call asks the token service
// (/get_token, slot m.call#ROOM), or as a guest when the node allows it.
// window.entente is a small debug surface that the browser tests poll; keep
// its shape stable.
import { ConnectionState, Room, RoomEvent, Track } from 'livekit-client';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('join-form'), room: $('room'), name: $('name'), join: $('join'),
  call: $('call'), tiles: $('tiles'), audio: $('audio'), startAudio: $('start-audio'),
  camera: $('camera'), mic: $('mic'), screen: $('screen'), leave: $('leave'),
  status: $('status'), error: $('error'),
  mx: $('matrix-join'), mxWhere: $('mx-where'), mxForm: $('mx-form'), mxUser: $('mx-user'),
  mxPassword: $('mx-password'), mxHS: $('mx-hs'), mxSignIn: $('mx-signin'), mxGuestForm: $('mx-guest-form'),
  guestName: $('guest-name'), guestJoin: $('guest-join'), mxGuestsOff: $('mx-guests-off'),
};

// The Matrix room of a "!meet" link; null on the plain join page.
const params = new URLSearchParams(location.search);
const meet = params.get('matrix_room') ? { roomId: params.get('matrix_room'), meeting: params.get('meeting') || '' } : null;
/** The node's Matrix side (GET api/matrix): {homeserver_url, server_name, guests}. */
let mxInfo = null;
/**
 * The signed-in Matrix session, in memory only (never stored): {userId,
 * deviceId, accessToken, memberKey}. Logged out when the call ends.
 */
let mxSession = null;
/** What the status line calls the current call. */
let callLabel = '';
/** The form to show when not in a call. */
const entry = meet ? ui.mx : ui.form;

/** @type {Room | null} */
let room = null;

const dbg = {
  state: 'idle', // idle | joining | connected | reconnecting | disconnected | error
  joined: false,
  error: null,
  identity: null,
  room: null,
  /** The Matrix user signed in through the page, if any. */
  matrixUserId: null,
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
      if (s === ConnectionState.Reconnecting || s === ConnectionState.SignalReconnecting) setState('reconnecting', `Reconnecting to ${callLabel}…`);
      else if (s === ConnectionState.Connected) setState('connected', `In ${callLabel}`);
    })
    .on(RoomEvent.Disconnected, (reason) => {
      if (room !== r) return; // a leave we asked for
      teardown();
      setState('disconnected', 'Disconnected');
      showError(`The call ended (${reason ?? 'connection lost'}).`);
    });
}

/**
 * Connects to a call. credentials(r) resolves to {url, token}; label names
 * the call in the status line, roomName is what window.entente.room shows.
 * Returns whether the page is now in the call.
 */
async function enterCall(label, roomName, credentials) {
  if (room) return false;
  showError('');
  setBusy(true);
  setState('joining', `Joining ${label}…`);
  const r = new Room({ adaptiveStream: true, dynacast: true });
  room = r;
  wireRoom(r);
  try {
    const { url, token } = await credentials(r);
    if (room !== r) return false; // left while asking
    dbg.room = roomName;
    callLabel = label;
    await r.connect(url, token);
    dbg.identity = r.localParticipant.identity;
  } catch (e) {
    if (room !== r) return false; // left while asking: not an error
    teardown();
    setState('error', 'Not connected');
    showError(`Could not join: ${e.message}`);
    return false;
  }
  if (room !== r) return false; // left while connecting
  entry.hidden = true;
  ui.call.hidden = false;
  ui.screen.disabled = false;
  ui.leave.disabled = false;
  ui.startAudio.hidden = r.canPlaybackAudio;
  setState('connected', `In ${label}`);
  render();
  // Publish after the UI shows the room: a missing device must not undo the join.
  const results = await Promise.allSettled([
    r.localParticipant.setCameraEnabled(prefs.camera),
    r.localParticipant.setMicrophoneEnabled(prefs.mic),
  ]);
  const failed = results.filter((x) => x.status === 'rejected').map((x) => x.reason?.message || String(x.reason));
  if (failed.length) showError(`Camera or microphone unavailable: ${failed.join('; ')}`);
  render();
  return true;
}

function setBusy(busy) {
  ui.join.disabled = busy;
  ui.mxSignIn.disabled = busy || !mxInfo;
  ui.guestJoin.disabled = busy || !mxInfo?.guests;
}

async function join(ev) {
  ev.preventDefault();
  const roomName = ui.room.value.trim();
  const name = ui.name.value.trim();
  if (!roomName || !name) { ui.form.reportValidity(); return; }
  try { localStorage.setItem('entente.name', name); } catch { /* storage disabled */ }
  const ok = await enterCall(`room ${roomName}`, roomName, () => requestToken(roomName, name));
  if (!ok) return;
  const url = new URL(location.href);
  url.searchParams.set('room', roomName);
  history.replaceState(null, '', url);
}

// ---- Matrix meetings ("!meet" links) ----------------------------------------------

const CALL_MEMBER = 'org.matrix.msc3401.call.member';
const sleep = (ms) => new Promise((res) => { setTimeout(res, ms); });

/** A Matrix error answer (spec: Client-Server API, "Standard error response"). */
class MatrixError extends Error {
  constructor(status, body) {
    super(body?.error || `the server answered ${status}`);
    this.status = status;
    this.errcode = body?.errcode || '';
  }
}

async function fetchJSON(url, { method = 'POST', token, body, keepalive } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(url, { method, headers, keepalive, body: body === undefined ? undefined : JSON.stringify(body) });
  let out = null;
  try { out = await res.json(); } catch { /* not JSON */ }
  if (!res.ok) throw new MatrixError(res.status, out);
  return out;
}

/** Calls the homeserver's client-server API (spec: Client-Server API v3). */
function hs(path, opts) {
  return fetchJSON(mxInfo.homeserver_url + '/_matrix/client/v3' + path, opts);
}

const enc = encodeURIComponent;

function meetLabel() {
  return meet.meeting ? `meeting \u201c${meet.meeting}\u201d` : 'the room\u2019s call';
}

/**
 * Signs in with m.login.password, then asks the node's token service for
 * the room's call exactly as Element Call does (openIDSFU.ts): an OpenID
 * token from the homeserver, then /get_token with the room, the slot and
 * the member. The password is used once and never kept.
 */
async function signInAndJoin(ev) {
  ev.preventDefault();
  if (room || !mxInfo) return;
  const who = ui.mxUser.value.trim();
  const password = ui.mxPassword.value;
  if (!who || !password) { ui.mxForm.reportValidity(); return; }
  ui.mxPassword.value = '';
  await enterCall(meetLabel(), meet.roomId, async (r) => {
    let login;
    try {
      login = await hs('/login', {
        body: {
          type: 'm.login.password', identifier: { type: 'm.id.user', user: who }, password,
          initial_device_display_name: 'Entente join page',
        },
      });
    } catch (e) {
      if (e.errcode === 'M_FORBIDDEN') throw new Error('wrong username or password');
      throw new Error(`sign-in failed: ${e.message}`);
    }
    const session = { userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token, memberKey: null };
    mxSession = session;
    dbg.matrixUserId = session.userId;
    if (room !== r) { endMatrixSession(); throw new Error('left'); }
    const memberId = `${session.userId}:${session.deviceId}`;
    // The call membership lets Element show the person in the call; only
    // for the room's own call, which is the one Element clients join.
    if (!meet.meeting) await sendCallMembership(session).catch((e) => console.warn('call membership not sent:', e.message));
    const openid = await hs(`/user/${enc(session.userId)}/openid/request_token`, { token: session.accessToken, body: {} });
    let sfu;
    try {
      sfu = await fetchJSON('get_token', {
        body: {
          room_id: meet.roomId, slot_id: meet.meeting ? `entente.meet#${meet.meeting}` : 'm.call#ROOM',
          openid_token: openid, member: { id: memberId, claimed_user_id: session.userId, claimed_device_id: session.deviceId },
        },
      });
    } catch (e) {
      if (e.status === 403 && /not joined/i.test(e.message)) {
        throw new Error('you are not a member of this Matrix room; join it in your Matrix client first');
      }
      throw e;
    }
    return { url: sfu.url, token: sfu.jwt };
  });
  if (!room) endMatrixSession();
}

/** Sends the device's call membership, as matrix-js-sdk's MatrixRTCSession does in legacy mode. */
async function sendCallMembership(session) {
  let serviceURL = location.origin;
  try {
    const t = await fetchJSON('_matrix/client/unstable/org.matrix.msc4143/rtc/transports', { method: 'GET' });
    serviceURL = (t.rtc_transports || []).find((x) => x.type === 'livekit')?.livekit_service_url || serviceURL;
  } catch { /* the node's own URL then */ }
  const key = `_${session.userId}_${session.deviceId}_m.call`;
  await hs(`/rooms/${enc(meet.roomId)}/state/${CALL_MEMBER}/${enc(key)}`, {
    method: 'PUT', token: session.accessToken,
    body: {
      application: 'm.call', call_id: '', scope: 'm.room', device_id: session.deviceId,
      created_ts: Date.now(), expires: 4 * 60 * 60 * 1000,
      focus_active: { type: 'livekit', focus_selection: 'oldest_membership' },
      foci_preferred: [{ type: 'livekit', livekit_service_url: serviceURL, livekit_alias: meet.roomId }],
    },
  });
  session.memberKey = key;
}

/**
 * Ends the call membership and logs the page's device out (POST /logout),
 * so that nothing of the sign-in outlives the call. keepalive lets it
 * finish while the page unloads.
 */
function endMatrixSession() {
  const s = mxSession;
  mxSession = null;
  dbg.matrixUserId = null;
  if (!s) return Promise.resolve();
  const opts = { token: s.accessToken, keepalive: true };
  const clear = s.memberKey
    ? hs(`/rooms/${enc(meet.roomId)}/state/${CALL_MEMBER}/${enc(s.memberKey)}`, { ...opts, method: 'PUT', body: {} }).catch(() => {})
    : Promise.resolve();
  return clear.then(() => hs('/logout', { ...opts, body: {} })).catch(() => {});
}

/**
 * Joins as a guest through the node (POST api/matrix/guest). Guests never
 * start a call: until someone of the agency has, the page waits and asks
 * again.
 */
async function joinAsGuest(ev) {
  ev.preventDefault();
  if (room || !mxInfo?.guests) return;
  const name = ui.guestName.value.trim();
  if (!name) { ui.mxGuestForm.reportValidity(); return; }
  try { localStorage.setItem('entente.name', name); } catch { /* storage disabled */ }
  await enterCall(meetLabel(), meet.roomId, async (r) => {
    for (;;) {
      try {
        return await fetchJSON('api/matrix/guest', { body: { room_id: meet.roomId, meeting: meet.meeting, name } });
      } catch (e) {
        if (e.errcode !== 'M_NOT_FOUND') throw e;
      }
      setState('joining', 'Waiting for someone from the agency to start the call…');
      ui.leave.disabled = false;
      await sleep(1500);
      if (room !== r) throw new Error('left');
    }
  });
}

async function startMeeting() {
  ui.form.hidden = true;
  ui.mx.hidden = false;
  ui.mxWhere.textContent = `${meet.meeting ? `Meeting \u201c${meet.meeting}\u201d` : 'The call'} of Matrix room ${meet.roomId}.`;
  try { ui.guestName.value = localStorage.getItem('entente.name') ?? ''; } catch { /* storage disabled */ }
  try {
    mxInfo = await fetchJSON('api/matrix', { method: 'GET' });
  } catch (e) {
    ui.mxForm.hidden = true;
    showError(e.status === 404 ? 'This node has no Matrix side: the link cannot be used here.' : `Could not reach the node: ${e.message}`);
    return;
  }
  ui.mxHS.textContent = `Your password goes only to your homeserver, ${new URL(mxInfo.homeserver_url).host} (${mxInfo.server_name}).`;
  ui.mxUser.placeholder = `alice or @alice:${mxInfo.server_name}`;
  ui.mxGuestForm.hidden = !mxInfo.guests;
  ui.mxGuestsOff.hidden = mxInfo.guests;
  setBusy(false);
  ui.mxUser.focus();
}

function teardown() {
  const r = room;
  room = null;
  r?.removeAllListeners();
  ui.audio.replaceChildren();
  render();
  entry.hidden = false;
  ui.call.hidden = true;
  setBusy(false);
  ui.screen.disabled = true;
  ui.leave.disabled = true;
  ui.startAudio.hidden = true;
  dbg.identity = null;
  endMatrixSession();
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
ui.mxForm.addEventListener('submit', signInAndJoin);
ui.mxGuestForm.addEventListener('submit', joinAsGuest);
window.addEventListener('pagehide', () => { room?.disconnect(); endMatrixSession(); });

// ---- start -------------------------------------------------------------------------

syncToggles();
setState('idle', 'Not connected');
if (meet) {
  startMeeting();
} else {
  ui.room.value = params.get('room') ?? '';
  try { ui.name.value = localStorage.getItem('entente.name') ?? ''; } catch { /* storage disabled */ }
  (ui.room.value ? ui.name : ui.room).focus();
}
