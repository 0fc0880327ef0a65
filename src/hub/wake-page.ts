/** Where, under a session's prefix, the gateway answers for itself (Jupyter never serves it). */
export const GATEWAY_PATH = '.hubshift/';

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * The page a browser gets for a session that is waking: it follows the
 * gateway's status for the session and loads the page asked for once the
 * session answers. Small and self-contained (no scripts from elsewhere).
 */
export function wakePage(opts: { user: string; prefix: string; statusIntervalMs: number }): string {
  const statusUrl = JSON.stringify(`${opts.prefix}${GATEWAY_PATH}status`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>Resuming your session</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:15vh auto;padding:0 1em;color:#222}
.bar{height:6px;background:#eee;border-radius:3px;overflow:hidden}
.bar i{display:block;height:100%;width:30%;background:#f37726;animation:s 1.2s ease-in-out infinite}
@keyframes s{0%{margin-left:-30%}100%{margin-left:100%}}
#error{color:#a00}
</style></head>
<body>
<h1>Resuming your session</h1>
<p>${escapeHtml(opts.user)}, your server was put to sleep while nobody used it. It is being brought back with everything as you left it.</p>
<div class="bar"><i></i></div>
<p id="state" aria-live="polite">Waking…</p>
<p id="error"></p>
<script>
(function () {
  var started = Date.now();
  function poll() {
    fetch(${statusUrl}, { cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        var secs = Math.round((Date.now() - started) / 1000);
        document.getElementById('state').textContent = s.message + ' (' + secs + ' s)';
        if (s.ready) { location.reload(); return; }
        if (s.error) { document.getElementById('error').textContent = s.error; }
        setTimeout(poll, ${opts.statusIntervalMs});
      })
      .catch(function () { setTimeout(poll, ${opts.statusIntervalMs * 2}); });
  }
  poll();
})();
</script>
</body></html>
`;
}
