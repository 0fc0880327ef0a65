import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DashboardView, LedgerDay } from '../../src/core/ledger.js';
import { sumDays } from '../../src/pricing/ledger.js';
import { recordDay } from '../fixtures/recorded-day.js';
import { gotoSteady } from '../helpers/browser.js';
import { startControlPlane, TEST_GUARDS, type TestControlPlane } from '../helpers/control-plane.js';

const ARTIFACTS = join(import.meta.dirname, '../../test-artifacts');
// Yesterday (UTC): a whole recorded day behind us.
const DAY = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
const usd = (v: number): string => `${v < 0 ? '-$' : '$'}${Math.abs(v).toFixed(2)}`;

let cp: TestControlPlane;
let browser: Browser | undefined;
let recorded: Awaited<ReturnType<typeof recordDay>>;

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(new URL(path, cp.scheduler.url), { ...init, headers: { authorization: `Bearer ${cp.token}`, ...(init.headers ?? {}) } });
}

beforeAll(async () => {
  // No policies: nothing acts on the recorded state while the page is read.
  cp = await startControlPlane({ policies: { 'guards.yaml': TEST_GUARDS }, nodes: [], config: { workers: false } });
  recorded = await recordDay(cp.scheduler.state, cp.scheduler.ledger, DAY);
  // The spot node's agent heard from today; the others last yesterday, so silent.
  await cp.scheduler.state.touchNode('spot-a', new Date());
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}, 120_000);
afterAll(async () => {
  await browser?.close();
  await cp?.close();
});

describe('the FinOps dashboard', () => {
  it("should keep in Redis exactly the day the ledger's minutes add up to", async () => {
    const r = await api(`/v1/ledger/days?from=${DAY}&to=${DAY}`);
    const [day] = ((await r.json()) as { days: unknown[] }).days.map((d) => LedgerDay.parse(d));
    const [want] = sumDays(recorded.minutes);
    expect(day!.minutes).toBe(1440);
    expect(day!.totals.actualUsd).toBeCloseTo(want!.totals.actualUsd, 9);
    expect(day!.totals.onDemandUsd).toBeCloseTo(want!.totals.onDemandUsd, 9);
    for (const [p, v] of Object.entries(want!.savingsByPolicy)) expect(day!.savingsByPolicy[p]).toBeCloseTo(v, 9);
    for (const [u, v] of Object.entries(want!.byUser)) expect(day!.byUser[u]!.savedUsd).toBeCloseTo(v.savedUsd, 9);
    // The day is cheaper than always-on on-demand, and each policy that acted shows up.
    expect(day!.totals.actualUsd).toBeLessThan(day!.totals.onDemandUsd);
    expect(Object.keys(day!.savingsByPolicy)).toEqual(expect.arrayContaining(['idle', 'rebalance', 'spot-eviction', 'unused capacity', 'wake']));
  });

  it('should sign a browser in once with the token, then render every panel with the API\'s numbers', async () => {
    const page = await browser!.newPage({ viewport: { width: 1400, height: 1800 } });
    await gotoSteady(page, `${cp.scheduler.url}/dashboard`);
    await page.fill('#token', 'not-the-token');
    await page.click('button[type=submit]');
    await expect(page.getByRole('alert').textContent()).resolves.toMatch(/not the scheduler's token/);
    await page.fill('#token', cp.token);
    await page.click('button[type=submit]');
    await page.waitForSelector('#summary');
    const cookies = await page.context().cookies();
    expect(cookies.find((c) => c.name === 'hubshift_dashboard')).toMatchObject({ httpOnly: true, sameSite: 'Strict' });

    // Compare with the very answer the page drew: the forecast and today's node
    // costs move with the clock, so a second request can differ by a cent.
    const answer = page.waitForResponse((r) => r.url().endsWith(`/v1/dashboard?day=${DAY}`) && r.status() === 200);
    await gotoSteady(page, `${cp.scheduler.url}/dashboard?day=${DAY}`);
    await page.waitForSelector('body[data-ready=true]');
    const view = DashboardView.parse(await (await answer).json());
    const again = DashboardView.parse(await (await api(`/v1/dashboard?day=${DAY}`)).json());
    expect(again.ledger).toEqual(view.ledger);
    const text = async (id: string): Promise<string> => ((await page.getByTestId(id).first().textContent()) ?? '').trim();
    const t = view.ledger!.totals;
    expect(await text('cost-actual')).toBe(usd(t.actualUsd));
    expect(await text('cost-on-demand')).toBe(usd(t.onDemandUsd));
    expect(await text('cost-culling')).toBe(usd(t.cullingUsd));
    expect(await text('savings')).toBe(usd(t.onDemandUsd - t.actualUsd));
    expect(await text('ratio')).toBe(`${(t.onDemandUsd / t.actualUsd).toFixed(2)}x`);
    expect(await text('culled')).toBe(String(t.culled));
    for (const [p, v] of Object.entries(view.ledger!.savingsByPolicy)) expect(await text(`policy-${p}`)).toBe(usd(v));
    for (const [u, v] of Object.entries(view.ledger!.byUser)) expect(await text(`user-saved-${u}`)).toBe(usd(v.savedUsd));
    for (const [g, v] of Object.entries(view.ledger!.byGroup)) expect(await text(`group-saved-${g}`)).toBe(usd(v.savedUsd));
    expect(Object.keys(view.ledger!.byGroup).sort()).toEqual(['astro', 'bio', 'ungrouped']);
    for (const n of view.nodes) expect(await text(`node-cost-${n.name}`)).toBe(usd(n.costToday));
    expect(view.nodes.map((n) => n.name).sort()).toEqual(['od-b', 'spot-a']);
    for (const s of view.sessions) expect(await text(`session-cost-${s.id}`)).toBe(s.costPerHour.toFixed(4));
    // A hub user whose name the spawner escaped appears by the hub's own name, in the sessions and the ledger.
    expect(view.sessions.filter((s) => s.user === 'pia@lab.org').length).toBeGreaterThan(0);
    expect(Object.keys(view.ledger!.byUser)).toContain('pia@lab.org');
    expect(JSON.stringify(view)).not.toContain('u--pia');
    expect(await page.getByText('pia@lab.org').count()).toBeGreaterThan(0);
    expect(await text('forecast-actual')).toBe(usd(view.forecast.forecast.actualUsd));
    expect(await text('forecast-on-demand')).toBe(usd(view.forecast.forecast.onDemandUsd));
    expect(await page.locator('[data-testid=actions-table] tr').count()).toBe(view.actions.length + 1);
    expect(view.actions.length).toBeGreaterThan(20);
    // 96 quarter-hours, three series, the last point the day's totals.
    expect(view.timeline).toHaveLength(96);
    expect(view.timeline.at(-1)!.actualUsd).toBeCloseTo(t.actualUsd, 9);
    expect(await page.locator('[data-testid=cost-chart] polyline').count()).toBe(3);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });
    await page.close();
  });

  it('should guard the API: the cookie reads but never writes; /metrics speaks Prometheus', async () => {
    const signIn = await fetch(new URL('/dashboard/login', cp.scheduler.url), { method: 'POST', body: new URLSearchParams({ token: cp.token }), redirect: 'manual' });
    expect(signIn.status).toBe(303);
    const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!;
    expect((await fetch(new URL(`/v1/dashboard?day=${DAY}`, cp.scheduler.url), { headers: { cookie } })).status).toBe(200);
    expect((await fetch(new URL('/v1/policies/reload', cp.scheduler.url), { method: 'POST', headers: { cookie } })).status).toBe(401);
    expect((await fetch(new URL('/v1/dashboard', cp.scheduler.url), { headers: { cookie: 'hubshift_dashboard=9999999999999.forged-forged-forged-forged-forged-forged-for' } })).status).toBe(401);
    expect((await fetch(new URL('/metrics', cp.scheduler.url))).status).toBe(401);
    const bad = await api('/v1/dashboard?day=yesterday');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toMatch(/day yesterday: must be a day like 2026-11-24/);

    const metrics = await (await api('/metrics')).text();
    expect(metrics).toMatch(/^hubshift_nodes\{lifecycle="spot",instance_type="r5.large",state="ready"\} 1$/m);
    expect(metrics).toMatch(/^hubshift_nodes\{lifecycle="on-demand",instance_type="r5.xlarge",state="silent"\} 1$/m);
    expect(metrics).toMatch(/^hubshift_node_price_usd_per_hour\{node="od-b",instance_type="r5.xlarge",lifecycle="on-demand"\} 0.252$/m);
    expect(metrics).toMatch(/^hubshift_sessions\{state="(running|checkpointed)"\} \d+$/m);
    expect(metrics).toMatch(/^hubshift_actions\{action="migrate",outcome="done",policy="spot-eviction"\} \d+$/m);
    expect(metrics).toMatch(/^hubshift_month_forecast_usd\{kind="on_demand"\} [\d.e-]+$/m);
    for (const line of metrics.split('\n').filter((l) => l && !l.startsWith('#'))) expect(line).toMatch(/^hubshift_/);
  });
});
