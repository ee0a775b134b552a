"""Security: modes of what kanotify writes, and no shell anywhere in the shipped code.

* After real runs -- with ``umask 000``, so nothing comes from a kind umask --
  the state dir is 0700 and every file kanotify wrote is 0600; a state dir
  that already existed with a looser mode is tightened.
* No shell is ever invoked with untrusted text: the package and the example
  hook plugins are parsed (``ast``, so docstrings and comments do not count)
  and any ``shell=True``, ``os.system``, ``os.popen``,
  ``subprocess.getoutput``/``getstatusoutput``, ``create_subprocess_shell``,
  ``pty.spawn`` or a literal ``sh``/``bash`` program outside the allowlist
  fails the test.
"""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

import kanotify
from rel_support import KANOTIFY, Node

ROOT = Path(kanotify.__file__).resolve().parent.parent
SCANNED = [ROOT / "kanotify", ROOT / "hooks"]

#: (path relative to the repository, line) -> why a shell is acceptable there.  Empty: none is.
ALLOWLIST: dict[tuple[str, int], str] = {}

FORBIDDEN_CALLS = {
    ("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"), ("pty", "spawn"), ("commands", "getoutput"),
}
FORBIDDEN_IMPORTS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
                     ("subprocess", "getstatusoutput"), ("pty", "spawn")}
SHELL_PROGRAM = re.compile(r"^(/usr)?(/bin/)?(ba|da|z|k|c|tc)?sh$|\bsh -c\b")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.root
def test_state_dir_0700_and_files_0600_even_with_umask_000(node: Node) -> None:
    def run(*args: str) -> None:
        script = "umask 000; exec " + " ".join(
            [KANOTIFY, "--config", str(node.config), *args]
        )
        done = subprocess.run(["ip", "netns", "exec", node.ns, "sh", "-c", script],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr

    run("master", "VI_1")
    node.state_file.write_text("{corrupt")  # so that a corrupt copy is kept, too
    run("backup", "VI_1")
    assert _mode(node.state_dir) == 0o700
    files = [p for p in node.state_dir.iterdir()]
    assert {p.name.split("-")[0] for p in files} >= {"lock", "state.json", "state.json.corrupt"}
    for path in files + [node.journal]:
        assert _mode(path) == 0o600, f"{path} is {_mode(path):04o}"
        assert os.lstat(path).st_uid == 0

    # a state dir someone created with a looser mode is tightened on the next run
    os.chmod(node.state_dir, 0o755)
    run("master", "VI_1")
    assert _mode(node.state_dir) == 0o700


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def shell_uses(path: Path) -> list[tuple[int, str]]:
    """Every place in ``path`` that could start a shell."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name[-2:] in FORBIDDEN_CALLS:
                found.append((node.lineno, ".".join(name)))
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append((node.lineno, f"{'.'.join(name)}(shell=...)"))
            for arg in node.args[:1]:  # the program of subprocess.run([...]) / os.execv(...)
                first = arg.elts[0] if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts else arg
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    if SHELL_PROGRAM.search(first.value.strip()):
                        found.append((node.lineno, f"{'.'.join(name)}({first.value!r}, ...)"))
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if (node.module, alias.name) in FORBIDDEN_IMPORTS:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    return found


def test_the_scanner_finds_what_it_looks_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os, subprocess\n"
        "os.system('x')\n"
        "subprocess.run('x', shell=True)\n"
        "subprocess.Popen(['/bin/sh', '-c', 'x'])\n"
        "from os import popen\n"
        "subprocess.run(['ip', 'link'], shell=False)\n"
        "'''os.system in a docstring'''\n"
    )
    assert sorted(line for line, _ in shell_uses(sample)) == [2, 3, 4, 5]


def test_no_shell_is_ever_invoked_in_the_shipped_code() -> None:
    files = [p for d in SCANNED for p in sorted(d.rglob("*.py")) if not p.name.startswith("test_")]
    assert len(files) > 10, f"scanned too little: {files}"
    offenders = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        for line, what in shell_uses(path):
            if (rel, line) not in ALLOWLIST:
                offenders.append(f"{rel}:{line}: {what}")
    assert not offenders, "a shell may run untrusted text:\n" + "\n".join(offenders)
