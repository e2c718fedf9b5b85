// The console behind `--http-auth required`, opened by a browser that answers the door's Basic
// challenge with a user's credentials: every page works, its API calls and SSE included. Run by
// tests/e2e/test_console.py (which checks the 401 and its challenge without credentials):
//   node console_auth_test.js HTTP_URL USER PASSWORD
'use strict';
const assert = require('node:assert/strict');
const chromium = require('./chromium');

const [http, username, password] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch();
  try {
    const errors = [];
    const page = await (await browser.newContext({ httpCredentials: { username, password } })).newPage();
    page.setDefaultTimeout(20000);
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${http}/console/topics`);
    await page.waitForSelector('tr[data-topic=secured]');
    await page.click('tr[data-topic=secured] a');
    await page.locator("#records tr[data-offset='0'] td.value", { hasText: 'for admins only' }).waitFor();
    await page.click('#tail-toggle');
    await page.locator('#tail-status', { hasText: 'live' }).waitFor();
    assert.deepEqual(errors, []);
    console.log('with credentials: topics, records and the live tail');
    console.log('ok');
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
