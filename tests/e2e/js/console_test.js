// The web console in Debian's headless Chromium, driven by Playwright (playwright-core: no
// browser download). Run by tests/e2e/test_console.py, which prepares the broker:
//   node console_test.js HTTP_URL BOOTSTRAP ARTIFACT_DIR
// The topic `orders` holds 3 records written by kcat; the group `billing` has committed
// offset 1 of its partition 0 and has no members. Steps print what they checked; any failed
// check or page error exits 1. Screenshots go to ARTIFACT_DIR.
'use strict';
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const chromium = require('./chromium');

const [http, bootstrap, artifacts] = process.argv.slice(2);
const base = `${http}/console`;

function kcatProduce(topic, line) {
  execFileSync('kcat', ['-P', '-b', bootstrap, '-t', topic, '-p', '0', '-K', '|'], { input: line + '\n' });
}

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch();
  const errors = [];
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console: ${m.text()}`); });
  const shot = (name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
  page.setDefaultTimeout(20000);

  try {
    // Overview: the broker's figures and live throughput.
    const summary = await (await fetch(`${http}/broker`)).json();
    await page.goto(base);
    await page.locator('#version', { hasText: summary.version }).waitFor();
    assert.equal(await page.locator('#data-dir').innerText(), summary.data_dir);
    const kafka = summary.listeners.find((l) => l.door === 'kafka');
    assert.equal(kafka.advertised, bootstrap);
    assert.deepEqual(await page.locator('tr[data-listener=PLAINTEXT] td').allInnerTexts(), ['kafka', 'PLAINTEXT', kafka.address, bootstrap]);
    assert.equal(await page.locator('tr[data-listener=HTTP] td').nth(2).innerText(), new URL(http).host);
    await page.waitForFunction(() => document.getElementById('rate-in')?.innerText.endsWith('/s'));
    await page.waitForSelector('.chart svg polyline', { state: 'attached' });
    console.log('overview: version, listeners, data dir, live rates');
    await shot('overview');

    // Keyboard: the first Tab reaches the skip link, Enter on a nav link routes.
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.className), 'skip');
    await page.focus('[data-nav=topics]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('tr[data-topic=orders]');
    assert.equal(new URL(page.url()).pathname, '/console/topics');
    const row = (await page.locator('tr[data-topic=orders] td').allInnerTexts()).slice(0, 3);
    assert.deepEqual(row, ['orders', '1', '3']);
    await page.waitForFunction(() => document.querySelector('tr[data-topic=orders] td.rate')?.innerText.endsWith('/s'));
    console.log('topics: the kcat topic listed with its 3 records and its produce rate');
    await shot('topics');

    // Create a topic; the app moves to its page. A second create shows the broker's error.
    await page.fill('#create-topic input[name=name]', 'console-made');
    await page.fill('#create-topic input[name=partitions]', '2');
    await page.click('#create-topic button[type=submit]');
    await page.waitForURL('**/console/topics/console-made');
    await page.waitForFunction(() => document.querySelectorAll('#partitions tbody tr').length === 2);
    await page.click('[data-nav=topics]');
    await page.fill('#create-topic input[name=name]', 'console-made');
    await page.click('#create-topic button[type=submit]');
    assert.match(await page.locator('#main .error').innerText(), /topic_already_exists/);
    console.log('create: made with 2 partitions; a duplicate shows topic_already_exists');

    // Grow it to 3 partitions and edit a config; a bad value shows the broker's error.
    await page.goto(`${base}/topics/console-made`);
    await page.fill('#add-partitions input[name=count]', '3');
    await page.click('#add-partitions button');
    await page.waitForFunction(() => document.querySelectorAll('#partitions tbody tr').length === 3);
    await page.fill('#configs input[name="retention.ms"]', '3600000');
    await page.click('#configs button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#configs input[name="retention.ms"]')?.dataset.was === '3600000');
    await page.fill('#configs input[name="retention.ms"]', 'soon');
    await page.click('#configs button[type=submit]');
    assert.match(await page.locator('#main .error').innerText(), /invalid_config/);
    const described = execFileSync('kcat', ['-L', '-b', bootstrap, '-t', 'console-made', '-J']).toString();
    assert.equal(JSON.parse(described).topics[0].partitions.length, 3);
    console.log('edit: 3 partitions, retention.ms saved, a bad value refused');

    // The message browser: a deep link, text, JSON and hex views.
    await page.goto(`${base}/topics/orders?partition=0&offset=0&view=json`);
    await page.waitForFunction(() => document.querySelectorAll('#records tbody tr').length === 3);
    assert.equal(await page.locator("#records tr[data-offset='0'] td.key").innerText(), 'k1');
    assert.equal(await page.locator("#records tr[data-offset='0'] td.value").innerText(), '{\n  "id": 1,\n  "item": "book"\n}');
    await page.selectOption('#browse select[name=mode]', 'hex');
    await page.click('#browse button[type=submit]');
    await page.locator("#records tr[data-offset='2'] td.value", { hasText: '68 69' }).waitFor();
    assert.equal(new URL(page.url()).search, '?partition=0&offset=0&view=hex');
    console.log('browser: deep link, JSON pretty-printed, hex view');
    await shot('topic');

    // Live tail over SSE: a record kcat writes now appears, as text (never markup).
    await page.click('#tail-toggle');
    await page.locator('#tail-status', { hasText: 'live' }).waitFor();
    kcatProduce('orders', 'tk|live <b>from kcat</b>');
    await page.locator('#tail tbody td.value', { hasText: 'live <b>from kcat</b>' }).waitFor();
    assert.equal(await page.locator('#tail b').count(), 0);
    console.log('tail: a kcat record arrived live');

    // Browse by time: a deep link with the tail record's timestamp starts at it.
    const ts = (await (await fetch(`${http}/topics/orders/partitions/0/records?offset=3&format=base64`)).json()).records[0].timestamp;
    await page.goto(`${base}/topics/orders?partition=0&time=${ts}`);
    await page.waitForFunction(() => document.querySelector('#records tbody tr')?.dataset.offset === '3');
    assert.equal(await page.inputValue('#browse input[name=offset]'), '3');
    console.log('browse by time: started at offset 3');

    // Produce from the form; kcat reads it back.
    await page.goto(`${base}/topics/console-made`);
    await page.fill('#produce input[name=key]', 'ck');
    await page.fill('#produce textarea[name=value]', 'hello from the browser');
    await page.fill('#produce textarea[name=headers]', 'h1=v1');
    await page.selectOption('#produce select[name=partition]', '1');
    await page.click('#produce button[type=submit]');
    assert.match(await page.locator('#produced').innerText(), /partition 1 at offset 0/);
    const read = execFileSync('kcat', ['-C', '-b', bootstrap, '-t', 'console-made', '-p', '1', '-o', 'beginning',
      '-c', '1', '-e', '-f', '%k|%s|%h|%p\n'], { timeout: 30000 }).toString();
    assert.equal(read, 'ck|hello from the browser|h1=v1|1\n');
    console.log('produce: written from the form, read back by kcat');

    // Groups: the group and its lag; reset to latest clears it.
    await page.click('[data-nav=groups]');
    await page.click('tr[data-group=billing] a');
    await page.locator('#group-lag', { hasText: '3' }).waitFor();
    assert.equal(await page.locator("tr[data-partition='orders/0'] td.lag").innerText(), '3');
    await page.waitForSelector('#lag-chart svg polyline', { state: 'attached' });
    await shot('group');
    await page.selectOption('#reset-offsets select[name=to]', 'latest');
    await page.click('#reset-offsets button[type=submit]');
    await page.locator('#group-lag', { hasText: '0' }).waitFor();
    console.log('groups: billing lag 3, reset to latest, lag 0');

    // A share group, its dead-letter topic, the reason headers, and a re-drive.
    await page.click('[data-nav=groups]');
    await page.click('tr[data-group=workers] a');
    await page.locator('#group-type', { hasText: 'share' }).waitFor();
    await page.click('#dlq a');
    await page.waitForURL((u) => u.pathname === '/console/topics/jobs.dlq');
    const dlqRow = page.locator("#records tr[data-offset='0']");
    await dlqRow.waitFor();
    const headers = await dlqRow.locator('td.headers').innerText();
    assert.match(headers, /_dlq\.errors\.disposition: CLIENT_REJECTED/);
    assert.match(headers, /_dlq\.errors\.original\.topic: jobs/);
    assert.match(headers, /trace: abc/);
    await shot('dlq');
    await dlqRow.locator('button.redrive').click();
    await dlqRow.locator('.redrive-status', { hasText: 'jobs/0 @ 1' }).waitFor();
    const back = execFileSync('kcat', ['-C', '-b', bootstrap, '-t', 'jobs', '-p', '0', '-o', '1', '-c', '1', '-e',
      '-f', '%k|%s|%h\n'], { timeout: 30000 }).toString();
    assert.equal(back, 'job-1|resize image 7|trace=abc\n');
    console.log('queues: share group, dead-letter reasons shown, re-driven to jobs @ 1 and read by kcat');

    // API errors are shown with their message; unknown pages say so.
    await page.goto(`${base}/topics/nope`);
    assert.match(await page.locator('#main .error').innerText(), /unknown_topic_or_partition/);
    await page.goto(`${base}/no/such/page`);
    assert.equal(await page.locator('h1').innerText(), 'Not found');
    console.log('errors: unknown topic and page shown');

    // Delete from the topic page (the confirmation accepted).
    page.once('dialog', (d) => d.accept());
    await page.goto(`${base}/topics/console-made`);
    await page.click('#delete-topic');
    await page.waitForURL('**/console/topics');
    await page.waitForSelector('tr[data-topic=orders]');
    assert.equal(await page.locator("tr[data-topic='console-made']").count(), 0);
    console.log('delete: console-made gone');

    // Phone width: nothing wider than the screen.
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, deviceScaleFactor: 2 });
    const small = await phone.newPage();
    small.on('pageerror', (e) => errors.push(`pageerror (phone): ${e.message}`));
    await small.goto(`${base}/topics/orders`);
    await small.waitForFunction(() => document.querySelectorAll('#records tbody tr').length === 4);
    const [sw, iw] = await small.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(sw <= iw, `page ${sw} px wide on a ${iw} px screen`);
    await small.screenshot({ path: path.join(artifacts, 'phone.png'), fullPage: true });
    console.log('phone: fits 390 px');

    assert.deepEqual(errors, []);
    console.log('ok');
  } catch (e) {
    await shot('failure').catch(() => {});
    console.log(`page text at failure:\n${await page.innerText('body').catch(() => '?')}`);
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
