"""The build engine: executes a Dockerfile's stages into images in the store.

``engine.build(store, options, progress)`` plans the stages the target needs
(front end), runs each instruction (``dispatch`` for metadata and RUN, ``copy``
for COPY/ADD) on snapshots, commits each changed upper dir as a layer, records
what each step did for ``explain``, writes the image config and tags it, then
hands the image to the requested outputs.

Imports every lower package: errors, dockerfile, context, layers, store,
snapshot, run, image, cache, explain.  Nothing imports it but the CLI.
"""
