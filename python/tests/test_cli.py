"""The `detrc` command the wheel installs: the cargo binary's command line, in-process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import detrc
from conftest import DETR, assert_same_outputs


def venv_detrc() -> str:
    exe = shutil.which("detrc", path=os.path.dirname(sys.executable))
    assert exe, f"no detrc command beside {sys.executable}"
    return exe


def run(*args, exe=None, **kw):
    return subprocess.run(
        [exe or venv_detrc(), *map(str, args)], capture_output=True, text=True, **kw
    )


def cargo_detrc():
    """The cargo-built binary to compare with (scripts/test_python.sh points at it)."""
    p = os.environ.get("DETRC_CARGO_BIN")
    if not p:
        pytest.skip("DETRC_CARGO_BIN is not set (scripts/test_python.sh sets it)")
    assert Path(p).is_file(), p
    return p


def test_the_command_is_on_the_venvs_path():
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin")
    r = subprocess.run(["detrc", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "Usage: detrc <COMMAND>" in r.stdout
    for cmd in ("compile", "build", "inspect", "passes", "run", "bench"):
        assert f"  {cmd}" in r.stdout


def test_version_is_the_packages():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"detrc {detrc.__version__}"


def test_compile_writes_a_model_with_the_same_outputs(tmp_path):
    out = tmp_path / "out.onnx"
    report = tmp_path / "report.json"
    r = run("compile", DETR, "-o", out, "--report", report, "--verify")
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stderr and "nodes in" in r.stderr
    assert report.is_file()
    assert_same_outputs(DETR.read_bytes(), out.read_bytes())
    # The command and the module write the same model.
    assert out.read_bytes() == detrc.compile(DETR.read_bytes()).model


def test_exit_codes_and_messages(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    r = run("compile", bad, "-o", tmp_path / "o.onnx")
    assert r.returncode == 1
    assert r.stderr.startswith("detrc: error: cannot compile ") and "not a valid ONNX" in r.stderr
    r = run("compile", DETR, "-o", tmp_path / "o.onnx", "--passes", "nope")
    assert r.returncode == 2 and "unknown pass 'nope'" in r.stderr
    r = run("frobnicate")
    assert r.returncode == 2 and "unrecognized subcommand" in r.stderr
    assert not (tmp_path / "o.onnx").exists()


def test_python_dash_m_is_the_command():
    r = subprocess.run(
        [sys.executable, "-m", "detrc", "passes"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == run("passes").stdout
    assert "dead-code" in r.stdout


def test_a_closed_pipe_ends_the_command_quietly():
    # `detrc passes | head -1`: no BrokenPipe traceback, no panic message.
    p = subprocess.Popen(
        [venv_detrc(), "passes"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    p.stdout.close()
    _, err = p.communicate()
    assert b"panicked" not in err and b"Traceback" not in err, err


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["compile", "--help"],
        ["build", "--help"],
        ["passes"],
        ["inspect", "--json", str(DETR)],
        ["inspect", str(DETR)],
        ["compile", "/nonexistent/m.onnx", "-o", "/tmp/never.onnx"],
        ["compile", str(DETR)],
        ["build", str(DETR), "-o", "/tmp/never.engine", "--target", "sm1"],
    ],
)
def test_same_output_and_exit_code_as_the_cargo_binary(args):
    cargo = cargo_detrc()
    a = run(*args, exe=cargo)
    b = run(*args)
    assert (b.returncode, b.stdout, b.stderr) == (a.returncode, a.stdout, a.stderr)
