"""Streaming without pyarrow (the ``stream`` extra): a clear refusal naming the extra, or, for
``record`` without ``-o``, a note and a ``.npz`` saved at the end as before; nothing half-made."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import jouletrace
from jouletrace.errors import JouletraceError
from jouletrace.sampling.sim import SimGPU

# The jouletrace this test imports (the installed one in CI, the source tree with its built
# extension in a dev tree): a child process must import the same one.
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(jouletrace.__file__)))



@pytest.fixture
def no_pyarrow(monkeypatch):  # type: ignore[no-untyped-def]
    """``import pyarrow`` fails as it does where the package is not installed."""
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)


def test_sampler_and_monitor_refuse_before_anything_starts(no_pyarrow, tmp_path):  # type: ignore[no-untyped-def]
    sim = SimGPU()
    try:
        with pytest.raises(JouletraceError, match=r"jouletrace\[stream\]"):
            jouletrace.Sampler("sim", sim=sim, stream_to=tmp_path / "s.jt")
        with pytest.raises(JouletraceError, match=r"jouletrace\[stream\]"):
            jouletrace.Monitor(sources=["sim"], sim=sim, stream_to=tmp_path / "m.jt")
    finally:
        sim.close()
    assert os.listdir(tmp_path) == []  # no folder begun


def test_loading_a_streamed_recording_says_what_to_install(no_pyarrow, tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "r.jt").mkdir()
    (tmp_path / "r.jt" / "metadata.json").write_text('{"format": "jouletrace.stream"}')
    with pytest.raises(JouletraceError, match=r"pip install 'jouletrace\[stream\]'"):
        jouletrace.load(tmp_path / "r.jt")


_HIDE = "import sys; sys.modules['pyarrow'] = None; from jouletrace.cli import console_main; " \
        "sys.argv = ['jouletrace'] + sys.argv[1:]; console_main()"


def _record(tmp_path, *args: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    env = dict(os.environ, PYTHONPATH=PKG_PARENT)
    return subprocess.run([sys.executable, "-c", _HIDE, "record", "--source", "sim", *args, "--", "true"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def test_record_falls_back_to_npz_by_default_and_refuses_a_jt_output(tmp_path):  # type: ignore[no-untyped-def]
    r = _record(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "jouletrace[stream]" in r.stderr and "saving jouletrace.npz" in r.stderr
    assert os.listdir(tmp_path) == ["jouletrace.npz"]
    assert len(jouletrace.load(tmp_path / "jouletrace.npz")) > 0
    r = _record(tmp_path, "-o", "run.jt")
    assert r.returncode != 0 and "jouletrace[stream]" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "run.jt")


def test_the_hidden_import_really_fails(no_pyarrow):  # type: ignore[no-untyped-def]
    """The fixture's premise: with it, pyarrow cannot be imported (else the tests above prove nothing)."""
    with pytest.raises(ImportError):
        import pyarrow  # noqa: F401
    child = textwrap.dedent(_HIDE.split("; from")[0] + "\ntry:\n    import pyarrow\nexcept ImportError:\n    print('hidden')")
    assert subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout.strip() == "hidden"
