// Live progress: every element with data-progress="URL" polls that URL (JSON from the
// console) and fills its children marked data-field. No inline script anywhere: the page's
// Content-Security-Policy allows only this file.
"use strict";

const danish = new Intl.NumberFormat("da-DK");

function fill(root, body) {
  const set = (name, value) => {
    root.querySelectorAll(`[data-field="${name}"]`).forEach((el) => {
      el.textContent = typeof value === "number" ? danish.format(value) : value;
    });
  };
  set("finished", body.finished);
  set("total", body.total);
  for (const [state, n] of Object.entries(body.counts || {})) set(state, n);
  set("status", body.done ? "Færdig" : body.state === "requested" ? "Bestilt, venter på en worker" : "I gang");
  root.querySelectorAll('[data-field="bar"]').forEach((bar) => {
    bar.max = Math.max(body.total, 1);
    bar.value = body.finished;
    bar.textContent = `${body.finished} af ${body.total}`;
  });
  root.dataset.done = body.done ? "true" : "false";
}

async function poll(root) {
  const url = root.dataset.progress;
  for (;;) {
    try {
      const reply = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (reply.ok) {
        const body = await reply.json();
        fill(root, body);
        if (body.done) return;
      }
    } catch (err) {
      // The server is away for a moment: keep the last figures and try again.
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-progress]").forEach((root) => poll(root));
});
