"""Part geometry: the part size a new upload gets."""

from __future__ import annotations

import pytest

from chunkd.domain.errors import InvalidInput
from chunkd.domain.parts import choose_part_size
from chunkd.domain.upload import Mode


def test_a_part_larger_than_the_largest_file_is_refused_even_when_not_strict() -> None:
    """Non-strict callers (Fine Uploader's chunk sizes, tus) skip the part-size range, but a part
    that could never be filled (or, past 2**63, stored) is still refused."""
    common = {"default": 100, "minimum": 5, "maximum": 1000, "mode": Mode.PARTS, "strict": False}
    assert choose_part_size(None, 2, ceiling=10_000, **common) == 2  # below the minimum: allowed
    assert choose_part_size(None, 10_000, ceiling=10_000, **common) == 10_000
    with pytest.raises(InvalidInput) as refused:
        choose_part_size(None, 2**63, ceiling=10_000, **common)
    assert refused.value.field == "partSize"
