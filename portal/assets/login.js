// A login link carries the identity provider's token in its fragment (#token=…&next=…),
// which a browser never sends to a server or puts in a Referer: this posts it to /login
// and takes it out of the address bar and the history first.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.hash.slice(1));
  var token = params.get("token");
  var form = document.getElementById("login-form");
  if (!token || !form) {
    return;
  }
  window.history.replaceState(null, "", window.location.pathname);
  form.elements.token.value = token;
  form.elements.next.value = params.get("next") || "";
  form.submit();
})();
