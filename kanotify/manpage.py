"""kanotify(1), kanotify.toml(5) and the bash completion, generated from what they describe.

* kanotify(1): from the typer app's own command tree (:data:`kanotify.cli.app`): the
  same commands, options and help texts that ``kanotify --help`` prints, plus the exit
  codes' table of docs/reliability.md;
* kanotify.toml(5): from docs/config.md, the config reference, turned into roff by
  :func:`markdown_to_roff` (the subset of Markdown the docs use: headings, paragraphs,
  lists, fenced code, pipe tables, inline code, bold and links);
* the bash completion: from the command tree too (commands, each one's options, which
  options take a file name).

``scripts/build-deb`` writes them at build time (``python -m kanotify.manpage OUTDIR``
from the checkout), so the package's pages cannot drift from the code;
tests/unit/test_manpage.py regenerates them and checks them with groff and bash.
Imported only by that tooling, never by a kanotify command.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Iterable

from . import __version__

#: options whose value is a file name (the completion offers files there)
_FILE_METAVARS = ("PATH", "KEEPALIVED_CONF", "[FIFO]")


# --------------------------------------------------------------------------- roff


def roff_escape(text: str) -> str:
    """``text`` safe inside a roff line: backslashes, and a leading ``.`` or ``'`` that roff would read as a request."""
    text = text.replace("\\", "\\e")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def _option_text(text: str) -> str:
    """An option name in roff: its hyphens are minus signs (what one types), not typographic hyphens."""
    return roff_escape(text).replace("-", "\\-")


_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)]+)\)")


def inline(text: str) -> str:
    """One line of Markdown in roff: ``code`` and **bold** in bold, a link as its text."""
    out: list[str] = []
    pos = 0
    for m in _INLINE.finditer(text):
        out.append(text[pos:m.start()].replace("\\", "\\e"))
        code, bold, link_text, _target = m.groups()
        if code is not None:
            out.append("\\fB" + code.replace("\\", "\\e").replace("-", "\\-") + "\\fR")
        elif bold is not None:
            out.append("\\fB" + inline(bold) + "\\fR")
        else:
            out.append(inline(link_text))
        pos = m.end()
    out.append(text[pos:].replace("\\", "\\e"))
    line = "".join(out)
    return ("\\&" + line) if line.startswith((".", "'")) else line


def _cells(row: str) -> list[str]:
    """The cells of a pipe-table row (``\\|`` is a literal bar)."""
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)]


def _table(rows: list[str]) -> list[str]:
    """A pipe table as a list of tagged paragraphs: the first cell is the tag, the others follow."""
    header = _cells(rows[0])
    out: list[str] = []
    for row in rows[2:]:  # rows[1] is the |---| line
        cells = _cells(row)
        out += [".TP", inline(cells[0])]
        # the last column is the description when it is called so; otherwise every column is labelled
        plain = header[-1].lower() in ("meaning", "rule", "what")
        labelled = list(zip(header[1:-1] if plain else header[1:], cells[1:-1] if plain else cells[1:]))
        middle = [f"{inline(name)}: {inline(value)}" for name, value in labelled if value]
        if middle:
            out += ["; ".join(middle) + ".", ".br"] if plain else ["; ".join(middle) + "."]
        if plain and len(cells) > 1:
            out.append(inline(cells[-1]))
    return out


def markdown_to_roff(markdown: str, *, skip_title: bool = True) -> list[str]:
    """The roff body for ``markdown`` (headings become .SH/.SS; the ``# title`` is skipped)."""
    out: list[str] = []
    lines = markdown.splitlines()
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            text = " ".join(part.strip() for part in paragraph)
            if not text.startswith("Contents:"):  # a list of links within the page: no use in a man page
                out.extend([".PP", inline(text)])
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out += [".PP", ".RS 4", ".nf"] + [roff_escape(b) if b else "" for b in block] + [".fi", ".RE"]
        elif stripped.startswith("#"):
            flush()
            level = len(stripped) - len(stripped.lstrip("#"))
            title = stripped[level:].strip().replace("`", "")
            if level == 1 and skip_title:
                pass
            else:
                out += [".SH" if level <= 2 else ".SS", '"' + roff_escape(title.upper() if level <= 2 else title)
                        .replace('"', "'") + '"']
                out[-2:] = [out[-2] + " " + out[-1]]
        elif stripped.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out += _table(rows)
            continue
        elif re.match(r"([-*]|\d+\.) ", stripped):
            flush()
            bullet = re.match(r"([-*]|\d+\.) ", stripped)
            assert bullet is not None
            mark = "\\(bu" if bullet.group(1) in "-*" else bullet.group(1)
            item = [stripped[bullet.end():]]
            while i + 1 < len(lines) and lines[i + 1].startswith("  ") and lines[i + 1].strip():
                i += 1
                item.append(lines[i].strip())
            out += [f".IP {mark} 4", inline(" ".join(item))]
        elif not stripped:
            flush()
        else:
            paragraph.append(line)
        i += 1
    flush()
    return out


def _header(name: str, section: int, title: str) -> list[str]:
    return [
        f'.\\" {name}({section}): generated by kanotify.manpage from {title}; do not edit',
        f'.TH "{name.upper()}" "{section}" "" "kanotify {__version__}" "kanotify"',
    ]


#: the docs' non-ASCII characters as roff's named glyphs, so the pages do not depend on the reader's locale
_GLYPHS = {"≤": "\\(<=", "≥": "\\(>=", "×": "\\(mu", "·": "\\(md", "—": "\\(em", "–": "\\(en", "→": "\\(->",
           "’": "\\(cq", "‘": "\\(oq", "“": "\\(lq", "”": "\\(rq", "…": "...", "≈": "\\(~~", "±": "\\(+-",
           "µ": "\\(mc", "½": "\\(12"}


def _page(lines: Iterable[str]) -> str:
    text = "\n".join(lines) + "\n"
    for char, glyph in _GLYPHS.items():
        text = text.replace(char, glyph)
    return text


# --------------------------------------------------------------------------- the command tree


def _tree() -> tuple[Any, Any]:
    """The click group of the typer app and its context (typer, imported only here)."""
    import typer

    from .cli import app

    group = typer.main.get_command(app)
    return group, typer.Context(group, info_name="kanotify")


def _records(command: Any, ctx: Any) -> list[tuple[str, str]]:
    records = []
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or (param.param_type_name == "argument" and not getattr(param, "help", None)):
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            records.append(record)
    return records


def _section(title: str, markdown: str) -> list[str]:
    """The part of ``markdown`` under the heading ``## title``, as roff (without its heading)."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    if found is None:
        raise ValueError(f"no '## {title}' section")
    return markdown_to_roff(found.group(1))


def kanotify_1(reliability_md: str) -> str:
    """kanotify(1): the commands and options of the typer app; exit codes from docs/reliability.md."""
    group, ctx = _tree()
    out = _header("kanotify", 1, "the typer app (kanotify/cli.py) and docs/reliability.md")
    out += [".SH NAME", "kanotify \\- " + roff_escape(group.help.rstrip("."))]
    out += [".SH SYNOPSIS", ".B kanotify", "[\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
            ".br", ".B kanotify \\-\\-version"]
    out += [".SH DESCRIPTION", inline(
        "keepalived runs `kanotify master|backup|fault|stop INSTANCE` (or its generic `notify`) on every VRRP "
        "state change, or feeds its notify FIFO to `kanotify listen`. kanotify works out what the host should "
        "look like in the new state (VIPs, ARP sysctls, IPVS services and real servers), reads what the kernel "
        "has, applies only the difference, verifies it and logs the transition. The config file is described in "
        "kanotify.toml(5)."),
        ".PP", "Global options are accepted before and after the command."]
    out.append(".SH GLOBAL OPTIONS")
    for opts, help_text in _records(group, ctx):
        out += [".TP", "\\fB" + _option_text(opts) + "\\fR", roff_escape(help_text)]
    out.append(".SH COMMANDS")
    for name, command in group.commands.items():
        if command.hidden:
            continue
        sub = type(ctx)(command, info_name=name, parent=ctx)
        pieces = " ".join(command.collect_usage_pieces(sub))
        out += [f'.SS "kanotify {_option_text(name)}{" " + roff_escape(pieces) if pieces else ""}"',
                roff_escape(command.help or "")]
        records = [r for r in _records(command, sub) if r[0] != "--help"]
        for opts, help_text in records:
            out += [".TP", "\\fB" + _option_text(opts) + "\\fR", roff_escape(help_text)]
    out.append(".SH EXIT STATUS")
    out += _section("Exit codes", reliability_md)
    out += [".SH ENVIRONMENT", ".TP", "\\fBKANOTIFY_CONFIG\\fR",
            "The config file when \\fB\\-\\-config\\fR is not given.",
            ".SH FILES", ".TP", "\\fI/etc/kanotify/kanotify.toml\\fR",
            "The config file (kanotify.toml(5)); owned by root and not writable by others, or kanotify refuses it.",
            ".TP", "\\fI/var/lib/kanotify/journal.jsonl\\fR", "The journal, one JSON record per run (the default "
            "\\fBjournal\\fR).", ".TP", "\\fI/run/kanotify\\fR",
            "The lock, the recorded state of each instance and the listener's socket (the default \\fBstate_dir\\fR).",
            ".SH SEE ALSO", "kanotify.toml(5), keepalived(8), keepalived.conf(5), ipvsadm(8)"]
    return _page(out)


def kanotify_toml_5(config_md: str) -> str:
    """kanotify.toml(5) from docs/config.md."""
    out = _header("kanotify.toml", 5, "docs/config.md")
    out += [".SH NAME", "kanotify.toml \\- kanotify's config file",
            ".SH SYNOPSIS", "\\fI/etc/kanotify/kanotify.toml\\fR", ".SH DESCRIPTION"]
    body = markdown_to_roff(config_md)
    out += body[1:] if body[:1] == [".PP"] else body
    out += [".SH SEE ALSO", "kanotify(1)"]
    return _page(out)


# --------------------------------------------------------------------------- bash completion


def bash_completion() -> str:
    """A bash completion script for kanotify (plain bash: no bash-completion helpers needed)."""
    from .model import State

    group, ctx = _tree()

    def options(command: Any, sub: Any) -> tuple[list[str], list[str], list[str]]:
        """(every option name, those taking a value, those taking a file name)."""
        names, valued, files = [], [], []
        for param in command.get_params(sub):
            if getattr(param, "hidden", False) or param.param_type_name != "option":
                continue
            names += param.opts + param.secondary_opts
            if not param.is_flag and not param.count:
                valued += param.opts
                if param.metavar in _FILE_METAVARS or param.name == "config":
                    files += param.opts
        return names, valued, files

    global_names, global_valued, global_files = options(group, ctx)
    cases, all_valued, all_files = [], list(global_valued), list(global_files)
    for name, command in group.commands.items():
        if command.hidden:
            continue
        sub = type(ctx)(command, info_name=name, parent=ctx)
        names, valued, files = options(command, sub)
        all_valued += valued
        all_files += files
        file_args = any(p.param_type_name == "argument" and p.metavar in _FILE_METAVARS for p in command.params)
        words = " ".join(n for n in names if n != "--help")
        cases.append(f'        {name}) opts="{words}"; files={1 if file_args else 0} ;;')
    states = " ".join(s.value for s in State)
    commands = " ".join(n for n, c in group.commands.items() if not c.hidden)
    return _page([
        "# bash completion for kanotify: generated by kanotify.manpage from the command tree; do not edit",
        "_kanotify() {",
        '    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}',
        '    local globals="' + " ".join(global_names) + '"',
        "    COMPREPLY=()",
        "    case $prev in",
        "        " + "|".join(sorted(set(all_files))) + ")",
        '            COMPREPLY=($(compgen -f -- "$cur")); return ;;',
        "        --state)",
        f'            COMPREPLY=($(compgen -W "{states}" -- "$cur")); return ;;',
        "        " + "|".join(sorted(set(all_valued) - set(all_files) - {"--state"})) + ")",
        "            return ;;",
        "    esac",
        "    local cmd= i=1",
        "    while [ $i -lt $COMP_CWORD ]; do",
        "        case ${COMP_WORDS[i]} in",
        "            " + "|".join(sorted(set(all_valued))) + ") i=$((i + 1)) ;;",
        "            -*) ;;",
        "            *) cmd=${COMP_WORDS[i]}; break ;;",
        "        esac",
        "        i=$((i + 1))",
        "    done",
        '    local opts= files=0',
        "    case $cmd in",
        f'        "") opts="{commands}" ;;',
        *cases,
        "    esac",
        '    if [ -n "$cmd" ] && [ $files = 1 ] && [ "${cur#-}" = "$cur" ]; then',
        '        COMPREPLY=($(compgen -f -- "$cur")); return',
        "    fi",
        '    COMPREPLY=($(compgen -W "$opts $globals" -- "$cur"))',
        "}",
        "complete -F _kanotify kanotify",
    ])


# --------------------------------------------------------------------------- writing them


def write_all(outdir: Path, docs: Path) -> list[Path]:
    """Write kanotify.1, kanotify.toml.5 and the completion ``kanotify`` into ``outdir``; the paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    pages = {
        "kanotify.1": kanotify_1((docs / "reliability.md").read_text()),
        "kanotify.toml.5": kanotify_toml_5((docs / "config.md").read_text()),
        "kanotify.bash-completion": bash_completion(),
    }
    written = []
    for name, text in pages.items():
        path = outdir / name
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m kanotify.manpage OUTDIR [DOCS_DIR]  (DOCS_DIR: the checkout's docs/)", file=sys.stderr)
        return 2
    docs = Path(args[1]) if len(args) == 2 else Path("docs")
    for path in write_all(Path(args[0]), docs):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
