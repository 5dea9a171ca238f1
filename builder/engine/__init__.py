"""The build engine: executes a Dockerfile's stages into images in the store.

``engine.build(store, options, progress)`` plans the stages the target needs
(front end); ``scheduler`` builds each on its own thread; ``stagebuild`` runs
a stage's steps through ``dispatch``, one table from instruction kind to
handler (``config_steps``, ``run_step``, ``copy_step``); a layer step asks
``cachelookup`` for a cache decision, and on a miss ``layerstep`` runs it on a
snapshot and commits the layer; ``history`` writes the image history and
``finish`` the image, its tags, its explain record and the cache export; then
``outputs`` hands the image to the requested outputs.

Imports every lower package: errors, dockerfile, context, layers, store,
snapshot, run, image, cache, explain.  Nothing imports it but the CLI.
"""
