"""The Python examples of README.md and docs/*.md run as written and print what their comments
promise (docs that match the code): a line ``print(EXPR)  # -> VALUE`` must print exactly
``VALUE``. An example that needs what a test cannot give it (a Ray cluster with GPUs, a TLS
certificate, an unfinished fragment) says so in an HTML comment on the line before its fence,
``<!-- not run: WHY -->``; it is still compiled. Examples that name the store
``grpc://store-host:50051`` run against a real ``dspex serve`` on loopback. Every ``dspex ...``
line of the docs' shell blocks must parse with the real command line's parser (flags that
exist, values of the right kind), and what the prose names must exist: every ``--flag``, every
repository path, every RPC (protocol.md) and every module of the state tree (architecture.md)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from support.serve_process import ServeProcess

from dspex.cli import build_parser
from dspex.cli._serve_options import check_address, check_exposure
from dspex.cli._unknown import command_parsers

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", flags=re.S | re.M
)
NOT_RUN = re.compile(r"<!-- not run: .+ -->\s*$")
STORE = "grpc://store-host:50051"
"""The store address the docs' examples use; replaced by a real server's when they run."""
PROMISE = re.compile(r"^(?P<indent>\s*)print\((?P<expr>.*)\)\s*# -> (?P<value>.+?)\s*$")
CHECK = """
def __promised(expected, line, *values):
    printed = " ".join(str(value) for value in values)
    print(printed)
    if printed != expected:
        raise SystemExit(f"doc line {line!r} printed {printed!r}; it promises {expected}")
"""


class Block(NamedTuple):
    """One fenced code block of a doc."""

    doc: str
    lang: str
    code: str
    run: bool  # False when the line before the fence says ``<!-- not run: ... -->``


def _blocks() -> Iterator[Block]:
    for path in DOCS:
        text = path.read_text()
        for found in FENCE.finditer(text):
            before = text[: found.start()].rstrip("\n").rpartition("\n")[2]
            code = textwrap.dedent(found["indent"] + found["body"])
            yield Block(path.name, found["lang"], code, NOT_RUN.search(before) is None)


BLOCKS = list(_blocks())
PYTHON = [block for block in BLOCKS if block.lang == "python"]
SHELL = [block for block in BLOCKS if block.lang in ("bash", "sh", "shell")]


def _ids(blocks: list[Block]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for block in blocks:
        seen[block.doc] = seen.get(block.doc, -1) + 1
        ids.append(f"{block.doc}:{seen[block.doc]}")
    return ids


def _checked(block: str) -> tuple[str, int]:
    """``block`` with every promised print checked; how many promises it has."""
    lines, promises = [], 0
    for line in block.splitlines():
        found = PROMISE.match(line)
        if found is None:
            lines.append(line)
            continue
        promises += 1
        expr, value = found["expr"], found["value"]
        lines.append(f"{found['indent']}__promised({value!r}, {line.strip()!r}, {expr})")
    return CHECK + "\n".join(lines) + "\n", promises


def _dspex_lines(block: str) -> Iterator[list[str]]:
    """Each ``dspex ...`` command of a shell block as its arguments (continuations joined,
    comments and the ``[...]`` marks of optional flags dropped)."""
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)
        if words[:1] == ["dspex"]:
            yield words[1:]


@pytest.fixture(scope="module")
def store() -> Iterator[ServeProcess]:
    with ServeProcess() as server:
        yield server


def test_docs_have_python_examples() -> None:
    readme = [block for block in PYTHON if block.doc == "README.md"]
    assert len(readme) >= 2 and any(block.run for block in PYTHON if block.doc != "README.md")
    assert sum(_checked(block.code)[1] for block in readme) >= 2  # promised results are checked
    assert sum(1 for block in SHELL for _ in _dspex_lines(block.code)) >= 20


@pytest.mark.parametrize("block", PYTHON, ids=_ids(PYTHON))
def test_doc_example_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    compile(block.code, block.doc, "exec")  # every example, run or not, is Python
    if not block.run:
        return
    code = block.code
    if STORE in code:
        code = code.replace(STORE, request.getfixturevalue("store").address)
    script = tmp_path / "example.py"
    script.write_text(_checked(code)[0])
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip(), "the example printed nothing"


@pytest.mark.parametrize("block", SHELL, ids=_ids(SHELL))
def test_doc_commands_parse(block: Block, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in _dspex_lines(block.code):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            problem = capsys.readouterr().err.strip().splitlines()[-1:]
            pytest.fail(f"`dspex {shlex.join(argv)}` does not parse (exit {exc.code}): {problem}")
        if args.command == "serve":  # a server the docs start is not refused before listening
            check_address(args)
            args.token = args.token or args.token_file or ("DSPEX_TOKEN" in block.code) or None
            check_exposure(args, {"tls": args.tls_cert, "auth": args.auth_file})


def test_architecture_names_every_state_module() -> None:
    """docs/architecture.md's tree of ``src/dspex/state/`` lists every module, in its folder."""
    listed: dict[str, str] = {}
    folder = ""
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        heading = re.match(r"state/(\w+)/\s", line)
        folder = heading[1] if heading else folder if line.startswith("  ") else ""
        listed[folder] = listed.get(folder, "") + line.split("   ")[0] + "\n"
    state = ROOT / "src" / "dspex" / "state"
    unlisted = [
        f"{module.parent.name}/{module.name}"
        for module in sorted(state.glob("*/*.py"))
        if module.name != "__init__.py"
        and not re.search(rf"\b{module.name}\b", listed.get(module.parent.name, ""))
    ]
    assert not unlisted, f"docs/architecture.md does not name {unlisted}"


def test_protocol_names_every_rpc() -> None:
    """docs/protocol.md describes every RPC the dspex protos define."""
    text = (ROOT / "docs" / "protocol.md").read_text()
    protos = (ROOT / "proto" / "dspex" / "bridge" / "v1").glob("*.proto")
    rpcs = [
        rpc for proto in protos for rpc in re.findall(r"^\s*rpc (\w+)\(", proto.read_text(), re.M)
    ]
    assert len(rpcs) >= 25
    assert not [rpc for rpc in rpcs if f"`{rpc}`" not in text]


def test_readme_lists_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert not [doc.name for doc in DOCS[1:] if f"`docs/{doc.name}`" not in readme]


FOREIGN_FLAGS = {"--appendfsync", "--appendonly", "--maxmemory-policy"}  # redis-server
FOREIGN_FLAGS |= {"--head", "--node-ip-address", "--gil", "--max-"}  # ray start, py-spy, --max-*


def test_every_flag_the_docs_name_exists() -> None:
    """A ``--flag`` named anywhere in the docs' prose is one of the dspex command's flags."""
    parser = build_parser()
    known = {
        flag
        for command in (parser, *command_parsers(parser))
        for action in command._actions
        for flag in action.option_strings
    }
    named = {
        f"{doc.name}: {flag}"
        for doc in DOCS
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", doc.read_text())
        if flag not in known | FOREIGN_FLAGS
    }
    assert not named, sorted(named)


ROOTS = {"tests/": ("tests/",), "src/": ("src/",), "proto/": ("proto/",)}
ROOTS |= {"dspex/": ("src/dspex/", "proto/dspex/"), "state/": ("src/dspex/state/",)}
"""Where a path the docs name may live, by its first folder (a proto's own name included)."""


def test_every_file_the_docs_name_exists() -> None:
    """A path the docs name (``tests/...``, ``dspex/remote/_carry.py``, ``state/core/...``)
    is a file or folder of the repository (a model name such as ``dspex/sim`` is not a path)."""
    missing = []
    for doc in DOCS:
        for path in re.findall(r"`((?:tests|src|proto|dspex|state)/[\w./-]+)`", doc.read_text()):
            prefix = next(p for p in ROOTS if path.startswith(p))
            rest = path[len(prefix) :].split("::")[0]
            if not path.endswith("...") and not any(
                (ROOT / base / rest).exists() for base in ROOTS[prefix]
            ):
                missing.append(f"{doc.name}: {path}")
    assert not missing, missing
