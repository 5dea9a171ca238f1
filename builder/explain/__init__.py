"""Explain: what each build step did, and why it was or was not cached.

``records`` keeps, per built image, the list of steps with the layer each made
and what its upper dir held (files added, changed, deleted, bytes), recorded
at build time at no extra cost.  ``render`` prints them for ``pybuild explain`` (every line
escaped: ``builder.textsafe``); ``values`` reads the build-arg values an image's own
history holds, for ``--show-values`` (the store keeps only their digests).

Imports builder.errors and builder.store.
"""
