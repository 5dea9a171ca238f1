"""pybuild: a daemonless Dockerfile image builder.

The package is split by what the code does; each subpackage's docstring says
what it owns and what it may import. Layers, lowest first:

    errors, syscalls                  leaves: import nothing from builder
    dockerfile, context               front end: text in, typed stages out
    layers                            layer dirs <-> OCI layer tars, compression
    store                             blobs, layer dirs and metadata on disk
    snapshot                          overlay/vfs snapshots over store layers
    run                               the RUN sandbox (namespaces, pivot_root)
    image                             image config, manifests, archives
    cache, explain                    cache keys and records; why a step hit or missed
    build                             the build engine: executes stages
    cli                               the command line

A module may import only from layers below its own.
"""

__version__ = "0.1.0"
