import { randomUUID } from 'node:crypto';
import type { NoticeInfo } from '../core/cluster.js';
import { EventBridgeNotice, NoticeRequest } from '../core/control.js';
import { InputError, NotFoundError, describeZodIssue } from '../core/errors.js';

/** AWS gives two minutes between a spot interruption warning and the instance going. */
export const SPOT_NOTICE_SECONDS = 120;

export interface NodeLookup {
  /** The node registered under an EC2 instance id. */
  byInstance(instanceId: string): Promise<string | null>;
  exists(node: string): Promise<boolean>;
}

/**
 * A notice from either shape the API takes: hubshift's own ({node, action,
 * in | time}) or an EventBridge event from EC2. Refused, naming the field,
 * when it is neither; NotFound when it is about a node nobody registered.
 */
export async function parseNotice(body: unknown, nodes: NodeLookup, now: Date): Promise<NoticeInfo> {
  const isEvent = typeof body === 'object' && body !== null && 'detail-type' in body;
  if (isEvent) {
    const r = EventBridgeNotice.safeParse(body);
    if (!r.success) throw new InputError(`EventBridge event refused: ${describeZodIssue(r.error)}`);
    const ev = r.data;
    const instanceId = ev.detail['instance-id'];
    const node = await nodes.byInstance(instanceId);
    if (!node) throw new NotFoundError(`EventBridge event ${ev.id} is for instance ${instanceId}, which no registered node runs on`);
    const interruption = ev['detail-type'] === 'EC2 Spot Instance Interruption Warning';
    return {
      id: `eb-${ev.id}`,
      node,
      kind: interruption ? 'interruption' : 'rebalance',
      action: interruption ? ev.detail['instance-action'] : null,
      // The warning's time is when EC2 sent it: the instance goes two minutes later.
      deadline: interruption ? new Date(Date.parse(ev.time) + SPOT_NOTICE_SECONDS * 1000).toISOString() : null,
      receivedAt: now.toISOString(),
    };
  }
  const r = NoticeRequest.safeParse(body);
  if (!r.success) throw new InputError(`notice refused: ${describeZodIssue(r.error)}`);
  const n = r.data;
  if (!(await nodes.exists(n.node))) throw new NotFoundError(`notice for node ${n.node}, which is not registered (hubshift agent --node ${n.node} --scheduler URL registers it)`);
  if (n.in !== undefined && n.time !== undefined) throw new InputError('notice refused: give one of "in" and "time", not both');
  const rebalance = n.action === 'rebalance';
  const deadline = rebalance ? null : n.time ?? new Date(now.getTime() + (n.in ?? SPOT_NOTICE_SECONDS) * 1000).toISOString();
  return {
    id: n.id ?? `n-${randomUUID()}`,
    node: n.node,
    kind: rebalance ? 'rebalance' : 'interruption',
    action: rebalance ? null : (n.action as 'terminate' | 'stop' | 'hibernate'),
    deadline,
    receivedAt: now.toISOString(),
  };
}

