"""Packaging (issue 24): the generated man pages and completion, the conffile example, one version, twine.

The Debian package's pages are generated at build time (debian/rules runs kanotify.manpage), so
they cannot drift; these tests regenerate them here and check that they cover what they describe
(every command and option, every section and key of docs/config.md), that groff reads them without
a warning and that bash completes with the script.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import typer

import kanotify
from kanotify import manpage
from kanotify.cli import app
from kanotify.options import GLOBAL_OPTIONS

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("man")
    paths = manpage.write_all(out, DOCS)
    return {p.name: p.read_text() for p in paths}


def _groff(page: str, tmp: Path) -> str:
    path = tmp / "page"
    path.write_text(page)
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, text=True,
                          env=dict(os.environ, LC_ALL="C"))
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def _render(page: str, tmp: Path) -> str:
    path = tmp / "page"
    path.write_text(page)
    return subprocess.run(["groff", "-man", "-Tutf8", "-P-cbou", str(path)], capture_output=True, text=True,
                          check=True, env=dict(os.environ, LC_ALL="C")).stdout


def test_the_man_pages_are_ascii_and_groff_reads_them_without_a_warning(generated: dict[str, str], tmp_path: Path) -> None:
    for name in ("kanotify.1", "kanotify.toml.5"):
        page = generated[name]
        assert page.isascii(), [c for c in page if not c.isascii()][:5]
        assert _groff(page, tmp_path) == "", name
        assert page.splitlines()[1].startswith(f'.TH "{name.rsplit(".", 1)[0].upper()}" "{name[-1]}"')
        assert f"kanotify {kanotify.__version__}" in page


def test_kanotify_1_has_every_command_and_option_of_the_cli(generated: dict[str, str], tmp_path: Path) -> None:
    text = _render(generated["kanotify.1"], tmp_path)
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"kanotify {name}" in text, name
        assert " ".join((command.help or "").split()[:4]) in " ".join(text.split()), name
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden:
                assert all(opt in text for opt in param.opts), (name, param.opts)
    for option in GLOBAL_OPTIONS:
        assert all(n in text for n in option.names) != option.hidden, option
    assert "--version" in text
    for code in ("0", "1", "2", "78"):  # docs/reliability.md's exit codes
        assert re.search(rf"^\s+{code}\s", text, re.M), code


def test_kanotify_toml_5_has_every_section_and_key_of_the_config_reference(
    generated: dict[str, str], tmp_path: Path
) -> None:
    text = _render(generated["kanotify.toml.5"], tmp_path)
    reference = (DOCS / "config.md").read_text()
    for heading in re.findall(r"^## (.+)$", reference, re.M):
        assert heading.replace("`", "").upper() in text, heading
    for key in re.findall(r"^\| `([a-z_]+)` \|", reference, re.M):
        assert re.search(rf"^ {{7}}{key}\b", text, re.M), key
    for block in re.findall(r"```toml\n(.*?)```", reference, re.S):  # the examples, verbatim
        for line in block.splitlines():
            assert line.strip() in text, line


def test_markdown_inline_code_and_a_leading_dot_are_safe_in_roff() -> None:
    assert manpage.inline("`--dry-run` and [docs](x.md)") == "\\fB\\-\\-dry\\-run\\fR and docs"
    assert manpage.inline(".hidden") == "\\&.hidden"
    assert manpage.inline("a \\ b") == "a \\e b"


def _complete(script: Path, *words: str) -> list[str]:
    cmd = (f"source {script}; COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; _kanotify; "
           'printf "%s\\n" "${COMPREPLY[@]}"')
    return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.split()


def test_bash_completion_completes_commands_options_states_and_files(
    generated: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "kanotify"
    script.write_text(generated["kanotify.bash-completion"])
    group = typer.main.get_command(app)
    first = _complete(script, "kanotify", "''")
    assert [w for w in first if not w.startswith("-")] == list(group.commands)
    assert "--config" in first and "--allow-insecure" not in first  # a hidden option is not offered
    assert _complete(script, "kanotify", "--config", "x.toml", "rec") == ["reconcile"]
    assert _complete(script, "kanotify", "plan", "--state", "''") == ["master", "backup", "fault", "stop"]
    assert "--detailed-exitcode" in _complete(script, "kanotify", "plan", "--d")
    (tmp_path / "keepalived.conf").write_text("")
    assert _complete(script, "kanotify", "import", str(tmp_path / "keep")) == [str(tmp_path / "keepalived.conf")]
    assert _complete(script, "kanotify", "--config", str(tmp_path / "keep")) == [str(tmp_path / "keepalived.conf")]


def test_the_packages_conffile_is_an_example_that_passes_check(tmp_path: Path) -> None:
    conf = tmp_path / "kanotify.toml"
    shutil.copy(REPO / "debian" / "kanotify.toml", conf)
    conf.chmod(0o600)
    proc = subprocess.run([sys.executable, "-m", "kanotify", "--allow-insecure", "--config", str(conf), "check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "OK (1 instance(s), 1 VIP(s)" in proc.stdout


def test_one_version_the_codes_is_the_distributions() -> None:
    assert importlib.metadata.version("kanotify") == kanotify.__version__
    # debian/rules has no version of its own: scripts/build-deb writes debian/changelog from __version__
    assert not (REPO / "debian" / "changelog").exists() or "debian/changelog" in (REPO / ".gitignore").read_text()
    assert 'sed -n \'s/^__version__ = "\\(.*\\)"$/\\1/p\' kanotify/__init__.py' in (REPO / "scripts" / "build-deb").read_text()


def test_version_on_the_fast_path_and_through_typer_print_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    from kanotify.cli import run

    assert run(["--version"]) == 0
    assert capsys.readouterr().out == f"kanotify {kanotify.__version__}\n"
    for argv in (["--version"], ["--config", "/nonexistent.toml", "--version"]):  # the latter: typer's
        proc = subprocess.run([sys.executable, "-m", "kanotify", *argv], capture_output=True, text=True)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"kanotify {kanotify.__version__}\n", ""), argv


def test_wheel_and_sdist_pass_twine_check(tmp_path: Path) -> None:
    """``python -m build`` (the sdist, then the wheel from it) and ``twine check --strict``: the README
    renders as the project page; project URLs, classifiers and the license file are in the metadata."""
    out = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
                   check=True, capture_output=True, text=True)
    wheel, = out.glob("*.whl")
    sdist, = out.glob("*.tar.gz")
    assert wheel.name == f"kanotify-{kanotify.__version__}-py3-none-any.whl"
    proc = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(f"kanotify-{kanotify.__version__}.dist-info/METADATA").decode()
    assert f"kanotify-{kanotify.__version__}.data/scripts/kanotify" in names  # the sh launcher, not a wrapper
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    for field in ("License-Expression: MIT", "Project-URL: Source", "Description-Content-Type: text/markdown",
                  "Classifier: Operating System :: POSIX :: Linux"):
        assert field in meta, field
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[-1] for m in tf.getmembers()}
    assert {"README.md", "LICENSE", "pyproject.toml", "bin/kanotify"} <= members
