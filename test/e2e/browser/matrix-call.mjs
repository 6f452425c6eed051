// A MatrixRTC call as Element Call makes one, for the browser tests: log
// into the homeserver with matrix-js-sdk, create (or join) the room, send
// the device's call membership (org.matrix.msc3401.call.member), get an
// OpenID token, discover the SFU through MSC4143's rtc/transports, ask the
// token service's /get_token (element-call src/livekit/openIDSFU.ts,
// getLiveKitJWTWithDelayDelegation) and join the LiveKit room with
// livekit-client.
//
// Bundled with esbuild by the Go test (bundle.mjs) into the script that
// matrix.html loads. The page's parameters are in its query string:
//   hs        homeserver client-server API base URL
//   node      where rtc/transports is served (the node, routed there from
//             the homeserver's domain in a real deployment)
//   user      localpart; password: its password
//   role      "create": create the room #alias, inviting bot and peer;
//             "join": join #alias once invited
//   alias     room alias localpart; server: the homeserver's server name
//   bot, peer user IDs to invite (role=create)
//
// The test calls window.start() (run.mjs, kind "client"); window.entente is
// the polling surface run.mjs reads, as in client.html.
import { createClient } from 'matrix-js-sdk';
import { Room, RoomEvent } from 'livekit-client';

const CALL_MEMBER = 'org.matrix.msc3401.call.member';
const q = new URLSearchParams(location.search);
const P = Object.fromEntries(['hs', 'node', 'user', 'password', 'role', 'alias', 'server', 'bot', 'peer'].map((k) => [k, q.get(k)]));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const mark = (k) => { if (window.__e2e && window.__e2e.t[k] === undefined) window.__e2e.t[k] = Math.round(performance.now()); };

let room = null;

async function sumInbound(kind, pick) {
  if (!room) return 0;
  let n = 0;
  for (const p of room.remoteParticipants.values()) {
    for (const pub of p.trackPublications.values()) {
      if (pub.kind !== kind || !pub.track) continue;
      const report = await pub.track.getRTCStatsReport();
      if (report) report.forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === kind) n += pick(s); });
    }
  }
  return n;
}

const E = {
  state: 'idle', joined: false, error: null, identity: null, matrixRoomId: null, jwtRoom: null,
  remoteIdentities: () => (room ? [...room.remoteParticipants.keys()] : []),
  remoteVideoFramesDecoded: () => sumInbound('video', (s) => s.framesDecoded || 0),
  remoteAudioPacketsReceived: () => sumInbound('audio', (s) => s.packetsReceived || 0),
};
window.entente = E;

// retry runs f until it resolves, for at most ms.
async function retry(what, ms, f) {
  const until = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (Date.now() > until) throw new Error(`${what}: ${e && e.message || e}`);
      await sleep(100);
    }
  }
}

async function login() {
  const anon = createClient({ baseUrl: P.hs });
  const res = await anon.loginRequest({
    type: 'm.login.password', identifier: { type: 'm.id.user', user: P.user }, password: P.password,
    initial_device_display_name: 'entente e2e',
  });
  return createClient({ baseUrl: P.hs, accessToken: res.access_token, userId: res.user_id, deviceId: res.device_id });
}

async function enterRoom(client) {
  const alias = `#${P.alias}:${P.server}`;
  if (P.role === 'create') {
    const { room_id: roomId } = await client.createRoom({
      preset: 'private_chat', room_alias_name: P.alias, invite: [P.bot, P.peer],
      // Members may send call memberships (Element does the same).
      power_level_content_override: { events: { [CALL_MEMBER]: 0 } },
    });
    return roomId;
  }
  // Joined by alias once the creator has invited us.
  const r = await retry('join ' + alias, 20000, () => client.joinRoom(alias));
  return r.roomId;
}

// discoverServiceURL reads MSC4143 rtc/transports, as Element Call does
// (with the user's access token; unauthenticated works too).
async function discoverServiceURL(client) {
  const res = await fetch(P.node + '/_matrix/client/unstable/org.matrix.msc4143/rtc/transports', {
    headers: { Authorization: 'Bearer ' + client.getAccessToken() },
  });
  if (!res.ok) throw new Error('rtc/transports: ' + res.status);
  const { rtc_transports: transports } = await res.json();
  const t = (transports || []).find((x) => x.type === 'livekit' && x.livekit_service_url);
  if (!t) throw new Error('no livekit transport');
  return t.livekit_service_url.replace(/\/$/, '');
}

window.start = async () => {
  E.state = 'joining';
  try {
    const client = await login();
    const userId = client.getUserId();
    const deviceId = client.getDeviceId();
    const roomId = await enterRoom(client);
    E.matrixRoomId = roomId;
    // The node's bot must be in the room to vouch for membership; in a
    // real deployment it was invited long before the call.
    await retry('bot in room', 20000, async () => {
      const { joined } = await client.getJoinedRoomMembers(roomId);
      if (!joined[P.bot]) throw new Error('not yet');
    });
    mark('matrixReady');

    const serviceURL = await discoverServiceURL(client);
    // The device's call membership (DESIGN.md section 3; matrix-js-sdk
    // MatrixRTCSession, legacy/compatibility mode).
    const memberId = `${userId}:${deviceId}`;
    await client.sendStateEvent(roomId, CALL_MEMBER, {
      application: 'm.call', call_id: '', scope: 'm.room', device_id: deviceId,
      created_ts: Date.now(), expires: 4 * 60 * 60 * 1000,
      focus_active: { type: 'livekit', focus_selection: 'oldest_membership' },
      foci_preferred: [{ type: 'livekit', livekit_service_url: serviceURL, livekit_alias: roomId }],
    }, `_${userId}_${deviceId}_m.call`);

    const openIdToken = await client.getOpenIdToken();
    mark('tokenAsked');
    const res = await fetch(serviceURL + '/get_token', {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        room_id: roomId, slot_id: 'm.call#ROOM', openid_token: openIdToken,
        member: { id: memberId, claimed_user_id: userId, claimed_device_id: deviceId },
      }),
    });
    if (!res.ok) throw new Error(`/get_token: ${res.status} ${await res.text()}`);
    const sfu = await res.json();
    mark('tokenReceived');
    // Element Call reads the payload with atob (extractFullConfigFromToken).
    const payload = JSON.parse(atob(sfu.jwt.split('.')[1]));
    E.jwtRoom = payload.video.room;

    room = new Room({ adaptiveStream: true, dynacast: true });
    room.on(RoomEvent.TrackSubscribed, (track) => document.getElementById('videos').append(track.attach()));
    room.on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()));
    room.on(RoomEvent.Disconnected, (reason) => { E.joined = false; E.state = 'disconnected'; E.error = 'disconnected: ' + reason; });
    await room.connect(sfu.url, sfu.jwt);
    E.identity = room.localParticipant.identity;
    E.joined = true;
    E.state = 'connected';
    await room.localParticipant.enableCameraAndMicrophone();
  } catch (e) {
    E.state = 'error';
    E.error = String(e && e.message || e);
  }
};
