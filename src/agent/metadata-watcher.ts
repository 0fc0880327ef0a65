import type { Logger } from 'pino';
import { z } from 'zod';
import { errorMessage } from '../core/errors.js';
import type { NoticeRequest } from '../core/control.js';

/** The documented answers of IMDS for spot interruptions and rebalance recommendations. */
const InstanceAction = z.object({ action: z.enum(['terminate', 'stop', 'hibernate']), time: z.string().datetime({ offset: true }) });
const RebalanceNotice = z.object({ noticeTime: z.string().datetime({ offset: true }) });

export interface MetadataWatcherConfig {
  /** http://169.254.169.254 on EC2; a local test host's own endpoint otherwise. */
  endpoint: string;
  /** How often to ask (AWS suggests every 5 s). */
  intervalMs: number;
  /** Token lifetime asked for (default 21600 s, IMDS's most). */
  tokenTtlSeconds?: number;
}

export interface MetadataWatcher {
  /** One round of questions now (tests). */
  poll(): Promise<void>;
  stop(): void;
}

/**
 * Watches the instance metadata service (IMDSv2) for a spot interruption
 * or a rebalance recommendation and hands each new one to `onNotice` once.
 * The token is renewed before it runs out, and at once on a 401.
 */
export function watchInstanceMetadata(cfg: MetadataWatcherConfig, node: string, onNotice: (n: NoticeRequest) => Promise<void>, log: Logger): MetadataWatcher {
  const ttl = cfg.tokenTtlSeconds ?? 21_600;
  let token: { value: string; renewAt: number } | null = null;
  const seen = new Set<string>();
  let failing = false;
  let stopped = false;

  const fetchToken = async (): Promise<string> => {
    if (token && Date.now() < token.renewAt) return token.value;
    const res = await fetch(new URL('/latest/api/token', cfg.endpoint), { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) }, signal: AbortSignal.timeout(2_000) });
    if (!res.ok) throw new Error(`the metadata service refused a token: ${res.status} ${await res.text()}`);
    const value = (await res.text()).trim();
    // Renewed at nine tenths of its life: never used expired.
    token = { value, renewAt: Date.now() + ttl * 900 };
    return value;
  };

  /** GETs a metadata path: its JSON, or null for 404 (nothing scheduled). */
  const get = async (path: string): Promise<unknown> => {
    for (let attempt = 0; attempt < 2; attempt++) {
      const res = await fetch(new URL(`/latest/meta-data/${path}`, cfg.endpoint), { headers: { 'X-aws-ec2-metadata-token': await fetchToken() }, signal: AbortSignal.timeout(2_000) });
      if (res.status === 401) {
        token = null;
        continue;
      }
      if (res.status === 404) return null;
      if (!res.ok) throw new Error(`metadata ${path} answered ${res.status}`);
      return JSON.parse(await res.text());
    }
    throw new Error(`metadata ${path}: the token was refused twice`);
  };

  const report = async (key: string, n: NoticeRequest): Promise<void> => {
    if (seen.has(key)) return;
    await onNotice(n);
    seen.add(key);
    log.warn({ node, notice: n }, 'the metadata service announced a notice; told the scheduler');
  };

  const poll = async (): Promise<void> => {
    try {
      const action = await get('spot/instance-action');
      if (action !== null) {
        const a = InstanceAction.parse(action);
        await report(`action ${a.action} ${a.time}`, { node, action: a.action, time: new Date(a.time).toISOString(), id: `imds-${node}-${a.action}-${Date.parse(a.time)}` });
      }
      const rebalance = await get('events/recommendations/rebalance');
      if (rebalance !== null) {
        const r = RebalanceNotice.parse(rebalance);
        await report(`rebalance ${r.noticeTime}`, { node, action: 'rebalance', id: `imds-${node}-rebalance-${Date.parse(r.noticeTime)}` });
      }
      if (failing) log.info({ endpoint: cfg.endpoint }, 'metadata service answering again');
      failing = false;
    } catch (err) {
      if (!failing) log.warn({ endpoint: cfg.endpoint, err: errorMessage(err) }, 'cannot read the metadata service; retrying every interval');
      failing = true;
    }
  };

  let timer: NodeJS.Timeout | undefined;
  const tick = (): void => {
    void poll().finally(() => {
      if (!stopped) timer = setTimeout(tick, cfg.intervalMs);
    });
  };
  timer = setTimeout(tick, 0);
  return {
    poll,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
