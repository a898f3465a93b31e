"""The Merkle tree over the audit log, kept in the entries themselves.

Entry ``seq`` is leaf ``seq - 1``. An entry stores, in ``tree``, the hash of every perfect
subtree it completes: ``tree[0]`` is its leaf hash, ``tree[level]`` the root of the ``2**level``
leaves ending with it. So the subtree ``(level, index)`` lives in entry ``(index + 1) << level``,
every range a proof needs decomposes into O(log n) such subtrees
(:func:`nexus_store.audit_proofs.perfect_pieces`), and one ``$in`` query fetches them: a
proof never reads the whole log. Entries written before the tree existed hold no ``tree``;
their subtrees are computed from their leaves, once per call.

**Across expired entries.** With retention, the entry that stores a subtree may be gone
while entries after it still need that subtree in their proofs. The subtrees to the left of
leaf ``m`` are exactly the frontier of the tree of ``m`` leaves, and those a live entry can
need once entries ``1..E`` expired are the frontier of ``E`` leaves. Its nodes that end at or
before the last checkpoint are in that checkpoint's frontier (checkpoints never expire); the
few that end after it are what each entry written with retention keeps in ``left`` (the
frontier before it, from the last checkpoint on). So the oldest live entry and the checkpoint
before it restore every node the expired entries held (:func:`frontier_nodes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from nexus_store.audit_proofs import leaf_hash, node_hash, perfect_pieces, root_of
from nexus_store.errors import NotFoundError

if TYPE_CHECKING:
    from pymongo.asynchronous.collection import AsyncCollection

__all__ = [
    "Frontier",
    "completing_seq",
    "frontier_nodes",
    "range_hash",
    "rebuilt_frontier",
    "subtree_hashes",
]

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

    def since(self, start: int) -> list[bytes]:
        """The roots of the subtrees that end after leaf ``start`` (the smallest ones: what
        an entry keeps in ``left`` with ``start`` its last checkpoint)."""
        kept, end, remaining = 0, self.size, self.size
        while remaining and end > start:
            lowest = remaining & -remaining  # the smallest subtree left, ending at ``end``
            end -= lowest
            remaining -= lowest
            kept += 1
        return self.nodes[len(self.nodes) - kept :]


def frontier_nodes(size: int, nodes: list[str]) -> dict[Piece, bytes]:
    """The subtrees whose roots ``nodes`` (hex) are: the smallest ``len(nodes)`` of the
    frontier of ``size`` leaves (a checkpoint's whole ``frontier``, an entry's ``left``)."""
    pieces = perfect_pieces(0, size)
    if len(nodes) > len(pieces):
        return {}  # not a frontier of that size: nothing can be taken from it
    tail = pieces[len(pieces) - len(nodes) :]
    return {piece: bytes.fromhex(node) for piece, node in zip(tail, nodes, strict=True)}


def rebuilt_frontier(size: int, nodes: dict[Piece, bytes]) -> Frontier | None:
    """The frontier of ``size`` leaves, if ``nodes`` holds every subtree of it."""
    pieces = perfect_pieces(0, size)
    if any(piece not in nodes for piece in pieces):
        return None
    return Frontier(size, [nodes[piece] for piece in pieces])


async def subtree_hashes(
    entries: AsyncCollection[dict[str, Any]],
    pieces: list[Piece],
    checkpoints: AsyncCollection[dict[str, Any]] | None = None,
) -> dict[Piece, bytes]:
    """The hash of each subtree in ``pieces``: one query for the entries that store them.
    A subtree whose entry expired comes from the frontier before the oldest live entry
    (with ``checkpoints``: two more queries); one whose entry holds no node (written
    before the tree) is computed from its leaves."""
    wanted = {completing_seq(piece): piece for piece in pieces}
    found: dict[Piece, bytes] = {}
    if wanted:
        cursor = entries.find({"seq": {"$in": list(wanted)}}, projection={"seq": 1, "tree": 1})
        async for document in cursor:
            piece = wanted.get(document.get("seq", 0))
            tree = document.get("tree")
            if piece is not None and isinstance(tree, list) and len(tree) > piece[0]:
                found[piece] = bytes.fromhex(tree[piece[0]])
    if checkpoints is not None and len(found) < len(wanted):
        expired = await _expired_frontier(entries, checkpoints)
        found.update((piece, expired[piece]) for piece in pieces if piece in expired)
    for piece in pieces:
        if piece not in found:
            found[piece] = await _computed(entries, piece)
    return found


async def _expired_frontier(
    entries: AsyncCollection[dict[str, Any]], checkpoints: AsyncCollection[dict[str, Any]]
) -> dict[Piece, bytes]:
    """The frontier of the expired entries (all before the oldest live one), as far as the
    oldest live entry's ``left`` and the checkpoint before it hold it."""
    oldest = await entries.find_one({}, projection={"seq": 1, "left": 1}, sort=[("seq", 1)])
    if oldest is None or not isinstance(oldest.get("seq"), int):
        return {}
    size = oldest["seq"] - 1
    left = oldest.get("left")
    nodes = frontier_nodes(size, left) if isinstance(left, list) else {}
    checkpoint = await checkpoints.find_one(
        {"seq": {"$lte": size}}, projection={"seq": 1, "frontier": 1}, sort=[("seq", -1)]
    )
    if checkpoint is not None and isinstance(checkpoint.get("frontier"), list):
        nodes = {**frontier_nodes(checkpoint["seq"], checkpoint["frontier"]), **nodes}
    return nodes


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


async def range_hash(
    entries: AsyncCollection[dict[str, Any]],
    start: int,
    end: int,
    checkpoints: AsyncCollection[dict[str, Any]] | None = None,
) -> bytes:
    """RFC 9162's MTH of leaves ``[start, end)``."""
    pieces = perfect_pieces(start, end)
    hashes = await subtree_hashes(entries, pieces, checkpoints)
    return root_of([hashes[piece] for piece in pieces])
