"""``RUN --mount=type=bind`` of the build context, as BuildKit's context transfer sends it.

BuildKit mounts the context it received, which lacks what ``.dockerignore``
excludes.  pybuild mounts the context directory itself, so when ``.dockerignore``
hides something below the mounted source, the step's sandbox lays an overlay
lower layer of whiteouts over it (one 0:0 character device per hidden entry,
see ``builder.context.view``), written when the step runs (never on a cache hit)
into the step's own scratch dir and mounted in its own mount namespace
(``builder.run.ctxmount``): both go with the step.  With nothing hidden the
source is bound as it is.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from builder import replay
from builder.context.checksum import StatCache, checksum_sources, reading_the_context
from builder.context.view import ContextFilter
from builder.engine.copy_plan import clean_source
from builder.errors import BuildError
from builder.rootpath import lexical_in_root, resolve_in_root
from builder.run.spec import MountSpec

if TYPE_CHECKING:
    from builder.dockerfile.mounts import Mount


def context_bind(mount: Mount, target: str, context: str,
                 context_filter: ContextFilter | None,
                 cache: StatCache | None) -> tuple[MountSpec, str]:
    """The mount of ``mount.source`` (the whole context by default) at ``target``,
    and the step's cache-key input for it."""
    source = clean_source(mount.source or "/")
    with reading_the_context():
        host = resolve_in_root(context, source)
        hidden = context_filter is not None and context_filter.hides_source(source)
    if host is None or hidden:
        why = " (excluded by .dockerignore)" if hidden else ""
        raise BuildError(f'--mount type=bind: "/{source}" not found in the build context{why}')
    # Directory summaries only when the source was reached without a link (see
    # CopyRequest.summary_scope).
    direct = host == lexical_in_root(context, source)
    # The filter's scope ("" without one); None: no summaries (a .dockerignore exception).
    scope = "" if context_filter is None else context_filter.summary_scope()
    if (recorder := replay.recording()) is not None:
        if direct and scope is not None:
            recorder.source(context, source)
        else:
            recorder.refuse("a bind mount's source reached through a link, or a "
                            ".dockerignore exception")
    if context_filter is None:
        checksum = checksum_sources([(source, host)], cache=cache,
                                    skip_identity=scope if direct else None)
    else:
        view = context_filter
        checksum = checksum_sources([(source, host)], cache=cache,
                                    skip=lambda _source, rel, _is_dir: view.hides(rel),
                                    skip_identity=scope if direct else None)
    if not os.path.isdir(host):
        # One file: bound through an fd from the path resolved here, and owned by 0:0
        # as BuildKit's transfer delivers it (builder.run.mountpoints).
        spec = MountSpec("context-file", target, context, readonly=mount.readonly,
                         is_dir=False, subpath=os.path.relpath(host, context))
        return spec, (f"bind {target} source={source} rw={not mount.readonly} "
                      f"content={checksum.digest} file-owner=0:0")
    # Mounted by the resolved components, opened again without following a link
    # (builder.run.mountpoints): a link swapped in since the checksum is refused.
    spec = MountSpec("context-dir", target, context, readonly=mount.readonly,
                     subpath=os.path.relpath(host, context))
    if context_filter is not None:
        resolved = context_filter.resolve(source)[0] or "."
        spec.hide = functools.partial(context_filter.write_hide_layer, resolved)
    return spec, (f"bind {target} source={source} rw={not mount.readonly} "
                  f"content={checksum.digest}")
