#!/bin/sh
# The example app: prints a greeting made at build time.
cat /app/greeting.txt 2>/dev/null || echo "hello from pybuild"
