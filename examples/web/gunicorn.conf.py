"""gunicorn's settings for the example (read from the current directory at start)."""

# gunicorn 23+ opens a control socket at a fixed path in the home directory; two
# servers at once (tests, a second checkout) would fight over it. Older versions
# ignore the setting.
control_socket_disable = True
