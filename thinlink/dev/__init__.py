"""`thinlink dev`: the loop that watches the project and patches the running app.

`watch` reports saved files, `server` is the socket every process of the app connects
to, and `session` ties them together: rebuild, make the patch, send it, restart when a
change cannot be patched.
"""
