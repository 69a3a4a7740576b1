// The admin console in a real browser: Debian's chromium driven by playwright-core.
//
//   FV_CONSOLE_PASSWORD=P FIELDVAULT_VAULT=DIR FIELDVAULT_PASSPHRASE=X FIELDVAULT_PASSWORD=Y \
//   node e2e.mjs --url https://127.0.0.1:PORT --pin sha256/BASE64 --admin NAME --screenshots DIR \
//                --fieldvault BIN --device-url https://127.0.0.1:PORT --device-user NAME
//
// Chromium trusts the console's self-signed certificate by its SPKI pin only
// (--ignore-certificate-errors-spki-list), as a device does. The suite logs in with TOTP
// (enrolling at the first login, then again with a code), creates users (one whose name is a
// script tag, which must show as text and run nothing), disables one through a step-up code;
// then a real device (the `fieldvault` command line, with the vault, passphrase and password
// in its environment) signs in to the device API, and the suite revokes it, revokes every
// session of its user, and wipes it, each time running the device's sync and checking the
// devices page shows the directive acknowledged (and the device's data gone after the wipe);
// then the health, rules and audit pages. It keeps a screenshot of each page, prints
// `N passed, N failed` and exits non-zero on a failure. Passwords come from the environment,
// never the command line (which other processes can read).

import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
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
const password = process.env.FV_CONSOLE_PASSWORD ?? '';
if (!password) throw new Error('FV_CONSOLE_PASSWORD is required');
const fieldvault = arg('fieldvault');
const deviceUrl = arg('device-url');
const deviceUser = arg('device-user');
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

// The device: the fieldvault command line, its vault, passphrase and password from this
// process's environment. Returns { status, out, err }.
function device(...args) {
  const r = spawnSync(fieldvault, args, { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { status: r.status, out: r.stdout ?? '', err: r.stderr ?? '' };
}

function deviceOk(...args) {
  const r = device(...args);
  if (r.status !== 0) throw new Error(`fieldvault ${args.join(' ')}: ${r.err.trim()}`);
  return r.out;
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

  // The device's row on the devices page, and the state of its newest directive.
  const deviceRow = () => page.locator('tr[data-device]', { hasText: deviceUser });
  const newestDirective = async () => {
    await page.goto(`${url}/devices?user=${encodeURIComponent(deviceUser)}`);
    const li = deviceRow().locator('td.directives li').first();
    return (await li.count()) === 1 ? li.getAttribute('data-state') : null;
  };
  // Clicks a form's button, answering the step-up page with a fresh code if it comes.
  const submit = async (button) => {
    await Promise.all([page.waitForNavigation(), button.click()]);
    if ((await page.locator('input[name=stepup_code]').count()) === 1) {
      await page.fill('input[name=stepup_code]', await freshCode());
      await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    }
  };
  const deviceLogin = () =>
    deviceOk('login', '--server', deviceUrl, '--user', deviceUser, '--pin', `sha256/${pin}`, '--device-name',
      'inspection tablet', '--json');

  await check('a real device signs in, syncs a document and is listed on the devices page', async () => {
    deviceOk('init', '--keystore', 'passphrase');
    deviceLogin();
    deviceOk('put', 'visits', 'v1', '{"site":"north gate","note":"fence down"}');
    deviceOk('sync', '--json');
    await page.goto(`${url}/devices?user=${encodeURIComponent(deviceUser)}`);
    const row = deviceRow();
    expect((await row.count()) === 1, 'one device row');
    expect((await row.innerText()).includes('inspection tablet'), 'its name');
    expect((await row.locator('td.state').innerText()).includes('signed in'), 'signed in');
    await shot('10-devices');
  });

  await check('revoking the device: the directive is queued, then acknowledged by the device at its sync', async () => {
    await submit(deviceRow().locator('form[action="/devices/revoke"] button'));
    expect((await page.content()).includes('sessions revoked'), 'says the sessions are revoked');
    expect((await newestDirective()) === 'queued', 'queued until the device hears of it');
    const sync = device('sync', '--json');
    expect(sync.status !== 0 && /logged this device out|log in/iu.test(sync.err), `the device is logged out: ${sync.err}`);
    expect((await newestDirective()) === 'acknowledged', 'acknowledged');
    expect((await deviceRow().locator('td.state').innerText()).includes('signed out'), 'signed out');
    await shot('11-device-revoked');
    // The device keeps its data and signs in again.
    expect(deviceOk('get', 'visits', 'v1').includes('north gate'), 'a revoke keeps the data');
    deviceLogin();
  });

  await check('the sessions page lists the user\'s sessions and revokes every live one (step-up)', async () => {
    await page.goto(`${url}/sessions?user=${encodeURIComponent(deviceUser)}`);
    expect((await page.locator('tr[data-session]').count()) === 2, 'two sessions: the revoked one and the new one');
    await shot('12-sessions');
    await submit(page.locator('form[action="/sessions/revoke-all"] button'));
    expect((await page.content()).includes('1 session of'), 'one live session revoked');
    const sync = device('sync', '--json');
    expect(sync.status !== 0, 'the device is refused until it signs in again');
    deviceLogin();
  });

  await check('a remote wipe (step-up) is carried out and acknowledged by the device: its data is gone', async () => {
    await page.goto(`${url}/devices?user=${encodeURIComponent(deviceUser)}`);
    await submit(deviceRow().locator('form[action="/devices/wipe"] button'));
    expect((await page.content()).includes('wipe queued'), 'says the wipe is queued');
    expect((await newestDirective()) === 'queued', 'queued');
    expect((await deviceRow().locator('td.state').innerText()).includes('retired (wiped)'), 'retired as wiped');
    const sync = device('sync', '--json');
    expect(sync.status !== 0, `the sync reports the wipe: ${sync.out}${sync.err}`);
    expect((await newestDirective()) === 'acknowledged', 'acknowledged');
    expect(device('get', 'visits', 'v1').status !== 0, 'the document is gone from the device');
    await shot('13-device-wiped');
  });

  await check('the health page shows the store answering and the device API\'s refusals', async () => {
    const response = await page.goto(`${url}/health`);
    expect(response.status() === 200, `status ${response.status()}`);
    expect((await page.locator('#store').innerText()).includes('answering'), 'the store answers');
    const hour = await page.locator('#errors tr', { hasText: 'last hour' }).innerText();
    expect(Number(hour.split(/\s+/u)[2]) > 0, `the refused syncs are counted: ${hour}`);
    await shot('14-health');
  });

  await check('the rules page shows the rules in force', async () => {
    const response = await page.goto(`${url}/rules`);
    expect(response.status() === 200, `status ${response.status()}`);
    await shot('15-rules');
  });

  await check('the audit page lists what the administrator did and the chain verifies', async () => {
    await page.goto(`${url}/audit`);
    // The newest records are on the last page.
    while ((await page.locator('a', { hasText: 'next page' }).count()) === 1) {
      await Promise.all([page.waitForNavigation(), page.locator('a', { hasText: 'next page' }).click()]);
    }
    const text = await page.content();
    for (const action of ['directive.issued', 'directive.acknowledged', 'session.revoke_all']) {
      expect(text.includes(action), `${action} is listed`);
    }
    await page.goto(`${url}/audit`);
    const first = await page.content();
    for (const action of ['console.login', 'user.add', 'user.disable']) {
      expect(first.includes(action), `${action} is listed`);
    }
    expect(dialogs.length === 0, `a script ran: ${dialogs}`);
    await shot('16-audit');
    await Promise.all([page.waitForNavigation(), page.click('a[href="/audit/verify"]')]);
    expect((await page.content()).includes('The chain verifies'), 'the chain check passes');
    await shot('17-audit-verified');
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
