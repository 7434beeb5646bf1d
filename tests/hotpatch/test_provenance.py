"""Which source a live module runs, and patches checked against it (`hotpatch.provenance`).

Modules here are real files imported for real; bundles are made from edits of their text.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hotpatch import _apply, _jumptable, provenance
from hotpatch._errors import PatchError
from hotpatch.bundle import Bundle, FunctionPatch, ModulePatch
from hotpatch.image import source_digest

OLD = "def who():\n    return 'old'\n"
NEW = "def who():\n    return 'new'\n"


@pytest.fixture(autouse=True)
def clean_runtime(tmp_path: Path):
    saved_path, saved_digests = list(sys.path), dict(provenance.digests)
    sys.path.insert(0, str(tmp_path))
    _jumptable.set_build(None)
    _apply._history.clear()
    yield
    provenance.untrack()
    sys.path[:] = saved_path
    provenance.digests.clear()
    provenance.digests.update(saved_digests)
    _apply._history.clear()
    for name in [n for n in sys.modules if n.startswith("hpv_")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def swap_bundle(path: Path, name: str, base: str | None, target_text: str) -> Bundle:
    code = compile(target_text, str(path), "exec", dont_inherit=True)
    who = next(c for c in code.co_consts if getattr(c, "co_name", "") == "who")
    patch = ModulePatch(
        name,
        str(path),
        functions=(FunctionPatch("who", 1, who),),
        base_digest=base,
        digest=source_digest(target_text.encode()),
    )
    return Bundle("b-old", "b-new", (patch,))


def test_track_records_the_digest_of_the_bytes_each_project_module_ran(tmp_path):
    path = write(tmp_path / "hpv_tracked.py", OLD)
    provenance.track([str(tmp_path)])
    import hpv_tracked

    assert type(hpv_tracked.__loader__) is provenance.TrackingLoader
    assert provenance.digest_of(str(path)) == source_digest(OLD.encode())
    import colorsys  # outside the roots: the usual loader, nothing recorded

    assert type(colorsys.__loader__) is not provenance.TrackingLoader
    assert provenance.digest_of(colorsys.__file__) is None


def test_a_module_imported_before_tracking_is_adopted_when_its_file_is_unchanged(tmp_path):
    path = write(tmp_path / "hpv_plain.py", OLD)
    import hpv_plain

    assert provenance.digest_of(str(path)) is None
    assert provenance.adopt(hpv_plain) == source_digest(OLD.encode())
    assert provenance.digest_of(str(path)) == source_digest(OLD.encode())


def test_a_module_whose_file_changed_since_its_import_is_not_adopted(tmp_path):
    path = write(tmp_path / "hpv_changed.py", OLD)
    import hpv_changed

    write(path, NEW)
    assert provenance.adopt(hpv_changed) is None
    assert provenance.digest_of(str(path)) is None


def test_a_patch_from_the_source_the_module_runs_applies_and_moves_the_record(tmp_path):
    path = write(tmp_path / "hpv_apply.py", OLD)
    provenance.track([str(tmp_path)])
    import hpv_apply

    write(path, NEW)
    report = _apply.apply(swap_bundle(path, "hpv_apply", source_digest(OLD.encode()), NEW))
    assert report.patched == ("hpv_apply:who",) and hpv_apply.who() == "new"
    assert provenance.digest_of(str(path)) == source_digest(NEW.encode())
    _apply.rollback()
    assert hpv_apply.who() == "old"
    assert provenance.digest_of(str(path)) == source_digest(OLD.encode())


def test_a_patch_from_another_source_is_refused_and_changes_nothing(tmp_path):
    path = write(tmp_path / "hpv_refuse.py", OLD)
    provenance.track([str(tmp_path)])
    import hpv_refuse

    code_before = hpv_refuse.who.__code__
    other = source_digest(b"def who():\n    return 'something else'\n")
    with pytest.raises(PatchError, match=r"hpv_refuse: refused: this process runs source"):
        _apply.apply(swap_bundle(path, "hpv_refuse", other, NEW))
    assert hpv_refuse.who.__code__ is code_before
    assert provenance.digest_of(str(path)) == source_digest(OLD.encode())


def test_a_module_edited_since_its_import_refuses_patches_it_cannot_vouch_for(tmp_path):
    # Not on a build, not tracked: adopt() compares code, the file now says NEW.
    path = write(tmp_path / "hpv_stale.py", OLD)
    import hpv_stale

    write(path, NEW)
    with pytest.raises(PatchError, match="its file changed after it was imported"):
        _apply.apply(swap_bundle(path, "hpv_stale", source_digest(NEW.encode()), NEW))
    assert hpv_stale.who() == "old"


def test_the_check_runs_before_any_module_of_the_bundle_changes(tmp_path):
    good = write(tmp_path / "hpv_first.py", OLD)
    bad = write(tmp_path / "hpv_second.py", OLD)
    provenance.track([str(tmp_path)])
    import hpv_first
    import hpv_second

    first = swap_bundle(good, "hpv_first", source_digest(OLD.encode()), NEW).modules[0]
    second = swap_bundle(bad, "hpv_second", "0" * 32, NEW).modules[0]
    with pytest.raises(PatchError, match="hpv_second"):
        _apply.apply(Bundle("b-old", "b-new", (first, second)))
    assert (hpv_first.who(), hpv_second.who()) == ("old", "old")


def test_adopt_trusts_an_inode_unchanged_since_before_the_process_started(tmp_path):
    path = write(tmp_path / "hpv_old.py", OLD)
    started = time.time()
    # A file whose change time predates the process by more than the slack passes without
    # a compile; this process started long before the file was written, so it is compared.
    assert provenance._older_than_process(os.stat(path).st_ctime) is False
    assert provenance._older_than_process(started - 3600 * 24 * 365) is True


def test_installed_and_hidden_packages_under_a_root_are_not_tracked(tmp_path):
    # A virtual environment kept in the project: its packages load as usual (from pycs).
    site = tmp_path / ".venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    write(site / "hpv_installed.py", OLD)
    other = tmp_path / "vendor" / "site-packages"
    other.mkdir(parents=True)
    write(other / "hpv_vendored.py", OLD)
    write(tmp_path / "hpv_own.py", OLD)
    write(tmp_path / "hpv_refused.py", OLD)
    sys.path[:0] = [str(site), str(other)]
    provenance.track([str(tmp_path)], accept=lambda path: "refused" not in path)
    import hpv_installed
    import hpv_own
    import hpv_refused
    import hpv_vendored

    assert type(hpv_own.__loader__) is provenance.TrackingLoader
    for module in (hpv_installed, hpv_vendored, hpv_refused):
        assert type(module.__loader__) is not provenance.TrackingLoader
        assert provenance.digest_of(module.__file__) is None


def test_reading_a_tracked_module_s_code_again_records_nothing(tmp_path):
    # `_locate.imports_name` reads a module's code through its loader; the module still
    # runs what it was imported from, not the file as it is now.
    path = write(tmp_path / "hpv_reread.py", OLD)
    provenance.track([str(tmp_path)])
    import hpv_reread

    write(path, NEW)
    code = hpv_reread.__loader__.get_code("hpv_reread")
    assert "new" in code.co_consts[0].co_consts  # the file's code now ...
    assert provenance.digest_of(str(path)) == source_digest(OLD.encode())  # ... not recorded
    importlib.reload(hpv_reread)  # an import again: recorded
    assert provenance.digest_of(str(path)) == source_digest(NEW.encode())
