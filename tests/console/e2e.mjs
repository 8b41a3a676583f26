// Drives berth's web console in headless Chromium as a new user would, for
// tests/it/console.rs (which sets the scene and checks the outcome through the API).
// Prints "ok: <step>" for each step reached; any failed check throws and exits non-zero.

import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import assert from "node:assert/strict";
import path from "node:path";

const url = process.env.BERTH_URL;
const host = process.env.BERTH_HOST;
const work = process.env.WORK_DIR;
const shots = process.env.SCREENSHOT_DIR;
const xss = process.env.XSS;
const ok = (step) => console.log(`ok: ${step}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

// Every URL the browser asks for, to prove no secret is ever in one.
const urls = [];
const dialogs = [];
async function newPage(viewport = { width: 1280, height: 900 }) {
  const ctx = await browser.newContext({ acceptDownloads: true, viewport });
  const page = await ctx.newPage();
  page.on("request", (r) => urls.push(r.url()));
  page.on("dialog", async (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    await (d.type() === "confirm" ? d.accept() : d.dismiss());
  });
  return page;
}

async function signIn(page, user, password) {
  await page.goto(url + "/");
  await page.waitForURL("**/ui/login");
  // By keyboard: the user name field has focus; Tab to the password; Enter signs in.
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "username");
  await page.keyboard.type(user);
  await page.keyboard.press("Tab");
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
  try {
    await page.waitForURL((u) => u.pathname.startsWith("/ui/orgs/"), { timeout: 10000 });
  } catch (e) {
    throw new Error(`${user} could not sign in: ${await page.textContent("body")}`);
  }
}

/// Whether skopeo pulls with `authfile`: true, or false when the registry refused the
/// credentials. Any other failure (a 500, a dead server, a missing tool) fails the test.
function skopeoInspect(authfile) {
  try {
    execFileSync("skopeo", ["inspect", "--tls-verify=false", "--authfile", authfile,
      `docker://${host}/acme/app:1`], { stdio: "pipe" });
    return true;
  } catch (e) {
    const said = `${e.stderr ?? ""}${e.stdout ?? ""}`;
    assert.match(said, /unauthorized|authentication required/i,
      `skopeo failed, but not because the credentials were refused:\n${said || e}`);
    return false;
  }
}

/// The Secret's .dockerconfigjson, as an auth file for skopeo.
function authfileFrom(secretYaml, name) {
  const line = secretYaml.split("\n").find((l) => l.trim().startsWith(".dockerconfigjson:"));
  assert.ok(line, `no .dockerconfigjson in\n${secretYaml}`);
  const json = Buffer.from(line.split(":")[1].trim(), "base64").toString();
  const file = path.join(work, name);
  writeFileSync(file, json);
  return file;
}

async function download(page, id) {
  const [dl] = await Promise.all([
    page.waitForEvent("download"),
    page.click(`button[data-download="${id}"]`),
  ]);
  const file = path.join(work, `${id}-${Date.now()}-${dl.suggestedFilename()}`);
  await dl.saveAs(file);
  return readFileSync(file, "utf8");
}

// --- Olivia, owner of acme -------------------------------------------------------------------
const page = await newPage();
let firstPageBytes = 0;
page.on("response", async (r) => {
  if (r.url().includes("/ui/login") || r.url().includes("/ui/assets/")) {
    try { firstPageBytes += (await r.body()).length; } catch { /* redirects have no body */ }
  }
});
await signIn(page, "olivia", process.env.OLIVIA_PASSWORD);
assert.ok(firstPageBytes > 0 && firstPageBytes < 100 * 1024, `first page ${firstPageBytes} bytes`);
await page.waitForSelector("text=olivia");
assert.equal(await page.inputValue("#org-switch"), "acme");
ok("signed in");

// Olivia belongs to acme only: "other" is neither offered nor shown.
const offered = await page.$$eval("#org-switch option", (o) => o.map((x) => x.value));
assert.deepEqual(offered, ["acme"]);
const other = await page.goto(url + "/ui/orgs/other");
assert.equal(other.status(), 404);
const otherRobots = await page.goto(url + "/ui/orgs/other/robots");
assert.equal(otherRobots.status(), 403);
ok("other org hidden");

// A robot whose description is a script: it renders as text.
await page.goto(url + "/ui/orgs/acme");
await page.click("nav >> text=Robots");
// The browser checks names itself: every pattern compiles as browsers compile it (the v flag),
// and a name the server refuses is refused before it is sent.
for (const p of await page.$$eval("input[pattern]", (l) => l.map((i) => i.pattern))) {
  assert.doesNotThrow(() => new RegExp(`^(?:${p})$`, "v"), `pattern ${p} does not compile`);
}
await page.fill("#robot-name", "Bad Name");
assert.equal(await page.$eval("#robot-name", (i) => i.checkValidity()), false, "the browser lets a bad name through");
await page.fill("#robot-name", "puller");
assert.equal(await page.$eval("#robot-name", (i) => i.checkValidity()), true);
await page.fill("#robot-description", xss);
await page.click("text=Create robot");
await page.waitForURL("**/ui/orgs/acme/robots/puller");
assert.equal((await page.textContent("p.description")).trim(), xss);
await page.goto(url + "/ui/orgs/acme/robots");
assert.equal((await page.textContent("span.description")).trim(), xss);
ok("robot created");

// A Reader binding for it, org-wide.
await page.goto(url + "/ui/orgs/acme/robots/puller");
await page.selectOption("#b-role", "Reader");
await page.click("text=Add binding");
await page.waitForURL("**/ui/orgs/acme/robots/puller");
await page.waitForSelector("#bindings ~ ul >> text=Reader org-wide");
ok("binding added");

// A workload trust: added with a claim, refused when unsafe (plain http off loopback), deleted.
// The robot page's forms are behind disclosures, closed until wanted.
assert.equal(await page.isVisible("#tr-name"), false, "the trust form starts closed");
await page.click('summary:has-text("New trust")');
await page.fill("#tr-name", "github-main");
await page.fill("#tr-issuer", "https://token.actions.githubusercontent.com");
await page.fill("#tr-subject", "repo:acme/app:ref:refs/heads/main");
await page.fill("#tr-claims", "repository_owner=acme");
await page.click('button:has-text("Add trust")');
await page.waitForSelector("text=Added trust github-main");
const trustRow = await page.textContent("#trusts ~ div table");
assert.ok(trustRow.includes("repo:acme/app:ref:refs/heads/main") && trustRow.includes("repository_owner=acme"), trustRow);
await page.click('summary:has-text("New trust")');
await page.fill("#tr-name", "unsafe");
await page.fill("#tr-issuer", "http://issuer.example");
await page.fill("#tr-subject", "x");
const unsafe = await Promise.all([
  page.waitForResponse((r) => r.url().endsWith("/trusts") && r.request().method() === "POST"),
  page.click('button:has-text("Add trust")'),
]);
assert.equal(unsafe[0].status(), 400, "an http issuer off loopback is refused");
assert.equal(await page.inputValue("#tr-issuer"), "http://issuer.example", "the refused form is open, its values kept");
await page.goto(url + "/ui/orgs/acme/robots/puller");
await page.click('#trusts ~ div button:has-text("Delete")');
await page.waitForSelector("text=Deleted trust github-main");
assert.equal(await page.$("#trusts ~ div table"), null, "the trust is gone");
ok("trust added and deleted");

// A token: the secret page offers its files; the pull secret pulls with skopeo.
await page.click('summary:has-text("New token")');
await page.fill("#t-name", "deploy");
await page.fill("#t-expires", "7d");
await page.click("text=Create token");
await page.waitForSelector("text=shown only on this page");
assert.ok(page.url().endsWith("/ui/orgs/acme/new-secret"), `a GET after the POST: ${page.url()}`);
const tokenFile = JSON.parse(await download(page, "token-file"));
assert.ok(tokenFile.accessId && tokenFile.token.startsWith("bthr_"));
const secret1 = await download(page, "pull-secret");
assert.match(secret1, /kind: Secret/);
assert.match(secret1, /kubernetes.io\/dockerconfigjson/);
const imageConfig = await download(page, "image-config");
assert.match(imageConfig, /kind: ImageConfig/);
assert.match(imageConfig, new RegExp(`prefix: ${host}/acme`));
const robotConfig = await download(page, "robot-config");
assert.match(robotConfig, new RegExp(tokenFile.accessId));
ok("token created");
// A reload shows the secret no more and makes nothing: the robot still has one token.
const reloaded = await page.reload();
assert.equal(reloaded.status(), 410, "a reload of the secret page");
assert.ok((await page.textContent("main")).includes("shown once"), "the reload says the secret was shown once");
assert.ok(!(await page.content()).includes(tokenFile.token), "the secret is not shown again");
await page.goto(url + "/ui/orgs/acme/robots/puller");
assert.equal((await page.$$("#tokens ~ div tbody tr")).length, 1, "the reload made no second token");
ok("reload mints nothing");
const auth1 = authfileFrom(secret1, "auth1.json");
assert.ok(skopeoInspect(auth1), "skopeo pulls with the console's pull secret");
ok("pulled with the pull secret");

// The robot page now lists the token (never its secret); screenshot for the README.
await page.goto(url + "/ui/orgs/acme/robots/puller");
const robotHtml = await page.content();
assert.ok(robotHtml.includes("deploy"));
assert.ok(!robotHtml.includes(tokenFile.token), "the secret is shown only once");
await page.screenshot({ path: path.join(shots, "console-robot.png"), fullPage: true });

// Rotate with no overlap: the old secret stops, the new one pulls.
await page.fill('input[name="overlap"]', "0");
await page.click('button:has-text("Rotate")');
await page.waitForSelector("text=shown only on this page");
await page.waitForSelector("text=stopped working at once");
const secret2 = await download(page, "pull-secret");
const auth2 = authfileFrom(secret2, "auth2.json");
assert.notEqual(secret1, secret2);
assert.ok(skopeoInspect(auth2), "the rotated secret pulls");
assert.ok(!skopeoInspect(auth1), "the old secret is refused after a rotation without overlap");
ok("rotated");

// Revoke (the confirmation is accepted): the new secret stops too.
await page.goto(url + "/ui/orgs/acme/robots/puller");
await page.click('#tokens ~ div button:has-text("Revoke")');
await page.waitForSelector("text=Revoked the token");
assert.ok(dialogs.some((d) => d.startsWith("confirm: Revoke deploy")), dialogs.join("\n"));
let refused = false;
for (let i = 0; i < 30 && !refused; i++) {
  refused = !skopeoInspect(auth2);
  if (!refused) await new Promise((r) => setTimeout(r, 1000));
}
assert.ok(refused, "the revoked token is refused");
ok("revoked");

// The audit trail shows what Olivia did, filterable by action.
await page.goto(url + "/ui/orgs/acme/audit");
const audit = await page.textContent("table.audit");
for (const a of ["robot.create", "binding.put", "robot_token.create", "credential.rotate", "credential.delete"]) {
  assert.ok(audit.includes(a), `audit lacks ${a}:\n${audit}`);
}
await page.fill("#f-action", "robot.create");
await page.click('form.filters button[type="submit"]');
const filtered = await page.$$eval("table.audit tbody tr", (rows) => rows.map((r) => r.textContent));
assert.ok(filtered.length >= 1 && filtered.every((r) => r.includes("robot.create")), filtered.join("\n"));
ok("audit shows the events");

// Repositories: tags with digest, platforms, referrers; the annotation renders as text.
await page.goto(url + "/ui/orgs/acme/repositories");
await page.click("text=acme/app");
await page.waitForURL("**/ui/orgs/acme/repositories/acme/app");
const repoText = await page.textContent("main");
assert.ok(repoText.includes("linux/arm64/v8"), "platforms of the index");
assert.ok(repoText.includes("application/spdx+json"), "the SBOM referrer");
assert.ok(repoText.includes(process.env.IMAGE_DIGEST), "the digest");
assert.equal((await page.textContent("span.annotation")).trim(), xss);
assert.equal(await page.evaluate(() => window.__xss), undefined, "no injected script ran");
assert.ok(!dialogs.some((d) => d.startsWith("alert")), dialogs.join("\n"));
ok("xss rendered as text");
await page.click('tr[aria-label="tag old"] button:has-text("Delete tag")');
await page.waitForSelector("text=Deleted tag old");
assert.equal(await page.$('tr[aria-label="tag old"]'), null);
ok("tag deleted");

// 60 tags: a page of 50, newest push first, a pager, a filter, a sort by name; each row has
// the image's size and a button that copies its pull command.
const rows = async () => page.$$eval("table.tags tbody tr", (r) => r.map((x) => x.getAttribute("aria-label")));
let shown = await rows();
assert.equal(shown.length, 50, shown.join(","));
assert.deepEqual(shown.slice(0, 3).sort(), ["tag 1", "tag annotated", "tag multi"], "newest push first: " + shown.join(","));
assert.ok(shown.slice(3).every((t) => t.startsWith("tag rc-")), shown.join(","));
assert.match(await page.textContent("nav.pager"), /Page 1 of 2\s*·\s*58 in all/);
const pull = await page.textContent('tr[aria-label="tag 1"] code[id^="pull-"]');
assert.equal(pull, `docker pull ${host}/acme/app:1`);
assert.ok(await page.$('tr[aria-label="tag 1"] button[data-copy]:has-text("Copy pull")'), "a copy-pull button");
assert.match(await page.textContent('tr[aria-label="tag multi"]'), /linux\/arm64\/v8\s*\d+(\.\d)? KiB/, "a platform with its size");
await page.screenshot({ path: path.join(shots, "console-tags.png"), fullPage: false });
await page.click('nav.pager a[rel="next"]');
await page.waitForURL("**page=2**");
assert.equal((await rows()).length, 8);
await page.fill("#list-q", "RC-0");
await page.selectOption("#list-sort", "name");
await page.click('form.filters button:has-text("Show")');
await page.waitForURL("**q=RC-0**");
shown = await rows();
assert.deepEqual(shown, Array.from({ length: 10 }, (_, i) => `tag rc-0${i}`), shown.join(","));
assert.match(await page.textContent("nav.pager"), /Page 1 of 1\s*·\s*10 in all/);
ok("tags paged, filtered and sorted");

// A refused form is shown again, with the refusal beside it and what was typed kept.
await page.goto(url + "/ui/orgs/acme/access");
await page.fill("#nr-name", "broken");
const yamlTyped = "- resources: [repositories]\n  verbs: [pull\n";
await page.fill("#nr-rules", yamlTyped);
const [refusedForm] = await Promise.all([
  page.waitForResponse((r) => r.url().endsWith("/ui/orgs/acme/roles") && r.request().method() === "POST"),
  page.click('button:has-text("Create role")'),
]);
assert.equal(refusedForm.status(), 400);
assert.match(await page.textContent('form[action="/ui/orgs/acme/roles"] .form-error'), /not YAML/);
assert.equal(await page.inputValue("#nr-rules"), yamlTyped, "the YAML typed is kept");
assert.equal(await page.inputValue("#nr-name"), "broken");
assert.ok(await page.$('nav[aria-label="sections"]'), "the page keeps its navigation");
assert.equal(await page.evaluate(() => document.activeElement.className), "form-error", "the refusal has focus (and is in view)");
await page.screenshot({ path: path.join(shots, "console-form-error.png"), fullPage: false });
await page.goto(url + "/ui/orgs/acme/robots");
await page.fill("#robot-name", "puller");
await page.fill("#robot-description", "a second one");
const [dup] = await Promise.all([
  page.waitForResponse((r) => r.url().endsWith("/ui/orgs/acme/robots") && r.request().method() === "POST"),
  page.click('button:has-text("Create robot")'),
]);
assert.equal(dup.status(), 409);
assert.match(await page.textContent('form[action="/ui/orgs/acme/robots"] .form-error'), /already exists/);
assert.equal(await page.inputValue("#robot-description"), "a second one");
assert.equal(await page.$("main > p.error"), null, "shown once, beside its form");
// The pattern of name fields compiles under the v flag browsers use.
assert.equal(await page.evaluate(() => document.querySelector("#robot-name").validity.valid), true);
await page.fill("#robot-name", "Not-Valid");
assert.equal(await page.evaluate(() => document.querySelector("#robot-name").validity.patternMismatch), true);
ok("form errors inline");

// A cross-site form post, from a page on another origin, in Olivia's browser: refused.
const evil = createServer((req, res) => {
  res.setHeader("content-type", "text/html");
  res.end(`<form id=f method=post action="${url}/ui/orgs/acme/robots">
    <input name=name value=evil><input name=_csrf value=guess></form>
    <script>document.getElementById("f").submit()</script>`);
});
await new Promise((r) => evil.listen(0, "127.0.0.1", r));
const evilUrl = `http://localhost:${evil.address().port}/`;
const [answer] = await Promise.all([
  page.waitForResponse((r) => r.url().startsWith(`${url}/ui/orgs/acme/robots`) && r.request().method() === "POST"),
  page.goto(evilUrl),
]);
assert.equal(answer.status(), 403, "a cross-site post is refused");
evil.close();
ok("cross-site post refused");

// Her own API key: created once, rotated with an overlap (the old one works until then).
await page.goto(url + "/ui/orgs/acme/credentials");
await page.fill("#ok-name", "laptop");
await page.click('button:has-text("Create API key")');
await page.waitForSelector("text=shown only on this page");
assert.match(await page.textContent("#pull-secret-h ~ p.warning"), /your own key/, "a personal key's pull secret is offered with a warning");
const key1 = JSON.parse(await download(page, "token-file"));
assert.ok(key1.apikey.startsWith("btha_"));
await page.goto(url + "/ui/orgs/acme/credentials");
await page.fill('#own-keys ~ div input[name="overlap"]', "1h");
await page.click('#own-keys ~ div button:has-text("Rotate")');
await page.waitForSelector("text=keeps working until");
assert.match(await page.textContent("main"), /keeps working until \d{4}-\d\d-\d\d \d\d:\d\d UTC;/, "one time format");
const key2 = JSON.parse(await download(page, "token-file"));
assert.notEqual(key1.apikey, key2.apikey);
for (const k of [key1.apikey, key2.apikey]) {
  const r = await fetch(url + "/api/v1/auth/whoami", {
    headers: { authorization: "Basic " + Buffer.from(`olivia:${k}`).toString("base64") },
  });
  assert.equal(r.status, 200, "both keys work during the overlap");
}
// A second rotation with a 2 s overlap: the first key ends at once (one previous secret is
// kept), the second when its overlap ends, the third goes on.
await page.goto(url + "/ui/orgs/acme/credentials");
await page.fill('#own-keys ~ div input[name="overlap"]', "2s");
await page.click('#own-keys ~ div button:has-text("Rotate")');
await page.waitForSelector("text=keeps working until");
assert.match(await page.textContent("main"), /keeps working until \d{4}-\d\d-\d\d \d\d:\d\d UTC;/, "one time format");
const key3 = JSON.parse(await download(page, "token-file"));
const whoami = async (k) => (await fetch(url + "/api/v1/auth/whoami", {
  headers: { authorization: "Basic " + Buffer.from(`olivia:${k}`).toString("base64") },
})).status;
assert.equal(await whoami(key1.apikey), 401, "the key two rotations back is refused");
assert.equal(await whoami(key2.apikey), 200, "the previous key works during its overlap");
let ended = false;
for (let i = 0; i < 20 && !ended; i++) {
  await new Promise((r) => setTimeout(r, 500));
  ended = (await whoami(key2.apikey)) === 401;
}
assert.ok(ended, "the previous key is refused once its overlap ended");
assert.equal(await whoami(key3.apikey), 200, "the new key works after the overlap");
ok("api key rotated with overlap");

// Members and a new organization, as a new owner would.
await page.goto(url + "/ui/orgs/acme/access");
assert.ok((await page.textContent("#members ~ div")).includes("rita"), "members listed");
await page.click("text=Organizations");
await page.fill("#org-name", "labs");
await page.click('button:has-text("Create organization")');
await page.waitForURL("**/ui/orgs/labs");
assert.deepEqual(await page.$$eval("#org-switch option", (o) => o.map((x) => x.value)), ["acme", "labs"]);
await page.selectOption("#org-switch", "acme");
await page.click('form.switch button[type="submit"]');
await page.waitForURL("**/ui/orgs/acme");
ok("organization created and switched");

// The YAML of roles and bindings, as `berth apply -f` takes it (console.rs applies it).
await page.goto(url + "/ui/orgs/acme/access");
const [yamlDl] = await Promise.all([page.waitForEvent("download"), page.click("a[download]")]);
await yamlDl.saveAs(path.join(work, "access.yaml"));
const accessYaml = readFileSync(path.join(work, "access.yaml"), "utf8");
assert.ok(accessYaml.includes("kind: Binding") && accessYaml.includes("subject: robot/puller"), accessYaml);
assert.equal(accessYaml.trim(), (await page.textContent("#apply-yaml")).trim(), "the page shows what it downloads");
ok("apply yaml downloaded");

// The overview, with a credential expiring within 14 days, for the README.
await page.goto(url + "/ui/orgs/acme/robots/puller");
await page.click('summary:has-text("New token")');
await page.fill("#t-name", "nightly");
await page.fill("#t-expires", "10d");
await page.click("text=Create token");
await page.waitForSelector("text=shown only on this page");
await page.goto(url + "/ui/orgs/acme");
const overview = await page.textContent("main");
assert.ok(/1\s*credentials expiring within 14 days/.test(overview), overview);
assert.ok(/\d+\s*failed logins with acme's credentials in the last 24 h/.test(overview), "failed logins counted per organization: " + overview);
assert.ok(await page.$('#expiring ~ div >> text=nightly'), "the expiring token is listed");
await page.screenshot({ path: path.join(shots, "console-overview.png"), fullPage: true });

// Phone-sized: nothing wider than the screen outside the scrolling tables.
const phone = await newPage({ width: 390, height: 844 });
await signIn(phone, "olivia", process.env.OLIVIA_PASSWORD);
for (const p of ["/ui/orgs/acme", "/ui/orgs/acme/robots/puller", "/ui/orgs/acme/audit"]) {
  await phone.goto(url + p);
  const width = await phone.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `${p} is ${width}px wide on a phone`);
}
ok("phone layout");

// Sign out: the session ends (the old cookie no longer works).
const cookies = await page.context().cookies();
await page.click('button:has-text("Sign out")');
await page.waitForURL("**/ui/login");
const session = cookies.filter((c) => c.name.includes("berth_session"));
assert.equal(session.length, 1, `one session cookie to replay: ${cookies.map((c) => c.name)}`);
await page.context().addCookies(session);
await page.goto(url + "/ui/orgs/acme");
assert.ok(page.url().endsWith("/ui/login"), "a signed-out session is over");
ok("signed out");

// --- Rita, a Reader in acme ------------------------------------------------------------------
const rita = await newPage();
await signIn(rita, "rita", process.env.RITA_PASSWORD);
await rita.goto(url + "/ui/orgs/acme/repositories/acme/app");
assert.equal(await rita.$('button:has-text("Delete tag")'), null, "a Reader is offered no delete");
// She opens the Manager's actions anyway, with her own valid CSRF token.
const csrf = await rita.inputValue('input[name="_csrf"]');
const post = async (action, fields) => rita.evaluate(async ([a, f]) => {
  const r = await fetch(a, { method: "POST", body: new URLSearchParams(f), redirect: "manual" });
  return { status: r.status, text: await r.text() };
}, [action, fields]);
const create = await post("/ui/orgs/acme/robots", { _csrf: csrf, name: "rita-bot" });
assert.equal(create.status, 403, create.text);
assert.match(create.text, /not allowed/);
const del = await post("/ui/orgs/acme/tags/delete", { _csrf: csrf, repository: "acme/app", tag: "1" });
assert.equal(del.status, 403, del.text);
const token = await post("/ui/orgs/acme/robots/puller/tokens", { _csrf: csrf, name: "stolen" });
assert.equal(token.status, 403, token.text);
const usersPage = await rita.goto(url + "/ui/users");
assert.equal(usersPage.status(), 403, "only server admins manage users");
ok("reader refused");

// No secret was ever in a URL the browser asked for.
assert.ok(!urls.some((u) => u.includes("bthr_") || u.includes(tokenFile.token)), "a secret in a URL");
await browser.close();
