"""Patches meet another copy of their module (matched by name, proven by its source), and
wait for modules not imported yet (`hotpatch._targets`).

Real files imported for real; the bundles name the module by a path elsewhere, as a
bundle made on the developer's machine does in a cluster worker.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from hotpatch import _apply, _jumptable, _targets, provenance
from hotpatch._errors import PatchError
from hotpatch.bundle import Bundle, FunctionPatch, ModulePatch
from hotpatch.image import source_digest

V1 = "def who():\n    return 'v1'\n"
V2 = "def who():\n    return 'v2'\n"
V3 = "def who():\n    return 'v3'\n"
ELSEWHERE = "/the/developers/checkout"


@pytest.fixture(autouse=True)
def clean_runtime(tmp_path: Path):
    saved_path, saved_digests = list(sys.path), dict(provenance.digests)
    sys.path.insert(0, str(tmp_path))
    _jumptable.set_build(None)
    _apply._history.clear()
    _targets.waiting.clear()
    yield
    provenance.untrack()
    sys.path[:] = saved_path
    provenance.digests.clear()
    provenance.digests.update(saved_digests)
    _apply._history.clear()
    _targets.waiting.clear()
    for name in [n for n in sys.modules if n.startswith("hpt_")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def patch_of(name: str, file: str, base: str, target: str) -> ModulePatch:
    """The patch from source `base` to `target` of `name`, made where the file is `file`."""
    path = f"{ELSEWHERE}/{file}"
    code = compile(target, path, "exec", dont_inherit=True)
    who = next(c for c in code.co_consts if getattr(c, "co_name", "") == "who")
    return ModulePatch(
        name,
        path,
        functions=(FunctionPatch("who", 1, who),),
        base_digest=source_digest(base.encode()),
        digest=source_digest(target.encode()),
    )


def test_another_copy_is_matched_by_the_builds_name_and_patched_when_its_source_is_the_base(
    tmp_path,
):
    (tmp_path / "hpt_tasks.py").write_text(V1)
    provenance.track([str(tmp_path)])
    import hpt_tasks

    report = _apply.apply(Bundle("b1", "b2", (patch_of("hpt_tasks", "hpt_tasks.py", V1, V2),)))
    assert report.patched == ("hpt_tasks:who",) and hpt_tasks.who() == "v2"
    # The next patch starts where the first left it.
    _apply.apply(Bundle("b2", "b3", (patch_of("hpt_tasks", "hpt_tasks.py", V2, V3),)))
    assert hpt_tasks.who() == "v3"


def test_a_worker_importing_a_tail_of_the_builds_name_is_matched_when_tracked(tmp_path):
    # The build, rooted one directory higher, says `app.hpt_jobs`; the worker imports
    # `hpt_jobs` from its own copy.
    (tmp_path / "hpt_jobs.py").write_text(V1)
    provenance.track([str(tmp_path)])
    import hpt_jobs

    _apply.apply(Bundle("b1", "b2", (patch_of("app.hpt_jobs", "app/hpt_jobs.py", V1, V2),)))
    assert hpt_jobs.who() == "v2"


def test_an_untracked_module_sharing_only_a_tail_of_the_name_is_left_alone(tmp_path):
    (tmp_path / "hpt_config.py").write_text("def who():\n    return 'third party'\n")
    import hpt_config

    report = _apply.apply(
        Bundle("b1", "b2", (patch_of("app.hpt_config", "app/hpt_config.py", V1, V2),))
    )
    assert hpt_config.who() == "third party" and report.skipped == ("app.hpt_config",)


def test_a_copy_with_other_source_refuses_the_whole_bundle_naming_its_file(tmp_path):
    (tmp_path / "hpt_other.py").write_text("def who():\n    return 'a copy of its own'\n")
    provenance.track([str(tmp_path)])
    import hpt_other

    with pytest.raises(PatchError, match=r"hpt_other: refused: this process runs source \w+ from"):
        _apply.apply(Bundle("b1", "b2", (patch_of("hpt_other", "hpt_other.py", V1, V2),)))
    assert hpt_other.who() == "a copy of its own"
    assert not _targets.waiting


def test_patches_for_a_module_not_imported_wait_and_apply_on_import_from_its_source(tmp_path):
    (tmp_path / "hpt_late.py").write_text(V1)  # the worker's copy, at the session's start
    provenance.track([str(tmp_path)])
    _apply.apply(Bundle("b1", "b2", (patch_of("hpt_late", "hpt_late.py", V1, V2),)))
    _apply.apply(Bundle("b2", "b3", (patch_of("hpt_late", "hpt_late.py", V2, V3),)))
    import hpt_late  # from V1, then both patches, before the import returns

    assert hpt_late.who() == "v3"
    assert provenance.digest_of(hpt_late.__file__) == source_digest(V3.encode())
    assert not _targets.waiting


def test_a_module_imported_at_the_latest_source_takes_none_of_the_waiting_patches(tmp_path):
    provenance.track([str(tmp_path)])
    _apply.apply(Bundle("b1", "b2", (patch_of("hpt_fresh", "hpt_fresh.py", V1, V2),)))
    (tmp_path / "hpt_fresh.py").write_text(V2)  # a shared file system: already edited
    import hpt_fresh

    assert hpt_fresh.who() == "v2"


def test_a_rolled_back_bundle_leaves_nothing_waiting(tmp_path):
    provenance.track([str(tmp_path)])
    waiting = patch_of("hpt_never", "hpt_never.py", V1, V2)
    (tmp_path / "hpt_bad.py").write_text("def who():\n    return 'other'\n")
    import hpt_bad  # noqa: F401

    refused = patch_of("hpt_bad", "hpt_bad.py", V1, V2)
    with pytest.raises(PatchError):
        _apply.apply(Bundle("b1", "b2", (waiting, refused)))
    assert not any(_targets.waiting.values())
