"""Build context: .dockerignore matching, walking and reading the context safely.

Imports only builder.errors.
"""

from builder.context.ignore import (
    IgnorePatternError,
    PatternMatcher,
    find_ignore_file,
    read_ignore_file,
)

__all__ = ["IgnorePatternError", "PatternMatcher", "find_ignore_file", "read_ignore_file"]
