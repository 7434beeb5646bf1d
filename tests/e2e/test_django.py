"""A Django project served by `runserver --noreload` under `thinlink dev`, edited as its
users edit it, checked through real HTTP requests on 127.0.0.1: views, URLconfs (the root
one and an included one), a class-based view, a new module; the same process and its
in-memory state throughout. A model's fields changing restarts the app, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .devapp import dedent, edit
from .web import Http, free_port

pytest.importorskip("django")

FILES = {
    "pyproject.toml": "",
    "manage.py": """\
        import os
        import sys

        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
            from django.core.management import execute_from_command_line

            execute_from_command_line(sys.argv)
        """,
    "mysite/__init__.py": "",
    "mysite/settings.py": """\
        from pathlib import Path

        BASE_DIR = Path(__file__).resolve().parent.parent
        SECRET_KEY = "tests-only"
        DEBUG = True
        ALLOWED_HOSTS = ["127.0.0.1"]
        ROOT_URLCONF = "mysite.urls"
        INSTALLED_APPS = ["shop"]
        MIDDLEWARE = []
        DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db"}}
        USE_TZ = True
        DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
        """,
    "mysite/urls.py": """\
        from django.urls import include, path

        from shop import views

        urlpatterns = [
            path("state/", views.state),
            path("greet/", views.greet),
            path("shop/", include("shop.urls")),
        ]
        """,
    "shop/__init__.py": "",
    "shop/models.py": """\
        from django.db import models


        class Item(models.Model):
            name = models.CharField(max_length=20)

            def label(self):
                return "item " + self.name
        """,
    "shop/views.py": """\
        import os

        from django.http import JsonResponse
        from django.views import View

        from shop.models import Item

        STATE = {"hits": 0}


        def state(request):
            STATE["hits"] += 1
            fields = [f.name for f in Item._meta.get_fields()]
            return JsonResponse({"pid": os.getpid(), "hits": STATE["hits"], "fields": fields})


        def greet(request):
            return JsonResponse({"message": "hello"})


        def label(request):
            return JsonResponse({"label": Item(name="x").label()})


        class ItemView(View):
            def get(self, request, item_id):
                return JsonResponse({"item": item_id})
        """,
    "shop/urls.py": """\
        from django.urls import path

        from shop import views

        urlpatterns = [
            path("items/<int:item_id>/", views.ItemView.as_view()),
            path("label/", views.label),
        ]
        """,
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root


def test_django_edits_go_live_under_runserver(project: Path, dev_apps) -> None:
    root = project
    port = free_port()
    command = ("manage.py", "runserver", "--noreload", f"127.0.0.1:{port}")
    app = dev_apps(root, *command, env={"PYTHONUNBUFFERED": "1"})
    http = Http(port, app)
    app.wait_out(r"Starting .*development server at")
    first = http.json("/state/")
    views, urls, shop_urls = root / "shop/views.py", root / "mysite/urls.py", root / "shop/urls.py"

    # A view's body.
    edit(views, '{"message": "hello"}', '{"message": "hi"}')
    http.until("/greet/", {"message": "hi"})

    # A view gains a parameter from its URL, then loses it again.
    edit(views, "def greet(request):", 'def greet(request, name="world"):')
    edit(views, '{"message": "hi"}', '{"message": "hi " + name}')
    http.until("/greet/", {"message": "hi world"})
    edit(urls, 'path("greet/", views.greet),', 'path("greet/<str:name>/", views.greet),')
    http.until("/greet/ann/", {"message": "hi ann"})
    app.wait_err(r"^  django: URL resolvers rebuilt \(mysite.urls changed\)")
    edit(urls, 'path("greet/<str:name>/", views.greet),', 'path("greet/", views.greet),')
    edit(views, 'def greet(request, name="world"):', "def greet(request):")
    edit(views, '{"message": "hi " + name}', '{"message": "hi " + request.GET["who"]}')
    http.until("/greet/?who=bo", {"message": "hi bo"})
    http.until("/greet/ann/", status=404)

    # A new route with a new view, and a new module it depends on; then the route goes.
    (root / "shop/pricing.py").write_text("def price(n):\n    return n * 3\n")
    with open(views, "a") as f:
        f.write(
            "\n\ndef priced(request, n):\n    from shop.pricing import price\n\n"
            '    return JsonResponse({"price": price(n)})\n'
        )
    edit(
        urls,
        '    path("state/", views.state),',
        '    path("state/", views.state),\n    path("price/<int:n>/", views.priced),',
    )
    http.until("/price/2/", {"price": 6})
    edit(root / "shop/pricing.py", "n * 3", "n * 5")
    http.until("/price/2/", {"price": 10})
    edit(urls, '    path("price/<int:n>/", views.priced),\n', "")
    http.until("/price/2/", status=404)

    # An included URLconf changed, and a class-based view gains a method.
    edit(
        shop_urls,
        '    path("label/", views.label),',
        '    path("label/", views.label),\n'
        '    path("again/<int:item_id>/", views.ItemView.as_view()),',
    )
    http.until("/shop/again/7/", {"item": 7})
    edit(
        views,
        '        return JsonResponse({"item": item_id})\n',
        '        return JsonResponse({"item": item_id})\n\n'
        "    def post(self, request, item_id):\n"
        '        return JsonResponse({"posted": item_id})\n',
    )
    http.until("/shop/items/3/", {"posted": 3}, method="POST", body={})
    http.until("/shop/items/3/", {"item": 3})

    # A model's method body is patched in place...
    edit(root / "shop/models.py", '"item " + self.name', '"ITEM " + self.name')
    http.until("/shop/label/", {"label": "ITEM x"})
    last = http.json("/state/")
    assert last["pid"] == first["pid"] and last["hits"] == first["hits"] + 1
    assert "restarting" not in app.err.text() and "failed" not in app.err.text(), app.transcript()

    # ... and a field added to it restarts the app, saying why.
    edit(
        root / "shop/models.py",
        "max_length=20)\n",
        "max_length=20)\n    price = models.IntegerField(default=0)\n",
    )
    line = app.wait_err(r"restarting: (.+)")
    assert "shop.models:Item" in line.group(1)
    assert "fields or Meta of a Django model changed (price)" in line.group(1)
    app.wait_out(r"Starting .*development server at")
    after = http.json("/state/")
    assert after["pid"] != first["pid"] and "price" in after["fields"]
