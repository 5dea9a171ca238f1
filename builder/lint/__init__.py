"""Lint: what a build and ``pybuild check`` say about a Dockerfile before and after it
is built.

This package owns the rules pybuild adds to BuildKit's (``builder.dockerfile.linter``):
layer hygiene read from the shell of RUN steps with a Lark grammar (``shell``, ``argv``,
``hygiene``, ``copymodes``) and wasted bytes measured from the built layers; one rule
table and report for all of them (``rules``); their output formats (``report``); and
lint in every build, cached in the store by the Dockerfile's digest so a cached rebuild
never imports Lark (``gate``).  The rules are documented in docs/lint.md.
"""
