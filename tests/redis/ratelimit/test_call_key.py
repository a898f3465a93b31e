"""The decorator's key contract (``_call_key``) and the keys the limiter accepts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from nexus_store import NexusStore
from nexus_store.errors import RateLimitExceeded, ValidationError


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:10]


async def test_key_receives_arguments_by_name_however_they_are_passed(
    store: NexusStore, tag: str
) -> None:
    seen: list[str] = []

    @store.limiter.limit("2/hour", key=lambda user_id: f"{tag}:{user_id}")
    async def search(request: Any, user_id: str, query: str = "", *, page: int = 1) -> str:
        seen.append(user_id)
        return query

    # By position, by keyword and mixed: one budget per user_id, the other arguments ignored.
    assert await search(None, "ada", "q") == "q"
    assert await search(request=None, user_id="ada", query="r", page=2) == "r"
    with pytest.raises(RateLimitExceeded) as caught:
        await search(None, user_id="ada")
    assert caught.value.key == f"{tag}:ada"
    assert await search(None, "bob") == ""  # bob has his own budget
    assert seen == ["ada", "ada", "bob"]


def test_key_may_name_defaults_keyword_only_and_self(store: NexusStore, tag: str) -> None:
    class Reports:
        @store.limiter.limit("1/hour", key=lambda self, fmt: f"{tag}:{self.owner}:{fmt}")
        def export(self, *, fmt: str = "csv") -> str:
            return fmt

        def __init__(self, owner: str) -> None:
            self.owner = owner

    ada = Reports("ada")
    assert ada.export() == "csv"
    assert ada.export(fmt="json") == "json"  # another key
    with pytest.raises(RateLimitExceeded):
        ada.export(fmt="csv")  # the default and an explicit csv are one key


def test_key_taking_star_args_is_called_like_the_function(store: NexusStore, tag: str) -> None:
    @store.limiter.limit("1/hour", key=lambda *args, **kwargs: f"{tag}:{args}:{kwargs}")
    def f(a: int, b: int = 0) -> int:
        return a + b

    assert f(1, b=2) == 3
    with pytest.raises(RateLimitExceeded):
        f(1, b=2)
    assert f(1, 2) == 3  # spelled differently: another key under this rule


def test_key_naming_an_unknown_parameter_is_refused_at_decoration(store: NexusStore) -> None:
    with pytest.raises(ValidationError) as caught:

        @store.limiter.limit("1/hour", key=lambda request: request.client_ip)
        def search(req: object, q: str) -> None: ...

    assert caught.value.field == "key" and "request" in caught.value.problem


def test_a_raising_key_is_a_validation_error_naming_the_key(store: NexusStore) -> None:
    @store.limiter.limit("1/hour", key=lambda request: request.client_ip)
    def search(request: object, q: str) -> None: ...

    with pytest.raises(ValidationError) as caught:
        search(object(), q="x")
    assert caught.value.field == "key"
    assert "AttributeError" in caught.value.problem
    assert isinstance(caught.value.__cause__, AttributeError)


@pytest.mark.parametrize("bad", [None, 5, 5.0, b"5", ("a",), ["a"]])
async def test_non_string_keys_are_refused_never_merged(
    store: NexusStore, tag: str, bad: object
) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.limiter.hit(bad, "1/hour")  # type: ignore[arg-type]
    assert caught.value.field == "key"
    with pytest.raises(ValidationError):
        store.limiter.hit_sync(bad, "1/hour")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        await store.limiter.reset(bad)  # type: ignore[arg-type]

    @store.limiter.limit("1/hour", key=lambda user: user)
    def call(user: object) -> None: ...

    with pytest.raises(ValidationError) as caught:
        call(bad)
    assert caught.value.field == "key"
    # The string spelling has its own, untouched budget.
    assert (await store.limiter.hit(f"{tag}{bad!s}", "1/hour")).remaining == 0


@pytest.mark.parametrize("bad", ["a\x00b", "lone\ud800surrogate"])
async def test_unencodable_keys_are_validation_errors(store: NexusStore, bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await store.limiter.hit(bad, "1/hour")
    assert caught.value.field == "key"
    with pytest.raises(ValidationError):
        store.limiter.peek_sync(bad, "1/hour")
