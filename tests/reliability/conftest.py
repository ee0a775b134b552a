"""Fixtures for the reliability tests: namespaces that are always removed, even on failure."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Callable, Iterator

import pytest

from rel_support import PREFIX, Node, delete_namespace, make_namespace, require_root


@pytest.fixture
def netns_factory() -> Iterator[Callable[[str], str]]:
    """Makes namespaces ``kt7-<random>-<suffix>`` (lo, eth0<->p0); all deleted afterwards."""
    require_root()
    prefix = PREFIX + secrets.token_hex(3)
    made: list[str] = []

    def make(suffix: str) -> str:
        name = f"{prefix}-{suffix}"
        made.append(name)  # before creating: a half-made namespace is deleted too
        make_namespace(name)
        return name

    try:
        yield make
    finally:
        for name in made:
            delete_namespace(name)


@pytest.fixture
def node(netns_factory: Callable[[str], str], tmp_path: Path) -> Node:
    """The two-node config (VIP on eth0 as master, /32 on lo otherwise) in a fresh namespace."""
    return Node(netns_factory("n"), tmp_path)
