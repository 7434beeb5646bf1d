"""Building a project: from source files to a manifest of cached, compiled modules.

Bottom up: `sources` (finding a project's module files), `text` (source text and what
an edit changed), `compiler` (compiling modules and fragments, deriving units), `units`
(segments, units and module records), `analysis` (what each statement defines and
reads), `cache` (the content-addressed store), `manifest` (builds and refs), `rebuild`
(one module, whole or only what an edit touched), `builder` (a whole project), `image`
(the file a program is started from).
"""
