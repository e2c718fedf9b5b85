// Debian's chromium under playwright-core (no browser download), headless, as the browser
// tests and the screenshot script launch it. CHROMIUM overrides the executable.
'use strict';
const { chromium } = require('playwright-core');

exports.launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
