import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type Request, type Response } from 'express';
import { z } from 'zod';
import { describeZodIssue } from '../core/errors.js';

/**
 * EC2's instance metadata service (IMDSv2, tokens required) for a local test
 * host, as AWS documents it: PUT /latest/api/token with a TTL of 1 to 21600
 * seconds (400 without one, 403 for a request that came through a proxy);
 * every GET needs a live token (401 otherwise); spot/instance-action and
 * events/recommendations/rebalance answer 404 until something is scheduled,
 * then the documented JSON. Notices are scheduled on demand, by the test or
 * `hubshift local notice`.
 */
export interface MetadataIdentity {
  instanceId: string;
  instanceType: string;
  zone: string;
}

export interface ScheduledInterruption {
  action: 'terminate' | 'stop' | 'hibernate';
  /** When the instance goes. */
  time: Date;
}

export interface MetadataServer {
  url: string;
  /** Schedules a spot interruption `inSeconds` from now (AWS gives 120). */
  scheduleInterruption(action: ScheduledInterruption['action'], inSeconds?: number): ScheduledInterruption;
  scheduleRebalance(): Date;
  clear(): void;
  close(): Promise<void>;
}

const MAX_TTL = 21_600;
const TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
const TOKEN_HEADER = 'x-aws-ec2-metadata-token';

/** AWS writes these times to the second, with a Z. */
function awsTime(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const AdminNotice = z.object({ action: z.enum(['terminate', 'stop', 'hibernate', 'rebalance']), in: z.number().nonnegative().max(86_400).default(120) }).strict();

/**
 * `admin`: also serve POST /hubshift/notice {action, in} to schedule a notice
 * from outside the process (`hubshift local notice`). Never on EC2's address.
 */
export async function startMetadataServer(identity: MetadataIdentity, listen: { host: string; port: number } = { host: '127.0.0.1', port: 0 }, opts: { admin?: boolean } = {}): Promise<MetadataServer> {
  const tokens = new Map<string, number>();
  let interruption: ScheduledInterruption | null = null;
  let rebalance: Date | null = null;
  // AWS gives times to the second.
  const interrupt = (action: ScheduledInterruption['action'], inSeconds: number): ScheduledInterruption =>
    (interruption = { action, time: new Date(Math.floor((Date.now() + inSeconds * 1000) / 1000) * 1000) });
  const recommend = (): Date => (rebalance = new Date(Math.floor(Date.now() / 1000) * 1000));
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  const plain = (res: Response, status: number, body: string): void => {
    res.status(status).type('text/plain').send(body);
  };

  if (opts.admin) {
    app.post('/hubshift/notice', express.json(), (req: Request, res: Response) => {
      const r = AdminNotice.safeParse(req.body ?? {});
      if (!r.success) return plain(res, 400, `notice refused: ${describeZodIssue(r.error)}`);
      if (r.data.action === 'rebalance') res.json({ noticeTime: awsTime(recommend()) });
      else {
        const i = interrupt(r.data.action, r.data.in);
        res.json({ action: i.action, time: awsTime(i.time) });
      }
    });
  }

  app.put('/latest/api/token', (req: Request, res: Response) => {
    // IMDS refuses token requests that a proxy forwarded.
    if (req.headers['x-forwarded-for'] !== undefined) return plain(res, 403, 'Forbidden');
    const raw = req.headers[TOKEN_TTL_HEADER];
    const ttl = Number(Array.isArray(raw) ? raw[0] : raw);
    if (raw === undefined || !Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL) return plain(res, 400, 'Missing or Invalid Parameters');
    const token = randomBytes(32).toString('base64');
    tokens.set(token, Date.now() + ttl * 1000);
    res.setHeader(TOKEN_TTL_HEADER, String(ttl));
    plain(res, 200, token);
  });

  app.use((req: Request, res: Response, next) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'Method Not Allowed');
    const token = req.headers[TOKEN_HEADER];
    const expires = typeof token === 'string' ? tokens.get(token) : undefined;
    if (expires === undefined || expires <= Date.now()) {
      if (typeof token === 'string') tokens.delete(token);
      return plain(res, 401, 'Unauthorized');
    }
    next();
  });

  const items: Record<string, () => string | null> = {
    'instance-id': () => identity.instanceId,
    'instance-type': () => identity.instanceType,
    'placement/availability-zone': () => identity.zone,
    'spot/instance-action': () => (interruption ? JSON.stringify({ action: interruption.action, time: awsTime(interruption.time) }) : null),
    'events/recommendations/rebalance': () => (rebalance ? JSON.stringify({ noticeTime: awsTime(rebalance) }) : null),
  };
  app.get('/latest/meta-data/*path', (req: Request, res: Response) => {
    const path = ([] as string[]).concat((req.params as { path?: string | string[] }).path ?? []).join('/');
    const body = items[path]?.() ?? null;
    if (body === null) return plain(res, 404, 'Not Found');
    res.status(200).type(body.startsWith('{') ? 'application/json' : 'text/plain').send(body);
  });
  app.use((_req: Request, res: Response) => plain(res, 404, 'Not Found'));

  const server: Server = await new Promise((resolve, reject) => {
    const s = app.listen(listen.port, listen.host, () => resolve(s));
    s.once('error', reject);
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${listen.host}:${addr.port}`,
    scheduleInterruption: (action, inSeconds = 120) => interrupt(action, inSeconds),
    scheduleRebalance: recommend,
    clear() {
      interruption = null;
      rebalance = null;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
