"""The Django adapter: URL resolvers rebuilt, model changes restart the app.

What Django derives and keeps: `get_resolver()` memoises the root URL resolver (and
`get_ns_resolver`, `get_callable` theirs), and each resolver (the root, and one per
`include()`, held in its parent's list) caches its URLconf's `urlpatterns` list and the
reverse lookups made from it. A patch that re-runs `urlpatterns = [...]` (a new `path()`,
an `include()`) binds a new list the cached resolvers never read: so after every patch
that binds, rebinds or removes anything, each resolver of the tree forgets what it read
(undone with the patch), the module caches are cleared (`clear_url_caches()`, again if
the patch is undone), and the next request reads the live URLconfs. A URL pattern whose
view was replaced by a re-run definition (its decorator changed) is given the new view.

Models: Django builds a model's fields, managers, table and app-registry entry when the
class is made. A model class whose fields or `Meta` change, or a model added or removed,
needs a restart (and maybe a migration): the patch is stopped with the reason before the
class is re-run. Method bodies are patched as usual.
"""

from __future__ import annotations

import sys
from typing import Any

from ._api import Adapter, Patch
from ._classes import remade_data

__all__ = ["DjangoAdapter"]


class DjangoAdapter(Adapter):
    name = "django"
    modules = ("django",)
    holders = ("django.urls",)  # URL patterns: their views are re-pointed with the resolvers

    def before(self, patch: Patch) -> None:
        model = _model_base()
        if model is None:
            return
        for live, changed in remade_data(patch.statements, model):
            patch.needs_restart(
                f"{live.__module__}:{live.__qualname__}: the fields or Meta of a Django model "
                f"changed ({', '.join(changed)}); its fields, managers and table are set up "
                "when the class is made"
            )

    def after(self, patch: Patch) -> None:
        model = _model_base()
        if model is not None:
            for binding in patch.bindings:
                for kind, value in (("added", binding.new), ("removed", binding.old)):
                    if (
                        binding.kind in (kind, "replaced")
                        and isinstance(value, type)
                        and issubclass(value, model)
                        and "." not in binding.name.partition(":")[2]
                    ):
                        patch.needs_restart(
                            f"{binding.name}: a Django model was {kind}; the app registry "
                            "and the database tables are set up at start"
                        )
        urls = sys.modules.get("django.urls")
        if urls is None or not (patch.bindings or any(f.replaced for f in patch.functions)):
            return  # body edits: resolvers hold the same view functions
        resolvers = _resolvers(urls)
        repointed = _repoint_views(patch, resolvers)
        for resolver in resolvers:
            _reset(patch, resolver)
        urlconfs = [s for s in patch.statements if "urlpatterns" in s.names]
        urls.clear_url_caches()
        patch.on_undo(urls.clear_url_caches)
        if urlconfs or repointed:
            where = ", ".join(dict.fromkeys(s.module.__name__ for s in urlconfs))
            patch.note("URL resolvers rebuilt" + (f" ({where} changed)" if where else ""))


def _model_base() -> type | None:
    models = sys.modules.get("django.db.models")
    return getattr(models, "Model", None)


def _resolvers(urls: Any) -> list[Any]:
    """Every URL resolver in the tree of the root URLconf, as the app has them now (an
    `include()` is a resolver object inside its parent's list, with its own caches)."""
    resolvers_module = sys.modules.get("django.urls.resolvers")
    try:
        todo = [urls.get_resolver()]
    except Exception:  # no settings, no ROOT_URLCONF: nothing routes here
        return []
    found: list[Any] = []
    seen: set[int] = set()
    while todo:
        resolver = todo.pop()
        if id(resolver) in seen:
            continue
        seen.add(id(resolver))
        found.append(resolver)
        try:
            patterns = list(resolver.url_patterns)
        except Exception:  # a URLconf that does not import now: the next request says so
            continue
        todo += [p for p in patterns if isinstance(p, resolvers_module.URLResolver)]
    return found


def _reset(patch: Patch, resolver: Any) -> None:
    """Forget what `resolver` read from its URLconf (its patterns, its reverse lookups),
    so the next request reads the live `urlpatterns`."""
    for cached in ("url_patterns", "urlconf_module"):
        if cached in vars(resolver):  # cached_property values
            patch.delattr(resolver, cached)
    for name, empty in (
        ("_reverse_dict", dict),
        ("_namespace_dict", dict),
        ("_app_dict", dict),
        ("_callback_strs", set),
    ):
        if name in vars(resolver):
            patch.setattr(resolver, name, empty())
    if vars(resolver).get("_populated"):
        patch.setattr(resolver, "_populated", False)


def _repoint_views(patch: Patch, resolvers: list[Any]) -> int:
    """Give every URL pattern whose view this patch made obsolete its successor."""
    obsolete = {id(o) for o in patch.obsolete() if callable(o)}
    if not obsolete:
        return 0
    done = 0
    for resolver in resolvers:
        for pattern in list(vars(resolver).get("url_patterns", ())):
            if id(getattr(pattern, "callback", None)) not in obsolete:
                continue
            successor = patch.successor(pattern.callback)
            if successor is None:
                patch.warn(f"the view of URL pattern {pattern.pattern} was removed")
                continue
            patch.setattr(pattern, "callback", successor)
            if "lookup_str" in vars(pattern):  # a cached_property made from the view
                patch.delattr(pattern, "lookup_str")
            done += 1
    return done
