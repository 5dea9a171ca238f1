"""Registries: image references, the OCI distribution API, pull, push, and registry caches.

Speaks HTTP itself (``transport``): TLS with per-host CAs (``tls``), Basic and
Bearer-token auth with credentials from ``pybuild login`` or Docker's config
(``auth``), retries and redirects.  ``client`` verifies everything a registry
sends; ``pull``/``push`` move images between it and the store; ``cache``
stores the build cache as an OCI artifact.  Imports ``store``, ``image`` and
``cache``; only ``build`` and ``cli`` import it.
"""
