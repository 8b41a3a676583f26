// Single sign-on in headless Chromium, for tests/it/console.rs: a person signs in to berth's
// console through the identity provider's own login page, then approves the CLI's device
// sign-in (`berth login --sso`, started by the Rust test) at the provider's device page.
// Prints "ok: <step>" for each step reached and, last, one line `session: <cookie value>` so the
// test can watch the session lose its group's access; any failed check throws and exits non-zero.

import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const url = process.env.BERTH_URL;
const user = process.env.SSO_USER;
const password = process.env.SSO_PASSWORD;
const deviceUrl = process.env.DEVICE_URL;
const shots = process.env.SCREENSHOT_DIR;
const ok = (step) => console.log(`ok: ${step}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await ctx.newPage();

// berth's sign-in page offers the provider.
await page.goto(url + "/");
await page.waitForURL("**/ui/login");
const button = page.getByRole("link", { name: /Sign in with Corp SSO/ });
await button.waitFor();
if (shots) await page.screenshot({ path: `${shots}/console-sso-login.png` });
await button.click();

// The provider's own login page: a wrong password first, then the right one.
await page.waitForSelector("input[name=login]");
assert.ok(!page.url().startsWith(url), `the provider's page, not berth's: ${page.url()}`);
await page.fill("input[name=login]", user);
await page.fill("input[name=password]", "not-the-password");
await page.click("button[type=submit]");
await page.waitForSelector("#error");
await page.fill("input[name=password]", password);
await page.click("button[type=submit]");
try {
  await page.waitForURL((u) => u.href.startsWith(url) && u.pathname.startsWith("/ui/orgs/"), { timeout: 15000 });
} catch (e) {
  throw new Error(`${user} did not land in the console: ${page.url()} ${await page.textContent("body")}`);
}
ok("signed in through the provider");
const body = await page.textContent("body");
assert.ok(body.includes(user), `the console names ${user}`);
assert.ok(page.url().includes("/ui/orgs/acme"), `acme through the group: ${page.url()}`);
ok("in acme through the group");

// The session cookie is HttpOnly: no page script can read it.
assert.equal(await page.evaluate(() => document.cookie.includes("berth_session")), false);
const cookies = await ctx.cookies(url);
const session = cookies.find((c) => c.name === "berth_session");
assert.ok(session && session.httpOnly && session.sameSite === "Strict", JSON.stringify(cookies));
assert.ok(!cookies.some((c) => c.name === "berth_sso" && c.value), "the sign-in's state cookie is gone");

// The CLI's device sign-in, approved at the provider's device page in the same browser.
if (deviceUrl) {
  await page.goto(deviceUrl);
  await page.getByRole("button", { name: "Continue", exact: true }).first().click();
  // Signed in at the provider a moment ago, or asked again: either ends at the success page.
  const done = await Promise.race([
    page.waitForSelector("#device-approved", { timeout: 15000 }).then(() => "approved"),
    page.waitForSelector("input[name=login]", { timeout: 15000 }).then(() => "login"),
  ]);
  if (done === "login") {
    await page.fill("input[name=login]", user);
    await page.fill("input[name=password]", password);
    await page.click("button[type=submit]");
    await page.waitForSelector("#device-approved", { timeout: 15000 });
  }
  ok("device sign-in approved");
}

console.log(`session: ${session.value}`);
await browser.close();
