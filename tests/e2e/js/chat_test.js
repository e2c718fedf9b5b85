// The chat example (examples/chat, served at /examples/chat) in Debian's headless Chromium with
// Playwright: two pages in one room exchange messages and see each other type, a third joins
// and sees the history; no page error. Run by tests/e2e/test_chat.py:
//   node chat_test.js HTTP_URL ARTIFACT_DIR
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const chromium = require('./chromium');

const [http, artifacts] = process.argv.slice(2);

async function main() {
  fs.mkdirSync(artifacts, { recursive: true });
  const browser = await chromium.launch();
  const errors = [];
  const open = async (user, viaForm) => {
    const page = await (await browser.newContext({ viewport: { width: 1000, height: 700 } })).newPage();
    page.setDefaultTimeout(20000);
    page.on('pageerror', (e) => errors.push(`${user}: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(`${user} console: ${m.text()}`); });
    if (viaForm) {
      await page.goto(`${http}/examples/chat`);
      await page.fill('#join input[name=user]', user);
      await page.fill('#join input[name=room]', 'r1');
      await page.click('#join button');
    } else {
      await page.goto(`${http}/examples/chat?room=r1&user=${user}`);
    }
    await page.locator('#status', { hasText: `${user} in #r1` }).waitFor();
    return page;
  };
  const texts = (page) => page.locator('#log li .text').allInnerTexts();
  try {
    const alice = await open('alice', true);
    const bob = await open('bob', false);
    await alice.fill('#send input[name=text]', 'hi bob');
    await alice.press('#send input[name=text]', 'Enter');
    await bob.locator('#log li .text', { hasText: 'hi bob' }).waitFor();
    await bob.locator('#send input[name=text]').pressSequentially('hello alice <i>not markup</i>');
    await alice.locator('#typing', { hasText: 'bob is typing' }).waitFor();
    await bob.press('#send input[name=text]', 'Enter');
    await alice.locator('#log li .text', { hasText: 'hello alice' }).waitFor();
    assert.equal(await alice.locator('#log i').count(), 0);
    assert.deepEqual(await texts(alice), ['hi bob', 'hello alice <i>not markup</i>']);
    assert.deepEqual(await texts(bob), ['hi bob', 'hello alice <i>not markup</i>']);
    console.log('alice and bob: messages both ways, typing shown');
    await alice.screenshot({ path: path.join(artifacts, 'chat-alice.png') });

    const carol = await open('carol', false);
    await carol.waitForFunction(() => document.querySelectorAll('#log li').length === 2);
    assert.deepEqual(await texts(carol), ['hi bob', 'hello alice <i>not markup</i>']);
    assert.deepEqual(await carol.locator('#log li .who').allInnerTexts(), ['alice', 'bob']);
    await carol.waitForFunction(() => document.querySelectorAll('#online li').length === 3);
    assert.deepEqual(await carol.locator('#online li').allInnerTexts(), ['alice', 'bob', 'carol']);
    assert.equal(await carol.locator('#join').isVisible(), false);
    await carol.fill('#send input[name=text]', 'carol here');
    await carol.press('#send input[name=text]', 'Enter');
    for (const p of [alice, bob, carol]) await p.locator('#log li .text', { hasText: 'carol here' }).waitFor();
    console.log('carol: joined later, saw the history, and is heard');
    await carol.screenshot({ path: path.join(artifacts, 'chat-carol.png') });
    assert.deepEqual(errors, []);
    console.log('ok');
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
