"""Typed schemas for the fast path (`ExchangeProtocol.fast_scan`): msgspec decoders that build
only what a trade needs.

Why msgspec and not orjson here: orjson builds every key and value of a frame as Python objects
(an order-book snapshot: thousands of lists), then the parser reads six of them. A msgspec decoder
for a tagged union of Structs checks the whole frame's JSON syntax but materialises only the
declared fields; a frame of an ignored type costs its tag. Trade Structs declare every key the
exchange sends and forbid the rest, so nothing in a trade frame goes unchecked; anything a schema
refuses (an unknown key, an unusual type, a huge number) raises and the frame takes the full
orjson path, which judges it exactly as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Union

import msgspec

from daemon.feeds.records import NO_ROWS, ParseResult


def ignored(tag_field: str, tags: Iterable[str], absent: Iterable[str] = ()) -> tuple[type[msgspec.Struct], ...]:
    """One Struct per tag: frames of these types decode to their tag and nothing else. `absent`:
    keys the full parser looks at before the tag, which must then be missing (or null)."""
    fields = [(k, None, None) for k in absent]
    return tuple(
        msgspec.defstruct(f"Tag_{tag_field}_{tag}", fields, tag_field=tag_field, tag=tag, kw_only=True)
        for tag in sorted(tags)
    )


def results(structs: Iterable[type[msgspec.Struct]], result: ParseResult) -> dict[type, tuple[ParseResult, list[Any]]]:
    """Struct type -> what `fast_scan` returns for every frame of it: `result`, no rows."""
    return dict.fromkeys(structs, (result, NO_ROWS))


def union(*types: Any) -> Any:
    """The union of `types` (tagged Structs), as a type msgspec decodes."""
    return Union[types] if len(types) > 1 else types[0]  # noqa: UP007 - built at run time


def decoder(*types: Any) -> Any:
    """The `decode` of a JSON decoder for the union of `types`."""
    return msgspec.json.Decoder(union(*types)).decode
