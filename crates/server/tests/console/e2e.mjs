// The admin console in a real browser: Debian's chromium driven by playwright-core.
//
//   node e2e.mjs --url https://127.0.0.1:PORT --pin sha256/BASE64 --admin NAME --password P
//                --screenshots DIR
//
// Chromium trusts the console's self-signed certificate by its SPKI pin only
// (--ignore-certificate-errors-spki-list), as a device does. The suite logs in with TOTP
// (enrolling at the first login, then again with a code), creates users (one whose name is a
// script tag, which must show as text and run nothing), disables one through a step-up code,
// and keeps a screenshot of each page. It prints `N passed, N failed` and exits non-zero on a
// failure.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[i + 1];
}

const url = arg('url');
const pin = arg('pin').replace(/^sha256\//u, '');
const admin = arg('admin');
const password = arg('password');
const shots = arg('screenshots');
fs.mkdirSync(shots, { recursive: true });

// RFC 4648 base32 and RFC 6238 TOTP (SHA-1, 6 digits, 30 s): what an authenticator app does.
function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of text.replace(/=+$/u, '').toUpperCase()) {
    const v = alphabet.indexOf(c);
    if (v < 0) throw new Error(`not base32: ${c}`);
    bits += v.toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

function totp(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac('sha1', secret).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const value = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return value.toString().padStart(6, '0');
}

const nowStep = () => Math.floor(Date.now() / 1000 / 30);
let secret = null;
let lastUsed = -1;

// A code the server has not seen used: the current step or the next (it accepts one step
// either side), waiting for the clock when both are spent.
async function freshCode() {
  for (;;) {
    const step = Math.max(nowStep(), lastUsed + 1);
    if (step <= nowStep() + 1) {
      lastUsed = step;
      return totp(secret, step);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push([name, null]);
    console.log(`ok   ${name}`);
  } catch (e) {
    results.push([name, e]);
    console.log(`FAIL ${name}: ${e.message}`);
  }
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--ignore-certificate-errors-spki-list=${pin}`,
  ],
});
const page = await browser.newPage();
const dialogs = [];
page.on('dialog', async (d) => {
  dialogs.push(d.message());
  await d.dismiss();
});
const shot = (name) => page.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });

try {
  await check('the login page is served with a strict CSP', async () => {
    const response = await page.goto(`${url}/`);
    expect(response.status() === 200, `status ${response.status()}`);
    const csp = response.headers()['content-security-policy'] ?? '';
    expect(csp.includes("default-src 'none'") && csp.includes("frame-ancestors 'none'"), `CSP: ${csp}`);
    await shot('01-login');
  });

  await check('the first login enrols TOTP through the QR page and reaches the users page', async () => {
    await page.fill('input[name=name]', admin);
    await page.fill('input[name=password]', password);
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    expect(page.url().endsWith('/enrol'), `at ${page.url()}`);
    expect((await page.locator('svg').count()) > 0, 'a QR code');
    await shot('02-enrol');
    const uri = (await page.locator('.secret').innerText()).trim();
    const m = /[?&]secret=([A-Z2-7]+)/u.exec(uri);
    expect(m, `an otpauth URI: ${uri}`);
    secret = base32(m[1]);
    await page.fill('input[name=code]', await freshCode());
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    expect(new URL(page.url()).pathname === '/users', `at ${page.url()}`);
    await shot('03-users');
  });

  await check('a wrong code is refused and the right one logs in again', async () => {
    await Promise.all([page.waitForNavigation(), page.click('form[action="/logout"] button')]);
    await page.fill('input[name=name]', admin);
    await page.fill('input[name=password]', password);
    await page.fill('input[name=code]', '000000' === totp(secret, nowStep()) ? '111111' : '000000');
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    expect(new URL(page.url()).pathname !== '/users', 'a wrong code does not log in');
    expect((await page.content()).includes('Wrong or already used code'), 'says why');
    await page.fill('input[name=name]', admin);
    await page.fill('input[name=password]', password);
    await page.fill('input[name=code]', await freshCode());
    await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    expect(new URL(page.url()).pathname === '/users', `at ${page.url()}`);
  });

  const hostile = '<script>alert("owned")</script>';
  await check('a user named with a script tag is refused by the name rule, the refusal showing the name as text', async () => {
    await page.fill('form[action="/users"][method="post"] input[name=user]', hostile);
    await page.fill('form[action="/users"][method="post"] input[name=password]', 'a long enough password');
    await Promise.all([page.waitForNavigation(), page.click('form[action="/users"][method="post"] button')]);
    const refusal = (await page.locator('p.error').textContent()) ?? '';
    expect(refusal.includes('<script>alert(') && refusal.includes('is not valid'), `the refusal: ${refusal}`);
    expect(dialogs.length === 0, `a script ran: ${dialogs}`);
    await shot('04-users-escaped');
  });

  await check('disabling a user goes through the step-up (the login code counts for 5 minutes)', async () => {
    await page.fill('form[action="/users"][method="post"] input[name=user]', 'field-worker');
    await page.fill('form[action="/users"][method="post"] input[name=password]', 'a long enough password');
    await page.fill('form[action="/users"][method="post"] input[name=roles]', 'inspector');
    await Promise.all([page.waitForNavigation(), page.click('form[action="/users"][method="post"] button')]);
    await page.goto(`${url}/users?q=field-worker`);
    const row = page.locator('tr', { hasText: 'field-worker' });
    await Promise.all([page.waitForNavigation(), row.locator('form[action="/users/disable"] button').click()]);
    // A code entered at login less than 5 minutes ago is the step-up; past that, a page asks
    // for a fresh one (the handler tests move the clock to see it).
    if ((await page.locator('input[name=stepup_code]').count()) === 1) {
      await shot('05-step-up');
      await page.fill('input[name=stepup_code]', await freshCode());
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    }
    expect((await page.content()).includes('disabled'), 'says it is disabled');
    await page.goto(`${url}/users?q=field-worker`);
    const after = page.locator('tr', { hasText: 'field-worker' });
    expect((await after.locator('form[action="/users/enable"]').count()) === 1, 'now offers enable');
    await shot('06-disabled');
  });

  await check('the audit page lists what the administrator did and the chain verifies', async () => {
    await page.goto(`${url}/audit`);
    const text = await page.content();
    for (const action of ['console.login', 'user.add', 'user.disable']) {
      expect(text.includes(action), `${action} is listed`);
    }
    expect(dialogs.length === 0, `a script ran: ${dialogs}`);
    await shot('08-audit');
    await Promise.all([page.waitForNavigation(), page.click('a[href="/audit/verify"]')]);
    expect((await page.content()).includes('The chain verifies'), 'the chain check passes');
    await shot('09-audit-verified');
  });

  await check('a page past the end is an empty page', async () => {
    const response = await page.goto(`${url}/users?page=999`);
    expect(response.status() === 200, `status ${response.status()}`);
    await shot('07-past-the-end');
  });
} finally {
  await browser.close();
}

const failed = results.filter(([, e]) => e).length;
console.log(`${results.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
