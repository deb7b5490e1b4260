/* Sign-in: the kiosk signs in as operator with the operator secret (scanned or typed). */
"use strict";
(() => {
  const form = document.getElementById("sign-in-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    MP.hideBanner();
    const secret = document.getElementById("secret").value;
    if (!secret) return;
    try {
      await MP.request("POST", "/api/auth/sign-in", { secret });
      location.assign(form.dataset.next || "/ui/capture");
    } catch (err) {
      document.getElementById("secret").value = "";
      // Beside the field, not only in the banner: the keypad that opens on the next tap
      // covers the banner at 800x480, and it repeats this message (aria-describedby).
      const error = document.getElementById("secret-error");
      error.textContent = MP.describe(err);
      error.hidden = false;
    }
  });
})();
