"""A tiny datadriven test format, like cockroachdb/datadriven used by etcd-io/raft.

A file is a sequence of blocks:

    # comments (kept on rewrite)
    command arg1 key=value
    ----
    expected output (no blank lines)

Blocks are separated by a blank line. `run_file` replays every command through a handler
and compares its output; with `rewrite=True` it writes the actual output back instead.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Block:
    comments: list[str]
    line_no: int
    cmd: str
    args: list[str] = field(default_factory=list)
    kwargs: dict[str, str] = field(default_factory=dict)
    expected: str = ""

    @property
    def text(self) -> str:
        return " ".join([self.cmd, *self.args, *(f"{k}={v}" for k, v in self.kwargs.items())])


def parse(text: str) -> tuple[list[Block], list[str]]:
    """Blocks of a file, and the comments after the last block."""
    lines = text.splitlines()
    blocks: list[Block] = []
    comments: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            if line.startswith("#"):
                comments.append(line)
            i += 1
            continue
        words = line.split()
        b = Block(comments, i + 1, words[0])
        comments = []
        for w in words[1:]:
            if "=" in w:
                k, v = w.split("=", 1)
                b.kwargs[k] = v
            else:
                b.args.append(w)
        i += 1
        if i >= len(lines) or lines[i] != "----":
            raise ValueError(f"line {i + 1}: expected ---- after command {line!r}")
        i += 1
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        b.expected = "\n".join(out)
        blocks.append(b)
    return blocks, comments


def render(blocks: list[Block], trailing: list[str]) -> str:
    parts = []
    for b in blocks:
        head = "\n".join([*b.comments, b.text, "----", b.expected])
        parts.append(head)
    text = "\n\n".join(parts) + "\n"
    if trailing:
        text += "\n" + "\n".join(trailing) + "\n"
    return text


def run_file(path: pathlib.Path, handler: Callable[[Block], str], rewrite: bool) -> None:
    blocks, trailing = parse(path.read_text())
    failures = []
    for b in blocks:
        got = handler(b).rstrip("\n")
        got = "\n".join(line for line in got.splitlines() if line.strip()) or "ok"
        if rewrite:
            b.expected = got
        elif got != b.expected:
            failures.append(f"{path.name}:{b.line_no}: {b.text}\n--- expected\n{b.expected}\n--- got\n{got}")
            break  # later output depends on this block
    if rewrite:
        path.write_text(render(blocks, trailing))
    if failures:
        raise AssertionError("\n".join(failures) + "\n(rerun with RAFT_REWRITE=1 to accept, then review the diff)")
