"""The preload that routes Node's built-in ``fetch`` through the egress proxy on Node < 22.21.

Node's ``fetch`` (undici) reads no proxy variables before ``NODE_USE_ENV_PROXY`` (Node 22.21,
24.5), so inside a sandbox whose only way out is the proxy it has no way out at all. The
launcher writes ``NODE_PRELOAD`` to the run's boot directory and puts ``--require`` of it in
``NODE_OPTIONS`` (and sets ``NODE_USE_ENV_PROXY=1`` for newer Node, where the preload does
nothing). It replaces undici's global dispatcher with an ``Agent`` of undici's own class whose
connector opens a ``CONNECT`` tunnel to the proxy, then TLS with the usual CA handling
(``NODE_EXTRA_CA_CERTS``). It only changes where ``fetch`` connects; every decision stays
the proxy's. Not covered: ``http``/``https`` module requests (they never read proxy
variables in any Node; libraries such as axios do) and a ``NODE_OPTIONS`` the child resets.
"""

__all__ = ["NODE_PRELOAD", "NODE_PRELOAD_NAME"]

NODE_PRELOAD_NAME = "node_proxy.js"

NODE_PRELOAD = r"""'use strict';
// capgate: Node 20's built-in fetch (undici) reads no proxy variables; route it through
// HTTPS_PROXY with undici's own Agent and a connector that opens a CONNECT tunnel.
(function () {
  const proxy = process.env.HTTPS_PROXY || process.env.https_proxy;
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major >= 24 || (major === 22 && minor >= 21)) return;  // NODE_USE_ENV_PROXY=1 does it there
  if (!proxy || typeof globalThis.fetch !== 'function') return;
  const sym = Symbol.for('undici.globalDispatcher.1');
  if (globalThis[sym] === undefined) { globalThis.fetch('data:,').catch(() => {}); }
  const current = globalThis[sym];
  if (!current) return;
  const Agent = current.constructor;
  const net = require('net'), tls = require('tls');
  const u = new URL(proxy);
  function connect(opts, cb) {
    const port = Number(opts.port) || (opts.protocol === 'https:' ? 443 : 80);
    const sock = net.connect(Number(u.port), u.hostname);
    let done = false;
    const fail = (e) => { if (!done) { done = true; sock.destroy(); cb(e); } };
    sock.once('error', fail);
    const authority = `${opts.hostname}:${port}`;
    sock.once('connect', () => sock.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
    let buf = Buffer.alloc(0);
    const onData = (d) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      sock.removeListener('data', onData);
      const status = buf.slice(0, end).toString('latin1').split(' ')[1];
      const line = buf.slice(0, end).toString('latin1').split('\r\n')[0];
      if (status !== '200') return fail(new Error(`the egress proxy refused CONNECT ${authority}: ${line}`));
      if (opts.protocol !== 'https:') { done = true; sock.removeListener('error', fail); return cb(null, sock); }
      const servername = opts.servername || opts.hostname;
      const t = tls.connect({ socket: sock, servername, ALPNProtocols: ['http/1.1'] });
      t.once('secureConnect', () => { done = true; sock.removeListener('error', fail); cb(null, t); });
      t.once('error', fail);
    };
    sock.on('data', onData);
  }
  globalThis[sym] = new Agent({ connect });
})();
"""
