// What every signed-in page does first: check the token, fill the header, wire sign-out.
import { api, requireToken, token } from "./api.js";
import { byTestId } from "./dom.js";

let flashTimer = null;

/** A message under the header; information fades after a few seconds, errors stay. */
export function flash(message, kind = "error") {
  const el = byTestId("flash");
  if (!el) return;
  clearTimeout(flashTimer);
  el.textContent = message;
  el.className = `flash ${kind === "error" ? "" : kind}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
  el.hidden = !message;
  if (message && kind !== "error") flashTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

export function showError(e) {
  console.error(e);
  flash(e && e.message ? e.message : String(e));
}

/** Returns the /v1/me identity, or null after sending the browser to the login page. */
export async function initPage() {
  if (!requireToken()) return null;
  const page = document.body.dataset.page;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
  }
  byTestId("logout")?.addEventListener("click", () => {
    token.clear();
    location.assign("/login");
  });
  try {
    const me = await api("/v1/me");
    const box = byTestId("whoami");
    const who = me.name || "";
    byTestId("whoami-project").textContent =
      `${who}${who && me.project ? " · " : ""}${me.project ? `project ${me.project}` : ""}`;
    byTestId("whoami-admin").hidden = !(me.is_admin ?? me.admin);
    box.hidden = false;
    return me;
  } catch (e) {
    if (e.status !== 401) showError(e);
    return null;
  }
}
