"""The error-code list cannot drift: errors.proto, docs/protocol.md, dspex.errors and the
server's status table (dspex.state.wire.status) must name the same codes with the same
statuses."""

from __future__ import annotations

import re
from inspect import isclass
from pathlib import Path

import dspex.errors as errors
from dspex.state.wire.status import status_for

ROOT = Path(__file__).resolve().parents[2]
ERRORS_PROTO = ROOT / "proto" / "dspex" / "bridge" / "v1" / "errors.proto"
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
_ENTRY = re.compile(r"/\*\* ([A-Z_]+): (.*?) \*/\s*ERROR_CODE_([A-Z_]+) = (\d+);")
_BLOCK = re.compile(r"<!-- error-codes:start[^>]*-->\n(.*?)<!-- error-codes:end -->", re.S)


def proto_codes() -> list[tuple[str, str, str]]:
    """(code, status, meaning) of every ErrorCode value, in proto order."""
    found = _ENTRY.findall(ERRORS_PROTO.read_text())
    numbers = [int(number) for *_, number in found]
    assert numbers == list(range(1, len(found) + 1)), "ErrorCode numbers must run 1, 2, 3..."
    return [(name.lower(), status, meaning) for status, meaning, name, _ in found]


def doc_table(codes: list[tuple[str, str, str]]) -> str:
    """The table docs/protocol.md must carry between its error-codes markers."""
    rows = [f"| `{code}` | `{status}` | {meaning} |" for code, status, meaning in codes]
    return "\n".join(["| code | gRPC status | meaning |", "|---|---|---|", *rows]) + "\n"


def all_error_classes() -> list[type[errors.DspexError]]:
    """Every error class of the library (each is exported by dspex.errors)."""
    return [v for v in vars(errors).values() if isclass(v) and issubclass(v, errors.DspexError)]


def test_errors_proto_lists_every_code_of_the_library_once() -> None:
    codes = [code for code, _, _ in proto_codes()]
    assert len(codes) == len(set(codes))
    assert sorted(codes) == sorted(cls.code for cls in all_error_classes())


def test_errors_proto_statuses_are_the_servers() -> None:
    sent = {cls.code: status_for(cls).name for cls in all_error_classes()}
    assert {code: status for code, status, _ in proto_codes()} == sent


def test_docs_table_matches_errors_proto() -> None:
    block = _BLOCK.search(PROTOCOL_DOC.read_text())
    assert block is not None, "docs/protocol.md lost its error-codes markers"
    assert block.group(1) == doc_table(proto_codes()), (
        "docs/protocol.md error table differs from errors.proto; replace it with:\n"
        + doc_table(proto_codes())
    )
