// berth console: copy and download buttons for a new secret, and confirmations before
// destructive actions. Loaded from /ui/assets (the CSP allows no inline script). A secret is
// taken from the page it was shown on and never put in a URL.
"use strict";

function say(button, text) {
  const old = button.textContent;
  button.textContent = text;
  setTimeout(() => { button.textContent = old; }, 1500);
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-copy], button[data-download]");
  if (!b) return;
  const source = document.getElementById(b.dataset.copy || b.dataset.download);
  if (!source) return;
  const text = source.textContent;
  if (b.dataset.copy) {
    if (navigator.clipboard) {
      navigator.clipboard.writeText(text).then(() => say(b, "Copied"), () => say(b, "Select and copy"));
    } else {
      const range = document.createRange();
      range.selectNodeContents(source);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      say(b, "Selected: press Ctrl+C");
    }
  } else {
    const url = URL.createObjectURL(new Blob([text], { type: "application/octet-stream" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = b.dataset.filename || "download";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    say(b, "Downloaded");
  }
});

document.addEventListener("submit", (ev) => {
  const b = ev.submitter;
  if (b && b.dataset.confirm && !window.confirm(b.dataset.confirm)) ev.preventDefault();
});
