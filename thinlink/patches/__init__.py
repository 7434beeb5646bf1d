"""Patches: what a running process must do to move from one build to another.

`diff` plans it per module (the edit-semantics rules); `make` compiles the plan into a
bundle in the runtime's wire format (`hotpatch.bundle`).
"""
