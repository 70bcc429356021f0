// Browser notifications on the preferences page. The button registers the portal's service
// worker (/sw.js), asks for the notification permission, subscribes this browser with the
// municipality's public key (shown on the page) and posts the subscription through the
// page's form, which also records the consent. Removing this browser's registration ends its
// subscription in the browser too. Without this script (or push support) the button stays
// hidden and the page says why.
(function () {
  "use strict";
  var form = document.getElementById("push-form");
  var status = document.getElementById("push-status");
  var keyText = document.getElementById("vapid-key");
  if (!form || !status || !keyText) {
    return;
  }
  var button = form.querySelector("button");

  function say(text) {
    status.textContent = text;
  }

  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
    say("このブラウザは通知に対応していません。");
    return;
  }
  form.hidden = false;

  // The key as the browser wants it: base64url to bytes.
  function keyBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) {
      b64 += "=";
    }
    var raw = window.atob(b64);
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) {
      out[i] = raw.charCodeAt(i);
    }
    return out;
  }

  function sameKey(buffer, bytes) {
    if (!buffer) {
      return false;
    }
    var a = new Uint8Array(buffer);
    if (a.length !== bytes.length) {
      return false;
    }
    for (var i = 0; i < a.length; i++) {
      if (a[i] !== bytes[i]) {
        return false;
      }
    }
    return true;
  }

  async function subscribe() {
    var key = keyBytes(keyText.textContent.trim());
    var permission = await Notification.requestPermission();
    if (permission !== "granted") {
      throw new Error("permission " + permission);
    }
    await navigator.serviceWorker.register("/sw.js");
    var registration = await navigator.serviceWorker.ready;
    var existing = await registration.pushManager.getSubscription();
    // A subscription made with an earlier key of the municipality's cannot be reused.
    if (existing && !sameKey(existing.options.applicationServerKey, key)) {
      await existing.unsubscribe();
    }
    var subscription = await registration.pushManager.subscribe({
      userVisibleOnly: true,
      applicationServerKey: key,
    });
    return subscription.toJSON();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    say("登録しています…");
    subscribe().then(
      function (json) {
        form.elements["endpoint"].value = json.endpoint;
        form.elements["keys.p256dh"].value = json.keys.p256dh;
        form.elements["keys.auth"].value = json.keys.auth;
        form.submit();
      },
      function (error) {
        button.disabled = false;
        if (Notification.permission === "denied") {
          say("通知が許可されていません。ブラウザの設定で、このサイトの通知を許可してください。");
        } else {
          say("ブラウザ通知を登録できませんでした。時間をおいてもう一度お試しください。");
        }
        if (window.console) {
          window.console.error(error);
        }
      }
    );
  });

  // This browser's own registration: marked in the list, and ended in the browser as well
  // when it is removed here.
  navigator.serviceWorker
    .getRegistration("/")
    .then(function (registration) {
      return registration ? registration.pushManager.getSubscription() : null;
    })
    .then(function (subscription) {
      if (!subscription) {
        return;
      }
      var forms = document.querySelectorAll("form.push-remove");
      for (var i = 0; i < forms.length; i++) {
        (function (remove) {
          if (remove.elements["endpoint"].value !== subscription.endpoint) {
            return;
          }
          var mark = remove.parentNode.querySelector(".this-browser");
          if (mark) {
            mark.hidden = false;
          }
          say("このブラウザは登録済みです。");
          remove.addEventListener("submit", function (event) {
            event.preventDefault();
            subscription.unsubscribe().then(
              function () {
                remove.submit();
              },
              function () {
                remove.submit();
              }
            );
          });
        })(forms[i]);
      }
    })
    .catch(function () {
      // Nothing to mark.
    });
})();
