"""Moto's DynamoDB made to refuse and apply writes as DynamoDB does.

Measured against moto 5.2.5 (docs/MOTO-GAPS.md has the numbers), where moto is kinder
than AWS:

- **Atomicity.** DynamoDB applies an UpdateItem entirely or not at all. Moto executes the
  update expression on the stored item in place, so an update that fails half-way (the
  item would pass 400 KB) leaves the attributes set before the failure: the status
  became FAILED although the write was refused.
- **Item size.** Moto refuses an item when its own measure passes 405,000 "bytes"; it
  counts some attribute values by their Python `str()`. DynamoDB's limit is 409,600
  bytes by the rules `runner.item_size` implements, so moto refuses items about 4.5 KB
  below DynamoDB's limit.
- **Numbers.** Moto's UpdateItem stores numbers DynamoDB refuses (more than 38
  significant digits, magnitude 1E+126 or more); its PutItem checks only the magnitude.
- **Stream records.** An UpdateItem that creates its item emits two INSERT records in
  moto (one for the key, one for the rest), one on AWS; and a write that changes nothing
  emits a MODIFY in moto, nothing on AWS ("DynamoDB Streams does not write a stream
  record for that operation").

`dynamodb_fidelity()` patches moto's DynamoDB backend for the duration of the block:
PutItem and UpdateItem are checked by DynamoDB's rules, a refused UpdateItem leaves the
item exactly as it was, and each applied write that changes the item adds one stream
record. The local stack's endpoint, the shared test server and the in-process tests all
run with it. TransactWriteItems and BatchWriteItem are not covered: the runner uses
neither.

`observe`, if given, sees each PutItem/UpdateItem that passed DynamoDB's rules as
(item before, item after), before it takes effect; if it raises, the write is refused
and the item left as it was (runner.local.chaos_endpoint uses it to fail the write that
would finish a task, and to notice a claim).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

from runner.item_size import MAX_ITEM_BYTES, number_problem, wire_item_size


def _numbers(attribute: dict[str, Any]) -> Iterator[str]:
    ((kind, value),) = attribute.items()
    if kind == "N":
        yield str(value)
    elif kind == "NS":
        yield from (str(v) for v in value)
    elif kind == "M":
        for nested in value.values():
            yield from _numbers(nested)
    elif kind == "L":
        for nested in value:
            yield from _numbers(nested)


def item_problem(attributes: dict[str, dict[str, Any]]) -> str | None:
    """Why DynamoDB would refuse to store this item (wire format), or None."""
    for attribute in attributes.values():
        for number in _numbers(attribute):
            problem = number_problem(number)
            if problem:
                return problem
    if wire_item_size(attributes) > MAX_ITEM_BYTES:
        return "size"
    return None


# (item before or None, item after); raising refuses the write.
WriteObserver = Callable[[Any, Any], None]


@contextlib.contextmanager
def dynamodb_fidelity(observe: WriteObserver | None = None) -> Iterator[None]:
    """Atomic, DynamoDB-sized PutItem/UpdateItem in moto for the duration of the block."""
    from moto.dynamodb.exceptions import (
        ItemSizeTooLarge,
        ItemSizeToUpdateTooLarge,
        MockValidationException,
    )
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType, LimitedSizeDict
    from moto.dynamodb.models.table import Table

    original_put = DynamoDBBackend.put_item
    original_update = DynamoDBBackend.update_item
    original_setitem = LimitedSizeDict.__setitem__

    def refuse(problem: str, *, update: bool) -> Exception:
        if problem == "size":
            return ItemSizeToUpdateTooLarge() if update else ItemSizeTooLarge()
        return MockValidationException(problem)

    def key_of(table: Table, key: dict[str, Any]) -> tuple[Any, Any]:
        hash_value = DynamoType(key[table.hash_key_attr])
        range_attr = table.range_key_attr
        range_value = DynamoType(key[range_attr]) if range_attr and range_attr in key else None
        return hash_value, range_value

    def restore(table: Table, hash_value: Any, range_value: Any, before: Any) -> None:
        holder = table.items[hash_value] if range_value is not None else table.items
        slot = range_value if range_value is not None else hash_value
        if before is None:
            holder.pop(slot, None)
        else:
            holder[slot] = before

    def put_item(
        self: Any, table_name: str, item_attrs: dict[str, Any], *args: Any, **kw: Any
    ) -> Any:
        problem = item_problem(item_attrs)
        if problem:
            raise refuse(problem, update=False)
        table = self.get_table(table_name)
        shard, table.stream_shard = table.stream_shard, None
        try:
            hash_value, range_value = key_of(table, item_attrs)
            before = table.get_item(hash_value, range_value)
            item = original_put(self, table_name, item_attrs, *args, **kw)
            if observe is not None:
                try:
                    observe(before, item)
                except BaseException:
                    restore(table, hash_value, range_value, before)
                    raise
        finally:
            table.stream_shard = shard
        if shard is not None and (before is None or before.attrs != item.attrs):
            shard.add(before, item)
        return item

    def update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kw: Any) -> Any:
        table = self.get_table(table_name)
        hash_value, range_value = key_of(table, key)
        stored = table.get_item(hash_value, range_value)
        before = copy.deepcopy(stored)
        shard, table.stream_shard = table.stream_shard, None
        try:
            item = original_update(self, table_name, key, *args, **kw)
            problem = item_problem(item.to_json()["Attributes"])
            if problem:
                raise refuse(problem, update=True)
            if observe is not None:
                observe(before, item)
        except BaseException:
            # Moto may have changed the stored item in place before it failed.
            restore(table, hash_value, range_value, before)
            raise
        finally:
            table.stream_shard = shard
        if shard is not None and (before is None or before.attrs != item.attrs):
            shard.add(before, item)
        return item

    def setitem(self: Any, key: str, value: Any) -> None:
        # Moto's own (stricter, differently counted) limit; DynamoDB's is checked above.
        dict.__setitem__(self, key, value)

    DynamoDBBackend.put_item = put_item  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update_item  # type: ignore[method-assign]
    LimitedSizeDict.__setitem__ = setitem  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoDBBackend.put_item = original_put  # type: ignore[method-assign]
        DynamoDBBackend.update_item = original_update  # type: ignore[method-assign]
        LimitedSizeDict.__setitem__ = original_setitem  # type: ignore[method-assign]
