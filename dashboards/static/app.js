// Fills the panels from /api/summary (figures computed server-side, display strings included) every 2 s.
"use strict";

function text(el, value) { if (el.textContent !== value) el.textContent = value; }

function row(cells) {
  const tr = document.createElement("tr");
  for (const [cls, content] of cells) {
    const td = document.createElement("td");
    td.className = cls;
    if (content instanceof Node) td.appendChild(content); else td.textContent = content;
    tr.appendChild(td);
  }
  return tr;
}

function bar(share) {
  const outer = document.createElement("div");
  outer.className = "hbar";
  const inner = document.createElement("div");
  inner.className = "hbar-fill";
  inner.style.width = Math.max(0, Math.min(100, share * 100)).toFixed(1) + "%";
  outer.appendChild(inner);
  return outer;
}

function render(data) {
  const d = data.display;
  document.querySelectorAll("[data-field]").forEach((el) => {
    const v = d[el.dataset.field];
    if (typeof v === "string") text(el, v);
  });
  text(document.getElementById("as-of"), data.as_of.replace("T", " ").slice(0, 19) + " UTC");

  const latency = data.avg_settlement_ms;
  const fill = document.getElementById("latency-fill");
  fill.style.width = latency == null ? "0%" : Math.min(100, (latency / (data.target_ms * 1.5)) * 100).toFixed(1) + "%";
  fill.classList.toggle("over", latency != null && latency > data.target_ms);

  document.getElementById("success-fill").style.width = ((data.success_rate || 0) * 100).toFixed(2) + "%";
  text(document.getElementById("success-counts"),
    `${data.bridge_completed_24h.toLocaleString("en-US")} completed · ${data.bridge_failed_24h.toLocaleString("en-US")} failed`);

  const currencies = document.querySelector("#currency-table tbody");
  currencies.replaceChildren(...data.currency_breakdown.map((c) =>
    row([["code", c.currency], ["bar-cell", bar(c.share)], ["num", d.currency_breakdown[c.currency]]])));

  const bridges = document.querySelector("#bridges-table tbody");
  bridges.replaceChildren(...Object.entries(d.active_bridges).map(([region, n]) =>
    row([["code", region + ":"], ["num", n]])));

  const alerts = document.getElementById("alerts-list");
  if (data.firing_alerts.length === 0) {
    const li = document.createElement("li"); li.className = "none"; li.textContent = "none";
    alerts.replaceChildren(li);
  } else {
    alerts.replaceChildren(...data.firing_alerts.map((a) => {
      const li = document.createElement("li");
      li.className = "sev-" + a.severity;
      li.textContent = `${a.rule} → ${a.channel}: ${a.summary}`;
      return li;
    }));
  }
  renderPayouts(data.payouts);

  const status = document.getElementById("status");
  const ok = data.source.loaded && data.source.errors.length === 0;
  text(status, data.source.errors.length ? "source error: " + data.source.errors[0] : ok ? "live" : "loading…");
  status.className = "status " + (ok ? "ok" : "warn");
  document.body.dataset.loaded = ok ? "true" : "false";
}

function renderPayouts(p) {
  const d = p.display;
  document.querySelectorAll("[data-payout]").forEach((el) => {
    const v = d[el.dataset.payout];
    if (typeof v === "string") text(el, v);
  });
  const reasons = [
    ...Object.entries(p.failed_by_reason).map(([code, n]) => ["failed", code, n]),
    ...Object.entries(p.waiting_by_reason).map(([code, n]) => ["waiting", code, n]),
  ];
  document.querySelector("#payout-reasons-table tbody").replaceChildren(...reasons.map(([kind, code, n]) =>
    row([["kind " + kind, kind], ["reason", code], ["num", n.toLocaleString("en-US")]])));
  document.querySelector("#fiat-paid-table tbody").replaceChildren(...Object.entries(d.fiat_paid).map(([c, amount]) =>
    row([["code", c], ["num wide", amount]])));
  document.querySelector("#notifications-table tbody").replaceChildren(...Object.entries(d.notifications).map(
    ([channel, n]) => row([["code", channel], ["num", n.delivered], ["num" + (n.undelivered === "0" ? "" : " bad"), n.undelivered]])));
}

async function refresh() {
  try {
    const response = await fetch("/api/summary", { cache: "no-store" });
    render(await response.json());
  } catch (err) {
    const status = document.getElementById("status");
    status.textContent = "dashboard server unreachable";
    status.className = "status warn";
  }
}

refresh();
setInterval(refresh, 2000);
