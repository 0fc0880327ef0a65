import { errorMessage } from '../core/errors.js';
import { AgentClient } from './agent-client.js';
import type { AgentContext } from './agent-context.js';
import type { LentAddress } from './lent-addresses.js';

/** How far along a chain of moves (A to B, B on to C, ...) a question is passed before the address is taken as held. */
export const HOLDER_HOPS = 6;
// Each hop waits for the next: a question with more hops left gets longer.
const HOP_TIMEOUT_MS = 2_000;

/**
 * Whether this agent, or an agent it moved the session on to, still holds
 * the session (running, stopped, checkpointed: any session it knows keeps
 * its address). A lent record whose holder says no is forgotten on the way.
 * An agent that cannot be asked (gone, unreachable, too many hops away) is
 * taken to hold it: an address kept too long only narrows the pool, one
 * given out twice answers for two sessions.
 */
export async function holdsSession(ctx: AgentContext, sessionId: string, hops: number): Promise<boolean> {
  if (ctx.registry.find(sessionId)) return true;
  const lent = ctx.lent.find(sessionId);
  if (!lent) return false;
  if (hops <= 0) return true;
  const held = await askHolder(ctx, lent, hops - 1);
  if (!held) await ctx.lent.forget(sessionId);
  return held;
}

async function askHolder(ctx: AgentContext, lent: LentAddress, hops: number): Promise<boolean> {
  const holder = new AgentClient(lent.target, lent.targetToken, HOP_TIMEOUT_MS * (hops + 1));
  try {
    return await holder.holdsSession(lent.sessionId, hops);
  } catch (err) {
    ctx.log.warn({ session: lent.sessionId, ip: lent.ip, holder: lent.target, err: errorMessage(err) }, 'could not ask the agent a session moved to whether it still holds it; its address stays taken here');
    return true;
  }
}

/** Asks after every address lent from here, and frees those whose sessions are gone. */
export async function settleLentAddresses(ctx: AgentContext): Promise<number> {
  const before = ctx.lent.list().length;
  await Promise.all(ctx.lent.list().map((r) => holdsSession(ctx, r.sessionId, HOLDER_HOPS)));
  const freed = before - ctx.lent.list().length;
  if (freed > 0) ctx.log.info({ freed, stillLent: ctx.lent.list().length }, 'freed the addresses of moved sessions that have since gone');
  return freed;
}
