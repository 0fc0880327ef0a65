import { Agent, STATUS_CODES, createServer, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { HubRoute, PlacedSession } from '../core/control.js';
import { errorMessage } from '../core/errors.js';
import { sleep } from '../util/exec.js';
import { ExpiringMap } from '../util/expiring-map.js';
import type { HubActivityReporter } from './hub-activity.js';
import { hubTokensOf } from './hub-credentials.js';
import type { HubIdentity } from './hub-identity.js';
import type { SessionDirectory } from './session-directory.js';
import type { GatewayConfig } from './gateway-config.js';
import { BodyCopies, type BodyCopy } from './body-copies.js';
import { RouteCache } from './route-cache.js';
import { wakeMessage } from './wake-message.js';
import { GATEWAY_PATH, escapeHtml, wakePage } from './wake-page.js';

/** A refusal with its HTTP status, said to the browser as JSON or a small page. */
class GatewayError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** The session sleeps and this request may not wake it: refused as refuseWake says (a browser goes to the hub). */
class AsleepError extends GatewayError {
  constructor(readonly session: PlacedSession & { hub: HubRoute }) {
    super(403, `session ${session.id} of ${session.hub.user} is asleep (checkpointed) and wakes only for ${session.hub.user}'s own requests: a hub token of theirs (Authorization: token ...), or their browser signed in to the hub`);
  }
}

/** The refusal of a request that may not wake its sleeping session. */
function asleepRefusal(s: PlacedSession): GatewayError {
  return s.hub ? new AsleepError({ ...s, hub: s.hub }) : new GatewayError(403, `session ${s.id} is asleep (checkpointed)`);
}

/** Headers that belong to one connection and are not passed on (RFC 9110 section 7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);
/** What a reconnected upstream websocket needs to be let in as the browser was. */
const WS_PASSED = ['cookie', 'authorization', 'user-agent', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-real-ip', 'x-xsrftoken'];
/** Upstream websocket closes that mean the connection was lost, not ended: the gateway reconnects. */
const LOST = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014]);
/** How long a reconnected upstream websocket settles before what the browser sent meanwhile goes out. */
const RESUBSCRIBE_MS = 150;

const serving = (s: PlacedSession): boolean => s.state === 'running' && s.operation === null;
/** How long a request goes unanswered before the gateway looks whether its session went to sleep under it. */
const STALLED_MS = 1_000;
/** Checkpointed with nothing under way: only a request may bring it back. */
const asleep = (s: PlacedSession): boolean => s.state === 'checkpointed' && s.operation === null;

/**
 * The hub's base URL (/ or /jhub/) from a server's route prefix, which is
 * BASE user/NAME/ or BASE user/NAME/SERVER/.
 */
export function hubBaseOf(route: Pick<HubRoute, 'prefix' | 'server'>): string {
  const parts = route.prefix.split('/').slice(0, -1);
  return `${parts.slice(0, parts.length - (route.server ? 3 : 2)).join('/')}/`;
}

/** Where JupyterHub's part of hubshift wakes a signed-in user's server (infra/jupyterhub/hubshift_wake.py). */
export const HUB_WAKE_PATH = 'hub/hubshift/wake';

function wantsHtml(req: IncomingMessage): boolean {
  return req.method === 'GET' && (req.headers.accept ?? '').includes('text/html') && !/\/api\//.test(req.url ?? '');
}

/** Idempotent requests may be sent again after the session came back, whatever cut them. */
function idempotent(req: IncomingMessage): boolean {
  return req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS';
}

/**
 * How a request that failed upstream may be sent again (once): an idempotent
 * one as it is; another with its body's copy, and only if its session
 * never took it (see neverTaken); none on the second try.
 */
type Resend = { kind: 'idempotent' } | { kind: 'copy'; copy: BodyCopy } | null;

/** Upstream errors that cut a connection before any answer. */
const CUT = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE']);
/** The most of one request's body, and of all requests' at once, the gateway keeps to send again. */
const COPY_REQUEST_BYTES = 16 * 2 ** 20;
const COPY_TOTAL_BYTES = 128 * 2 ** 20;

function forwardHeaders(h: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(h).filter(([k]) => !HOP_BY_HOP.has(k)));
}

const lowerFirst = (m: string): string => m.charAt(0).toLowerCase() + m.slice(1);

function closeCode(code: number): number | undefined {
  return code === 1000 || (code >= 1001 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999) ? code : undefined;
}

/**
 * The session gateway: JupyterHub's proxy sends every user's /user/NAME/ here
 * (an address that never changes, so the hub's own route checks never undo
 * anything), and the gateway sends it on to wherever the session runs now.
 * While a session moves or wakes, requests are held and websockets stay open;
 * a request for a checkpointed session wakes it if it comes from someone the
 * hub lets use that server (`identity`: a token of theirs, in a header, the
 * query or the server's OAuth cookie). A browser without one is sent to the
 * hub, which signs the user in and wakes their server (HUB_WAKE_PATH); other
 * requests get 403. Without `identity` (no hub API given) any request wakes.
 */
export class SessionGateway {
  private readonly server: Server;
  private readonly wss: WebSocketServer;
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256 });
  private readonly cache: RouteCache;
  private readonly copies = new BodyCopies(COPY_REQUEST_BYTES, COPY_TOTAL_BYTES);
  /** Where each session stood lately, for requests without an answer: one scheduler call a session, not one a request. */
  private readonly glances = new ExpiringMap<string, Promise<PlacedSession | null>>(4096);
  private readonly waits = new Map<string, Promise<PlacedSession>>();
  private readonly wakes = new Map<string, number>();
  private readonly relays = new Set<WsRelay>();
  /** The subprotocol the session chose for an upgrade, answered to the browser. */
  private readonly chosen = new WeakMap<IncomingMessage, string>();
  private held = 0;
  url = '';

  constructor(
    private readonly directory: SessionDirectory,
    private readonly config: GatewayConfig,
    private readonly log: Logger,
    private readonly activity: HubActivityReporter | null = null,
    private readonly identity: HubIdentity | null = null,
  ) {
    this.cache = new RouteCache(config.cacheMs);
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, handleProtocols: (_p, req) => this.chosen.get(req) ?? false });
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(req, socket, head));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.config.port, this.config.host, () => resolve());
    });
    const a = this.server.address() as AddressInfo;
    this.url = `http://${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}`;
    return this.url;
  }

  async close(): Promise<void> {
    for (const r of this.relays) r.close(1001, 'the gateway is stopping');
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.agent.destroy();
  }

  /** Requests and websockets waiting for their session right now. */
  get waiting(): number {
    return this.held;
  }

  // ---- finding the session

  private async lookup(path: string): Promise<PlacedSession | null> {
    const hit = this.cache.get(path);
    if (hit && serving(hit)) return hit;
    const s = await this.directory.atPath(path);
    if (s) this.cache.set(path, s);
    return s;
  }

  private forget(s: PlacedSession): void {
    this.cache.forget(s);
  }

  /**
   * Whether this request may wake the session: the hub says its token's owner
   * may use the server (or there is no hub to ask). Asked for each request
   * that finds the session asleep, never remembered for the session: one
   * user's request must not let others' wake it later.
   */
  private async mayWake(s: PlacedSession, req: IncomingMessage): Promise<boolean> {
    if (!this.identity) return true;
    if (!s.hub || !(await this.identity.allows(s.hub, hubTokensOf(req.headers, req.url ?? '/')))) return false;
    this.log.info({ session: s.id, user: s.hub.user, url: req.url?.split('?')[0] }, 'a request the hub vouched for asks for a sleeping session');
    return true;
  }

  /** A request for a sleeping session from someone the hub has not vouched for. */
  private refuseWake(err: AsleepError, req: IncomingMessage, res: ServerResponse): void {
    if (wantsHtml(req) && !res.headersSent) {
      // The hub signs the user in (its cookie is scoped to /hub/, the gateway never sees it) and wakes their server.
      const to = `${hubBaseOf(err.session.hub)}${HUB_WAKE_PATH}?next=${encodeURIComponent(req.url ?? err.session.hub.prefix)}`;
      res.writeHead(302, { Location: to, 'Cache-Control': 'no-store' }).end();
      return;
    }
    this.refuse(req, res, err);
  }

  /** Wakes a checkpointed session once (again only after a failed restore ended). Only for a request mayWake let. */
  private async wakeIfAsleep(s: PlacedSession): Promise<void> {
    if (!asleep(s)) return;
    const last = this.wakes.get(s.id) ?? 0;
    if (Date.now() - last < 2_000) return;
    this.wakes.set(s.id, Date.now());
    this.log.info({ session: s.id, user: s.user }, 'waking a checkpointed session for a request');
    await this.directory.wake(s.id);
  }

  /**
   * Resolves once the session runs with nothing under way on it, or sleeps
   * (checkpointed, nothing under way): each waiter then asks whether its own
   * request may wake it (hold). Every request waiting for one session shares
   * one poll.
   */
  private untilServing(s: PlacedSession): Promise<PlacedSession> {
    const current = this.waits.get(s.id);
    if (current) return current;
    const deadline = Date.now() + this.config.holdTimeoutMs;
    const wait = (async () => {
      let last = s;
      for (;;) {
        const now = await this.directory.get(s.id);
        if (!now) throw new GatewayError(404, `session ${s.id} of ${s.user} is gone; start your server again from the hub`);
        last = now;
        if (serving(now)) return now;
        if (now.state === 'failed' && now.operation === null) throw new GatewayError(502, `session ${s.id} of ${s.user} failed (hubshift session ls shows why); stop and start your server from the hub`);
        if (asleep(now)) return now;
        if (Date.now() >= deadline) break;
        await sleep(this.config.pollIntervalMs);
      }
      throw new GatewayError(504, `session ${s.id} of ${s.user} did not come back within ${this.config.holdTimeoutMs / 1000} s (${lowerFirst(wakeMessage(last))}); try again in a moment`);
    })().finally(() => this.waits.delete(s.id));
    this.waits.set(s.id, wait);
    return wait;
  }

  /**
   * untilServing, counted against the limit of held requests. A session that
   * sleeps, or falls asleep meanwhile (a checkpoint under way when the
   * request came), is woken if the hub vouches for this request, and the
   * request refused (AsleepError) if not, at once rather than at the end of
   * the hold time.
   */
  private async hold(s: PlacedSession, req: IncomingMessage): Promise<PlacedSession> {
    if (this.held >= this.config.maxHeld) throw new GatewayError(503, `the gateway already holds ${this.held} requests for sessions that are moving or waking; try again in a moment`);
    this.held++;
    const deadline = Date.now() + this.config.holdTimeoutMs;
    try {
      this.forget(s);
      for (;;) {
        const now = await this.untilServing(s);
        if (serving(now)) return now;
        if (!(await this.mayWake(now, req))) throw asleepRefusal(now);
        await this.wakeIfAsleep(now);
        if (Date.now() >= deadline) throw new GatewayError(504, `session ${now.id} of ${now.user} did not come back within ${this.config.holdTimeoutMs / 1000} s (${lowerFirst(wakeMessage(now))}); try again in a moment`);
        // Until the scheduler shows the restore under way.
        await sleep(this.config.pollIntervalMs);
        s = now;
      }
    } finally {
      this.held--;
    }
  }

  // ---- HTTP

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const path = req.url ?? '/';
      if (path === '/_hubshift/healthz') {
        res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ ok: true, waiting: this.held }));
        return;
      }
      let s = await this.lookup(path);
      if (!s || !s.hub) throw new GatewayError(404, `no hubshift session serves ${path.split('?')[0]}; start your server from the hub`);
      if (path.startsWith(`${s.hub.prefix}${GATEWAY_PATH}status`)) {
        await this.status(s, req, res);
        return;
      }
      if (asleep(s) && !(await this.mayWake(s, req))) throw asleepRefusal(s);
      // The user's activity for the hub: what is passed on or waited for, not a refused knock on a sleeping server.
      this.activity?.note(s.hub);
      if (!serving(s)) {
        if (wantsHtml(req) && s.state !== 'running') {
          await this.wakeIfAsleep(s);
          res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' }).end(wakePage({ user: s.user, prefix: s.hub.prefix, statusIntervalMs: 250 }));
          return;
        }
        s = await this.hold(s, req);
      }
      if (idempotent(req)) {
        await this.forward(req, res, s, { kind: 'idempotent' }, null);
        return;
      }
      const copy = this.copies.copy(req);
      try {
        await this.forward(req, res, s, { kind: 'copy', copy }, null);
      } finally {
        copy.release();
      }
    } catch (err) {
      if (err instanceof AsleepError) this.refuseWake(err, req, res);
      else this.refuse(req, res, err);
    }
  }

  /** Where the session stands, for the "resuming" page; anyone may ask, only a vouched-for request wakes it. */
  private async status(s: PlacedSession, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const now = (await this.directory.get(s.id)) ?? s;
    if (asleep(now) && (await this.mayWake(now, req))) await this.wakeIfAsleep(now);
    const ready = serving(now);
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(
      JSON.stringify({ ready, state: now.state, operation: now.operation, message: ready ? 'Ready' : wakeMessage(now), error: now.state === 'failed' ? `session ${now.id} failed; stop and start your server from the hub` : null }),
    );
  }

  /** Passes the request on; `body` is the copy of a request's body sent again, null to stream the client's own. */
  private forward(req: IncomingMessage, res: ServerResponse, s: PlacedSession, resend: Resend, body: Buffer | null): Promise<void> {
    const target = new URL(s.url);
    return new Promise<void>((resolve, reject) => {
      const up = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: forwardHeaders(req.headers), agent: this.agent }, (ur) => {
        clearInterval(stalled);
        res.writeHead(ur.statusCode ?? 502, ur.statusMessage, forwardHeaders(ur.headers));
        pipeline(ur, res).then(resolve, () => resolve());
      });
      // A request stuck on a frozen session is given up after the hold time, like one that waited.
      up.setTimeout(this.config.holdTimeoutMs, () => up.destroy(new GatewayError(504, `session ${s.id} of ${s.user} did not answer within ${this.config.holdTimeoutMs / 1000} s`)));
      // A request the session had taken when it was checkpointed waits inside its connection, which the checkpoint
      // keeps (criu takes established connections along): nothing else may come to wake the session, so this one does.
      const stalled = setInterval(() => void this.wakeUnder(s, req, up), STALLED_MS);
      up.once('close', () => clearInterval(stalled));
      up.on('error', (err) => {
        if (res.headersSent) {
          res.destroy();
          resolve();
          return;
        }
        this.forget(s);
        const failed = (): GatewayError => (err instanceof GatewayError ? err : new GatewayError(502, `session ${s.id} of ${s.user} did not answer (${err.message}); if it is moving, try again in a moment`));
        if (!resend || err instanceof GatewayError) {
          reject(failed());
          return;
        }
        // The session may have begun to move or sleep just now: wait for it and send the request again, once.
        this.log.debug({ session: s.id, err: err.message }, 'upstream failed; holding the request for the session');
        const again = (bytes: Buffer | null): Promise<void> => this.hold(s, req).then((now) => this.forward(req, res, now, null, bytes));
        if (resend.kind === 'idempotent') {
          again(null).then(resolve, reject);
          return;
        }
        this.neverTaken(s, err)
          .then(async (never) => {
            const bytes = never ? await resend.copy.whole() : null;
            if (!bytes) throw failed();
            this.log.info({ session: s.id, method: req.method, url: req.url?.split('?')[0] }, 'a request its session never took (a checkpoint or move left it out) is sent again');
            await again(bytes);
          })
          .then(resolve, reject);
      });
      if (body) up.end(body);
      // Sent without a body, as before; also the second time, when the client's request has long ended.
      else if (idempotent(req)) up.end();
      else {
        // Not pipeline(): a failed upstream must not end the client's request, whose body the copy may still need.
        req.pipe(up);
        req.once('close', () => {
          if (!req.complete) up.destroy();
        });
      }
    });
  }

  /**
   * Whether a request cut upstream before any answer was never taken by its
   * session's server, so that sending it again cannot do anything twice: the
   * session was checkpointed or moved (or is under way) since the gateway
   * looked it up. criu takes every connection the server had accepted along
   * (--tcp-established); what it leaves out are those still in the listen
   * queue (--skip-in-flight), unread, which reset when their client next
   * sends (its keepalive) or is refused.
   */
  private async neverTaken(before: PlacedSession, err: NodeJS.ErrnoException): Promise<boolean> {
    if (!err.code || !CUT.has(err.code)) return false;
    if (err.code === 'ECONNREFUSED') return true;
    const now = await this.directory.get(before.id).catch(() => null);
    return now !== null && (!serving(now) || now.node !== before.node || now.lastCheckpoint !== before.lastCheckpoint);
  }

  /**
   * For a request without an answer yet: if its session has gone to sleep
   * under it, wakes the session (the restored server answers on the same
   * connection) if the hub vouches for the request, and refuses it if not.
   */
  private async wakeUnder(s: PlacedSession, req: IncomingMessage, up: ClientRequest): Promise<void> {
    const now = await this.glance(s.id);
    if (!now || !asleep(now) || up.destroyed) return;
    if (await this.mayWake(now, req)) await this.wakeIfAsleep(now).catch((err: unknown) => this.log.warn({ session: s.id, err: errorMessage(err) }, 'waking the session under a waiting request failed'));
    else up.destroy(asleepRefusal(now));
  }

  /** The session's record as the scheduler gave it within the last half second, to every request that asks. */
  private glance(id: string): Promise<PlacedSession | null> {
    const known = this.glances.get(id);
    if (known) return known;
    const answer = this.directory.get(id).catch(() => null);
    this.glances.set(id, answer, STALLED_MS / 2);
    return answer;
  }

  private refuse(req: IncomingMessage, res: ServerResponse, err: unknown): void {
    const status = err instanceof GatewayError ? err.status : 502;
    const message = err instanceof GatewayError ? err.message : `the gateway could not reach the session: ${errorMessage(err)}`;
    if (status >= 500) this.log.warn({ url: req.url, status, err: message }, 'request refused');
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const headers = { 'Cache-Control': 'no-store', ...(status === 503 || status === 504 ? { 'Retry-After': '5' } : {}) };
    if (wantsHtml(req)) {
      res.writeHead(status, { ...headers, 'Content-Type': 'text/html; charset=utf-8' }).end(`<!doctype html><title>${status}</title><p>${escapeHtml(message)}</p>`);
    } else {
      // Jupyter's own error shape, so its frontend shows the message.
      res.writeHead(status, { ...headers, 'Content-Type': 'application/json' }).end(JSON.stringify({ message, reason: null }));
    }
  }

  // ---- websockets

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => undefined);
    try {
      const s0 = await this.lookup(req.url ?? '/');
      if (!s0 || !s0.hub) throw new GatewayError(404, `no hubshift session serves ${req.url}`);
      if (asleep(s0) && !(await this.mayWake(s0, req))) throw asleepRefusal(s0);
      const s = serving(s0) ? s0 : await this.hold(s0, req);
      const upstream = await this.connectUpstream(s, req);
      if (upstream.protocol) this.chosen.set(req, upstream.protocol);
      this.wss.handleUpgrade(req, socket, head, (browser) => {
        const relay = new WsRelay(browser, upstream, {
          reconnect: async () => this.connectUpstream(await this.hold(s, req), req),
          onActivity: () => s.hub && this.activity?.note(s.hub),
          bufferBytes: this.config.wsBufferBytes,
          giveUpMs: this.config.holdTimeoutMs,
          log: this.log.child({ session: s.id, ws: req.url?.split('?')[0] }),
        });
        this.relays.add(relay);
        relay.closed.then(() => this.relays.delete(relay), () => this.relays.delete(relay));
      });
    } catch (err) {
      const status = err instanceof GatewayError ? err.status : 502;
      const message = err instanceof GatewayError ? err.message : errorMessage(err);
      this.log.warn({ url: req.url, status, err: message }, 'websocket refused');
      socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unavailable'}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n${message}\n`);
    }
  }

  /** Opens the websocket to the session as the browser asked for it (same path, cookies, origin and subprotocols). */
  private connectUpstream(s: PlacedSession, req: IncomingMessage): Promise<WebSocket> {
    const target = new URL(s.url);
    const headers: Record<string, string> = { host: req.headers.host ?? target.host };
    for (const h of WS_PASSED) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const protocols = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim()).filter(Boolean);
    return new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`ws://${target.host}${req.url}`, protocols, { headers, origin: req.headers.origin, perMessageDeflate: false, handshakeTimeout: 15_000 });
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_r, res) => {
        ws.terminate();
        reject(new GatewayError(res.statusCode ?? 502, `session ${s.id} refused the websocket (${res.statusCode})`));
      });
      ws.once('error', (err) => reject(new GatewayError(502, `session ${s.id} did not take the websocket: ${err.message}`)));
    });
  }
}

interface RelayOptions {
  reconnect(): Promise<WebSocket>;
  onActivity(): void;
  bufferBytes: number;
  giveUpMs: number;
  log: Logger;
}

/**
 * One browser websocket and its upstream. The browser's side stays open when
 * the upstream is lost: what the browser sends meanwhile is kept (bounded) and
 * delivered once a new upstream is open.
 */
class WsRelay {
  private upstream: WebSocket | null;
  private queue: { data: RawData; binary: boolean }[] = [];
  private queued = 0;
  private ended = false;
  readonly closed: Promise<void>;

  constructor(
    private readonly browser: WebSocket,
    upstream: WebSocket,
    private readonly opts: RelayOptions,
  ) {
    this.upstream = null;
    this.attach(upstream);
    browser.on('message', (data, binary) => {
      opts.onActivity();
      const up = this.upstream;
      if (up && up.readyState === WebSocket.OPEN) {
        up.send(data, { binary });
        return;
      }
      this.queued += Array.isArray(data) ? data.reduce((a, b) => a + b.length, 0) : (data as Buffer | ArrayBuffer).byteLength;
      this.queue.push({ data, binary });
      if (this.queued > opts.bufferBytes) this.close(1011, 'the session is away and too much was sent meanwhile');
    });
    browser.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      browser.once('close', (code, reason) => {
        this.ended = true;
        const up = this.upstream;
        if (up && up.readyState === WebSocket.OPEN) up.close(closeCode(code), reason);
        else up?.terminate();
        resolve();
      }),
    );
  }

  private attach(up: WebSocket): void {
    this.upstream = up;
    up.on('message', (data, binary) => {
      if (this.browser.readyState === WebSocket.OPEN) this.browser.send(data, { binary });
    });
    up.on('error', () => undefined);
    up.once('close', (code, reason) => {
      if (this.ended || this.upstream !== up) return;
      if (LOST.has(code)) {
        this.opts.log.info({ code }, 'upstream websocket lost; keeping the browser connected and reconnecting');
        this.upstream = null;
        void this.reconnect();
      } else {
        this.close(code, reason.toString());
      }
    });
    for (const m of this.queue) up.send(m.data, { binary: m.binary });
    this.queue = [];
    this.queued = 0;
  }

  private async reconnect(): Promise<void> {
    const deadline = Date.now() + this.opts.giveUpMs;
    let delay = 100;
    while (!this.ended && Date.now() < deadline) {
      try {
        const up = await this.opts.reconnect();
        // Jupyter subscribes a new connection to the kernel's output only as it opens (zmq's slow
        // joiner): a request sent at once could run before its output can reach us.
        await sleep(RESUBSCRIBE_MS);
        if (this.ended) {
          up.close();
          return;
        }
        this.attach(up);
        this.opts.log.info('upstream websocket reconnected');
        return;
      } catch (err) {
        this.opts.log.debug({ err: errorMessage(err) }, 'reconnecting the upstream websocket failed; trying again');
        await sleep(delay);
        delay = Math.min(delay * 2, 2_000);
      }
    }
    this.close(1011, 'the session did not come back in time');
  }

  close(code: number, reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (this.browser.readyState === WebSocket.OPEN) this.browser.close(closeCode(code), reason.slice(0, 120));
    this.upstream?.terminate();
  }
}
