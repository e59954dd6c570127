"""The weir command line: -t/-c, -V, --help, 'weir proxy', and the no-argument demo."""
import errno
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import SANITIZED, WEIR_BIN, free_port, skip_unless_ci, wait_port

ERROR_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): error: (?P<msg>.*)$")


def run_weir(args, cwd, timeout=30):
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
           "PATH": "/usr/bin:/bin"}
    p = subprocess.run([WEIR_BIN] + args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=timeout)
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert marker not in err, err
    return p.returncode, out, err


def error_lines(err):
    return [m for m in (ERROR_LINE.match(line) for line in err.splitlines()) if m]


GOOD = """\
server:
  threads: 2
  timeouts:
    client_header: 10s
listeners:
  - 127.0.0.1:0
routes:
  - upstream: backend
upstreams:
  backend:
    backends: [127.0.0.1:9]
"""

THREE_ERRORS = """\
server:
  thread: 4
  threads: lots
  log_level: verbose
listeners:
  - 127.0.0.1:0
"""


def test_check_good_file(tmp_path):
    (tmp_path / "good.yaml").write_text(GOOD)
    rc, out, err = run_weir(["-t", "-c", "good.yaml"], tmp_path)
    assert rc == 0, err
    assert "OK" in out
    assert "good.yaml" in out
    assert error_lines(err) == []


def test_check_reports_every_error_in_one_pass(tmp_path):
    (tmp_path / "bad.yaml").write_text(THREE_ERRORS)
    rc, out, err = run_weir(["-t", "-c", "bad.yaml"], tmp_path)
    assert rc == 1
    assert "OK" not in out
    lines = error_lines(err)
    assert len(lines) == 3, err
    assert [(m["file"], int(m["line"]), int(m["col"])) for m in lines] == \
        [("bad.yaml", 2, 3), ("bad.yaml", 3, 12), ("bad.yaml", 4, 14)], err
    unknown, wrong_type, bad_enum = (m["msg"] for m in lines)
    assert "thread" in unknown and "did you mean 'threads'" in unknown
    assert "expected an integer" in wrong_type and "lots" in wrong_type
    assert "expected one of" in bad_enum and "verbose" in bad_enum


def test_check_wrong_types_name_what_was_expected(tmp_path):
    (tmp_path / "types.yaml").write_text(
        "server:\n"
        "  work_stealing: maybe\n"
        "  grace_period: 5 minutes\n"
        "  limits:\n"
        "    buffer_size: huge\n"
        "listeners:\n"
        "  - example.com:80\n")
    rc, _, err = run_weir(["-t", "-c", "types.yaml"], tmp_path)
    assert rc == 1
    lines = error_lines(err)
    assert [int(m["line"]) for m in lines] == [2, 3, 5, 7], err
    msgs = [m["msg"] for m in lines]
    assert "server.work_stealing" in msgs[0] and "maybe" in msgs[0]
    assert "duration" in msgs[1] and "5 minutes" in msgs[1]
    assert "size" in msgs[2] and "huge" in msgs[2]
    assert "host:port" in msgs[3] and "example.com:80" in msgs[3]
    assert all("expected" in m for m in msgs), msgs


def test_check_unknown_route_upstream_did_you_mean(tmp_path):
    (tmp_path / "u.yaml").write_text(GOOD.replace("  - upstream: backend", "  - upstream: bakend"))
    rc, _, err = run_weir(["-t", "-c", "u.yaml"], tmp_path)
    assert rc == 1
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert int(lines[0]["line"]) == 8
    assert "did you mean 'backend'" in lines[0]["msg"]


def test_check_missing_file(tmp_path):
    rc, out, err = run_weir(["-t", "-c", "does-not-exist.yaml"], tmp_path)
    assert rc == 1
    assert "does-not-exist.yaml" in err
    assert "cannot read" in err and "No such file" in err
    assert "OK" not in out


def test_check_yaml_syntax_error_has_position(tmp_path):
    (tmp_path / "syntax.yaml").write_text("server:\n  threads: [1\nlisteners: []\n")
    rc, _, err = run_weir(["-t", "-c", "syntax.yaml"], tmp_path)
    assert rc == 1
    lines = error_lines(err)
    assert len(lines) >= 1, err
    assert lines[0]["file"] == "syntax.yaml"
    assert int(lines[0]["line"]) >= 2
    assert "syntax" in lines[0]["msg"].lower() or "yaml" in lines[0]["msg"].lower()


def test_run_with_bad_file_refuses_to_start(tmp_path):
    (tmp_path / "bad.yaml").write_text(THREE_ERRORS)
    rc, _, err = run_weir(["-c", "bad.yaml"], tmp_path)
    assert rc == 1
    assert len(error_lines(err)) == 3, err


def test_t_without_c_and_unknown_argument(tmp_path):
    rc, _, err = run_weir(["-t"], tmp_path)
    assert rc == 1 and "-c" in err
    rc, _, err = run_weir(["--bogus"], tmp_path)
    assert rc == 1
    assert "--bogus" in err and "--help" in err


def test_version():
    rc, out, _ = run_weir(["-V"], "/")
    assert rc == 0
    first, *rest = out.splitlines()
    assert re.match(r"^weir \d+\.\d+\.\d+", first), out
    assert any(line.startswith("build:") for line in rest), out
    if SANITIZED:
        assert re.search(r"WEIR_[AT]SAN", out), out
    rc2, out2, _ = run_weir(["--version"], "/")
    assert rc2 == 0 and out2 == out


def test_help_lists_every_command_and_flag():
    rc, out, _ = run_weir(["--help"], "/")
    assert rc == 0
    for word in ("proxy", "--listen", "--to", "--threads", "--access-log",
                 "--access-log-format", "--work-stealing", "-t", "-c", "-V", "--help",
                 "SIGTERM", "SIGINT"):
        assert re.search(r"(^|[\s,\[])" + re.escape(word) + r"\b", out), f"{word} missing:\n{out}"
    rc, out_h, _ = run_weir(["-h"], "/")
    assert rc == 0 and out_h == out


def test_proxy_command_balances_across_backends(weir, tmp_path):
    from origin import HttpOrigin
    o1, o2 = HttpOrigin().start(), HttpOrigin().start()
    try:
        port = free_port()
        weir.cli(["proxy", "--listen", f"127.0.0.1:{port}",
                  "--to", f"127.0.0.1:{o1.port},127.0.0.1:{o2.port}", "--threads", "1"],
                 port=port)
        for i in range(10):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", f"/r{i}")
            r = c.getresponse()
            assert r.status == 200
            assert json.loads(r.read())["target"] == f"/r{i}"
            c.close()
        n1, n2 = len(o1.requests), len(o2.requests)
        assert n1 + n2 == 10
        assert n1 == 5 and n2 == 5, f"round robin over two backends gave {n1}/{n2}"
    finally:
        o1.stop()
        o2.stop()


@pytest.mark.parametrize("args, expect", [
    (["proxy", "--bogus"], "--bogus"),
    (["proxy", "--listen"], "--listen"),
    (["proxy", "--listen", "127.0.0.1:1"], "--to"),
    (["proxy", "--to", "127.0.0.1:1"], "--listen"),
    (["proxy", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:2", "--threads", "many"], "many"),
    (["proxy", "--listen", "127.0.0.1:1", "--to", "127.0.0.1:2",
      "--access-log-format", "xml"], "xml"),
], ids=["unknown-flag", "missing-value", "no-to", "no-listen", "bad-threads", "bad-format"])
def test_proxy_command_bad_flags(tmp_path, args, expect):
    rc, _, err = run_weir(args, tmp_path)
    assert rc == 1
    assert expect in err, err
    if expect.startswith("--"):
        assert "weir --help" in err, f"no usage hint:\n{err}"


@pytest.mark.parametrize("flag, addr", [
    ("--listen", "nothost:99"),
    ("--listen", "127.0.0.1:99999"),
    ("--to", "1.2.3.4"),
    ("--to", "example.com:80"),
])
def test_proxy_command_bad_address_is_named(tmp_path, flag, addr):
    args = {"--listen": "127.0.0.1:1", "--to": "127.0.0.1:2"}
    args[flag] = addr
    rc, _, err = run_weir(["proxy", "--listen", args["--listen"], "--to", args["--to"]],
                          tmp_path)
    assert rc == 1
    assert addr in err, err


def ports_free(*ports):
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
        finally:
            s.close()
    return True


def test_demo_without_arguments(weir, tmp_path):
    if not ports_free(8080, 8081):
        skip_unless_ci("127.0.0.1:8080 or :8081 is in use: the demo needs both")
    w = weir.cli([], port=None, wait=False)
    try:
        wait_port(8080, timeout=20 if SANITIZED else 10)
    except TimeoutError:
        pytest.fail("the demo did not listen on 127.0.0.1:8080:\n" + w.stderr())
    p = subprocess.run(["curl", "-s", "-S", "--max-time", "10", "http://127.0.0.1:8080/"],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "Hello from weir's demo origin" in p.stdout.decode()
    assert w.stop(signal.SIGTERM) == 0, w.stderr()
    # The demo logs to stdout: one combined line for the curl request.
    assert re.search(r'"GET / HTTP/1\.1" 200 \d+ "-" "curl/', w.stdout()), w.stdout()



def test_config_without_listeners_refuses_to_start(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    rc, out, err = run_weir(["-t", "-c", "empty.yaml"], tmp_path)
    assert rc == 0 and "OK" in out, err  # an empty file is valid...
    rc, _, err = run_weir(["-c", "empty.yaml"], tmp_path, timeout=20)
    assert rc == 1  # ...but there is nothing to run
    assert "no listeners" in err


@pytest.mark.parametrize("key, value", [
    ("pid_file", "/nonexistent-dir/weir.pid"),
    ("access_log", "/nonexistent-dir/access.log"),
])
def test_unwritable_files_refuse_to_start(tmp_path, key, value):
    port = free_port()
    (tmp_path / "w.yaml").write_text(GOOD.replace("server:\n", f"server:\n  {key}: {value}\n")
                                     .replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    rc, _, err = run_weir(["-c", "w.yaml"], tmp_path, timeout=20)
    assert rc == 1
    assert value in err and "No such file" in err, err


def test_second_instance_on_the_same_port_fails(weir, tmp_path):
    """The per-worker SO_REUSEPORT sockets must not let a second weir (a stale one, a typo'd
    deploy) bind the same address and silently take a share of the connections."""
    port = free_port()
    text = GOOD.replace("127.0.0.1:0", f"127.0.0.1:{port}")
    first = weir(text, port=port)
    (tmp_path / "second.yaml").write_text(text)
    try:
        rc, _, err = run_weir(["-c", "second.yaml"], tmp_path, timeout=3)
    except subprocess.TimeoutExpired:
        rc, err = None, "(still running after 3s)"
    assert rc == 1, f"a second weir started on 127.0.0.1:{port} beside a running one: {err}"
    assert f"127.0.0.1:{port}" in err and "in use" in err, err
    assert first.alive()


def run_traced(tmp_path, config_name, ports, syscalls, trace):
    """Runs weir -c config_name under strace -f for syscalls until ports listen, then stops it
    with SIGTERM. Skips when strace is missing or cannot trace here (fails when CI=true)."""
    if shutil.which("strace") is None:
        skip_unless_ci("needs strace (scripts/deps.sh installs it)")
    # LeakSanitizer cannot run under ptrace: in the ASan build it would fail the exit.
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    proc = subprocess.Popen(["strace", "-f", "-qq", "-e", f"trace={syscalls}", "-o", str(trace),
                             WEIR_BIN, "-c", config_name], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            for p in ports:
                wait_port(p, timeout=20)
        except TimeoutError:
            proc.kill()
            err = proc.communicate()[1].decode(errors="replace")
            if "ptrace" in err.lower() or "not permitted" in err.lower():
                skip_unless_ci(f"strace cannot trace here: {err.strip()[:200]}")
            raise AssertionError(f"weir did not start under strace: {err}")
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = [int(x) for x in f.read().split()]
        assert len(children) == 1, children
        os.kill(children[0], signal.SIGTERM)
        rc = proc.wait(timeout=30)
        assert rc == 0, proc.stderr.read().decode(errors="replace")
        return children[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_only_serving_sockets_listen(tmp_path):
    """The check that a port is free must not listen: a client connecting in that moment (a
    readiness probe, a load balancer's health check during a restart) would be queued on a
    socket that closes right after, and get a reset. Every listen() weir makes must be one of
    the per-worker sockets that go on serving: 2 threads, 2 listeners, 4 calls."""
    ports = [free_port(), free_port()]
    text = GOOD.replace("  - 127.0.0.1:0\n", "".join(f"  - 127.0.0.1:{p}\n" for p in ports))
    (tmp_path / "w.yaml").write_text(text)
    trace = tmp_path / "listen.trace"
    run_traced(tmp_path, "w.yaml", ports, "listen", trace)
    calls = re.findall(r"listen\((\d+), (\d+)\)\s+= (-?\d+)", trace.read_text())
    assert len(calls) == 4, f"expected 4 listen() calls (2 workers x 2 listeners): {calls}"
    assert all(rc == "0" for _, _, rc in calls), calls
    assert len({fd for fd, _, _ in calls}) == 4, f"a listening fd was closed and reused: {calls}"


def test_pid_file_appears_whole(tmp_path):
    """A supervisor reading pid_file must see no file or the whole pid, never an empty file:
    weir writes a temporary file beside it and renames it into place. (Opening pid_file itself
    with O_TRUNC and then writing left it empty for a moment; test_shutdown, which waits for
    the file and reads it, failed on that under valgrind.)"""
    port = free_port()
    pid_file = tmp_path / "run" / "weir.pid"
    pid_file.parent.mkdir()
    text = GOOD.replace("127.0.0.1:0", f"127.0.0.1:{port}").replace(
        "server:\n", f"server:\n  pid_file: {pid_file}\n")
    (tmp_path / "w.yaml").write_text(text)
    trace = tmp_path / "pid.trace"
    run_traced(tmp_path, "w.yaml", [port], "openat,rename,renameat,renameat2", trace)
    lines = trace.read_text().splitlines()
    name = re.escape(str(pid_file))
    opened = [l for l in lines if re.search(rf'openat\(.*"{name}"', l)]
    assert not opened, f"pid_file opened in place (a reader could see it empty): {opened}"
    renamed = [l for l in lines if re.search(rf'rename\w*\(.*"{name}"\) += 0', l)]
    assert len(renamed) == 1, f"expected one rename onto pid_file: {lines}"
    assert not pid_file.exists(), "pid_file left behind after a clean stop"
    assert not list(pid_file.parent.iterdir()), "a temporary pid file left behind"
