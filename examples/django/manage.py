"""A small Django site: notes kept in memory, served by Django's development server.

    pip install django
    thinlink dev manage.py runserver --noreload 127.0.0.1:8000

(`--noreload`: thinlink patches the running server instead of Django restarting it.)
Edit it while it runs: a view's body, a new view with its `path()` in `notes/urls.py`,
the class-based view's methods. Each save is live at once in the same process, with the
notes kept; a change to the model's fields restarts the server, saying why.
"""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
