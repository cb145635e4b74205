"""Reconciliation sees every name: a copy stored under the name as sent on the wire is found."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from handlers.reconcile import match_remote
from providers.emulator.disposition import disposition_params
from providers.types import RemoteFile
from providers.wire import wire_filenames, wire_form
from tests.harness import provider_section, read_sidecar, running, sha

# (local name, the name every transport's multipart filename makes the server store)
NAMES = [
    ('say "hi".txt', "say %22hi%22.txt"),
    ("back\\slash.txt", "back\\slash.txt"),
    ("100% sure.txt", "100% sure.txt"),
    ("résumé 文件 'q';x=1.txt", "résumé 文件 'q';x=1.txt"),
]


@pytest.mark.parametrize(("name", "stored"), NAMES)
def test_match_remote_finds_the_name_as_stored(name: str, stored: str) -> None:
    """A remote copy listed under the wire form of the local name is this upload."""
    remote = RemoteFile("kimi", "f1", stored, 10, 100.0, "file-extract")
    found = match_remote(
        [remote], filename=name, size=10, purpose="file-extract", intent_at=100.0, skew=0.0
    )
    assert found == remote


def test_wire_filenames_are_every_form_a_server_may_keep() -> None:
    """The forms tried: as httpx sends it (read as a quoted-string), raw on the wire, as is."""
    assert wire_filenames('a "b"\\c.txt') == {
        "a %22b%22\\c.txt",
        "a %22b%22\\\\c.txt",
        'a "b"\\c.txt',
    }
    assert wire_filenames("plain.txt") == {"plain.txt"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("provider", "transport"),
    [("kimi", "openai"), ("kimi", "http"), ("glm", "zhipuai"), ("glm", "openai"), ("glm", "http")],
)
async def test_dropped_answer_leaves_one_copy_whatever_the_name(
    tmp_path: Path, provider: str, transport: str
) -> None:
    """Accept-then-drop on every name's first upload: each file is stored once and reconciled."""
    providers = {provider: provider_section(provider, transports=[transport])}
    inboxes = [{"name": "in", "providers": [provider]}]
    async with running(tmp_path, inboxes=inboxes, providers=providers) as run:
        # The start-up count of remote files lists once (one purpose in use): let it pass
        # before the fault, so that the drop hits an upload.
        await run.emu.wait_count(provider, "list.200", 1)
        for i, (name, stored) in enumerate(NAMES):
            run.emu.set_faults(provider, "seq=drop")
            data = f"{i} {name}\n".encode()
            (run.inbox() / name).write_bytes(data)
            [seen] = await run.wait_for(1)
            assert (seen.relpath, seen.result.outcome) == (name, "uploaded")
            copies = [f for f in run.emu.files() if f.sha256 == sha(data)]
            assert [c.filename for c in copies] == [stored]
            receipt = read_sidecar(run.done() / f"{name}.upload.json")
            assert (receipt["file_id"], receipt["transport"]) == (copies[0].id, "reconcile")
        assert len(run.emu.files()) == len(NAMES)
        assert run.emu.counts()[provider]["upload.drop"] == len(NAMES)


@pytest.mark.parametrize("module", ["httpx", "httpx2"])
@pytest.mark.parametrize("name", [n for n, _ in NAMES] + ["tab\tname.txt", "%22.txt"])
def test_wire_form_is_what_httpx_writes(module: str, name: str) -> None:
    """httpx (zhipuai, raw) and httpx2 (openai 3.x) write the filename as wire_form says."""
    http = importlib.import_module(module)
    request = http.Request("POST", "http://127.0.0.1/files", files={"file": (name, b"x")})
    head = request.read().split(b"\r\n\r\n", 1)[0].decode()
    [disposition] = [h for h in head.split("\r\n") if h.startswith("Content-Disposition")]
    sent = disposition_params(disposition.split(":", 1)[1].strip())["filename"]
    assert sent == wire_form(name)
    assert sent in wire_filenames(name)
