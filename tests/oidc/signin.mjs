// Browserless sign-in through provider.mjs's pages, with Node's fetch and a
// tiny cookie jar, so tests can sign in without a browser.
//
//   node signin.mjs code AUTH_URL USER PASSWORD
//       Follows AUTH_URL (the full authorization URL the relying party made)
//       through the provider's redirects and login page and stops at the
//       first redirect that leaves the provider's origin: prints that
//       Location (the relying party's callback, e.g. ...?code=..&state=..&iss=..)
//       on stdout and exits 0.
//
//   node signin.mjs device VERIFICATION_URI USER_CODE USER PASSWORD
//   node signin.mjs device VERIFICATION_URI_COMPLETE - USER PASSWORD
//       Enters the user code, confirms, logs in; prints `approved` on stdout
//       and exits 0 when the provider shows its success page.
//
// Any failure (wrong password: the login page comes back; unknown user code;
// an error page; too many steps) exits 1 with the reason on stderr.

const [mode, ...args] = process.argv.slice(2);

function usage() {
  console.error('usage: node signin.mjs code AUTH_URL USER PASSWORD\n'
    + '       node signin.mjs device VERIFICATION_URI USER_CODE|- USER PASSWORD');
  process.exit(2);
}

function fail(msg) {
  console.error(`signin: ${msg}`);
  process.exit(1);
}

let startUrl;
let userCode;
let username;
let password;
if (mode === 'code' && args.length === 3) {
  [startUrl, username, password] = args;
} else if (mode === 'device' && args.length === 4) {
  [startUrl, userCode, username, password] = args;
  if (userCode === '-') userCode = undefined;
} else {
  usage();
}

let origin;
try {
  origin = new URL(startUrl).origin;
} catch {
  fail(`not a URL: ${startUrl}`);
}

// ---- cookie jar: name+path -> value; one origin only ---------------------

const jar = new Map();

function storeCookies(res, url) {
  for (const line of res.headers.getSetCookie()) {
    const [pair, ...attrs] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq < 1) continue;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    let path = '/';
    let expired = value === '';
    for (const attr of attrs) {
      const [k, v = ''] = attr.split('=');
      const key = k.trim().toLowerCase();
      if (key === 'path') path = v.trim() || '/';
      if (key === 'max-age' && Number(v) <= 0) expired = true;
      if (key === 'expires' && Date.parse(v) <= Date.now()) expired = true;
    }
    if (!path.startsWith('/')) path = new URL('.', url).pathname;
    const id = `${name}\u0000${path}`;
    if (expired) jar.delete(id);
    else jar.set(id, { name, value, path });
  }
}

function cookieHeader(url) {
  const p = new URL(url).pathname;
  return [...jar.values()]
    .filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
    .sort((a, b) => b.path.length - a.path.length)
    .map((c) => `${c.name}=${c.value}`)
    .join('; ');
}

// ---- html scraping ---------------------------------------------------------

const decode = (s) => s
  .replace(/&#x([0-9a-f]+);/gi, (_, h) => String.fromCodePoint(parseInt(h, 16)))
  .replace(/&#(\d+);/g, (_, d) => String.fromCodePoint(Number(d)))
  .replace(/&quot;/g, '"').replace(/&#39;|&apos;/g, "'")
  .replace(/&lt;/g, '<').replace(/&gt;/g, '>')
  .replace(/&amp;/g, '&');

function attributes(tag) {
  const out = {};
  const re = /([^\s=/>"']+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>"']+)))?/g;
  let m;
  while ((m = re.exec(tag))) out[m[1].toLowerCase()] = decode(m[2] ?? m[3] ?? m[4] ?? '');
  return out;
}

function firstForm(html) {
  const m = /<form\b([^>]*)>([\s\S]*?)<\/form>/i.exec(html);
  if (!m) return undefined;
  const form = attributes(m[1]);
  const inputs = [...m[2].matchAll(/<input\b([^>]*)>/gi)].map((i) => attributes(i[1]));
  return { action: form.action ?? '', method: (form.method ?? 'get').toUpperCase(), inputs };
}

function pageText(html) {
  const err = /<[^>]*class="[^"]*\b(?:error|red)\b[^"]*"[^>]*>([\s\S]*?)<\//i.exec(html);
  const text = (err ? err[1] : html.replace(/<(script|style)\b[\s\S]*?<\/\1>/gi, ''))
    .replace(/<[^>]*>/g, ' ');
  return decode(text).replace(/\s+/g, ' ').trim().slice(0, 300);
}

// ---- the walk ----------------------------------------------------------------

let url = startUrl;
let method = 'GET';
let body;
let loggedIn = false;
let codeEntered = false;

for (let step = 0; step < 25; step += 1) {
  const headers = { 'user-agent': 'berth-signin/1' };
  const cookie = cookieHeader(url);
  if (cookie) headers.cookie = cookie;
  if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';

  let res;
  try {
    res = await fetch(url, { method, headers, body, redirect: 'manual' });
  } catch (err) {
    fail(`${method} ${url}: ${err.cause?.message ?? err.message}`);
  }
  storeCookies(res, url);

  if (res.status >= 300 && res.status < 400) {
    const location = res.headers.get('location');
    if (!location) fail(`${res.status} without Location from ${url}`);
    const next = new URL(location, url);
    if (next.origin !== origin) {
      if (mode === 'code') {
        if (next.searchParams.has('error')) {
          console.error(`signin: the provider answered with error=${next.searchParams.get('error')}`
            + ` (${next.searchParams.get('error_description') ?? ''})`);
        }
        process.stdout.write(`${next.href}\n`);
        process.exit(0);
      }
      fail(`redirected off the provider to ${next.href}`);
    }
    const keep = res.status === 307 || res.status === 308;
    url = next.href;
    if (!keep) {
      method = 'GET';
      body = undefined;
    }
    continue;
  }

  const html = await res.text();
  if (mode === 'device' && /id="device-approved"|<title>Sign-in Success<\/title>/.test(html)) {
    process.stdout.write('approved\n');
    process.exit(0);
  }

  const form = firstForm(html);
  if (!form) fail(`HTTP ${res.status} at ${url} with no form: ${pageText(html)}`);

  const names = new Set(form.inputs.map((i) => i.name));
  const fields = new URLSearchParams();
  for (const input of form.inputs) {
    if (!input.name) continue;
    const type = (input.type ?? 'text').toLowerCase();
    if (['submit', 'button', 'image', 'reset'].includes(type)) continue;
    if ((type === 'checkbox' || type === 'radio') && !('checked' in input)) continue;
    let { value } = input;
    if (input.name === 'login' && names.has('password')) value = username;
    else if (input.name === 'password') value = password;
    else if (input.name === 'user_code' && type !== 'hidden') {
      if (!userCode) fail(`the provider asks for a user code at ${url}: ${pageText(html)}`);
      value = userCode;
    }
    fields.append(input.name, value ?? '');
  }

  if (names.has('password')) {
    if (loggedIn) fail(`login failed for ${username}: ${pageText(html)}`);
    loggedIn = true;
  }
  const asksCode = form.inputs.some((i) => i.name === 'user_code' && (i.type ?? 'text').toLowerCase() !== 'hidden');
  if (asksCode) {
    if (codeEntered) fail(`user code ${userCode} refused: ${pageText(html)}`);
    codeEntered = true;
  }
  if (res.status >= 400 && !names.has('password') && !asksCode) {
    fail(`HTTP ${res.status} at ${url}: ${pageText(html)}`);
  }

  const action = new URL(form.action || url, url);
  if (action.origin !== origin) fail(`form posts off the provider to ${action.href}`);
  if (form.method === 'POST') {
    url = action.href;
    method = 'POST';
    body = fields.toString();
  } else {
    for (const [k, v] of fields) action.searchParams.set(k, v);
    url = action.href;
    method = 'GET';
    body = undefined;
  }
}

fail('too many steps without reaching the end of the flow');
