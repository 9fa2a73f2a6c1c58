"""Kubernetes resource quantities ("500m", "8", "64Gi", "1.5G") as exact integers.

The scheduler works in millicores and bytes so that sums and comparisons are exact;
the API uses these parsers to validate what clients send, so the two agree on what
a quantity means.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]+))?$"
)


class QuantityError(ValueError):
    """A string that is not a valid, non-negative Kubernetes quantity."""


def parse_quantity(text: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity into an exact Decimal (no float rounding)."""
    if isinstance(text, bool):
        raise QuantityError("must be a quantity such as '8', '500m' or '64Gi', not a boolean")
    if isinstance(text, int | float):
        text = str(text)
    match = _QUANTITY.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise QuantityError(
            f"{text!r} is not a Kubernetes quantity (examples: '8', '500m', '64Gi', '1.5G')"
        )
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
        raise QuantityError(f"{text!r} is not a number") from exc
    suffix, exponent = match["suffix"], match["exponent"]
    if exponent is not None:
        if abs(int(exponent)) > 30:
            raise QuantityError(f"{text!r} has an exponent out of range")
        return number * (Decimal(10) ** int(exponent))
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    return number * _DECIMAL[suffix or ""]


def cpu_millicores(text: str | int | float) -> int:
    """CPU quantity to whole millicores, rounding up as Kubernetes does ("0.0001" -> 1m)."""
    value = parse_quantity(text) * 1000
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def memory_bytes(text: str | int | float) -> int:
    """Memory quantity to whole bytes, rounding up ("1.5Ki" -> 1536, "1m" -> 1)."""
    value = parse_quantity(text)
    return int(value.to_integral_value(rounding="ROUND_CEILING"))
