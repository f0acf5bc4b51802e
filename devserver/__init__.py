"""The demo's and the tests' private XMPP server: a throw-away CA, a Prosody on loopback, accounts.

``make run`` starts it with ``python -m devserver run ... -- headunit run ...`` and ``make
watch`` follows the demo car with ``python -m devserver.watch``; the tests use the same
classes (:mod:`devserver.prosody`, :mod:`devserver.pki`, :mod:`devserver.fleet`,
:mod:`devserver.clients`). Nothing here is installed on a car.
"""
