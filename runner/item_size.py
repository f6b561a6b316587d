"""DynamoDB's item rules (size, numbers), so a write DynamoDB would refuse is caught first."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# DynamoDB's hard limit for one item, attribute names included.
MAX_ITEM_BYTES = 400 * 1024


def _number_size(value: int | float | Decimal) -> int:
    # 1 byte per two significant digits, plus 1 byte (leading/trailing zeros trimmed).
    # Not Decimal.normalize(): it rounds to the context's 28 digits.
    digits = "".join(map(str, Decimal(str(value)).as_tuple().digits)).strip("0")
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


def attribute_value_size(attribute: dict[str, Any]) -> int:
    """Bytes of one attribute value in DynamoDB's wire format ({"S": ...}, {"M": {...}}).

    The same rules as `value_size`, for items as the service (or moto) holds them: binary
    values are base64 text on the wire and count as their decoded bytes.
    """
    ((kind, value),) = attribute.items()
    if kind == "S":
        return len(str(value).encode("utf-8"))
    if kind == "N":
        return _number_size(Decimal(str(value)))
    if kind == "B":
        return _binary_size(value)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(
            len(str(name).encode("utf-8")) + attribute_value_size(v) + 1
            for name, v in value.items()
        )
    if kind == "L":
        return 3 + sum(attribute_value_size(v) + 1 for v in value)
    if kind == "SS":
        return sum(len(str(v).encode("utf-8")) for v in value)
    if kind == "NS":
        return sum(_number_size(Decimal(str(v))) for v in value)
    if kind == "BS":
        return sum(_binary_size(v) for v in value)
    raise ValueError(f"unknown attribute type {kind!r}")


def wire_item_size(item: dict[str, dict[str, Any]]) -> int:
    """Bytes of a whole item in DynamoDB's wire format: each name plus its value."""
    return sum(len(name.encode("utf-8")) + attribute_value_size(v) for name, v in item.items())


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray):
        return len(value)
    text = str(value)
    return len(text) * 3 // 4 - text[-2:].count("=")


# DynamoDB numbers: at most 38 significant digits, magnitudes from 1E-130 to below 1E+126.
MAX_NUMBER_DIGITS = 38
MAX_NUMBER_EXPONENT = 125
MIN_NUMBER_EXPONENT = -130


def number_problem(value: int | float | Decimal | str) -> str | None:
    """Why DynamoDB would refuse this number, or None if it can store it."""
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return f"not a number: {str(value)[:40]!r}"
    if not number.is_finite():
        return "DynamoDB cannot store NaN or infinity"
    if number == 0:
        return None
    # Not Decimal.normalize(): it rounds to the context's 28 digits.
    digits = "".join(map(str, number.as_tuple().digits)).strip("0")
    if len(digits) > MAX_NUMBER_DIGITS:
        return f"a number has more than {MAX_NUMBER_DIGITS} significant digits"
    exponent = number.adjusted()
    if exponent > MAX_NUMBER_EXPONENT:
        return "a number's magnitude is larger than DynamoDB supports (1E+126)"
    if exponent < MIN_NUMBER_EXPONENT:
        return "a number's magnitude is smaller than DynamoDB supports (1E-130)"
    return None
