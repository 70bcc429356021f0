// The portal's service worker: shows a notice the municipality pushed (the payload is
// {"title", "body", "url"}) and opens its page when the notification is clicked. It has no
// fetch handler: pages always come from the server, never from a cache.
"use strict";

// The page a notification opens: only an absolute URL of this site; anything else (a payload
// from an older sender, a mistake) opens the inbox.
function target(url) {
  if (typeof url === "string") {
    try {
      var u = new URL(url);
      if (u.origin === self.location.origin) {
        return u.href;
      }
    } catch (e) {
      // not a URL: the inbox
    }
  }
  return new URL("/inbox", self.location.origin).href;
}

self.addEventListener("install", function () {
  // A new version of this worker takes over at once: it keeps no state.
  self.skipWaiting();
});

self.addEventListener("push", function (event) {
  var data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (e) {
    data = {};
  }
  var title = typeof data.title === "string" && data.title ? data.title : "お知らせ";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: typeof data.body === "string" ? data.body : "",
      lang: "ja",
      // The page the notification opens, checked when it is shown. As the tag it also makes
      // a repeat of the same notice replace the earlier notification.
      tag: target(data.url),
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = target(event.notification.tag);
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === url && "focus" in windows[i]) {
          return windows[i].focus();
        }
      }
      return self.clients.openWindow(url);
    })
  );
});
