"""Every input to ``audit.record()`` gets a typed answer (found by the long fuzz profile):
text that cannot be encoded is refused naming its path, a value the server will not store
is the server's refusal, typed, and the entries around it in the same batch are written."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from nexus_store.errors import BackendUnavailableError, IntegrityError, ValidationError


@pytest.mark.parametrize(
    ("after", "field"),
    [
        ({"k": "\ud800"}, "after.k"),
        ({"k": ["ok", {"deep": "x\udfff"}]}, "after.k.1.deep"),
        ({"\ud800": 1}, "after.\\ud800"),
    ],
)
async def test_a_lone_surrogate_is_refused_naming_its_path(
    make_audit, raw, after: dict[str, Any], field: str
) -> None:
    log = await make_audit()
    with pytest.raises(ValidationError) as refused:
        await log.record("a", "update", "doc", "1", after=after)
    assert refused.value.field == field
    assert await raw(log).count_documents({}) == 0  # a refused call writes nothing


async def test_a_value_the_server_refuses_is_typed_and_spares_its_batch(
    make_audit, raw, real_mongodb: bool
) -> None:
    """NaN is legal in the canonical form (v2 keeps it apart from null) and real MongoDB
    stores it (tests/mongo/audit/test_tamper.py::test_nan_to_null); nx-27017 refuses it.
    Either way the caller gets a nexus-store answer, and the entries queued with it in one
    group commit are written and chained without it."""
    log = await make_audit()
    substitute = not real_mongodb
    results = await asyncio.gather(
        *(
            log.record("a", "update", "metric", str(n), after={"x": math.nan if n == 2 else n})
            for n in range(5)
        ),
        return_exceptions=True,
    )
    nan_result = results[2]
    if substitute:
        assert isinstance(nan_result, IntegrityError), repr(nan_result)
        assert "refused the document" in str(nan_result)
    else:
        assert not isinstance(nan_result, BaseException), repr(nan_result)
        assert math.isnan(nan_result.after["x"])
    written = [result for result in results if not isinstance(result, BaseException)]
    assert len(written) == (4 if substitute else 5)
    assert sorted(entry.seq for entry in written) == list(range(1, len(written) + 1))
    assert await raw(log).count_documents({}) == len(written)
    result = await log.verify()
    assert (result.ok, result.checked) == (True, len(written))


async def test_any_other_driver_error_reaches_the_caller_typed(make_audit, monkeypatch) -> None:
    """Fault injection: the idempotency lookup fails with a server error that is neither a
    lost connection nor a write error."""
    log = await make_audit()
    committed = log._committed

    def failing_find(*args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("operation exceeded time limit", code=50)

    monkeypatch.setattr(committed, "find", failing_find)
    with pytest.raises(BackendUnavailableError) as failed:
        await log.record("a", "b", "c", "1", idempotency_key="k")
    assert failed.value.backend == "mongo"
    assert isinstance(failed.value.__cause__, OperationFailure)
    monkeypatch.undo()
    entry = await log.record("a", "b", "c", "1", idempotency_key="k")  # the log carries on
    assert entry.seq == 1


async def test_an_entry_larger_than_a_document_is_refused_before_sending(make_audit, raw) -> None:
    log = await make_audit()
    big = {"blob": "x" * (17 * 1024 * 1024)}
    small, refused = await asyncio.gather(
        log.record("a", "b", "c", "1"),
        log.record("a", "b", "c", "2", before={"x": 1}, after=big),
        return_exceptions=True,
    )
    assert isinstance(refused, ValidationError) and refused.field == "after"
    assert not isinstance(small, BaseException) and small.seq == 1
    assert await raw(log).count_documents({}) == 1
    assert (await log.verify()).ok
