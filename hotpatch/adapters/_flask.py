"""The Flask adapter: routes added, changed and removed after the first request.

What Flask keeps: `app.view_functions` (endpoint -> view) and `app.url_map` (the rules);
a blueprint keeps its routes as deferred functions run when it is registered. Once an app
served a request (or a blueprint was registered), Flask refuses `route()` with its
"setup method can no longer be called" error, and it refuses to map an endpoint to a
second function ("View function mapping is overwriting an existing endpoint function").
Both are what a patch does when it re-runs a route definition.

What we do. Before the statements run: let the apps and blueprints found (globals of the
app's modules, and the blueprints registered on those apps) register routes again, and
let the endpoints about to be defined again be mapped to their new functions. After: run
the blueprints' new deferred routes against every app they are registered on (with the
registration's URL prefix, subdomain and name worked out from its existing rules); give
each app a new URL map with the rules it should have now, without the old rules of
endpoints defined again and those of views removed (one store: a request binds the old
map or the new); then put the setup checks back. Requests keep being served meanwhile,
by the old views until the new ones are mapped. A body edit needs none of this: the view
table holds the same function objects.

Apps and blueprints are found in the globals of the app's modules; an app made by a factory
(`create_app()`), which no global holds, is found among the live objects
(`Patch.instances`).

What doesn't work: a blueprint that had no route on an app before cannot tell the options
it was registered with (a restart is asked for then).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from typing import Any

from ._api import Adapter, Patch

__all__ = ["FlaskAdapter"]

_MISSING: Any = object()


@dataclass
class _Pending:
    """What `before` saw, for `after`."""

    apps: list[Any]
    blueprints: list[Any]
    rules: dict[int, set[int]] = field(default_factory=dict)  # app id -> rule ids before
    deferred: dict[int, int] = field(default_factory=dict)  # blueprint id -> count before
    views: dict[int, dict[str, object]] = field(default_factory=dict)  # app id -> views before
    redefining: dict[int, set[str]] = field(default_factory=dict)  # app id -> endpoints


class _Redefining(dict):  # type: ignore[type-arg]
    """An app's view table while definitions re-run: Flask asks it (`get`) whether an
    endpoint is mapped to another function before mapping it, and refuses if so. For the
    endpoints being defined again it answers no; requests, which index it, still find
    the old view until the new one is mapped."""

    def __init__(self, views: dict[str, object], endpoints: set[str]) -> None:
        super().__init__(views)
        self.endpoints = endpoints

    def get(self, key: object, default: object = None) -> object:
        return default if key in self.endpoints else super().get(key, default)


class FlaskAdapter(Adapter):
    name = "flask"
    modules = ("flask",)
    holders = ("flask", "werkzeug")

    def __init__(self) -> None:
        self._pending: _Pending | None = None

    def before(self, patch: Patch) -> None:
        self._pending = None
        if not (patch.statements or patch.removing):
            return  # only code swaps: the view table holds the same functions
        apps, blueprints = _found(patch)
        if not apps and not blueprints:
            return
        pending = _Pending(apps, blueprints)
        names = {name for s in patch.statements for name in s.names}
        redefined = {id(v) for s in patch.statements for n in s.names if callable(v := s.live(n))}
        for app in apps:
            pending.rules[id(app)] = {id(r) for r in app.url_map.iter_rules()}
            views = dict(app.view_functions)
            pending.views[id(app)] = views
            # Endpoints a re-run may map again: those of the functions defined again, and
            # any named like a definition (a function added under a removed view's name).
            endpoints = {
                endpoint
                for endpoint, view in views.items()
                if id(view) in redefined
                or id(_unwrap(view)) in redefined
                or endpoint.rpartition(".")[2] in names
            }
            pending.redefining[id(app)] = endpoints
            if endpoints:
                patch.setattr(app, "view_functions", _Redefining(views, endpoints))
            _allow_setup(patch, app)
        for bp in blueprints:
            pending.deferred[id(bp)] = len(bp.deferred_functions)
            _allow_setup(patch, bp)
        self._pending = pending

    def after(self, patch: Patch) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        for bp in pending.blueprints:
            _register_new_routes(patch, bp, pending)
        obsolete = {id(o) for o in patch.obsolete() if callable(o)}
        for app in pending.apps:
            if type(app.view_functions) is _Redefining:
                patch.setattr(app, "view_functions", dict(app.view_functions))
            _settle_app(patch, app, pending, obsolete)
        for obj in [*pending.apps, *pending.blueprints]:  # last: registering needed them
            patch.delattr(obj, "_check_setup_finished")


def _allow_setup(patch: Patch, obj: Any) -> None:
    """Let `obj` (an app or a blueprint) register routes during this patch: its check that
    setup is over is shadowed by one that passes. Not its flag (`_got_first_request`),
    which a request served meanwhile, in another thread, would set again."""
    patch.setattr(obj, "_check_setup_finished", _setup_allowed)


def _setup_allowed(f_name: str) -> None:
    return None


def _found(patch: Patch) -> tuple[list[Any], list[Any]]:
    """The live apps (module globals, or those a factory made) and their blueprints."""
    sansio_app = sys.modules.get("flask.sansio.app") or sys.modules.get("flask.app")
    sansio_bp = sys.modules.get("flask.sansio.blueprints") or sys.modules.get("flask.blueprints")
    app_type = getattr(sansio_app, "App", None) or getattr(sansio_app, "Flask", None)
    bp_type = getattr(sansio_bp, "Blueprint", None)
    apps = patch.instances(app_type) if app_type is not None else []
    blueprints: dict[int, Any] = {}
    if bp_type is not None:
        # Blueprints are module globals (or registered on an app): no walk for them.
        blueprints = {id(bp): bp for bp in patch.instances(bp_type, factory_made=False)}
    for app in apps:
        for bp in list(app.blueprints.values()):
            blueprints.setdefault(id(bp), bp)
    return apps, list(blueprints.values())


def _unwrap(view: object) -> object:
    return getattr(view, "__wrapped__", view)


def _register_new_routes(patch: Patch, bp: Any, pending: _Pending) -> None:
    """Run the deferred functions the patch added to `bp` for each of its registrations,
    and forget the old ones whose view is gone."""
    before = pending.deferred.get(id(bp), len(bp.deferred_functions))
    new = bp.deferred_functions[before:]
    if not new:
        return
    old = bp.deferred_functions[:before]
    redefined = {_closure_value(d, "view_func") for d in new} - {None}
    names = {id(v) for v in redefined} | {id(_unwrap(v)) for v in redefined}
    kept = [d for d in old if id(_closure_value(d, "view_func")) not in names]
    if len(kept) != len(old):
        patch.setattr(bp, "deferred_functions", kept + new)
    registrations = [
        (app, name)
        for app in pending.apps
        for name, registered in list(app.blueprints.items())
        if registered is bp
    ]
    if not registrations and getattr(bp, "_got_registered_once", False):
        # Registered on an app we cannot reach: its new routes would never serve.
        patch.needs_restart(
            f"routes were added to blueprint {bp.name!r}, and the app it is registered on "
            "was not found"
        )
    for app, name in registrations:
        options = _registration_options(app, bp, name, old)
        if options is None:
            patch.needs_restart(
                f"routes were added to blueprint {name!r}, which had none before: the "
                "options it was registered with are not known"
            )
        state = bp.make_setup_state(app, options, first_registration=False)
        for deferred in new:
            deferred(state)
        patch.note(f"registered {len(new)} new route(s) of blueprint {name!r}")


def _closure_value(fn: Any, var: str) -> Any:
    code = getattr(fn, "__code__", None)
    if code is None or var not in code.co_freevars or not fn.__closure__:
        return None
    try:
        return fn.__closure__[code.co_freevars.index(var)].cell_contents
    except ValueError:
        return None


def _registration_options(app: Any, bp: Any, name: str, old: list[Any]) -> dict | None:
    """The options `bp` was registered on `app` with under `name`, from one of its rules:
    the URL prefix (the rule minus the route's own path), the subdomain, the defaults."""
    for deferred in old:
        rule = _closure_value(deferred, "rule")
        view = _closure_value(deferred, "view_func")
        endpoint = _closure_value(deferred, "endpoint") or getattr(view, "__name__", None)
        if not isinstance(rule, str) or not endpoint:
            continue
        for live in (
            app.url_map.iter_rules(f"{name}.{endpoint}") if _has(app, name, endpoint) else ()
        ):
            own = rule.lstrip("/")
            if own and not live.rule.endswith(own):
                continue
            prefix = live.rule[: len(live.rule) - len(own)].rstrip("/") if own else live.rule
            route_defaults = (_closure_value(deferred, "options") or {}).get("defaults") or {}
            defaults = {k: v for k, v in (live.defaults or {}).items() if k not in route_defaults}
            return {
                "url_prefix": prefix,
                "subdomain": live.subdomain or None,
                "name": name,
                "name_prefix": "",
                "url_defaults": defaults,
            }
    return None


def _has(app: Any, name: str, endpoint: str) -> bool:
    return f"{name}.{endpoint}" in app.url_map._rules_by_endpoint


def _settle_app(patch: Patch, app: Any, pending: _Pending, obsolete: set[int]) -> None:
    """Give `app` a URL map with the rules of its endpoints now: the old rules of
    endpoints mapped again go (the re-run added their new ones), and so do the rules of
    endpoints whose view was removed. Their views stay in the view table (harmless with
    no rule to reach them): a request routed before the new map may still be dispatched."""
    before = pending.views.get(id(app), {})
    now = app.view_functions
    remapped = {e for e in pending.redefining.get(id(app), ()) if now.get(e) is not before.get(e)}
    gone = {
        endpoint
        for endpoint, view in now.items()
        if endpoint not in remapped
        and (id(view) in obsolete or id(_unwrap(view)) in obsolete)
        and (patch.successor(view) or patch.successor(_unwrap(view))) is None
    }
    gone |= {
        e
        for e in pending.redefining.get(id(app), ())
        if e not in remapped and id(now.get(e)) in obsolete
    }
    rules_before = pending.rules.get(id(app), set())
    rules = list(app.url_map.iter_rules())
    keep = [r for r in rules if id(r) not in rules_before or r.endpoint not in remapped | gone]
    if len(keep) == len(rules):
        return
    patch.setattr(app, "url_map", _new_map(app.url_map, keep))
    for endpoint in sorted(gone):
        patch.note(f"removed the routes of endpoint {endpoint!r}")
    for endpoint in sorted(remapped):
        rules_now = ", ".join(r.rule for r in app.url_map.iter_rules(endpoint))
        patch.note(f"endpoint {endpoint!r} now at {rules_now}")


def _new_map(old: Any, rules: list[Any]) -> Any:
    """A map configured as `old`, holding fresh copies of `rules` (a rule is bound to
    one map)."""
    parameters = inspect.signature(type(old).__init__).parameters
    kwargs = {
        name: getattr(old, name)
        for name in list(parameters)[1:]
        if name != "rules" and getattr(old, name, _MISSING) is not _MISSING
    }
    new = type(old)(**kwargs)
    for key, value in vars(old).items():
        if key not in vars(new):
            setattr(new, key, value)  # set on the map by the app after it was made
    for rule in rules:
        fresh = rule.empty()
        new.add(fresh)
        for key, value in vars(rule).items():
            if key not in vars(fresh):
                setattr(fresh, key, value)  # Flask's provide_automatic_options
    return new
