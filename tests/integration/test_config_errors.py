"""`weir -t -c` on configs with many kinds of mistakes: its whole stderr, byte for byte.

Each config_cases/NAME.yaml goes with NAME.err, the exact output weir gave for it when the
loader's diagnostics were last judged right (captured before the loader moved to key tables, so
the move provably changed no message, place, key path, suggestion or order). A message that
changes on purpose changes its .err file in the same commit.
"""
import os
import pathlib
import subprocess

import pytest

from conftest import WEIR_BIN

HERE = pathlib.Path(__file__).resolve().parent
CASES = HERE / "config_cases"
UNIT = HERE.parent / "unit" / "config"


def check(args, cwd):
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
           "PATH": "/usr/bin:/bin"}
    p = subprocess.run([WEIR_BIN] + args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


@pytest.mark.parametrize("name", sorted(p.stem for p in CASES.glob("*.yaml")))
def test_config_case_diagnostics(name):
    rc, out, err = check(["-t", "-c", f"{name}.yaml"], CASES)
    expected = (CASES / f"{name}.err").read_text()
    assert rc == 1, err
    assert out == ""
    assert err == expected


def test_unit_fixtures_diagnostics():
    rc, out, err = check(["-t", "-c", "bad.yaml"], UNIT)
    assert rc == 1 and out == ""
    assert err == (
        "bad.yaml:2:3: error: server.thread: unknown key 'thread'; did you mean 'threads'?\n"
        "bad.yaml:3:12: error: server.threads: expected an integer between 1 and 256, got 'lots'\n"
        "bad.yaml:4:14: error: server.log_level: expected one of error, warn, info, debug, "
        "got 'verbose'\n"
        "bad.yaml:6:14: error: listeners[0].address: expected host:port, got 'example.com:80' "
        "(the host must be a numeric IP address or localhost)\n"
        "bad.yaml:8:15: error: routes[0].upstream: no upstream named 'bakend'; "
        "did you mean 'backend'?\n"
        "weir: configuration has 5 errors\n")
    rc, out, err = check(["-t", "-c", "full.yaml"], UNIT)
    assert (rc, err) == (0, "")
    assert out == "full.yaml: configuration OK (3 listeners, 2 routes, 2 upstreams)\n"


def test_every_case_has_its_output():
    yamls = {p.stem for p in CASES.glob("*.yaml")}
    errs = {p.stem for p in CASES.glob("*.err")}
    assert yamls == errs and len(yamls) >= 12
    assert not [n for n in os.listdir(CASES) if not n.endswith((".yaml", ".err"))]
