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
  const planned = body.state === "planned";
  set("finished", body.finished);
  if (planned) set("total", body.total);
  set("so_far", body.so_far || 0);
  set("pace", body.pace || "");
  for (const [state, n] of Object.entries(body.counts || {})) set(state, n);
  root.querySelectorAll("[data-when]").forEach((el) => {
    el.hidden = el.dataset.when !== (planned ? "planned" : "planning");
  });
  const waiting = body.state === "requested" ? "Bestilt, venter på en worker" : "Planlægges";
  set("status", body.done ? "Færdig" : planned ? "I gang" : waiting);
  // While a batch is planned, its size is not known: the bar shows activity, not a share.
  root.querySelectorAll('[data-field="bar"]').forEach((bar) => {
    if (planned) {
      bar.max = Math.max(body.total, 1);
      bar.value = body.finished;
      bar.textContent = `${body.finished} af ${body.total}`;
    } else {
      bar.removeAttribute("value");
      bar.textContent = "Planlægges";
    }
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
