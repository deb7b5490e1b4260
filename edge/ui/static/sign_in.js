/* Sign-in: the kiosk signs in as operator with the device secret (scanned or typed). */
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
      MP.showError(err);
    }
  });
})();
