/* sockjs-gateway iframe loader | MIT license
 *
 * Stands in for sockjs-client in the iframe page, so that the page runs the
 * release the parent page speaks: the parent checks that the iframe's
 * SockJS.version equals its own, string for string, and names its release
 * only in its answer to the iframe's first message. So bootstrap_iframe()
 * here says that first message itself, reads the release from the answer,
 * loads that release's bundle from beside this file (sockjs-RELEASE.min.js,
 * or sockjs.min.js when there is none) and calls the real bootstrap_iframe(),
 * which starts over: the parent answers every first message.
 * Written for every browser sockjs-client supports (ES3, IE 8 included).
 */
(function () {
  var scripts = document.getElementsByTagName('script');
  var self = scripts[scripts.length - 1].src;
  var base = self.slice(0, self.lastIndexOf('/') + 1);
  var RELEASE = /^[0-9A-Za-z._+-]{1,40}$/;

  function listen(handler) {
    if (window.addEventListener) window.addEventListener('message', handler, false);
    else window.attachEvent('onmessage', handler);
  }
  function unlisten(handler) {
    if (window.removeEventListener) window.removeEventListener('message', handler, false);
    else window.detachEvent('onmessage', handler);
  }

  function load(src, fallback) {
    var script = document.createElement('script');
    var done = false;
    function finish(loaded) {
      if (done) return;
      done = true;
      script.onload = script.onerror = script.onreadystatechange = null;
      if (loaded && window.SockJS && window.SockJS.bootstrap_iframe) window.SockJS.bootstrap_iframe();
      else if (fallback) load(fallback, null);
    }
    script.onload = function () { finish(true); };
    script.onerror = function () { finish(false); };
    script.onreadystatechange = function () {
      if (script.readyState === 'loaded' || script.readyState === 'complete') finish(true);
    };
    script.src = src;
    document.getElementsByTagName('head')[0].appendChild(script);
  }

  window.SockJS = {
    bootstrap_iframe: function () {
      var windowId = location.hash.slice(1);
      function answered(e) {
        if (e.source !== parent) return;
        var message, release;
        try {
          message = JSON.parse(e.data);
          if (message.windowId !== windowId || message.type !== 's') return;
          release = JSON.parse(message.data)[0];
        } catch (ignored) {
          return;
        }
        unlisten(answered);
        window.SockJS = undefined;
        var fallback = base + 'sockjs.min.js';
        if (typeof release === 'string' && RELEASE.test(release)) {
          load(base + 'sockjs-' + release + '.min.js', fallback);
        } else {
          load(fallback, null);
        }
      }
      listen(answered);
      parent.postMessage(JSON.stringify({ windowId: windowId, type: 's', data: '' }), '*');
    }
  };
})();
