// The README's console screenshots (run by scripts/console-screenshots, which prepares the
// broker): node console_screenshots.js HTTP_URL OUT_DIR
'use strict';
const path = require('node:path');
const chromium = require('./chromium');

const [http, out] = process.argv.slice(2);

(async () => {
  const browser = await chromium.launch();
  try {
    const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await page.goto(`${http}/console`);
    // 30 s of 2 s samples.
    await page.waitForTimeout(30000);
    await page.screenshot({ path: path.join(out, 'console-overview.png') });
    await page.goto(`${http}/console/topics/orders?partition=1&offset=0&view=json`);
    await page.waitForSelector('#records tbody tr');
    await page.screenshot({ path: path.join(out, 'console-topic.png') });
    await page.goto(`${http}/console/groups/billing`);
    await page.waitForSelector('#offsets tbody tr');
    await page.waitForTimeout(7000); // a few lag samples
    await page.screenshot({ path: path.join(out, 'console-group.png') });
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
