"""Fault injection, end to end: a damaged cache, a killed build, a full disk, a user's
directory given as the cache, files CPython cannot compile, oversized bundles.

Every probe drives the real `thinlink` command in subprocesses, as a user does, and
judges by running the program and comparing with plain `python` (`commands.recovers`),
never by looking inside the cache: the files are found by walking the cache directory
and told apart by content (`damage.cache_files`), so the probes outlive a change of
layout.

Seeded and reproducible: `THINLINK_FAULTS_SEED` (default 12) picks the offsets, files,
pairs and moments; the default run samples a few of each (tens of seconds), and
`THINLINK_FAULTS_FULL=1` sweeps every file, every pair and many seeds (minutes).
`THINLINK_FAULTS_REPORT=FILE` appends one JSON line per probe (held or not, and why).
"""
