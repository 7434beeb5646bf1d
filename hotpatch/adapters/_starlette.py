"""The Starlette / FastAPI adapter: routes re-analysed when their functions change.

What the frameworks derive at registration: FastAPI analyses an endpoint's signature
(and, recursively, its `Depends` functions') into `route.dependant`, its body and
response fields, and a request handler closing over them (`route.app`), and memoises per
function whether it is a coroutine or a generator (cleared here); Starlette wraps
an endpoint by its kind (sync functions run in a thread pool). FastAPI caches the
OpenAPI schema (`app.openapi_schema`), and newer releases cache, per included router,
the routes as they look through the inclusion (rebuilt when the router's routes
version moves).

What we do, after a patch: find the routers (apps and routers that are globals of the
app's modules, and the routers included or mounted in them); for each route:
- its endpoint was removed, or replaced by a re-run definition (a decorator's arguments
  changed: the re-run registered a new route): the route goes, and the new route takes
  its place in the list (route order decides matches);
- its endpoint or a function in its dependency tree changed its parameters, defaults,
  annotations, kind (sync/async/generator) or doc: the route is rebuilt in place, by
  constructing a route of its class from its own settings and taking over the new
  route's state (the same object stays in every list holding it).
A route added to a router that an older FastAPI release copied into the app at
`include_router()` is copied there too, as the other routes were. Then routers whose
routes changed are marked changed, and every FastAPI app's OpenAPI
schema is dropped, so `/docs` shows the new signatures. Each route list is replaced
whole (one store), so a request being routed sees the old list or the new.

An app made by a factory (`create_app()`), which no global holds, is found among the live
objects (`Patch.instances`).

A route's own middleware (Starlette's `middleware=`), applied when the route was made and
kept nowhere else, stays around the rebuilt route's new handler.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from ._api import Adapter, Patch
from ._changes import FunctionChange

__all__ = ["StarletteAdapter"]

_MISSING: Any = object()


class StarletteAdapter(Adapter):
    name = "fastapi"
    modules = ("starlette", "fastapi")
    # What routes hold (rebuilt with them), and the ASGI servers, whose connections keep
    # the last request's scope (its "endpoint"): routed again at the next request.
    holders = ("starlette", "fastapi", "uvicorn", "hypercorn", "daphne", "granian")

    def after(self, patch: Patch) -> None:
        changed = {id(f.function): f for f in patch.functions if f.changed}
        obsolete = {id(o): o for o in patch.obsolete() if callable(o)}
        added = [b for b in patch.bindings if b.kind in ("added", "replaced")]
        if not (changed or obsolete or added):
            return  # a body edit: every route calls the same function objects
        routing = sys.modules.get("starlette.routing")
        if routing is None:
            return
        if changed:
            # FastAPI memoises per function whether it is a coroutine or a generator.
            _clear_classification_caches()
            patch.on_undo(_clear_classification_caches)
        apps, routers = _routers(patch, routing)
        edited: list[Any] = []
        for router in routers:
            if _update_router(patch, router, changed, obsolete):
                edited.append(router)
        fresh = {id(b.new) for b in added}
        for router in routers:
            if fresh and _copy_new_routes(patch, router, routers, fresh):
                edited.append(router)
        for router in routers:
            if (edited or added) and hasattr(router, "_mark_routes_changed"):
                # Newer FastAPI: included routers rebuild their view of these routes.
                router._mark_routes_changed()
                patch.on_undo(router._mark_routes_changed)
        if edited or added:
            for app in apps:
                if getattr(app, "openapi_schema", None) is not None:
                    patch.setattr(app, "openapi_schema", None)
                    patch.note("dropped the cached OpenAPI schema")


def _clear_classification_caches() -> None:
    models = sys.modules.get("fastapi.dependencies.models")
    for value in list(vars(models).values()) if models is not None else ():
        if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
            value.cache_clear()


def _routers(patch: Patch, routing: Any) -> tuple[list[Any], list[Any]]:
    """(FastAPI/Starlette apps, routers) reachable from the app's module globals, or from
    the live apps where no global holds one (an app made by a factory)."""
    from .._origin import app_modules

    applications = sys.modules.get("starlette.applications")
    app_type = getattr(applications, "Starlette", None)
    apps: dict[int, Any] = {}
    routers: dict[int, Any] = {}
    todo: list[Any] = []
    for module in app_modules():
        for value in list(vars(module).values()):
            if app_type is not None and issubclass(type(value), app_type):
                apps[id(value)] = value
                todo.append(value.router)
            elif issubclass(type(value), routing.Router):
                todo.append(value)
    if not apps and app_type is not None:
        for app in patch.instances(app_type):
            apps[id(app)] = app
            todo.append(app.router)
    while todo:
        router = todo.pop()
        if id(router) in routers or not isinstance(getattr(router, "routes", None), list):
            continue
        routers[id(router)] = router
        for route in list(router.routes):
            inner = getattr(route, "original_router", None)  # FastAPI's included router
            if inner is not None:
                todo.append(inner)
            if isinstance(route, routing.Mount):
                mounted = getattr(route, "app", None)
                while mounted is not None and not isinstance(mounted, routing.Router):
                    nxt = getattr(mounted, "router", None) or getattr(mounted, "app", None)
                    if app_type is not None and isinstance(mounted, app_type):
                        apps[id(mounted)] = mounted
                    mounted = nxt if nxt is not mounted else None
                if mounted is not None:
                    todo.append(mounted)
    return list(apps.values()), list(routers.values())


def _update_router(
    patch: Patch, router: Any, changed: dict[int, FunctionChange], obsolete: dict[int, object]
) -> bool:
    """Remove or replace the routes of obsolete functions, rebuild those whose functions
    changed. True if any route of the router changed."""
    routes = list(router.routes)
    result = list(routes)
    moved = rebuilt = False
    for route in routes:
        endpoint = getattr(route, "endpoint", None)
        if id(endpoint) in obsolete:
            successor = patch.successor(endpoint)
            new = None
            if successor is not None:
                new = next((r for r in result if getattr(r, "endpoint", None) is successor), None)
            if new is not None and new is not route:
                result.remove(new)
                result[result.index(route)] = new
                patch.note(f"route {_describe(route)} replaced by {_describe(new)}")
            else:
                result.remove(route)
                patch.note(f"removed route {_describe(route)}")
            moved = True
            continue
        reasons = _reasons(route, changed)
        if reasons:
            _rebuild(patch, route, router, changed.get(id(endpoint)))
            patch.note(f"rebuilt {_describe(route)} ({reasons})")
            rebuilt = True
    if moved:
        patch.setattr(router, "routes", result)  # one store: routed requests see old or new
    return moved or rebuilt


def _copy_new_routes(patch: Patch, router: Any, routers: list[Any], fresh: set[int]) -> bool:
    """Older FastAPI releases copy a router's routes into the including router at
    `include_router()`: a route the patch added to `router` is copied the same way into
    every router holding copies of its other routes (the prefix, tags and dependencies
    of the inclusion read off one such copy). True if `router` got a copy."""
    done = False
    for parent in routers:
        if parent is router:
            continue
        for route in [r for r in router.routes if id(getattr(r, "endpoint", None)) in fresh]:
            if any(getattr(r, "endpoint", None) is route.endpoint for r in parent.routes):
                continue  # already there (registered on both, or copied before)
            copy = _copy_like_siblings(route, router, parent)
            if copy is None:
                continue
            patch.setattr(parent, "routes", [*parent.routes, copy])
            patch.note(f"added {_describe(copy)} (a route of a router included before)")
            done = True
    return done


def _copy_like_siblings(route: Any, router: Any, parent: Any) -> Any | None:
    """A copy of `route` for `parent`, made as `parent` made its copies of the other
    routes of `router`; None when `parent` holds no copy of them."""
    for sibling in router.routes:
        endpoint = getattr(sibling, "endpoint", None)
        if endpoint is None or endpoint is route.endpoint or type(sibling) is not type(route):
            continue
        for copied in parent.routes:
            if (
                getattr(copied, "endpoint", None) is not endpoint
                or type(copied) is not type(sibling)
                or not copied.path.endswith(sibling.path)
            ):
                continue
            prefix = copied.path[: len(copied.path) - len(sibling.path)]
            kwargs = _settings(route, parent, None)
            for name in ("tags", "dependencies", "callbacks"):
                if name in kwargs:
                    outer = list(getattr(copied, name, None) or [])
                    own = list(getattr(sibling, name, None) or [])
                    kwargs[name] = outer[: len(outer) - len(own)] + list(kwargs[name] or [])
            if "responses" in kwargs:
                outer_responses = dict(getattr(copied, "responses", None) or {})
                for key in getattr(sibling, "responses", None) or {}:
                    outer_responses.pop(key, None)
                kwargs["responses"] = {**outer_responses, **(kwargs["responses"] or {})}
            return type(route)(prefix + route.path, route.endpoint, **kwargs)
    return None


def _reasons(route: Any, changed: dict[int, FunctionChange]) -> str:
    """Why `route` must be rebuilt ("parameters changed", "get_db changed"), or ""."""
    endpoint = getattr(route, "endpoint", None)
    own = changed.get(id(endpoint))
    found = []
    if own is not None and own.changed:
        found.append(f"{own.describe()} changed")
    for call in _dependency_calls(getattr(route, "dependant", None)):
        change = changed.get(id(call))
        if change is not None and change.signature_changed and call is not endpoint:
            found.append(f"dependency {change.name.rpartition(':')[2]} changed")
    return ", ".join(dict.fromkeys(found))


def _dependency_calls(dependant: Any) -> list[object]:
    calls: list[object] = []
    todo = [dependant] if dependant is not None else []
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        calls.append(getattr(current, "call", None))
        todo.extend(getattr(current, "dependencies", None) or ())
    return calls


def _rebuild(patch: Patch, route: Any, router: Any, change: FunctionChange | None) -> None:
    """Make a route of the same class from `route`'s own settings (those the function
    determines derived again) and take over its state, in place."""
    kwargs = _settings(route, router, change)
    fresh = type(route)(route.path, route.endpoint, **kwargs)
    old, new = vars(route), dict(vars(fresh))
    if "app" in new and "app" in old:
        new["app"] = _carry_wrappers(patch, old["app"], new["app"])
    for key in [k for k in old if k not in new]:
        patch.delattr(route, key)
    # The handler last: it closes over the rest, which is then in place.
    for key in sorted(new, key=lambda k: k == "app"):
        if old.get(key, _MISSING) is not new[key]:
            patch.setattr(route, key, new[key])


def _carry_wrappers(patch: Patch, old_app: Any, new_app: Any) -> Any:
    """The handler the rebuilt route serves through: the new one, inside the wrappers the
    old one had that the route cannot make again from its settings (Starlette applies a
    route's `middleware=` at construction and keeps no list of it)."""
    old_chain, new_chain = _wrappers(old_app), _wrappers(new_app)
    if len(old_chain) <= len(new_chain):
        return new_app  # every wrapper made again
    innermost = new_chain[-1].app if new_chain else new_app
    patch.setattr(old_chain[-1], "app", innermost)
    return old_app


def _wrappers(app: Any) -> list[Any]:
    """The ASGI middleware around a route's handler, outermost first: objects holding
    the next one as their own `app`, down to the handler (a function)."""
    chain = []
    while not inspect.isfunction(app) and "app" in getattr(app, "__dict__", ()):
        chain.append(app)
        app = app.app
        if len(chain) > 100:  # a loop: not a chain of middleware
            return []
    return chain if inspect.isfunction(app) else []


def _settings(route: Any, router: Any, change: FunctionChange | None) -> dict[str, Any]:
    """The keyword arguments that make `route` again: its own attributes of the same name,
    except where they were derived from the function (then left to be derived again)."""
    parameters = inspect.signature(type(route).__init__).parameters
    kwargs: dict[str, Any] = {}
    for name, parameter in list(parameters.items())[1:]:
        if name in ("path", "endpoint") or parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
        ):
            continue
        value = getattr(route, name, _MISSING)
        if name == "dependency_overrides_provider" and value is _MISSING:
            value = getattr(router, name, _MISSING)
        if value is not _MISSING:
            kwargs[name] = value
    if change is not None:
        if "response_model" in kwargs and _derived_response_model(route, change):
            del kwargs["response_model"]  # the default: derived from the return annotation
        if "description" in kwargs and route.description == _doc_description(change.before.doc):
            kwargs["description"] = None
    return kwargs


def _derived_response_model(route: Any, change: FunctionChange) -> bool:
    model = getattr(route, "response_model", None)
    if model is None:
        return True
    old = change.before.annotations.get("return", _MISSING)
    if old is _MISSING:
        return False
    if isinstance(old, str):
        try:
            from fastapi.dependencies.utils import get_typed_annotation

            old = get_typed_annotation(old, change.function.__globals__)
        except Exception:  # an annotation that does not evaluate: take it as given
            return False
    try:
        return model is old or bool(model == old)
    except Exception:  # a model whose __eq__ refuses a type
        return False


def _doc_description(doc: str | None) -> str:
    return inspect.cleandoc(doc or "").split("\f")[0].strip()


def _describe(route: Any) -> str:
    path = getattr(route, "path", "?")
    methods = sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"})
    if methods:
        return f"{','.join(methods)} {path}"
    return f"WS {path}" if "WebSocket" in type(route).__name__ else path
