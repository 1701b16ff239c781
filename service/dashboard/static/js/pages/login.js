import { safeNext, token } from "../api.js";
import { byTestId } from "../dom.js";

const form = byTestId("login-form");
const input = byTestId("token-input");
const err = byTestId("login-error");
input.focus();

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  err.hidden = true;
  const value = input.value.trim();
  if (!value) return;
  try {
    // Check the token before keeping it, with a request that does not redirect on 401.
    const resp = await fetch("/v1/me", { headers: { Authorization: `Bearer ${value}`, Accept: "application/json" } });
    if (!resp.ok) {
      err.textContent = resp.status === 401 || resp.status === 403
        ? "This token is not valid (unknown, revoked or expired)."
        : `The service answered ${resp.status}; try again.`;
      err.hidden = false;
      return;
    }
    token.set(value);
    location.assign(safeNext(new URLSearchParams(location.search).get("next")));
  } catch (e) {
    err.textContent = `Cannot reach the service: ${e.message}`;
    err.hidden = false;
  }
});
