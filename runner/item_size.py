"""DynamoDB's item-size rules, so an oversized task is refused before the write."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# DynamoDB's hard limit for one item, attribute names included.
MAX_ITEM_BYTES = 400 * 1024


def _number_size(value: int | float | Decimal) -> int:
    # 1 byte per two significant digits, plus 1 byte (leading/trailing zeros trimmed).
    digits = Decimal(str(value)).normalize().as_tuple().digits
    significant = len(digits) or 1
    return (significant + 1) // 2 + 1


def value_size(value: Any) -> int:
    """Bytes a Python value takes as a DynamoDB attribute value."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, int | float | Decimal):
        return _number_size(value)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, dict):
        # A map costs 3 bytes plus, per element, its name, its value and 1 byte.
        return 3 + sum(len(str(k).encode("utf-8")) + value_size(v) + 1 for k, v in value.items())
    if isinstance(value, list | tuple):
        return 3 + sum(value_size(v) + 1 for v in value)
    if isinstance(value, set | frozenset):
        return sum(value_size(v) for v in value)
    return len(str(value).encode("utf-8"))


def item_size(item: dict[str, Any]) -> int:
    """Bytes of a whole item: each attribute's name plus its value."""
    return sum(len(name.encode("utf-8")) + value_size(v) for name, v in item.items())
