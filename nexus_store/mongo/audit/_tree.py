"""The Merkle tree over the audit log, kept in the entries themselves.

Entry ``seq`` is leaf ``seq - 1``. An entry stores, in ``tree``, the hash of every perfect
subtree it completes: ``tree[0]`` is its leaf hash, ``tree[level]`` the root of the ``2**level``
leaves ending with it. So the subtree ``(level, index)`` lives in entry ``(index + 1) << level``,
every range a proof needs decomposes into O(log n) such subtrees
(:func:`nexus_store.audit_proofs.perfect_pieces`), and one ``$in`` query fetches them: a
proof never reads the whole log. Entries written before the tree existed hold no ``tree``;
their subtrees are computed from their leaves, once per call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nexus_store.audit_proofs import leaf_hash, node_hash, perfect_pieces, root_of
from nexus_store.errors import NotFoundError

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = ["Frontier", "completing_seq", "range_hash", "subtree_hashes"]

Piece = tuple[int, int]  # (level, index)


def completing_seq(piece: Piece) -> int:
    """The seq of the entry that completes (and stores) subtree ``piece``."""
    level, index = piece
    return (index + 1) << level


class Frontier:
    """The compact range of the tree: the roots of its perfect subtrees, largest first."""

    __slots__ = ("nodes", "size")

    def __init__(self, size: int = 0, nodes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.nodes = list(nodes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.nodes)

    def append(self, leaf: bytes) -> list[bytes]:
        """Add leaf ``size``; returns the nodes it completes (``[leaf, level 1, ...]``)."""
        completed = [leaf]
        node = leaf
        size = self.size
        while size & 1:
            node = node_hash(self.nodes.pop(), node)
            completed.append(node)
            size >>= 1
        self.nodes.append(node)
        self.size += 1
        return completed

    def root(self) -> bytes:
        return root_of(self.nodes)


async def subtree_hashes(
    entries: AsyncCollection[dict[str, Any]], pieces: list[Piece]
) -> dict[Piece, bytes]:
    """The hash of each subtree in ``pieces``: one query for the entries that store them;
    a subtree whose entry holds no node (written before the tree) is computed from its
    leaves."""
    wanted = {completing_seq(piece): piece for piece in pieces}
    found: dict[Piece, bytes] = {}
    if wanted:
        cursor = entries.find({"seq": {"$in": list(wanted)}}, projection={"seq": 1, "tree": 1})
        async for document in cursor:
            piece = wanted.get(document.get("seq", 0))
            tree = document.get("tree")
            if piece is not None and isinstance(tree, list) and len(tree) > piece[0]:
                found[piece] = bytes.fromhex(tree[piece[0]])
    for piece in pieces:
        if piece not in found:
            found[piece] = await _computed(entries, piece)
    return found


async def _computed(entries: AsyncCollection[dict[str, Any]], piece: Piece) -> bytes:
    level, index = piece
    first, last = (index << level) + 1, (index + 1) << level
    frontier = Frontier()
    expected = first
    cursor = entries.find({"seq": {"$gte": first, "$lte": last}}, sort=[("seq", 1)])
    async for document in cursor:
        if document.get("seq") != expected:
            break
        frontier.append(leaf_hash(document))
        expected += 1
    if expected != last + 1:
        # gone (expired or removed): the subtree it was part of cannot be computed
        raise NotFoundError("audit entry", expected)
    return frontier.root()


async def range_hash(entries: AsyncCollection[dict[str, Any]], start: int, end: int) -> bytes:
    """RFC 9162's MTH of leaves ``[start, end)``."""
    pieces = perfect_pieces(start, end)
    hashes = await subtree_hashes(entries, pieces)
    return root_of([hashes[piece] for piece in pieces])
