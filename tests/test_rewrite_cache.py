"""`tests/rewrite_cache.py`: the assertion-rewritten bytecode it writes before `make test` is what
pytest reads in place of rewriting the module again, asserts still explained, never stale."""

from __future__ import annotations

from pathlib import Path

from rewrite_cache import rewritten_pyc, rewritten_modules, write_rewritten


def _module(folder: Path, body: str) -> Path:
    path = folder / "test_made.py"
    path.write_text(body)
    return path


def test_the_written_bytecode_is_read_by_pytest_and_explains_its_asserts(tmp_path):
    from _pytest.assertion.rewrite import _read_pyc

    module = _module(tmp_path, "def test_it():\n    values = [1, 2]\n    assert len(values) == 3\n")
    pyc = write_rewritten(module)
    assert pyc == rewritten_pyc(module) and pyc.parent == tmp_path / "__pycache__"
    code = _read_pyc(module, pyc)
    assert code is not None  # pytest takes it instead of rewriting the source
    namespace: dict = {}
    exec(code, namespace)
    try:
        namespace["test_it"]()
    except AssertionError as error:
        said = str(error)
    else:
        raise AssertionError("the rewritten test passed")
    assert "assert 2 == 3" in said and "where 2 = len([1, 2])" in said, said  # pytest's explanation
    assert write_rewritten(module) is None  # already there for this source


def test_an_edited_module_is_not_run_from_its_old_bytecode(tmp_path):
    from _pytest.assertion.rewrite import _read_pyc

    module = _module(tmp_path, "def test_it():\n    assert 1\n")
    pyc = write_rewritten(module)
    module.write_text("def test_it():\n    assert 0\n")
    assert _read_pyc(module, pyc) is None  # pytest rewrites the edited source itself
    assert write_rewritten(module) == pyc and _read_pyc(module, pyc) is not None


def test_the_modules_are_the_test_files_and_the_conftest(tmp_path):
    for name in ("test_a.py", "conftest.py", "helper.py", "a_test.txt"):
        (tmp_path / name).write_text("")
    assert [path.name for path in rewritten_modules(tmp_path)] == ["test_a.py", "conftest.py"]
