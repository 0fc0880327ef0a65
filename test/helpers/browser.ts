import type { Page } from 'playwright-core';

/** Chromium's error text for requests it failed because the machine's interfaces changed. */
export const NETWORK_CHANGED = 'net::ERR_NETWORK_CHANGED';

/**
 * page.goto, again when Chromium failed the navigation with net::ERR_NETWORK_CHANGED: it fails what it has in flight,
 * loopback requests included, when the machine's interfaces change, and the tests' sessions' veths come and go on the
 * browser's own machine (seen in CI on 2026-12-04: hub-gateway's tree page). At most three tries; any other failure at
 * once.
 */
export async function gotoSteady(page: Page, url: string): ReturnType<Page['goto']> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await page.goto(url);
    } catch (err) {
      if (attempt >= 3 || !String(err).includes(NETWORK_CHANGED)) throw err;
    }
  }
}
