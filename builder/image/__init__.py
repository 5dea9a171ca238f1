"""Image formats: the image config (as BuildKit writes it), manifests, and archives.

``config`` builds and edits the Docker/OCI image config JSON byte for byte the
way BuildKit marshals it; ``archive`` writes OCI image layouts with a Docker
``manifest.json`` beside ``index.json``, which ``docker load``, ``podman load``,
``skopeo`` (``oci-archive:``) and ``umoci`` all accept.

Imports builder.errors, builder.layers and builder.store.
"""
